"""EDM pickles read without running their code: exact state_dicts from look-alikes, refusal of anything else."""

import io
import json
import os
import pickle
import re
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch

from uniinstruct import cli
from uniinstruct.teachers.safe_pickle import (PersistentStub, UnsafePickleError, convert, extract_config,
                                              extract_state_dict, load_edm_pickle)

class Conv(torch.nn.Module):
    def __init__(self, cin, cout, down=False):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = None
        self.register_buffer("resample_filter", torch.ones(1, 1, 2, 2) / 4 if down else None)
        self.register_buffer("scratch", torch.zeros(3), persistent=False)


class Net(torch.nn.Module):
    def __init__(self, channels, label_dim):
        super().__init__()
        self.label_dim = label_dim
        self.map_label = torch.nn.Linear(label_dim, channels)           # a standard torch module
        self.enc = torch.nn.ModuleDict({"8x8_conv": Conv(3, channels), "8x8_down": Conv(channels, channels, True)})
        self.register_buffer("freqs", torch.randn(4))


class Precond(torch.nn.Module):
    def __init__(self, img_resolution, img_channels, label_dim=0, sigma_data=0.5, **model_kwargs):
        super().__init__()
        self.img_resolution, self.sigma_data, self.sigma_max = img_resolution, sigma_data, float("inf")
        self.model = Net(label_dim=label_dim, **model_kwargs)


def build_net(persist):
    """A Precond around a Net, every class but the torch ones persistent, as EDM builds EDMPrecond(SongUNet)."""
    kwargs = dict(label_dim=10, channels=4)
    net = Precond(img_resolution=8, img_channels=3, **kwargs)
    for conv in net.model.enc.values():
        persist(conv, cin=conv.weight.shape[1], cout=conv.weight.shape[0], down=conv.resample_filter is not None)
    persist(net.model, **kwargs, channel_mult=(2, 2))
    return persist(net, img_resolution=8, img_channels=3, **kwargs)


def write_pickle(path, obj, protocol=4):
    """Pickle ``obj`` as EDM's training loop does: plain pickle.dump of a dict (protocol 4 on Python >= 3.8)."""
    data = {"ema": obj, "augment_pipe": None, "dataset_kwargs": {"xflip": False}}
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def assert_nothing_written(tmp_path, *names):
    for name in names:
        assert not (tmp_path / name).exists(), name


@pytest.mark.parametrize("protocol", [2, 4])
def test_convert_reproduces_state_dict_without_the_module(tmp_path, edm_persistence, protocol):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_net(edm_persistence)
    src = write_pickle(tmp_path / "edm.pkl", net, protocol)
    expected = net.state_dict()
    del sys.modules["torch_utils"], sys.modules["torch_utils.persistence"]
    sys.modules.update({"torch_utils": None, "torch_utils.persistence": None})           # import would now fail

    info = convert(src, tmp_path / "teacher.pt")
    got = torch.load(tmp_path / "teacher.pt", weights_only=True)
    assert list(got) == list(expected) == ["model.freqs", "model.map_label.weight", "model.map_label.bias",
                                           "model.enc.8x8_conv.weight", "model.enc.8x8_down.weight",
                                           "model.enc.8x8_down.resample_filter"]
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    meta = json.loads((tmp_path / "teacher.json").read_text())
    assert meta == info
    assert meta["num_parameters"] == sum(p.numel() for p in net.parameters())
    assert meta["class_names"] == ["Conv", "Net", "Precond", "torch.nn.modules.container.ModuleDict",
                                   "torch.nn.modules.linear.Linear"]
    config = meta["config"]
    assert config["class_name"] == "Precond" and config["init_kwargs"]["label_dim"] == 10
    assert config["attributes"] == {"img_resolution": 8, "sigma_data": 0.5, "sigma_max": float("inf")}
    assert config["modules"]["model"]["init_kwargs"] == {"label_dim": 10, "channels": 4, "channel_mult": [2, 2]}
    assert config["modules"]["model"]["attributes"] == {"label_dim": 10} and "modules" not in config["modules"]["model"]
    assert len(meta["source_sha256"]) == 64


def test_stubs_are_inert(tmp_path, edm_persistence):
    created = tmp_path / "exec-ran"
    src_code = f"open({str(created)!r}, 'w').write('module_src was executed')\n"
    obj = edm_persistence(torch.nn.Identity(), module_src=src_code)
    src = write_pickle(tmp_path / "edm.pkl", obj)
    del sys.modules["torch_utils"], sys.modules["torch_utils.persistence"]
    sys.modules.update({"torch_utils": None, "torch_utils.persistence": None})
    data = load_edm_pickle(src)
    stub = data["ema"]
    assert isinstance(stub, PersistentStub) and stub.class_name == "Identity" and not created.exists()
    assert extract_state_dict(stub) == {} and extract_config(stub)["modules"] == {}
    convert(src, tmp_path / "identity.pt")
    assert not created.exists()


