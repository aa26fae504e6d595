"""Each paper-tier profile's code path end to end on CPU with a tiny network: teacher (EDM-format pickle served on
127.0.0.1, converted, loaded strictly), distillation on synthetic data in the real file formats (resumed after a
"pre-emption"), and FID by the seed-block protocol."""

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, cifar_members, edm_pickle, make_tarball
from PIL import Image

from uniinstruct import reports
from uniinstruct.config import ConfigError, from_dict, load_section
from uniinstruct.images import cifar
from uniinstruct.pipelines import paper
from uniinstruct.teachers.download import Artifact
from uniinstruct.teachers.prepare import TEACHERS

TINY = {"cifar10-uncond": dict(model_channels=16, num_blocks=1), "cifar10-cond": dict(model_channels=16, num_blocks=1),
        "imagenet64-cond": dict(model_channels=16, num_blocks=1, channel_mult=[1, 2], attn_resolutions=[32])}


def synthetic_data(profile: str, folder) -> str:
    """A CIFAR-10 python tarball (md5 pinned by the test) or an EDM dataset zip of 64×64 labelled images."""
    if profile.startswith("cifar10"):
        path = make_tarball(folder / "cifar-10-python.tar.gz", cifar_members("py3")[0])
        return str(path)
    rng, files, labels = np.random.default_rng(0), {}, []
    for i in range(6):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(out, format="png")
        files[f"00000/img{i:08d}.png"] = out.getvalue()
        labels.append([f"00000/img{i:08d}.png", int(rng.integers(1000))])
    path = folder / "imagenet-64x64.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in {**files, "dataset.json": json.dumps({"labels": labels}).encode()}.items():
            archive.writestr(name, data)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TEACHERS))
