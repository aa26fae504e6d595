"""Read EDM network pickles without running their code, and convert them to a plain state_dict plus JSON.

EDM (NVlabs/edm) saves ``network-snapshot-*.pkl`` with plain ``pickle.dump`` of a dict
``{ema, loss_fn, augment_pipe, dataset_kwargs}``. Every network class is decorated with
``torch_utils.persistence.persistent_class``, so each instance pickles as
``_reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src, class_name, state}``: the whole source
of its Python module (which EDM ``exec``s on load) and the instance's ``__dict__`` (``_parameters``, ``_buffers``,
``_modules``, ``_non_persistent_buffers_set``, ``_init_args``, ``_init_kwargs``, plain attributes). Tensors pickle
as ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` over storages that pickle as
``torch.storage._load_from_bytes(<legacy torch.save bytes>)``. Standard containers such as ``torch.nn.ModuleDict``
(``SongUNet.enc``/``.dec``) pickle by class reference plus their ``__dict__``.

:class:`RestrictedUnpickler` resolves only the globals of an explicit allow-list and raises
:class:`UnsafePickleError` for anything else. The EDM list maps ``_reconstruct_persistent_obj`` to an inert
:class:`PersistentStub` (``module_src`` is hashed, never executed), any ``torch.nn.modules.*`` class to an inert
:class:`TorchModuleStub` (never imported), and storages to ``torch.load(..., weights_only=True)``. Pickles written
with protocol 0 or 1 (which need ``copyreg._reconstructor``) are refused; EDM's use protocol 4 (Python ≥ 3.8).
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import io
import json
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping

import numpy as np
import torch

from uniinstruct.teachers.download import sha256_file
from uniinstruct.provenance import write_atomic
from uniinstruct.training.checkpoint import save_atomic


class UnsafePickleError(ValueError):
    """A pickle asked for a global that is not on the allow-list (or tried to alter one)."""


class _Guarded:
    """An allowed callable as handed to the unpickler: it refuses pickle's BUILD, so no pickle can alter it for
    the next one."""

    __slots__ = ("_name", "_fn")

    def __init__(self, name: str, fn: Callable[..., Any]):
        self._name, self._fn = name, fn

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"the pickle tries to modify the allowed global {self._name}")

    def __repr__(self) -> str:
        return f"<guarded {self._name}>"


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 names (``__builtin__.set``) as Python 3's, the renaming pickle's own find_class does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``allowed`` ({(module, name): object})."""

    def __init__(self, file: IO[bytes], allowed: Mapping[tuple[str, str], Any], **kwargs: Any):
        super().__init__(file, **kwargs)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        """The allowed object for ``module.name``; anything else raises UnsafePickleError."""
        module, name = _py3_name(module, name)
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refused global {module}.{name}: not on the allow-list of safe globals") from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids (only torch.save's own format uses them; that format goes through torch.load)."""
        raise UnsafePickleError(f"refused persistent id {pid!r}")


def restricted_load(file: IO[bytes], allowed: Mapping[tuple[str, str], Any], what: str,
                    unpickler: type[RestrictedUnpickler] = RestrictedUnpickler, encoding: str = "ASCII") -> Any:
    """Unpickle ``file`` with only ``allowed`` globals; malformed data raise ValueError naming ``what``."""
    try:
        return unpickler(file, allowed, encoding=encoding).load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{what}: {err}") from None
    except Exception as err:                                   # any decoding failure of untrusted bytes
        raise ValueError(f"{what}: not a readable pickle ({type(err).__name__}: {err})") from err


# --- numpy arrays (CIFAR-10 batches) --------------------------------------------------------------------------------

