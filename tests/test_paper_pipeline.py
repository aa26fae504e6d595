"""Each paper-tier profile's code path end to end on CPU with a tiny network: teacher (EDM-format pickle served on
127.0.0.1, converted, loaded strictly), distillation on synthetic data in the real file formats (resumed after a
"pre-emption"), and FID by the seed-block protocol."""

import hashlib
import io
import json
import sys
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, cifar_members, edm_pickle, make_tarball
from PIL import Image

from uniinstruct import reports
from uniinstruct.config import from_dict
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


def test_profiles_have_the_papers_hyper_parameters():
    cfg = from_dict(paper.PaperConfig, yaml.safe_load((ROOT / "params.yaml").read_text())["paper"], "paper")
    c10, i64 = cfg.profile("cifar10-uncond"), cfg.profile("imagenet64-cond")
    assert (c10.distill.batch, c10.distill.lr, c10.distill.glr, c10.distill.betas) == (256, 1e-5, 1e-5, [0.0, 0.999])
    assert (i64.distill.batch, i64.distill.lr, i64.distill.adam_eps) == (8192, 4e-6, 1e-6)
    for p in cfg.profiles:
        d = p.distill
        assert d.iterations * d.batch == pytest.approx(300e6, rel=1e-3)               # 300 Mimg
        assert (d.sigma_init, d.tmax, d.lsg, d.lsg_gan, d.warmup_fake_images, d.warmup_sim_images) == \
            (2.5, 800.0, 100.0, 0.01, 100_000, 200_000)
        assert p.fid.num_images == 50_000 and p.fid.seed_blocks == [0, 50_000, 100_000]
    with pytest.raises(ValueError, match="unknown paper profile 'cifar100'; valid: cifar10-uncond"):
        cfg.profile("cifar100")


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
    from uniinstruct.config import ConfigError

    params = yaml.safe_load((ROOT / "params.yaml").read_text())["paper"]
    params["profiles"][0]["augment_p"] = 0.12
    with pytest.raises(ConfigError, match=r"profiles\[0\]\.augment_p: EDM's augmentation pipeline is not implemented"):
        from_dict(paper.PaperConfig, params, "paper")
