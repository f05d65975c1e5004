"""Spectral indices from named bands (never band positions)."""

from __future__ import annotations

import xarray as xr

from eoflow.ops._kernels import normalized_difference as _nd

__all__ = ["INDEX_BANDS", "add_indices", "normalized_difference"]

#: Index -> (band a, band b) for ``(a - b) / (a + b)``.
INDEX_BANDS: dict[str, tuple[str, str]] = {
    "NDVI": ("B08", "B04"),
    "NDWI": ("B03", "B08"),
    "NDBI": ("B11", "B08"),
}


def normalized_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """``(a - b) / (a + b)`` as float32, lazily, one task per chunk."""
    return xr.apply_ufunc(_nd, a, b, dask="parallelized", output_dtypes=["float32"])


def add_indices(ds: xr.Dataset, names: list[str]) -> tuple[xr.Dataset, list[str]]:
    """Add each index in ``names`` whose bands exist; an index already present is kept as is.

    Returns the dataset and the list of indices it now has (in ``names`` order).
    """
    have = []
    for name in names:
        if name in ds:
            have.append(name)
            continue
        a, b = INDEX_BANDS[name]
        if a in ds and b in ds:
            ds = ds.assign({name: normalized_difference(ds[a], ds[b])})
            have.append(name)
    return ds, have
