"""The 2-D teacher/student pairs on which the theorems are checked.

Each pair has a teacher mixture ``q`` and a student family: a base mixture ``z`` pushed through
an affine map ``x_0 = A z + b``. The student law is then an exact mixture for every ``θ = (A, b)``
and ``A`` moves it in ways that are not translations (scale, shear, rotation), which is where
Theorem 3.2's extra terms matter. Modes are well separated within each mixture; covariances of
teacher and student stay within a factor two of each other so that every registered divergence,
χ² and Neyman included, is finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from uniinstruct.toy.mixture import GaussianMixture


def _cov(sx: float, sy: float, rho: float) -> list[list[float]]:
    return [[sx * sx, rho * sx * sy], [rho * sx * sy, sy * sy]]


@dataclass(frozen=True)
class StudentFamily:
    """Students ``x_0 = A z + b`` with ``z`` from ``base``; θ is the flat vector (A row-major, b)."""

    base: GaussianMixture   # law of the generator's input z
    A: Tensor               # [d, d] initial linear part
    b: Tensor               # [d] initial offset

    def theta(self) -> Tensor:
        """The parameters θ₀ = (vec A, b) as a flat float64 vector."""
        return torch.cat([self.A.reshape(-1), self.b]).to(torch.float64)

    def unpack(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        d = self.base.dim
        return theta[: d * d].reshape(d, d), theta[d * d:]

    def mixture(self, theta: Tensor | None = None) -> GaussianMixture:
        """The student law p_θ,0 (differentiable in θ)."""
        A, b = self.unpack(self.theta() if theta is None else theta)
        return self.base.affine(A, b)

    def generate(self, theta: Tensor, z: Tensor) -> Tensor:
        """x_0 = g_θ(z) = A z + b for z of shape [..., d]."""
        A, b = self.unpack(theta)
        return z @ A.T + b


@dataclass(frozen=True)
class Pair:
    name: str
    description: str
    teacher: GaussianMixture
    student: StudentFamily


def _pair(name, description, teacher, base, A, b) -> Pair:
    t = GaussianMixture(*teacher)
    z = GaussianMixture(*base)
    A = torch.tensor(A, dtype=torch.float64)
    b = torch.tensor(b, dtype=torch.float64)
    return Pair(name, description, t, StudentFamily(z, A, b))


def _build() -> dict[str, Pair]:
    pairs = [
        _pair(
            "three_modes",
            "three well-separated anisotropic modes with unequal weights; the student has the modes "
            "slightly out of place, with wrong weights and shapes",
            ([0.5, 0.3, 0.2],
             [[-2.0, 0.0], [2.0, 0.5], [0.0, 3.0]],
             [_cov(0.7, 0.5, 0.3), _cov(0.5, 0.8, -0.4), _cov(0.6, 0.6, 0.0)]),
            ([0.4, 0.35, 0.25],
             [[-1.9, 0.25], [1.7, 0.4], [-0.1, 2.8]],
             [_cov(0.75, 0.6, 0.2), _cov(0.6, 0.8, -0.2), _cov(0.7, 0.6, 0.1)]),
            [[1.05, 0.08], [-0.06, 0.96]], [0.10, -0.05],
        ),
        _pair(
            "imbalanced",
            "an imbalanced teacher with a 5% mode far from the others; the student gives that mode "
            "too much mass and misplaces the main one",
            ([0.65, 0.30, 0.05],
             [[0.0, 0.0], [3.5, 0.0], [0.0, 4.0]],
             [_cov(0.8, 0.6, 0.2), _cov(0.5, 0.5, 0.0), _cov(0.5, 0.6, -0.3)]),
            ([0.5, 0.3, 0.2],
             [[-0.2, 0.0], [3.2, -0.1], [-0.1, 3.7]],
             [_cov(0.8, 0.65, 0.1), _cov(0.6, 0.55, 0.1), _cov(0.6, 0.65, -0.1)]),
            [[0.95, -0.08], [0.10, 1.04]], [0.15, 0.1],
        ),
        _pair(
            "anisotropic",
            "two elongated modes along crossing directions (condition number about 6) against a "
            "rounder, rotated student",
            ([0.6, 0.4],
             [[-1.5, -1.0], [2.0, 1.5]],
             [_cov(1.0, 0.5, 0.5), _cov(0.5, 1.0, -0.5)]),
            ([0.5, 0.5],
             [[-1.3, -0.9], [1.8, 1.3]],
             [_cov(0.95, 0.55, 0.45), _cov(0.55, 0.95, -0.45)]),
            [[1.0, 0.12], [-0.1, 1.05]], [-0.1, 0.1],
        ),
    ]
    return {p.name: p for p in pairs}


PAIRS: dict[str, Pair] = _build()


def point_mass_student(at, spread: float = 1e-4) -> StudentFamily:
    """A (numerically) point-mass generator x_0 = A z + b ≈ b, with z ~ N(0, spread² I): the setting of
    SDS, VSD, DDS and RED-diff, which optimise one sample (a NeRF render, an edited image, an estimate)."""
    at = torch.as_tensor(at, dtype=torch.float64)
    d = at.numel()
    base = GaussianMixture([1.0], torch.zeros(1, d, dtype=torch.float64),
                           spread**2 * torch.eye(d, dtype=torch.float64)[None])
    return StudentFamily(base, torch.eye(d, dtype=torch.float64), at)


def pair(name: str) -> Pair:
    """The toy pair called ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    if name not in PAIRS:
        raise ValueError(f"unknown toy pair {name!r}; valid names: {', '.join(PAIRS)}")
    return PAIRS[name]


def _ring(n_modes: int, radius: float, std: float, weights: list[float]) -> GaussianMixture:
    angle = torch.arange(n_modes, dtype=torch.float64) * 2 * torch.pi / n_modes
    means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return GaussianMixture(weights, means, std**2 * torch.eye(2, dtype=torch.float64).repeat(n_modes, 1, 1))


# Teachers of the distillation benchmark: imbalanced, so that mode-seeking and mode-covering differ.
BENCHMARKS = {
    "ring8": lambda: _ring(8, 3.0, 0.25, [0.30, 0.20, 0.15, 0.10, 0.09, 0.07, 0.05, 0.04]),
    "imbalanced3": lambda: PAIRS["imbalanced"].teacher,
}


def benchmark(name: str) -> GaussianMixture:
    """The benchmark teacher called ``name`` (ring8: 8 modes on a circle, weights 30% down to 4%)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown toy benchmark {name!r}; valid names: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]()