def test_profile_end_to_end(name, tmp_path, served, edm_persistence, monkeypatch):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["paper"]
    cfg = from_dict(paper.PaperConfig, {**params, "folder": str(tmp_path / "runs"),
                                                "results": str(tmp_path / "results")}, "paper")
    profile = cfg.profile(name)
    data = synthetic_data(name, tmp_path)
    monkeypatch.setattr(cifar, "CIFAR10_MD5", hashlib.md5(open(data, "rb").read()).hexdigest())
    profile = replace(profile, data=data,
                      distill=replace(profile.distill, batch=4, batch_gpu=2, iterations=2, warmup_fake_images=4,
                                      warmup_sim_images=4, checkpoint_every=1, log_every=1, device="cpu",
                                      precision="fp32", ema_halflife_images=16.0),
                      fid=replace(profile.fid, num_images=4, seed_blocks=[0, 4, 8], inception="packaged", batch=4))
    root, base = served
    torch.manual_seed(0)
    (root / "teacher.pkl").write_bytes(edm_pickle(TEACHERS[name].network(**TINY[name]).eval(), edm_persistence))
    for module in ("torch_utils", "torch_utils.persistence"):
        sys.modules[module] = None
    record = paper.teacher_stage(cfg, profile, False, Artifact(f"tiny-{name}", f"{base}/teacher.pkl", None),
                                 **TINY[name])
    assert record["profile"] == name and record["network_parameters"] > 0

    first = paper.distill_stage(cfg, profile, False, **TINY[name])
    assert first["status"] == "ok" and len(first["history"]) == 2
    resumed = paper.distill_stage(cfg, replace(profile, distill=replace(profile.distill, iterations=3)), False,
                                  **TINY[name])                       # after a pre-emption: more iterations
    assert [h["iteration"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][:2] == first["history"]

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(4096, 2048))
    np.savez(tmp_path / "ref.npz", mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    result = paper.fid_stage(cfg, profile, tmp_path / "ref.npz", False, **TINY[name])
    assert len(result["fids"]) == 3 and all(np.isfinite(result["fids"]))
    assert result["min"] == min(result["fids"]) and result["protocol"]["seed_blocks"] == [[0, 3], [4, 7], [8, 11]]
    assert result["protocol"]["name"].startswith("proxy") and result["iteration"] == 3
    saved = json.loads((tmp_path / "runs" / name / "fid.json").read_text())
    assert saved["protocol"]["inception"]["sha256"] and saved["provenance"]["params"]["name"] == name
    assert json.loads((tmp_path / "results" / f"{name}-jkl.json").read_text()) == saved   # what the tables read
    assert saved["images_seen"] == 3 * 4 and saved["images_target"] == 2 * 4 and saved["divergence"] == "jkl"
    table = reports.result_table(name, tmp_path / "results").set_index("model")    # the table notebooks' reader
    ours = table.loc["Uni-Instruct (JKL, F.S.)"]
    assert ours["FID (ours)"] == f"{result['min']:.2f}" and ours["status (ours)"].startswith("proxy")


# Every resolved profile, written out here rather than read from params.yaml (a golden copy of the settings before
# paper.distill was split out): the released scripts' values where digest §8 lists them, marked "§8".
SHARED = dict(divergence="jkl", estimator="exact", method="", ratio="logit", ratio_clip=[0.1, 20.0],
              use_gan=True,                                             # §8: use_gan 1
              warmup_fake_images=100_000, warmup_sim_images=200_000,   # §8: G after 100 kimg, loss after 200
              sigma_init=2.5, tmax=800.0,                               # §8: init_sigma 2.5, tmax 800
              sigma_min=0.002, sigma_max=80.0, rho=7.0, p_mean=-1.2, p_std=1.2,   # §8: EDM's values
              ls=1.0, lsd=1.0, lsg=100.0, lsg_gan=0.01,                 # §8: 1 / 1 / 100 / 0.01
              fake_steps=1,                                             # §5: the released loop alternates 1 : 1
              glr_decay=0.0,                                            # no decay (§8 lists no lr schedule)
              betas=[0.0, 0.999],                                       # §8: (0, 0.999) both
              grad_clip=1.0, ema_rampup=0.05,                           # §8 (and §5: clip_grad_value_ 1)
              seed=0, log_every=40, device="cuda",
              cudnn_benchmark=True, channels_last=False, compile="")                # §5: the released loop sets cudnn.benchmark
CIFAR = dict(ratio_n_dims=3072, batch_gpu=32, batch=256, iterations=1_171_875,   # §8: batch 256, 300 Mimg
             lr=1e-5, glr=1e-5, adam_eps=1e-8,                          # §8: lr / glr 1e-5, eps 1e-8
             ema_halflife_images=500_000.0,                             # §8: EMA half-life 0.5 Mimg
             checkpoint_every=8000, precision="fp32")                   # §8: fp16 0; ours: a checkpoint per ~2 Mimg
FID = dict(num_images=50_000, seed_blocks=[0, 50_000, 100_000], inception="auto", batch=250)
EXPECTED = {
    "cifar10-uncond": dict(data="data/cifar-10-python.tar.gz", augment_p=0.0, distill={**SHARED, **CIFAR},
                           fid={**FID, "reference": "fid-ref-cifar10-32x32"}),
    "cifar10-cond": dict(data="data/cifar-10-python.tar.gz", augment_p=0.0, distill={**SHARED, **CIFAR},
                         fid={**FID, "reference": "fid-ref-cifar10-32x32"}),
    "imagenet64-cond": dict(data="data/imagenet-64x64.zip", augment_p=0.0,
                            fid={**FID, "reference": "fid-ref-imagenet-64x64"},
                            distill={**SHARED, "ratio_n_dims": 12288, "batch_gpu": 32, "batch": 8192,  # §8: 8192 (batch_gpu 8)
                                     "iterations": 36_621, "lr": 4e-6, "glr": 4e-6,   # §8: 300 Mimg, 4e-6 / 4e-6
                                     "adam_eps": 1e-6, "ema_halflife_images": 2_000_000.0,   # §8: 1e-6, 2 Mimg
                                     "checkpoint_every": 250, "precision": "bf16"}),  # §8: fp16 (bf16 stands in)
}


def paper_params() -> dict:
    """The paper section with every block its own object (the CIFAR-10 profiles share theirs through YAML anchors,
    which the loader turns into one dict: editing one profile's copy here must not edit the other's)."""
    return json.loads(json.dumps(yaml.safe_load((ROOT / "params.yaml").read_text())["paper"]))


def load_paper(tmp_path, section: dict) -> paper.PaperConfig:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "paper": section}))
    return load_section(paper.PaperConfig, "paper", tmp_path / "params.yaml")


def test_profiles_have_the_papers_hyper_parameters():
    cfg = load_section(paper.PaperConfig, "paper", ROOT / "params.yaml")
    assert [p.name for p in cfg.profiles] == list(EXPECTED)
    for p in cfg.profiles:
        assert asdict(p) == {"name": p.name, **EXPECTED[p.name]}, p.name
        assert {k: type(v) for k, v in asdict(p.distill).items()} == \
            {k: type(v) for k, v in EXPECTED[p.name]["distill"].items()}, p.name       # 1e5 is no float
        assert p.distill.iterations * p.distill.batch == pytest.approx(300e6, rel=1e-3)   # 300 Mimg
    with pytest.raises(ValueError, match="unknown paper profile 'cifar100'; valid: cifar10-uncond"):
        cfg.profile("cifar100")


def test_profiles_inherit_paper_distill_and_hold_only_their_own_keys():
    """Each profile's distill is paper.distill (the top-level released settings with the GPU ones) updated with its
    own keys, which are exactly the keys on which the profiles differ."""
    params = paper_params()
    cfg = from_dict(paper.PaperConfig, params, "paper")
    shared, own = params["distill"], [p["distill"] for p in params["profiles"]]
    for p, keys in zip(cfg.profiles, own):
        merged = dict(shared)
        merged.update(keys)
        assert asdict(p.distill) == merged
    resolved = [asdict(p.distill) for p in cfg.profiles]
    differ = {k for k in resolved[0] if len({json.dumps(r[k]) for r in resolved}) > 1}
    assert all(set(keys) == differ for keys in own), differ
    released = yaml.safe_load((ROOT / "params.yaml").read_text())["distill"]
    assert {k: v for k, v in shared.items() if released[k] != v} == {
        "device": "cuda", "batch_gpu": 32, "cudnn_benchmark": True}
    assert cfg.distill == shared                      # the shared block is kept as written (asdict re-reads the same)
    assert from_dict(paper.PaperConfig, asdict(cfg), "paper") == cfg     # the table notebooks' round trip


