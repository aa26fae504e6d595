"""Dropout keyed by sample (networks.dropout): the hash against a plain big-integer implementation, the masks' rate
and independence, and masks that depend on a row's place in the global batch, not on how the batch is split."""

import random

import pytest
import torch

from uniinstruct.networks import dropout

MASK = 2**32 - 1


def lowbias32(x: int) -> int:
    """The reference hash on Python's unbounded integers (multiplication mod 2³² taken directly)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK
    return x ^ (x >> 16)


def test_hash_matches_the_big_integer_reference():
    rng = random.Random(0)
    values = [0, 1, 2**31 - 1, 2**31, MASK] + [rng.getrandbits(32) for _ in range(2000)]
    expected = [lowbias32(v) for v in values]
    assert dropout.hash32(torch.tensor(values, dtype=torch.int64)).tolist() == expected
    assert [dropout.hash32(v) for v in values] == expected
    assert dropout.combine(7, -3) == lowbias32(lowbias32(7) ^ (-3 & MASK))      # negative parts as 32-bit words


def masks(rows: int = 8, shape=(3, 32, 32), p: float = 0.13, call: int = 0, key: int = 11, first: int = 0):
    keys = torch.full((rows,), key, dtype=torch.int64)
    index = torch.arange(first, first + rows)
    return dropout.keep_mask(torch.Size((rows, *shape)), keys, index, call, p, "cpu").float()


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1) - a.mean(), b.reshape(-1) - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_masks_keep_one_minus_p_and_are_independent():
    """Keep rate within 5 binomial standard deviations of 1 − p; correlations between neighbouring elements, rows,
    layers (calls) and keys within 5/√n of 0 (independent Bernoulli masks)."""
    p, m = 0.13, masks()
    n = m.numel()
    assert abs(m.mean().item() - (1 - p)) <= 5 * (p * (1 - p) / n) ** 0.5
    flat = m.reshape(-1)
    bound = 5 / n ** 0.5
    assert abs(correlation(flat[:-1], flat[1:])) <= bound
    assert abs(correlation(m[:-1], m[1:])) <= bound
    assert abs(correlation(m, masks(call=1))) <= bound
    assert abs(correlation(m, masks(key=12))) <= bound


def test_a_rows_mask_depends_on_its_global_index_only():
    """Rows 4–7 of a batch of 8 get the masks that a shard holding only rows 4–7 gets (another process, or another
    accumulation round)."""
    whole, shard = masks(rows=8), masks(rows=4, first=4)
    assert torch.equal(whole[4:], shard)
    assert not torch.equal(whole[:4], shard)


def test_dropout_scales_kept_entries_and_uses_torch_outside_the_context():
    x = torch.randn(4, 2, 5, 5)
    keys, index = torch.tensor([3, 3, 3, 3]), torch.arange(4)
    with dropout.sample_keys(lambda: (keys, index)):
        y, second = dropout.dropout(x, 0.25, True), dropout.dropout(x, 0.25, True)
        unchanged = dropout.dropout(x, 0.25, False)
    keep = dropout.keep_mask(x.shape, keys, index, 0, 0.25, "cpu")
    assert torch.equal(y, torch.where(keep, x / 0.75, torch.zeros(())))
    assert not torch.equal(y, second)                          # the second layer of the pass: another call
    assert torch.equal(unchanged, x)
    torch.manual_seed(5)
    outside = dropout.dropout(x, 0.25, True)
    torch.manual_seed(5)
    assert torch.equal(outside, torch.nn.functional.dropout(x, 0.25, True))


def test_keys_for_the_wrong_batch_are_refused():
    with dropout.sample_keys(lambda: (torch.zeros(3, dtype=torch.int64), torch.arange(3))):
        with pytest.raises(ValueError, match="dropout keys for 3 rows, but the batch has 4"):
            dropout.dropout(torch.ones(4, 2), 0.5, True)