class Reduce:
    """An object that pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_refuses_os_system_and_writes_nothing(tmp_path):
    pwned = tmp_path / "pwned"
    src = write_pickle(tmp_path / "evil.pkl", Reduce(os.system, f"touch {pwned}"))
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system"):
        convert(src, tmp_path / "out.pt")
    assert_nothing_written(tmp_path, "pwned", "out.pt", "out.json")
    assert [p.name for p in tmp_path.iterdir()] == ["evil.pkl"]


@pytest.mark.parametrize("func, args, name", [
    (eval, ("__import__('os').system('touch PWNED')",), "builtins.eval"),
    (subprocess.Popen, (["touch", "PWNED"],), "subprocess.Popen"),
    (torch.load, ("PWNED",), "torch.serialization.load"),
    (getattr, ("", "join"), "builtins.getattr"),
])
def test_refuses_other_globals(tmp_path, func, args, name):
    src = write_pickle(tmp_path / "evil.pkl", Reduce(func, *args))
    with pytest.raises(UnsafePickleError, match=name.replace(".", r"\.")):
        convert(src, tmp_path / "out.pt")
    assert_nothing_written(tmp_path, "PWNED", "out.pt", "out.json")


@pytest.mark.parametrize("module, name", [("torch_utils.persistence", "_src_to_module"),
                                          ("torch.nn.modules", "__builtins__.exec"), ("posix", "system")])
def test_refuses_hand_written_globals(tmp_path, module, name):
    src = tmp_path / "evil.pkl"
    src.write_bytes(f"c{module}\n{name}\n(S'x'\ntR.".encode())                   # protocol 0: GLOBAL, TUPLE, REDUCE
    with pytest.raises(UnsafePickleError, match="refused global"):
        load_edm_pickle(src)


@pytest.mark.parametrize("zip_format", [False, True])
def test_storage_bytes_in_either_torch_save_format(tmp_path, zip_format):
    values = torch.arange(6.0)
    storage = torch.storage.TypedStorage(wrap_storage=values.untyped_storage(), dtype=values.dtype, _internal=True)
    buffer = io.BytesIO()
    torch.save(storage, buffer, _use_new_zipfile_serialization=zip_format)
    tensor = Reduce(torch._utils._rebuild_tensor_v2, Reduce(torch.storage._load_from_bytes, buffer.getvalue()), 1,
                    (2, 2), (2, 1), False, OrderedDict())
    (tmp_path / "t.pkl").write_bytes(pickle.dumps({"t": tensor}))
    assert torch.equal(load_edm_pickle(tmp_path / "t.pkl")["t"], values[1:5].reshape(2, 2))


def test_torch_module_stub_takes_no_constructor_arguments(tmp_path):
    src = tmp_path / "evil.pkl"
    src.write_bytes(b"ctorch.nn.modules.linear\nLinear\n(I1\nI1\ntR.")
    with pytest.raises(ValueError, match="refused constructor arguments"):
        load_edm_pickle(src)


def test_clear_errors(tmp_path, edm_persistence):
    with pytest.raises(FileNotFoundError, match="not found"):
        convert(tmp_path / "missing.pkl", tmp_path / "out.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match="torch.save"):
        convert(tmp_path / "state.pt", tmp_path / "out.pt")
    src = write_pickle(tmp_path / "edm.pkl", edm_persistence(torch.nn.Identity()))
    with pytest.raises(ValueError, match=r"no network 'G_ema' \(found: ema, augment_pipe, dataset_kwargs\)"):
        convert(src, tmp_path / "out.pt", key="G_ema")
    with pytest.raises(ValueError, match="must not end in .json"):
        convert(src, tmp_path / "out.json")
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    with pytest.raises(ValueError, match="not a readable pickle"):
        convert(tmp_path / "junk.pkl", tmp_path / "out.pt")
    assert_nothing_written(tmp_path, "out.pt", "out.json")


def test_cli_refuses_unsafe_pickle(tmp_path, capsys):
    src = write_pickle(tmp_path / "evil.pkl", Reduce(os.system, f"touch {tmp_path / 'pwned'}"))
    assert cli.main(["teacher", "convert", str(src), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uniinstruct: error: ") and re.search(r"refused global (posix|nt|os)\.system", err)
    assert_nothing_written(tmp_path, "pwned", "out.pt", "out.json")


def test_cli_converts(tmp_path, capsys, edm_persistence):
    src = write_pickle(tmp_path / "edm.pkl", edm_persistence(torch.nn.Linear(2, 3), in_features=2, out_features=3))
    assert cli.main(["teacher", "convert", str(src), str(tmp_path / "out.pt"), "--key", "dataset_kwargs"]) == 2
    assert "'dataset_kwargs' is a dict, not an EDM persistent network" in capsys.readouterr().err
    assert cli.main(["teacher", "convert", str(src), str(tmp_path / "out.pt")]) == 0
    assert "9 parameters" in capsys.readouterr().out
    assert set(torch.load(tmp_path / "out.pt", weights_only=True)) == {"weight", "bias"}