def test_a_profiles_own_key_replaces_the_shared_one(tmp_path):
    params = paper_params()
    params["profiles"][1]["distill"]["divergence"] = "fkl"
    cfg = load_paper(tmp_path, params)
    assert [p.distill.divergence for p in cfg.profiles] == ["jkl", "fkl", "jkl"]


@pytest.mark.parametrize("where, key, value, message", [
    (2, "lrr", 1e-5, r"params\.yaml: paper\.profiles\[2\]\.distill\.lrr: unknown key; valid keys: .*\blr\b"),
    (None, "lrr", 1e-5, r"params\.yaml: paper\.distill\.lrr: unknown key; valid keys: "),
    (0, "lr", 0.0, r"params\.yaml: paper\.profiles\[0\]\.distill\.lr: must be > 0, got 0\.0"),
    (None, "tmax", 2000.0, r"params\.yaml: paper\.distill\.tmax: must be in \(0, 1000\].* \(inherited by "
                           r"paper\.profiles\[0\]\.distill\)"),
    (None, "lsg", "many", r"params\.yaml: paper\.distill\.lsg: expected a finite number, got 'many' \(inherited by "),
    (None, "seed", None, r"params\.yaml: paper\.profiles\[0\]\.distill\.seed: missing key; params\.yaml records "
                         r"every setting"),
])
def test_bad_inherited_keys_are_refused_naming_their_path(tmp_path, where, key, value, message):
    """An unknown key, shared or a profile's own; a range or type check on the merged profile (a bad shared value
    named where it is written); a key that neither the profile nor paper.distill gives (value None: deleted)."""
    params = paper_params()
    block = params["distill"] if where is None else params["profiles"][where]["distill"]
    if value is None:
        del block[key]
    else:
        block[key] = value
    with pytest.raises(ConfigError, match=message):
        load_paper(tmp_path, params)


def test_seeded_inputs_do_not_depend_on_the_batching():
    from uniinstruct.images.fid_protocol import seeded_inputs

    z, labels = seeded_inputs(range(10, 16), (3, 4, 4), 10)
    z2, labels2 = seeded_inputs(range(13, 16), (3, 4, 4), 10)
    assert torch.equal(z[3:], z2) and torch.equal(labels[3:], labels2)
    assert labels.sum(1).eq(1).all() and z.shape == (6, 3, 4, 4)


def test_reference_stats_are_checked(tmp_path):
    from uniinstruct.images.fid_protocol import reference_stats

    np.savez(tmp_path / "bad.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="missing sigma"):
        reference_stats(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(ValueError, match="do not match"):
        reference_stats(tmp_path / "shape.npz")


def test_augmentation_is_refused_until_implemented():
    params = paper_params()
    params["profiles"][0]["augment_p"] = 0.12
    with pytest.raises(ConfigError, match=r"profiles\[0\]\.augment_p: EDM's augmentation pipeline is not implemented"):
        from_dict(paper.PaperConfig, params, "paper")


@pytest.mark.slow
def test_gpu_check_smoke_run_on_cpu(tmp_path):
    """benchmarks/gpu_check.py --tiny on the CPU, the checks that run there in seconds (precision, batch_fill and
    layout time bf16 networks, slow on a CPU): resume with dropout exact, accumulation rounds with dropout equal to one
    pass up to float32 round-off (1e-5 relative; measured ~1e-6), the CPU against itself exact, bf16 losses within the
    check's tolerance of fp32, the fused attention accepted, a JSON with every figure."""
    out = tmp_path / "gpu_check.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu",
                          "--checks", "environment", "resume_with_dropout", "device_vs_cpu", "bf16_agreement",
                          "attention", "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["environment"]["device"] == "cpu" and report["environment"]["tiny"]
    dropout = report["resume_with_dropout"]
    assert dropout["max_parameter_difference"] == 0.0
    assert set(dropout["accumulation_relative_gradient_difference"]) == {"generator", "fake"}
    assert all(d <= 1e-5 for d in dropout["accumulation_relative_gradient_difference"].values())
    assert report["attention"]["MATH"] == "ok" and "FLASH_ATTENTION" in report["attention"]
    assert report["device_vs_cpu"]["relative_difference"] == dict.fromkeys(
        ["generator_loss", "fake_loss", "generator_grad", "fake_grad"], 0.0)
    bf16 = report["bf16_agreement"]
    assert bf16["within_tolerance"] and set(bf16["relative_difference"]) == {"fake_score", "discriminator",
                                                                             "generator", "generator_gan"}
