"""Dropout whose masks follow from each sample's place in the global batch.

``torch.nn.functional.dropout`` draws from torch's global generator: a process sees only its own shard of the batch,
so N processes draw other masks than 1 process over the whole batch, and gradient accumulation (``batch_gpu``) draws
others again. Inside ``sample_keys(keys, index)`` the networks' dropout instead keeps element ``e`` of batch row ``i``
when ``hash(keys[i], call, index[i], e) ≥ p·2³²``, a counter-based draw on the device: ``keys`` name the run and the
pass (seed, iteration, stream), ``index`` the row's index in the global batch, and ``call`` counts the dropout layers
of the pass in forward order. A row's mask is then the same whichever process or accumulation round computes it.
Outside that context (teacher training, sampling) dropout is torch's own.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor | int, constant: int) -> Tensor | int:
    """``x · constant mod 2³²`` for ``x`` in [0, 2³²), by 16-bit halves of the constant (no int64 overflow)."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def hash32(x: Tensor | int) -> Tensor | int:
    """A 32-bit integer mix with full avalanche (the 'lowbias32' constants of C. Wellons' hash search) of int64
    tensors or Python ints, taken mod 2³²."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def combine(*parts: Tensor | int) -> Tensor | int:
    """One 32-bit key from several (Python ints, or int64 tensors that broadcast): hash chaining."""
    key = 0
    for part in parts:
        key = hash32(key ^ (part & _MASK32))
    return key


@dataclass
class SampleKeys:
    resolve: Callable[[], tuple[Tensor, Tensor]]   # -> (each row's key [rows], its index in the global batch [rows])
    keys: Tensor | None = None                     # resolved when the pass's first dropout layer runs
    index: Tensor | None = None
    calls: int = field(default=0)                  # dropout layers seen so far in this pass


_ACTIVE: contextvars.ContextVar[SampleKeys | None] = contextvars.ContextVar("sample_keys", default=None)


@contextlib.contextmanager
def sample_keys(resolve: Callable[[], tuple[Tensor, Tensor]]):
    """Key by row the dropout of the network pass run inside: ``resolve()`` gives each batch row's key and its index
    in the global batch (int64), and is called only if a dropout layer runs (networks without dropout pay nothing)."""
    token = _ACTIVE.set(SampleKeys(resolve))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def keep_mask(shape: torch.Size, keys: Tensor, index: Tensor, call: int, p: float, device) -> Tensor:
    """Boolean mask [rows, …]: True where the element is kept (probability 1 − p)."""
    rows = combine(keys.to(device), call, index.to(device))                    # [rows]
    elements = torch.arange(shape[1:].numel(), device=device, dtype=torch.int64)
    draws = hash32(rows[:, None] ^ hash32(elements)[None, :])
    return (draws >= int(p * 2 ** 32)).reshape(shape)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout of rate ``p`` (inverted scaling); keyed by row inside ``sample_keys``, torch's own outside it. Under
    ``torch.compile`` it is one opaque operator of the graph (:func:`_compiled_dropout`): no graph break."""
    if torch.compiler.is_compiling():
        return x if not training or p == 0.0 else _compiled_dropout(x, p)[0]
    active = _ACTIVE.get()
    if not training or p == 0.0 or p >= 1.0 or active is None:
        return F.dropout(x, p=p, training=training)
    return _scaled(x, _keyed_mask(x, p, active), p)


def _scaled(x: Tensor, mask: Tensor, p: float) -> Tensor:
    """``x`` where ``mask`` keeps it, scaled by 1 / (1 − p) (inverted dropout; 0 where p ≥ 1)."""
    return x * mask.to(x.dtype) / max(1.0 - p, 1e-12)


def _keyed_mask(x: Tensor, p: float, active: SampleKeys) -> Tensor:
    """The keep mask of the pass's next dropout layer (``active.calls`` counts them)."""
    if active.keys is None:
        active.keys, active.index = (t.to(torch.int64) for t in active.resolve())
    if len(active.keys) != x.shape[0]:
        raise ValueError(f"dropout keys for {len(active.keys)} rows, but the batch has {x.shape[0]}")
    mask = keep_mask(x.shape, active.keys, active.index, active.calls, p, x.device)
    active.calls += 1
    return mask


@torch.library.custom_op("uniinstruct::keyed_dropout", mutates_args=())
def _compiled_dropout(x: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """(dropout of ``x``, its keep mask), as compiled graphs call it: an operator whose body runs when the graph
    runs, so it reads that pass's keys (a traced read of the context would fix the first pass's keys in the graph).
    Outside ``sample_keys`` the mask is a Bernoulli draw of torch's generator."""
    active = _ACTIVE.get()
    if p >= 1.0:
        mask = torch.zeros_like(x, dtype=torch.bool)
    elif active is None:
        mask = torch.empty_like(x).bernoulli_(1.0 - p).bool()
    else:
        mask = _keyed_mask(x, p, active)
    return _scaled(x, mask, p), mask


@_compiled_dropout.register_fake
def _(x: Tensor, p: float) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(x, dtype=torch.bool)


def _dropout_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(output[1])
    ctx.p = inputs[1]


def _dropout_backward(ctx, grad, _grad_mask):
    (mask,) = ctx.saved_tensors
    return _scaled(grad, mask, ctx.p), None


_compiled_dropout.register_autograd(_dropout_backward, setup_context=_dropout_context)