def _np_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype(spec, align, copy)`` for a type string; object dtypes are refused."""
    if not isinstance(spec, (str, bytes)):
        raise UnsafePickleError(f"numpy.dtype: expected a type string, got {type(spec).__name__}")
    dtype = np.dtype(spec.decode("latin1") if isinstance(spec, bytes) else spec, bool(align), bool(copy))
    if dtype.hasobject:
        raise UnsafePickleError("numpy.dtype: object dtypes are refused")
    return dtype


def _np_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """The empty array that ``ndarray.__setstate__`` then fills; only plain ndarrays."""
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"numpy _reconstruct: refused array subtype {subtype!r}")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) for n in shape):
        raise UnsafePickleError(f"numpy _reconstruct: bad shape {shape!r}")
    return np.ndarray(shape, dtype=_np_dtype(typecode))


def _np_scalar(dtype: Any, data: Any = None) -> np.generic:
    """A numpy scalar from its raw bytes (``numpy.core.multiarray.scalar``), for non-object dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, str)):
        raise UnsafePickleError("numpy scalar: expected a non-object dtype and its raw bytes")
    raw = data.encode("latin1") if isinstance(data, str) else data
    if len(raw) != dtype.itemsize:
        raise ValueError(f"numpy scalar: {len(raw)} bytes for a {dtype} of {dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype)[0]


def _latin1_bytes(text: Any, encoding: Any) -> bytes:
    """``_codecs.encode(text, 'latin1')``: how Python 3 writes bytes at pickle protocol 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode: only (str, 'latin1') is allowed")
    return text.encode("latin1")


NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _Guarded("numpy _reconstruct", _np_reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): _Guarded("numpy _reconstruct", _np_reconstruct),
    ("numpy.core.multiarray", "scalar"): _Guarded("numpy scalar", _np_scalar),
    ("numpy._core.multiarray", "scalar"): _Guarded("numpy scalar", _np_scalar),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _Guarded("numpy.dtype", _np_dtype),
    ("_codecs", "encode"): _Guarded("_codecs.encode", _latin1_bytes),
}


# --- torch tensors and EDM's persistent objects ---------------------------------------------------------------------

def _no_hooks(hooks: Any, where: str) -> None:
    if hooks is not None and not (isinstance(hooks, dict) and not hooks):
        raise UnsafePickleError(f"{where}: refused non-empty backward hooks")


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any,
                    metadata: Any = None) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` after checking every argument's type."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"_rebuild_tensor_v2: expected a typed storage, got {type(storage).__name__}")
    ints = isinstance(offset, int) and all(isinstance(v, int) for v in (*size, *stride))
    if not (ints and isinstance(size, tuple) and isinstance(stride, tuple) and isinstance(requires_grad, bool)):
        raise UnsafePickleError("_rebuild_tensor_v2: malformed offset, size, stride or requires_grad")
    if metadata:
        raise UnsafePickleError("_rebuild_tensor_v2: refused tensor metadata")
    _no_hooks(hooks, "_rebuild_tensor_v2")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any) -> torch.nn.Parameter:
    """``torch._utils._rebuild_parameter`` for a tensor and a flag."""
    if not isinstance(data, torch.Tensor) or not isinstance(requires_grad, bool):
        raise UnsafePickleError("_rebuild_parameter: expected (tensor, bool, hooks)")
    _no_hooks(hooks, "_rebuild_parameter")
    return torch.nn.Parameter(data, requires_grad)


def _load_storage(data: Any) -> torch.storage.TypedStorage:
    """``torch.storage._load_from_bytes`` (legacy or zip torch.save bytes) through ``torch.load(weights_only=True)``."""
    if not isinstance(data, bytes):
        raise UnsafePickleError(f"_load_from_bytes: expected bytes, got {type(data).__name__}")
    storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafePickleError(f"_load_from_bytes: expected a typed storage, got {type(storage).__name__}")
    return storage


def _state_dict_of(state: Any, where: str) -> dict[str, Any]:
    """A pickled ``__dict__`` (or ``(dict, slots)`` pair) as one dict with string keys."""
    if isinstance(state, tuple) and len(state) == 2:
        state = {**(state[0] or {}), **(state[1] or {})}
    if state is None:
        state = {}
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"{where}: expected an attribute dict, got {type(state).__name__}")
    return state


@dataclass
class PersistentStub:
    """Inert stand-in for an EDM persistent object: its class name, the hash of its module source, its state."""

    class_name: str
    module_sha256: str
    version: int
    state: dict[str, Any]


def _reconstruct_persistent(meta: Any) -> PersistentStub:
    """Our ``torch_utils.persistence._reconstruct_persistent_obj``: records ``meta``, never execs module_src."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise ValueError("_reconstruct_persistent_obj: expected meta = {type: 'class', ...}")
    src, name, version = meta.get("module_src"), meta.get("class_name"), meta.get("version")
    if not (isinstance(src, str) and isinstance(name, str) and isinstance(version, int)):
        raise ValueError("_reconstruct_persistent_obj: meta needs str module_src, str class_name, int version")
    return PersistentStub(name, hashlib.sha256(src.encode()).hexdigest(), version,
                          _state_dict_of(meta.get("state"), f"persistent {name}"))


class TorchModuleStub:
    """Inert stand-in for a standard ``torch.nn`` module (e.g. ModuleDict): records the state pickle gives it."""

    class_name = "torch.nn.modules.module.Module"
    state: dict[str, Any]

    def __new__(cls, *args: Any) -> "TorchModuleStub":
        if args:
            raise UnsafePickleError(f"{cls.class_name}: refused constructor arguments")
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = _state_dict_of(state, self.class_name)


_TORCH_MODULE = re.compile(r"torch\.nn\.modules(\.[A-Za-z_]\w*)+")
_STUB_CLASSES: dict[str, type[TorchModuleStub]] = {}


def _torch_module_stub(module: str, name: str) -> type[TorchModuleStub]:
    """A TorchModuleStub subclass named after ``module.name`` (the real class is never imported)."""
    qualified = f"{module}.{name}"
    if qualified not in _STUB_CLASSES:
        _STUB_CLASSES[qualified] = type(name, (TorchModuleStub,), {"class_name": qualified})
    return _STUB_CLASSES[qualified]


EDM_GLOBALS: dict[tuple[str, str], Any] = {
    **NUMPY_GLOBALS,
    ("torch._utils", "_rebuild_tensor_v2"): _Guarded("_rebuild_tensor_v2", _rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Guarded("_rebuild_parameter", _rebuild_parameter),
    ("torch.storage", "_load_from_bytes"): _Guarded("_load_from_bytes", _load_storage),
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): _Guarded("set", set),                 # module state at pickle protocol 2/3
    ("torch_utils.persistence", "_reconstruct_persistent_obj"):
        _Guarded("_reconstruct_persistent_obj", _reconstruct_persistent),
}


class EDMUnpickler(RestrictedUnpickler):
    """EDM_GLOBALS plus inert stubs for ``torch.nn.modules.*`` classes."""

    def find_class(self, module: str, name: str) -> Any:
        """EDM_GLOBALS, or a TorchModuleStub class for a standard torch module."""
        if _TORCH_MODULE.fullmatch(module) and name.isidentifier():
            return _torch_module_stub(module, name)
        return super().find_class(module, name)


def load_edm_pickle(path: str | Path) -> Any:
    """The object in an EDM ``.pkl`` with networks as inert stubs; refuses any other code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"EDM pickle {path} not found")
    with path.open("rb") as fh:
        if fh.read(4) == b"PK\x03\x04":
            raise ValueError(f"{path}: a zip (torch.save) file, not an EDM pickle; read it with "
                             "torch.load(..., weights_only=True)")
        fh.seek(0)
        return restricted_load(fh, EDM_GLOBALS, str(path), unpickler=EDMUnpickler)


# --- state_dict and config ------------------------------------------------------------------------------------------

Stub = PersistentStub | TorchModuleStub


def _walk(obj: Stub, prefix: str) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """(dotted name, tensor, is_parameter) in ``state_dict()`` order: parameters, persistent buffers, children."""
    if not isinstance(obj, (PersistentStub, TorchModuleStub)):
        raise ValueError(f"{prefix or 'root'}: expected a torch module, got {type(obj).__name__}")
    state = obj.state
    skip = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, tensor in (state.get(kind) or {}).items():
            if tensor is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(f"{prefix}{name}: expected a tensor in {kind}, got {type(tensor).__name__}")
            yield prefix + name, tensor.detach(), kind == "_parameters"
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            yield from _walk(child, f"{prefix}{name}.")


def extract_state_dict(obj: Stub, prefix: str = "") -> OrderedDict[str, torch.Tensor]:
    """The ``state_dict()`` of a stubbed module: dotted names -> parameters and persistent buffers."""
    return OrderedDict((name, tensor) for name, tensor, _ in _walk(obj, prefix))


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON data (tuples become lists); anything else raises ValueError naming ``where``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value                                           # json writes inf as Infinity (EDM's sigma_max)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(f"{where}: {type(value).__name__} is not JSON data")


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def extract_config(obj: PersistentStub, depth: int = 1) -> dict[str, Any]:
    """Class name, init args/kwargs and plain attributes of ``obj``, and of its persistent children to ``depth``."""
    state, name = obj.state, obj.class_name
    config = {"class_name": name, "module_sha256": obj.module_sha256,
              "init_args": _jsonable(state.get("_init_args"), f"{name}.init_args"),
              "init_kwargs": _jsonable(state.get("_init_kwargs"), f"{name}.init_kwargs"),
              "attributes": {k: _jsonable(v, f"{name}.{k}") for k, v in state.items()
                             if not k.startswith("_") and k != "training" and _is_plain(v)}}
    if depth > 0:
        config["modules"] = {k: extract_config(child, depth - 1)
                             for k, child in (state.get("_modules") or {}).items() if isinstance(child, PersistentStub)}
    return config


def _class_names(obj: Stub) -> Iterator[str]:
    yield obj.class_name
    for child in (obj.state.get("_modules") or {}).values():
        if child is not None:
            yield from _class_names(child)


def convert(src: str | Path, dst: str | Path, key: str = "ema") -> dict[str, Any]:
    """Convert network ``key`` of EDM pickle ``src`` to a state_dict at ``dst`` and ``dst.json``; returns the JSON.

    Nothing is written unless the whole pickle loads through the allow-list.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix == ".json":
        raise ValueError(f"{dst}: the destination must not end in .json (that name is for its config)")
    if src.resolve() in (dst.resolve(), dst.with_suffix(".json").resolve()):
        raise ValueError(f"{dst}: converting {src} onto itself would overwrite the source; choose another name")
    data = load_edm_pickle(src)
    if not isinstance(data, dict) or key not in data:
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{src}: no network {key!r} (found: {keys})")
    net = data[key]
    if not isinstance(net, PersistentStub):
        raise ValueError(f"{src}: {key!r} is a {type(net).__name__}, not an EDM persistent network")
    tensors = list(_walk(net, ""))
    info = {"source": src.name, "source_sha256": sha256_file(src), "key": key, "class_name": net.class_name,
            "class_names": sorted(set(_class_names(net))),
            "num_parameters": sum(t.numel() for _, t, is_param in tensors if is_param),
            "num_tensors": len(tensors), "config": extract_config(net)}
    text = json.dumps(info, indent=2)
    save_atomic({name: t for name, t, _ in tensors}, dst)
    try:
        write_atomic(dst.with_suffix(".json"), lambda fh: fh.write(text), "w")
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    return info
