"""Shared test helpers."""

import copy
import functools
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import threading
import types
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

# One torch thread per process, here and in the subprocesses tests start: on a 2-core machine two threads under
# contention run ~250x slower, and `pytest -n 2` already uses both cores.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def run_cli(*args, cwd=ROOT, env=None) -> "subprocess.CompletedProcess[str]":
    """``python -m uniinstruct.cli ARGS`` in a fresh process (the way DVC calls it), output captured as text."""
    return subprocess.run([sys.executable, "-m", "uniinstruct.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)


def run_dvc(*args, cwd=ROOT) -> "subprocess.CompletedProcess[str]":
    """``python -m dvc ARGS`` in ``cwd`` (this environment's DVC), output captured as text."""
    return subprocess.run([sys.executable, "-m", "dvc", *map(str, args)], cwd=cwd, capture_output=True, text=True)


def volatile_keys(data, where: str = "") -> list[str]:
    """The key paths in a JSON value that hold volatile provenance (``provenance.VOLATILE``, or any wall time): a
    result that other stages hash must hold none (they belong in its ``.volatile.json`` sidecar)."""
    from uniinstruct.provenance import VOLATILE

    if isinstance(data, dict):
        return [path for key, value in data.items()
                for path in ([f"{where}.{key}"] if key in VOLATILE or "wall" in key else
                             volatile_keys(value, f"{where}.{key}"))]
    if isinstance(data, list):
        return [path for i, value in enumerate(data) for path in volatile_keys(value, f"{where}[{i}]")]
    return []


@pytest.fixture
def tiny_toy_params(tmp_path):
    """Write a params.yaml whose toy section is tiny (16-wide MLPs, short runs); returns (path, toy section).
    Tests adjust ``toy["distill"]`` through the returned writer."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    toy = params["toy"]
    toy.update(hidden=16, depth=2, n_samples=400, heun_steps=4)
    toy["wide"].update(hidden=24, depth=2, divergences=["fkl"], no_gan_divergences=[], seeds=[3],
                       ceiling_iterations=[30], distill={"iterations": 20})
    toy["teacher_train"].update(iterations=60, batch=64)

    def write(**distill):
        toy["distill"].update(distill)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        return path

    return write


MODULE_SRC = "# stand-in for training/networks.py\n"


@pytest.fixture
def edm_persistence():
    """A fake ``torch_utils.persistence`` for pickling look-alikes of EDM networks; removed before any loading."""
    package, module = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the converter must never call EDM's reconstruct function")

    _reconstruct_persistent_obj.__module__ = module.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = module

    classes = {}

    def persist(obj, module_src=MODULE_SRC, **init_kwargs):
        """Make ``obj`` pickle like an EDM ``persistent_class`` instance: (reconstruct, (meta,)) with its __dict__."""
        cls = type(obj)
        if (cls, module_src) not in classes:
            def __reduce__(self):
                meta = dict(type="class", version=6, module_src=module_src, class_name=cls.__name__,
                            state=super(persistent, self).__reduce__()[2])
                return _reconstruct_persistent_obj, (meta,)

            persistent = type(cls.__name__, (cls,), {"__reduce__": __reduce__})
            classes[cls, module_src] = persistent
        obj.__class__ = classes[cls, module_src]
        obj._init_args, obj._init_kwargs = (), copy.deepcopy(init_kwargs)
        return obj

    sys.modules.update({"torch_utils": package, "torch_utils.persistence": module})
    try:
        yield persist
    finally:
        del sys.modules["torch_utils"], sys.modules["torch_utils.persistence"]


@pytest.fixture
def served(tmp_path):
    """A static file server on a free loopback port for ``tmp_path / 'www'``."""
    root = tmp_path / "www"
    root.mkdir()
    quiet = type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *args: None})
    handler = functools.partial(quiet, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def edm_pickle(net: torch.nn.Module, persist) -> bytes:
    """Pickle ``net`` as EDM does: every module of ours as a persistent object (torch containers stay plain)."""
    for module in net.modules():
        if type(module).__module__.startswith("uniinstruct"):
            persist(module)
    return pickle.dumps({"ema": net, "loss_fn": None, "augment_pipe": None, "dataset_kwargs": {}}, protocol=4)


# CIFAR-10 tarballs in the real layout (tests/test_cifar.py, tests/test_paper_pipeline.py)
NUMPY_RECONSTRUCT = np.zeros(1).__reduce__()[0]


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING) and numpy 1's global names, like the real CIFAR-10 batches."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        head = pickle.SHORT_BINSTRING + bytes([len(obj)]) if len(obj) < 256 else pickle.BINSTRING + struct.pack(
            "<i", len(obj))
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        if obj is NUMPY_RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def dumps(obj, style):
    if style == "py3":
        return pickle.dumps(obj, protocol=2)
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def make_tarball(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def cifar_members(style="py2", n=(2, 2, 2, 2, 2, 3), seed=0):
    """Batches of random HWC images as CIFAR stores them (R, G, B planes, row-major); returns members, truth."""
    rng = np.random.default_rng(seed)
    members, truth = {}, {}
    for name, count in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], n):
        hwc = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        rows = np.concatenate([hwc[..., c].reshape(count, 1024) for c in range(3)], axis=1)
        labels = rng.integers(0, 10, size=count).tolist()
        members[name] = dumps({b"batch_label": name.encode(), b"labels": labels, b"data": rows,
                               b"filenames": [b"x.png"] * count}, style)
        truth[name] = (hwc, labels)
    members["batches.meta"] = dumps({b"label_names": [b"airplane"] * 10, b"num_vis": 3072}, style)
    return members, truth
