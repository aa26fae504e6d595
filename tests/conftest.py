"""Shared test helpers."""

import copy
import functools
import pickle
import sys
import threading
import types
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_toy_params(tmp_path):
    """Write a params.yaml whose toy section is tiny (16-wide MLPs, short runs); returns (path, toy section).
    Tests adjust ``toy["distill"]`` through the returned writer."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    toy = params["toy"]
    toy.update(hidden=16, depth=2, n_samples=400, heun_steps=4)
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
