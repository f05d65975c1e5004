"""Shared fixtures: small samples stores cut from the shipped Presto fuel-moisture store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PRESTO = REPO / "data" / "presto" / "fuel_moisture.zarr"


@pytest.fixture(autouse=True)
def _threads():
    """The test machine has 2 shared cores: keep torch to one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def cut_store(dst: Path, rows: np.ndarray, *, chunk: int) -> Path:
    """Write the Presto store's ``rows`` as a new samples store with ``chunk`` rows per chunk."""
    import zarr

    src = zarr.open_group(str(PRESTO), mode="r")
    out = zarr.open_group(str(dst), mode="w", zarr_format=3)
    for name in src.array_keys():
        a = np.asarray(src[name][...])[rows]
        arr = out.create_array(name, shape=a.shape, dtype=a.dtype, chunks=(chunk, *a.shape[1:]))
        arr[...] = a
    out.attrs.update(dict(src.attrs))
    return dst


@pytest.fixture(scope="session")
def cut():
    """:func:`cut_store` as a fixture."""
    return cut_store


@pytest.fixture(scope="session")
def presto_store() -> Path:
    """The shipped store (read-only)."""
    assert PRESTO.exists(), "data/presto/fuel_moisture.zarr is shipped with the repo"
    return PRESTO
