"""Does the digits students' discriminator tell real digits from generated ones? Its accuracy by noise level.

The GAN term is the only part of the Uni-Instruct loss that sees real data, and the density ratio r = exp(ℓ) that
weights every divergence comes from the same discriminator head (on the fake score's encoder). This script loads a
run's final checkpoint (the fake score with its head, and G_ema), draws ``--n`` real digits (with their labels) and
``--n`` one-step samples (balanced labels), adds the same Gaussian noise of each σ of ``--sigmas`` to both, and prints
per σ the head's mean logit on each set (mean over its logit map), its ROC AUC for real against generated (0.5 = no
better than chance; scikit-learn's ``roc_auc_score``), the generator's GAN loss BCE(ℓ(x_g), 1) (ln 2 = 0.693 when
ℓ = 0), and the share of generated samples whose ratio exp(ℓ) leaves [0.5, 2].

Then, as a yardstick for what any per-sample discriminator could find, it trains off-the-shelf classifiers to tell all
real digits from as many samples (G_ema's with the real digits' labels, and the teacher's Heun samples of
``--samples``) and prints their 5-fold cross-validated ROC AUC: gradient-boosted trees on the pixels at σ = 0 (where
the real digits' 17 grey levels are a give-away) and at σ = 0.1, and a logistic regression on the features of the
classifier that scores the tier.

    python benchmarks/digits_discriminator.py --runs runs/digits/ui-rkl-exact-s3 runs/digits/ui-rkl-exact-s4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from torch.nn.functional import softplus

from uniinstruct.config import ConfigError, load_section
from uniinstruct.images.classifier import classifier_features
from uniinstruct.images.data import one_hot
from uniinstruct.pipelines.digits import DigitsConfig, build_network, load_dataset, sample_labels
from uniinstruct.pipelines.digits_evaluate import load_classifier
from uniinstruct.sampling import one_step_sample
from uniinstruct.training import checkpoint


@torch.no_grad()
def logits(net, x: torch.Tensor, sigma: float, labels: torch.Tensor | None) -> torch.Tensor:
    """The head's per-sample logit: the mean of its logit map."""
    s = torch.full((len(x),), sigma)
    _, ell = net(x, s, return_logits=True) if labels is None else net(x, s, labels, return_logits=True)
    return ell.flatten(1).mean(1)


def separability(real: torch.Tensor, other: torch.Tensor, make) -> float:
    """5-fold cross-validated ROC AUC of the classifier ``make()`` for ``real`` (rows) against ``other``."""
    x = torch.cat([real.flatten(1), other.flatten(1)]).numpy()
    y = np.r_[np.ones(len(real)), np.zeros(len(other))]
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return roc_auc_score(y, cross_val_predict(make(), x, y, cv=folds, method="predict_proba")[:, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="run folders with a checkpoint.pt")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--n", type=int, default=1000, help="real and generated samples per σ")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", default="results/digits/samples", help="the digits_sample stage's folder")
    parser.add_argument("--classifier-dir", default="results/digits/classifier")
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
    z = torch.randn(args.n, *data.shape, generator=gen)
    noise = torch.randn(args.n, *data.shape, generator=gen)
    everyone = len(data.images)        # the yardstick: every real digit against as many samples
    z_all, noise_all = torch.randn(everyone, *data.shape, generator=gen), torch.randn(everyone, *data.shape,
                                                                                       generator=gen)
    c_all = one_hot(data.labels, data.num_classes) if cfg.conditional else None
    teacher = checkpoint.load(Path(args.samples) / "teacher-heun.pt")[:everyone]
    sets = {"teacher, 18-step Heun": teacher}
    for run in map(Path, args.runs):
        path = run / "checkpoint.pt"
        if not path.exists():
            parser.error(f"{path}: no checkpoint")
        state = checkpoint.load(path)
        fake, g_ema = build_network(cfg, data).eval(), build_network(cfg, data).eval()
        fake.load_state_dict(state["fake"])
        g_ema.load_state_dict(state["generator_ema"])
        sigma_init = state["config"]["sigma_init"]
        with torch.no_grad():
            x_gen = one_step_sample(g_ema, z, sigma_init, c_gen)
            sets[f"{run.name} G_ema"] = one_step_sample(g_ema, z_all, sigma_init, c_all)
        print(f"\n{run.name} (iteration {state['iteration']})")
        print(f"{'σ':>6s} {'ℓ real':>8s} {'ℓ gen':>8s} {'AUC':>6s} {'BCE(ℓ_g,1)':>11s} {'r∉[½,2]':>8s}")
        for sigma in args.sigmas:
            l_real = logits(fake, x_real + sigma * noise, sigma, c_real)
            l_gen = logits(fake, x_gen + sigma * noise, sigma, c_gen)
            auc = roc_auc_score([1] * args.n + [0] * args.n, torch.cat([l_real, l_gen]).numpy())
            far = ((l_gen.exp() < 0.5) | (l_gen.exp() > 2.0)).float().mean()
            print(f"{sigma:6.2f} {l_real.mean():8.3f} {l_gen.mean():8.3f} {auc:6.3f} "
                  f"{softplus(-l_gen).mean():11.3f} {far:8.3f}")
    clf = load_classifier(cfg, Path(args.classifier_dir))
    real_features = torch.as_tensor(classifier_features(clf, data.images))
    print(f"\nreal digits ({everyone}) against as many samples of: 5-fold ROC AUC (0.5 = indistinguishable)")
    print(f"{'samples':34s} {'trees, σ=0':>10s} {'trees, σ=0.1':>12s} {'logistic, features':>18s}")
    for name, x in sets.items():
        trees = [separability(data.images + s * noise_all, x + s * noise_all, HistGradientBoostingClassifier)
                 for s in (0.0, 0.1)]
        features = separability(real_features, torch.as_tensor(classifier_features(clf, x)),
                                lambda: LogisticRegression(max_iter=5000))
        print(f"{name:34s} {trees[0]:10.3f} {trees[1]:12.3f} {features:18.3f}")


if __name__ == "__main__":
    main()
