"""The toy students' density-ratio estimate against the exact ratio: is the discriminator's logit the log-ratio?

The discriminator head on the fake score is trained with real samples labelled 1 and generated ones 0, so its
optimal logit at noise level σ is ℓ*(x) = log p_σ(x) − log q_σ(x), with p_σ the data (ring8) convolved with N(0, σ²I)
— exact, a Gaussian mixture — and q_σ the generator's distribution convolved with it. On the toy q_σ is known up to
Monte Carlo: the mixture of N(s_j, σ²I) over ``--m`` samples s_j of the run's generator (G, the network the head is
trained against; accurate where σ is not small against the spacing of the samples, so σ ≥ 0.2 by default).

For each run (its final checkpoint) and each σ, on ``--n`` generated samples x_g + σε (where the generator's loss
uses the ratio) and as many real ones, prints the head's mean |ℓ| beside the exact mean |ℓ*|, their Pearson
correlation, the least-squares slope of ℓ on ℓ* (1 = calibrated, 0 = a constant), and both ROC AUCs of real against
generated (the exact log-ratio's AUC is the best any discriminator can do).

    python benchmarks/toy_ratio.py --runs runs/toy/ui-jkl-exact-s0 runs/toy/ui-rkl-exact-s0
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from uniinstruct.config import ConfigError, load_section
from uniinstruct.networks import toy_denoiser
from uniinstruct.pipelines.toy import ToyConfig, data_std, widened
from uniinstruct.sampling import one_step_sample
from uniinstruct.toy.problems import benchmark
from uniinstruct.training import checkpoint


def log_kde(x: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """log of the mean over ``centres`` of N(x; c, σ²I): the empirical distribution convolved with the noise."""
    centres = centres.double()
    out = torch.cat([torch.logsumexp(-torch.cdist(rows, centres).pow(2) / (2 * sigma**2), 1)
                     for rows in x.double().split(500)])      # 500 rows at a time: 500 × m distances in memory
    return out - math.log(len(centres)) - x.shape[1] / 2 * math.log(2 * math.pi * sigma**2)


@torch.no_grad()
def head_logit(net, x: torch.Tensor, sigma: float) -> torch.Tensor:
    _, ell = net(x, torch.full((len(x),), sigma), return_logits=True)
    return ell.double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="toy run folders with a checkpoint.pt")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.2, 0.5, 1.0, 2.0])
    parser.add_argument("--n", type=int, default=4000, help="generated (and real) points per σ")
    parser.add_argument("--m", type=int, default=50_000, help="generator samples that make q_σ")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        cfg = load_section(ToyConfig, "toy", args.params)
    except ConfigError as err:
        parser.error(str(err))
    torch.set_num_threads(1)
    mixture = benchmark(cfg.benchmark)
    sd = data_std(mixture)
    gen = torch.Generator().manual_seed(args.seed)
    for run in map(Path, args.runs):
        path = run / "checkpoint.pt"
        if not path.exists():
            parser.error(f"{path}: no checkpoint")
        state = checkpoint.load(path)
        size = widened(cfg) if run.name.startswith("wide-") else cfg
        fake, g = (toy_denoiser(2, size.hidden, size.depth, sd).eval() for _ in range(2))
        fake.load_state_dict(state["fake"])
        g.load_state_dict(state["generator"])
        sigma_init = state["config"]["sigma_init"]
        with torch.no_grad():
            centres = one_step_sample(g, torch.randn(args.m, 2, generator=gen), sigma_init)
            x_g = one_step_sample(g, torch.randn(args.n, 2, generator=gen), sigma_init)
        x_real = mixture.sample(args.n, generator=gen).float()
        print(f"\n{run.name} (iteration {state['iteration']})")
        print(f"{'σ':>5s} {'mean |ℓ|':>9s} {'mean |ℓ*|':>9s} {'corr':>6s} {'slope':>6s} {'AUC ℓ':>6s} {'AUC ℓ*':>6s}")
        labels = [1] * args.n + [0] * args.n             # real, then generated
        for sigma in args.sigmas:
            pts = torch.cat([x_real, x_g]) + sigma * torch.randn(2 * args.n, 2, generator=gen)
            exact = mixture.log_prob(pts.double(), sigma) - log_kde(pts, centres, sigma)
            ell = head_logit(fake, pts, sigma)
            fake_rows = slice(args.n, None)              # where the generator's loss reads the ratio
            e, h = exact[fake_rows], ell[fake_rows]
            corr = torch.corrcoef(torch.stack([e, h]))[0, 1]
            slope = ((e - e.mean()) * (h - h.mean())).sum() / (e - e.mean()).pow(2).sum()
            print(f"{sigma:5.2f} {h.abs().mean():9.3f} {e.abs().mean():9.3f} {corr:6.2f} {slope:6.2f} "
                  f"{roc_auc_score(labels, ell.numpy()):6.3f} {roc_auc_score(labels, exact.numpy()):6.3f}")


if __name__ == "__main__":
    main()
