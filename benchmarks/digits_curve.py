"""The classifier FD of one digits student along its training: how many iterations a recipe needs.

Trains one Uni-Instruct run on the digits tier's teacher (``results/digits/teacher``, scored with
``results/digits/classifier``: run ``dvc repro digits_classifier`` first) with ``digits.distill`` from params.yaml
and the overrides given, and prints the classifier FD of G_ema (and of G) every ``--every`` iterations: the mean
over ``--draws`` draws of 1,000 fixed latents (with balanced labels when the tier is class-conditional) and, for
G_ema, its 95% interval over the draws. Nothing is saved unless ``--json`` names a file.

    python benchmarks/digits_curve.py --iterations 6000 --every 1000 --set seed=0 divergence=jkl

The digits recipe in params.yaml was chosen on seed 0 with this script (one draw, the unconditional tier) and with
scratch probes that scored 10 draws as ``--draws 10`` does (README, "What the digits tier shows").
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from uniinstruct.config import ConfigError, from_dict, load_section
from uniinstruct.images import fid
from uniinstruct.images.classifier import classifier_features
from uniinstruct import tables
from uniinstruct.pipelines.digits import DigitsConfig, build_distiller, load_dataset, sample_labels
from uniinstruct.pipelines.digits_evaluate import load_classifier
from uniinstruct.training.distill import DistillConfig


def parse_value(text: str):
    """A command-line value as YAML reads it, and a number where YAML 1.1 leaves one as a string (``1e-3``)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def add_overrides_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE …``: overrides of the distill settings (YAML values; ``example`` shows some)."""
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help=f"overrides of the distill settings (YAML values), e.g. {example}")


def parse_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict:
    """``--set KEY=VALUE …`` as a mapping of parsed values; an item without ``=`` is a usage error."""
    if any("=" not in item for item in items):
        parser.error(f"--set expects KEY=VALUE items, got {items}")
    return {key: parse_value(value) for key, value in (item.split("=", 1) for item in items)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--every", type=int, default=200, help="iterations between two scores")
    parser.add_argument("--draws", type=int, default=10, help="draws of 1,000 latents per score (one moves it by ±0.3)")
    add_overrides_argument(parser, "lr=1e-3 use_gan=false")
    parser.add_argument("--teacher-dir", default="results/digits/teacher")
    parser.add_argument("--classifier-dir", default="results/digits/classifier")
    parser.add_argument("--json", default=None, help="write the curve here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_section(DigitsConfig, "digits")
    overrides = parse_overrides(parser, args.set)
    try:
        dcfg = from_dict(DistillConfig, {**asdict(cfg.distill), **overrides, "iterations": args.iterations},
                         "digits.distill")
    except ConfigError as err:
        parser.error(str(err))
    data = load_dataset(cfg)
    classifier = load_classifier(cfg, Path(args.classifier_dir))
    real = classifier_features(classifier, data.images)
    distiller = build_distiller(cfg, dcfg, data, Path(args.teacher_dir))
    z = torch.randn(args.draws * 1000, *data.shape, generator=torch.Generator().manual_seed(10_000))
    labels = sample_labels(cfg, data, 1000)      # None when unconditional; the same balanced labels in every draw

    def classifier_fd(net: torch.nn.Module) -> tuple[float, float]:
        """The mean over the draws and its 95% half-width (NaN for one draw)."""
        with torch.no_grad():
            samples = [distiller.generate(d, net, labels).clamp(-1, 1) for d in z.split(1000)]
        return tables.mean_interval([fid.frechet_distance(classifier_features(classifier, x), real) for x in samples])

    started, curve = time.perf_counter(), []
    print(f"{'iteration':>9s} {'images':>8s} {'cFD G_ema (95%)':>15s} {'cFD G':>7s} {'s':>6s}")
    while distiller.iteration < args.iterations:
        distiller.step()
        if distiller.iteration % args.every == 0 or distiller.iteration == args.iterations:
            (ema, half), (own, _) = classifier_fd(distiller.G_ema), classifier_fd(distiller.G)
            point = {"iteration": distiller.iteration, "images": distiller.cur_nimg, "classifier_fd_ema": ema,
                     "classifier_fd_ema_half": half, "classifier_fd": own, "draws": args.draws,
                     "seconds": time.perf_counter() - started}
            curve.append(point)
            print(f"{point['iteration']:9d} {point['images']:8d} {ema:8.2f} ± {half:4.2f} {own:7.2f} "
                  f"{point['seconds']:6.0f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": overrides, "curve": curve}, indent=1))


if __name__ == "__main__":
    main()
