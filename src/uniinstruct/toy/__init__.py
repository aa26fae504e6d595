"""Exact toy problems: Gaussian mixtures under VE noise and the 2-D teacher/student pairs of the checks."""

from uniinstruct.toy.mixture import GaussianMixture
from uniinstruct.toy.problems import PAIRS, StudentFamily, pair

__all__ = ["GaussianMixture", "PAIRS", "StudentFamily", "pair"]
