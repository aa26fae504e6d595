"""Can the digits students' discriminator learn at all? Its own update against a frozen generator.

``benchmarks/digits_discriminator.py`` finds the head's logits within ±0.002 of 0 at the end of training (AUC real vs
generated 0.49–0.53). On the toy the same flatness comes from the game, not the head: against a frozen generator
the training's own update makes the head discriminative within ~50 updates (``benchmarks/toy_discriminator.py``).
This script asks the same of the digits tier: it restores a run's final state into the pipeline's ``Distiller``
(networks, optimisers, random streams) and calls its ``fake_step`` ``--steps`` times, never the generator's, then
prints the head's ROC AUC for real digits against the generator's samples (both noised alike) at each σ of
``--sigmas``, every ``--every`` updates.

    python benchmarks/digits_head_retrain.py --runs runs/digits/ui-rkl-exact-s3 --teacher-dir results/digits/teacher
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from uniinstruct.config import ConfigError, from_dict, load_section
from uniinstruct.images.data import one_hot
from uniinstruct.pipelines.digits import DigitsConfig, build_distiller, load_dataset, sample_labels
from uniinstruct.sampling import one_step_sample
from uniinstruct.training import checkpoint
from uniinstruct.training.distill import DistillConfig


@torch.no_grad()
def head_auc(d, x_real, c_real, x_gen, c_gen, noise, sigma: float) -> float:
    """ROC AUC of the head's per-sample logit (mean of its map) for real against generated, at noise level σ."""
    s = torch.full((len(x_real),), sigma)
    ell = [d.net(d.fake, x + sigma * noise, s, c, return_logits=True)[1].flatten(1).mean(1)
           for x, c in ((x_real, c_real), (x_gen, c_gen))]
    return roc_auc_score([1] * len(x_real) + [0] * len(x_gen), torch.cat(ell).numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="run folders with a checkpoint.pt")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--teacher-dir", default="results/digits/teacher")
    parser.add_argument("--steps", type=int, default=500, help="fake-score (and head) updates, generator frozen")
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5])
    parser.add_argument("--n", type=int, default=1000, help="real and generated samples per measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        cfg = load_section(DigitsConfig, "digits", args.params)
    except ConfigError as err:
        parser.error(str(err))
    torch.set_num_threads(1)
    data = load_dataset(cfg)
    gen = torch.Generator().manual_seed(args.seed)
    idx = torch.randint(len(data.images), (args.n,), generator=gen)
    x_real = data.images[idx].float()
    c_real = one_hot(data.labels[idx], data.num_classes) if cfg.conditional else None
    c_gen = sample_labels(cfg, data, args.n)
    z, noise = (torch.randn(args.n, *data.shape, generator=gen) for _ in range(2))
    for run in map(Path, args.runs):
        path = run / "checkpoint.pt"
        if not path.exists():
            parser.error(f"{path}: no checkpoint")
        state = checkpoint.load(path)
        d = build_distiller(cfg, from_dict(DistillConfig, state["config"], "config"), data, Path(args.teacher_dir))
        d.load_state_dict(state)
        with torch.no_grad():
            x_gen = one_step_sample(d.G, z, d.cfg.sigma_init, c_gen)      # the samples the head trains against
        print(f"\n{run.name} (iteration {state['iteration']}): head AUC, real vs the generator's samples")
        print(f"{'updates':>8s} " + " ".join(f"{'σ ' + str(s):>8s}" for s in args.sigmas))
        for step in range(args.steps + 1):
            if step % args.every == 0:
                print(f"{step:8d} " + " ".join(f"{head_auc(d, x_real, c_real, x_gen, c_gen, noise, s):8.3f}"
                                                for s in args.sigmas), flush=True)
            if step < args.steps:
                d.fake_step()


if __name__ == "__main__":
    main()
