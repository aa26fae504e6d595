"""uni-instruct-repro: a reproducibility-first companion to Uni-Instruct (arXiv 2505.20755)."""

__version__ = "0.1.0"
