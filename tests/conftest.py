"""Shared test helpers."""

from pathlib import Path

import pytest
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
