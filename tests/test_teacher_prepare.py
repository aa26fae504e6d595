"""The paper tier's teacher stage end to end on tiny networks: an EDM-format pickle of each profile's architecture,
served over HTTP on 127.0.0.1, downloaded, converted without running its code, and loaded with strict=True."""

import sys

import pytest
import torch
from conftest import edm_pickle

from uniinstruct.teachers.download import Artifact
from uniinstruct.teachers.prepare import TEACHERS, load_strict, prepare_teacher

TINY = {"cifar10-uncond": dict(model_channels=16, num_blocks=1), "cifar10-cond": dict(model_channels=16, num_blocks=1),
        "imagenet64-cond": dict(model_channels=16, num_blocks=1, channel_mult=[1, 2], attn_resolutions=[32])}


@pytest.mark.parametrize("profile", list(TEACHERS))
def test_download_convert_and_strict_load(profile, served, tmp_path, edm_persistence):
    root, base = served
    torch.manual_seed(0)
    original = TEACHERS[profile].network(**TINY[profile]).eval()
    expected = {k: v.clone() for k, v in original.state_dict().items()}
    (root / "teacher.pkl").write_bytes(edm_pickle(original, edm_persistence))
    for name in ("torch_utils", "torch_utils.persistence"):      # nothing from the pickle can be imported now
        sys.modules[name] = None
    artifact = Artifact(f"tiny-{profile}", f"{base}/teacher.pkl", None)
    net, record = prepare_teacher(profile, tmp_path / "teachers", artifact, progress=False, **TINY[profile])
    assert record["profile"] == profile and record["class_name"] == "EDMPrecondNet"
    assert all(torch.equal(net.state_dict()[k], v) for k, v in expected.items())
    x, sigma = torch.randn(2, 3, original.img_resolution, original.img_resolution), torch.tensor([0.5, 5.0])
    labels = torch.eye(original.label_dim)[[0, 1]] if original.label_dim else None
    with torch.no_grad():
        torch.testing.assert_close(net(x, sigma, labels), original(x, sigma, labels), rtol=0, atol=0)
    (root / "teacher.pkl").unlink()                                # a second call needs no server and no conversion
    again, record2 = prepare_teacher(profile, tmp_path / "teachers", artifact, progress=False, **TINY[profile])
    assert record2["source_sha256"] == record["source_sha256"]


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    small = TEACHERS["cifar10-uncond"].network(**TINY["cifar10-uncond"])
    torch.save(small.state_dict(), tmp_path / "small.pt")
    with pytest.raises(ValueError, match=r"does not match the network: missing \[.*\] \(\d+\), unexpected"):
        load_strict(TEACHERS["cifar10-uncond"].network(model_channels=16, num_blocks=2), tmp_path / "small.pt")
    with pytest.raises(ValueError, match="unknown teacher profile 'cifar100'; valid: cifar10-uncond"):
        prepare_teacher("cifar100", tmp_path)


def test_cli_prepare_reports_errors_with_exit_code_2(tmp_path, capsys):
    from uniinstruct import cli

    assert cli.main(["teacher", "prepare", "cifar100", "--dir", str(tmp_path)]) == 2
    assert "unknown teacher profile 'cifar100'" in capsys.readouterr().err
