"""Deterministic quadrature for the exact checks: x-space grids, Gauss–Legendre, Gauss–Hermite.

Integrands of the checks are smooth and decay like Gaussians, so an equispaced grid (trapezoid
rule on a large box) converges geometrically; its error is estimated by the same sum on the grid of
twice the spacing plus a bound on the mass outside the box: the outer ring's sum continued geometrically with the
ratio of the outer ring to the ring inside it. Gaussian-like tails decay ever faster outwards, so that continuation
bounds them even when they are heavy (∫q²/p of Pearson χ², whose spread can be several times a component's), where
the outer ring alone would not; a tail that does not decay at the edge makes the error infinite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from uniinstruct.toy.mixture import GaussianMixture


@dataclass(frozen=True)
class Estimate:
    """A number with an estimate of its absolute quadrature error."""

    value: float
    error: float

    def __float__(self) -> float:
        return self.value

    def __sub__(self, other: "Estimate") -> "Estimate":
        return Estimate(self.value - other.value, self.error + other.error)

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "error": self.error}


@dataclass(frozen=True)
class Grid:
    """An equispaced tensor grid in d ≤ 2 dimensions covering a set of noised mixtures."""

    points: Tensor      # [N, d] grid nodes
    cell: float         # volume of one cell, h^d
    coarse: Tensor      # [N] bool, the nodes of the grid with spacing 2h
    frame: Tensor       # [N] bool, the outermost layer of nodes
    ring: Tensor        # [N] bool, the layer just inside it

    def integrate(self, values: Tensor) -> Estimate:
        """∫ values dx over the box, with error |I_h − I_2h| + a geometric bound on the mass outside the box + the
        worst-case float64 round-off of the sum."""
        if not torch.all(torch.isfinite(values)):
            raise FloatingPointError("integrand is not finite on the grid: the divergence may be infinite "
                                     "for this pair, or the box too wide for float64")
        fine = float(values.sum()) * self.cell
        coarse = float(values[self.coarse].sum()) * self.cell * 2 ** self.points.shape[1]
        round_off = len(values) * 2.0**-52 * float(values.abs().sum()) * self.cell     # float64 summation, worst case
        outer, inner = float(values[self.frame].abs().sum()), float(values[self.ring].abs().sum())
        if outer * self.cell < 1e-300:
            tail = 0.0
        elif outer < inner:
            ratio = outer / inner
            tail = outer * self.cell * (1 + ratio / (1 - ratio))       # the outer ring, then rings beyond the box
        else:
            tail = math.inf                                            # not decaying at the edge: widen the box
        return Estimate(fine, abs(fine - coarse) + tail + round_off)

    def integrate_torch(self, values: Tensor) -> Tensor:
        """The fine-grid sum as a differentiable tensor (for gradients through quadrature)."""
        return values.sum(0) * self.cell


def grid_for(mixtures: Iterable[GaussianMixture], sigma: float = 0.0, *, width: float = 10.0,
             points_per_std: float = 6.0, max_points: int = 400_000) -> Grid:
    """A grid covering every mixture noised to σ: ``width`` standard deviations past each mode,
    spacing ``1/points_per_std`` of the narrowest standard deviation."""
    mixtures = [m.detach() for m in mixtures]
    d = mixtures[0].dim
    if d > 2:
        raise ValueError(f"grid quadrature is implemented for d ≤ 2, got d={d}")
    lo, hi, narrow = [], [], math.inf
    for m in mixtures:
        cov = m.covs + sigma**2 * torch.eye(d, dtype=m.covs.dtype)
        sd = torch.sqrt(torch.diagonal(cov, dim1=-2, dim2=-1))                  # [K, d]
        lo.append((m.means - width * sd).min(0).values)
        hi.append((m.means + width * sd).max(0).values)
        narrow = min(narrow, float(torch.linalg.eigvalsh(cov).min().sqrt()))
    lo, hi = torch.stack(lo).min(0).values, torch.stack(hi).max(0).values
    h = narrow / points_per_std
    counts = [int(math.ceil(float(hi[a] - lo[a]) / h)) + 1 for a in range(d)]
    if math.prod(counts) > max_points:
        raise ValueError(f"grid of {counts} nodes exceeds max_points={max_points}; lower width or "
                         f"points_per_std")
    axes = [float(lo[a]) + h * torch.arange(n, dtype=torch.float64) for a, n in enumerate(counts)]
    mesh = torch.meshgrid(*axes, indexing="ij")
    idx = torch.meshgrid(*[torch.arange(n) for n in counts], indexing="ij")
    coarse = torch.stack([(i % 2 == 0) for i in idx]).all(0)
    frame = torch.stack([(i == 0) | (i == n - 1) for i, n in zip(idx, counts)]).any(0)
    ring = torch.stack([(i == 1) | (i == n - 2) for i, n in zip(idx, counts)]).any(0) & ~frame
    return Grid(torch.stack(mesh, -1).reshape(-1, d), h**d, coarse.reshape(-1), frame.reshape(-1), ring.reshape(-1))


def gauss_legendre(a: float, b: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the n-point Gauss–Legendre rule on [a, b]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (b - a) * x + 0.5 * (b + a), 0.5 * (b - a) * w


def gauss_hermite_normal(n: int, dim: int) -> tuple[Tensor, Tensor]:
    """Tensor-product Gauss–Hermite rule for E over N(0, I_dim): nodes [n^dim, dim], weights summing to 1."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / w.sum()
    nodes = torch.cartesian_prod(*[torch.as_tensor(x)] * dim).reshape(-1, dim)
    weights = torch.cartesian_prod(*[torch.as_tensor(w)] * dim).reshape(-1, dim).prod(-1)
    return nodes, weights
