"""The image tier's scoring stage: FID and classifier FD of every sample set (with the feature classifier that
``digits.classifier_stage`` trained).

Every set (the teacher's Heun samples, each run's one-step samples) is compared with the real images, and so is
a subset of real images (``real-subset``, as many as a model's samples), whose scores are the floor that sampling
noise sets: for FID its images are disjoint from the reference ones; for the classifier FD they are part of the
reference (all real images), which makes that floor optimistic.
* ``fid``: clean-fid's FID with the FID-Inception network on ``fid.num_images`` images per set (the real set is a
  seeded subset; 0 = not computed), from the first latent draw. Small sets bias FID upwards: compare sets of the
  same size only;
* ``classifier_fd``: the Fréchet distance in the classifier's feature space between ``n_samples`` samples and all real
  images, on each of ``draws`` latent draws (``classifier_fd_draws``; the floor: as many seeded real subsets); the
  row's value is their mean, and ``classifier_fd_half`` its 95% Student-t half-width over draws. One draw of 1,000
  moves a fixed model's score by more than the differences between models (README, digits), hence several;
* ``class_min_ratio``: the rarest predicted class's share over the mean share (1 = balanced, 0 = a class is missing),
  and ``confidence``: the classifier's mean top probability (how recognisable the samples are).

Wall times stay in each run's and the teacher's volatile sidecar, not in these outputs, which other stages hash.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from uniinstruct import figures, kinds, provenance, tables
from uniinstruct.images import fid
from uniinstruct.images.classifier import Classifier, classifier_features
from uniinstruct.images.data import to_uint8
from uniinstruct.pipelines.digits import DigitsConfig, load_dataset
from uniinstruct.reports import digits as digits_reports
from uniinstruct.training import checkpoint


def load_classifier(cfg: DigitsConfig, classifier_dir: Path) -> Classifier:
    data = load_dataset(cfg)
    net = Classifier(data.shape[0], data.num_classes, cfg.classifier.width, cfg.classifier.features)
    net.load_state_dict(checkpoint.load(classifier_dir / "classifier.pt"))
    return net.eval().requires_grad_(False)


def sample_sets(samples_dir: Path, runs_dir: Path) -> list[tuple[str, Path, dict]]:
    """(name, samples.pt, description) of the teacher's Heun samples and of every run's one-step samples."""
    index = {s["name"]: s for s in json.loads((samples_dir / "samples.json").read_text())["sets"]}
    sets = [("teacher-heun", samples_dir / "teacher-heun.pt",
             {**kinds.describe_reference("teacher", index["teacher-heun"]["nfe"]), "status": "ok"})]
    for folder in sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []:
        if folder.name not in index:
            raise FileNotFoundError(f"no samples of {folder.name} in {samples_dir}: run the sample stage first")
        run = provenance.read_json(folder / "run.json")
        status = kinds.run_status(run)
        if status != "ok":
            status += f" (sampled at {index[folder.name]['iteration']})"
        sets.append((folder.name, samples_dir / f"{folder.name}.pt",
                     {**kinds.describe_run(run["config"]), "status": status}))
    return sets


def class_balance(net: Classifier, images: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        probs = torch.softmax(net(images.float()), dim=1)
    share = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double() / len(images)
    return {"class_min_ratio": float(share.min() * probs.shape[1]), "confidence": float(probs.max(1).values.mean())}


def evaluate_stage(cfg: DigitsConfig, params: dict, classifier_dir: Path, runs_dir: Path,
                   samples_dir: Path, out_dir: Path, metrics_path: Path, progress: bool = True,
                   workers: int = 2) -> list[dict]:
    """Score every sample set (Inception features in ``workers`` processes); write metrics.json, the table, the
    curves, the sample grids and the DVC summary."""
    started = time.perf_counter()
    data = load_dataset(cfg)
    clf = load_classifier(cfg, classifier_dir)
    clf_info = json.loads((classifier_dir / "classifier.json").read_text())
    n_fid = min(cfg.fid.num_images, len(data.images) // 2)
    weights = fid.find_weights(cfg.fid.inception) if n_fid else None
    perm = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(0))
    real_clf = classifier_features(clf, data.images)
    subsets = [perm] + [torch.randperm(len(data.images), generator=torch.Generator().manual_seed(d))
                        for d in range(1, cfg.draws)]       # the floor's draws; the first one past the FID images
    floor = ("real-subset", None, {**kinds.describe_reference("data", nfe=0), "status": "ok"})
    rows, curves = [], []
    sets = sample_sets(samples_dir, runs_dir)
    xs = [torch.cat([data.images[p[n_fid:n_fid + cfg.n_samples]] for p in subsets]) if path is None else
          checkpoint.load(path).clamp(-1, 1) for _, path, _ in [floor, *sets]]
    real_inception, *inception = fid.inception_features_of_sets(
        [to_uint8(data.images[perm[:n_fid]])] + [to_uint8(x[:n_fid]) for x in xs], weights, cfg.fid.batch,
        workers) if n_fid else [None] * (len(xs) + 1)
    for (name, _, info), x, feats in zip([floor, *sets], xs, inception):
        draws = x.chunk(cfg.draws)
        fds = [fid.frechet_distance(classifier_features(clf, d), real_clf) for d in draws]
        mean, half = tables.mean_interval(fds)
        rows.append({"run": name, **info, "fid_images": n_fid,
                     "fid": fid.frechet_distance(feats, real_inception) if n_fid else None,
                     "classifier_fd": mean, "classifier_fd_half": digits_reports.number(half),
                     "classifier_fd_draws": fds, "classifier_images": len(draws[0]), "draws": len(draws),
                     **class_balance(clf, x)})
        if info["kind"] in kinds.STUDENT_KINDS:
            history = json.loads((runs_dir / name / "run.json").read_text())["history"]
            curves += [{"run": name, **{k: v for k, v in h.items() if k != "phase"}} for h in history]
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for name, path, _ in sets:
        (figure_dir / f"{name}.png").write_bytes(path.with_suffix(".png").read_bytes())
    frame = pd.DataFrame(rows)
    _figures(frame, pd.DataFrame(curves), sets, figure_dir)
    tables.write_table(digits_reports.run_table(frame), out_dir / "table",
                       f"{cfg.dataset}: one-step students vs the teacher's Heun sampler"
                       + (f" (FID on {n_fid} images)" if n_fid else ""), f"tab:{cfg.dataset}")
    settings = digits_reports.summary_table(frame[frame.status == "ok"])   # a diverged run: samples, no interval
    tables.write_table(settings.drop(columns="kind"), out_dir / "summary",
                       f"{cfg.dataset}: classifier FD of each setting (mean ± 95% interval over its seeds, each the "
                       f"mean of {cfg.draws} draws of {cfg.n_samples} samples; over the draws for the teacher and the "
                       "floor of real subsets)", f"tab:{cfg.dataset}-summary")
    pd.DataFrame(curves).to_csv(out_dir / "curves.csv", index=False)
    meta = {"inception": weights.describe() if weights else None,
            "classifier_test_accuracy": clf_info["test_accuracy"],
            "fid_protocol": f"clean-fid 'clean' resize, FID-Inception pool features, {n_fid} images per set "
                            f"(real: a seeded subset of {cfg.dataset}); not comparable with 50k-sample FIDs"
                            if n_fid else "not computed (digits.fid.num_images: 0)"}
    provenance.write_json(out_dir / "metrics.json",
                          {"rows": rows, **meta, "provenance": provenance.record(params, started)})
    summary = {"draws": cfg.draws, "images_per_draw": cfg.n_samples,
               **digits_reports.summary(frame, settings, clf_info["test_accuracy"])}
    if n_fid:
        summary.update(digits_reports.fid_summary(frame, weights.sha256))
    provenance.write_json(metrics_path, summary)
    return rows


def _figures(frame: pd.DataFrame, curves: pd.DataFrame, sets: list[tuple[str, Path, dict]], out: Path) -> None:
    """Sample grids side by side (teacher first) and the training curves of every run."""
    figures.save(figures.digits_samples(frame, [(name, path.with_suffix(".png")) for name, path, _ in sets]),
                 out / "samples.png")
    if not curves.empty:
        figures.save(figures.digits_losses(curves), out / "curves.png", tight=False)
