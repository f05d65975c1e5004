"""Shared fixtures: the shipped sample, its truth arrays, tiny configs, hypothesis profiles."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"

settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The shipped Slovenia sample (real data, see data/sample/README.md)."""
    assert (SAMPLE / "collection.json").exists(), "run scripts/build_sample.py"
    return SAMPLE


@pytest.fixture(scope="session")
def sample_truth(sample_dir) -> dict[str, np.ndarray]:
    """Shipped truth arrays computed by eo-learn on the full 68-date patch."""
    return {p.stem: np.load(p) for p in (sample_dir / "truth").glob("*.npy")}


@pytest.fixture
def sample_config(tmp_path: Path, sample_dir: Path):
    """Write a config for the sample into tmp_path; returns a function taking overrides."""
    import yaml

    base = yaml.safe_load((ROOT / "configs" / "sample.yaml").read_text())
    for key, rel in (("aoi", "path"), ("reference", "path")):
        base[key][rel] = str((ROOT / "configs" / base[key][rel]).resolve())
    base["source"]["catalog"] = str((ROOT / "configs" / base["source"]["catalog"]).resolve())
    base["cluster"] = {"n_workers": 2, "threads_per_worker": 1, "dashboard_address": "127.0.0.1:0"}

    def make(**overrides) -> Path:
        cfg = {**base}
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return make


@pytest.fixture
def clean_dir(tmp_path: Path):
    """A fresh directory path inside tmp_path."""

    def make(name: str) -> Path:
        p = tmp_path / name
        shutil.rmtree(p, ignore_errors=True)
        return p

    return make
