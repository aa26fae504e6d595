"""Can the toy students' discriminator learn the log-ratio at all? Retrain it against a frozen generator.

``benchmarks/toy_ratio.py`` shows the head's logit ℓ at the end of a toy distillation nearly flat (slope 0.03–0.09
on the exact log-ratio ℓ*, ROC AUC at chance where ℓ* reaches 0.67–0.70). Two explanations differ in what they
predict: the head may lag a generator that keeps moving (then, against a frozen generator, the training's own update
catches up with ℓ*), or the update itself cannot learn ℓ* (then it stays flat even against a frozen generator).

For each run (its final checkpoint), this script freezes the generator and runs ``--steps`` fake-score updates of the
training's form (denoising loss + lsd · discriminator BCE on the shared encoder, clip-by-value, Adam with the run's
lr and betas, a fresh optimiser state) under variants of the discriminator's loss, and prints the head's slope on ℓ*,
their correlation and the head's AUC against the exact AUC, at a few σ, as the updates go:

- ``as_trained``: the training's update (λ(σ)-weighted BCE, ``lsd`` of the run).
- ``unweighted``: the BCE without EDM's λ(σ) = 1/σ² + 1/σ_d² (which weights σ = 0.05 400× more than σ = 1).
- ``lsd10``: the training's update with the BCE ×10.
- ``separate``: a new network of the same size trained on the BCE alone (unweighted): what a discriminator of this
  capacity reaches without sharing its encoder with the denoiser.

q_σ is the generator's samples convolved with N(0, σ²I) (``--m`` of them), as in toy_ratio.py.

    python benchmarks/toy_discriminator.py --runs runs/toy/ui-jkl-exact-s0
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from uniinstruct import losses
from uniinstruct.config import ConfigError, load_section
from uniinstruct.networks import toy_denoiser
from uniinstruct.pipelines.toy import ToyConfig, data_std, widened
from uniinstruct.sampling import one_step_sample
from uniinstruct.toy.problems import benchmark
from uniinstruct.training import checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from toy_ratio import head_logit, log_kde  # noqa: E402

VARIANTS = ("as_trained", "unweighted", "lsd10", "separate")


def probe_points(mixture, g, sigma_init, sigmas, n, m, gen):
    """Per σ: real and generated points noised to σ, their labels, and the exact log-ratio ℓ* on them."""
    with torch.no_grad():
        centres = one_step_sample(g, torch.randn(m, 2, generator=gen), sigma_init)
        x_g = one_step_sample(g, torch.randn(n, 2, generator=gen), sigma_init)
    x_real = mixture.sample(n, generator=gen).float()
    out = {}
    for sigma in sigmas:
        pts = torch.cat([x_real, x_g]) + sigma * torch.randn(2 * n, 2, generator=gen)
        exact = mixture.log_prob(pts.double(), sigma) - log_kde(pts, centres, sigma)
        out[sigma] = (pts, exact)
    return out


def measure(net, points, n) -> list[str]:
    """slope / corr / AUC of the head on the generated rows, per σ."""
    cells = []
    labels = [1] * n + [0] * n
    for sigma, (pts, exact) in points.items():
        ell = head_logit(net, pts, sigma)
        e, h = exact[n:], ell[n:]
        corr = torch.corrcoef(torch.stack([e, h]))[0, 1]
        slope = ((e - e.mean()) * (h - h.mean())).sum() / (e - e.mean()).pow(2).sum()
        cells.append(f"{slope:5.2f} {corr:5.2f} {roc_auc_score(labels, ell.numpy()):5.3f}")
    return cells


def retrain(variant, fake0, g, mixture, dcfg, sd, steps, every, points, n, seed):
    net = (toy_denoiser(2, fake0.backbone.encoder[0].weight.shape[2], len(fake0.backbone.encoder), sd)
           if variant == "separate" else copy.deepcopy(fake0))
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=dcfg["lr"], betas=tuple(dcfg["betas"]), eps=dcfg["adam_eps"])
    lsd = dcfg["lsd"] * (10 if variant == "lsd10" else 1)
    gen = torch.Generator().manual_seed(seed)
    rows = {0: measure(net, points, n)}
    b = dcfg["batch"]
    for step in range(1, steps + 1):
        with torch.no_grad():
            x_g = one_step_sample(g, torch.randn(b, 2, generator=gen), dcfg["sigma_init"])
        x_real = mixture.sample(b, generator=gen).float()
        sigma = torch.exp(torch.randn(b, generator=gen) * dcfg["p_std"] + dcfg["p_mean"])
        noise = torch.randn(b, 2, generator=gen) * sigma[:, None]
        y_fake, logit_fake = net(x_g + noise, sigma, return_logits=True)
        _, logit_real = net(x_real + noise, sigma, return_logits=True)
        weight = losses.edm_weight(sigma, sd) if variant in ("as_trained", "lsd10") else 1.0
        loss = lsd * (weight * losses.discriminator_loss(logit_real, logit_fake)).mean()
        if variant != "separate":
            loss = loss + dcfg["ls"] * losses.denoising_loss(y_fake, x_g, sigma, sd).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_value_(net.parameters(), dcfg["grad_clip"])
        opt.step()
        if step % every == 0:
            rows[step] = measure(net, points, n)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="toy run folders with a checkpoint.pt")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.2, 0.5, 1.0])
    parser.add_argument("--steps", type=int, default=3000, help="discriminator updates against the frozen generator")
    parser.add_argument("--every", type=int, default=1000)
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
    for run in map(Path, args.runs):
        path = run / "checkpoint.pt"
        if not path.exists():
            parser.error(f"{path}: no checkpoint")
        state = checkpoint.load(path)
        size = widened(cfg) if run.name.startswith("wide-") else cfg
        fake, g = (toy_denoiser(2, size.hidden, size.depth, sd) for _ in range(2))
        fake.load_state_dict(state["fake"])
        g.load_state_dict(state["generator"])
        g.eval().requires_grad_(False)
        dcfg = state["config"]
        points = probe_points(mixture, g, dcfg["sigma_init"], args.sigmas, args.n, args.m,
                              torch.Generator().manual_seed(args.seed))
        print(f"\n{run.name} (iteration {state['iteration']}); per σ: slope of ℓ on ℓ*, corr, head AUC")
        print("exact AUC: " + "  ".join(f"σ {s}: {roc_auc_score([1] * args.n + [0] * args.n, e.numpy()):.3f}"
                                        for s, (_, e) in points.items()))
        print(f"{'variant':>11s} {'step':>5s} " + " | ".join(f"{'σ ' + str(s):^17s}" for s in args.sigmas))
        for variant in args.variants:
            rows = retrain(variant, fake, g, mixture, dcfg, sd, args.steps, args.every, points, args.n, args.seed)
            for step, cells in rows.items():
                print(f"{variant:>11s} {step:5d} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
