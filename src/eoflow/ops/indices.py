"""Spectral indices from named bands (never band positions)."""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["INDEX_BANDS", "add_indices", "dn_reading", "normalized_difference", "reflectance"]

#: Index -> (band a, band b) for ``(a - b) / (a + b)``.
INDEX_BANDS: dict[str, tuple[str, str]] = {
    "NDVI": ("B08", "B04"),
    "NDWI": ("B03", "B08"),
    "NDBI": ("B11", "B08"),
}


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from eoflow.ops._kernels import normalized_difference as kernel  # numba: on the workers only

    return kernel(a, b)


def normalized_difference(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    """``(a - b) / (a + b)`` as float32, lazily, one task per chunk."""
    return xr.apply_ufunc(_nd, a, b, dask="parallelized", output_dtypes=["float32"])


def dn_reading(var: xr.DataArray) -> tuple[float, float, int] | None:
    """``(1 / scale, offset, nodata)`` to read a uint16 band in place, or None (read as float32).

    ``reflectance = DN * scale + offset`` (cube attrs, ``docs/formats.md``), computed as
    ``float32(DN) / (1 / scale) + offset``: with ``scale = 1e-4`` that is exactly the float32 of
    ``DN / 10000``. No ``scale`` attribute keeps the digital numbers as they are.
    """
    if var.dtype != np.uint16:
        return None
    scale = float(var.attrs.get("scale", 1.0) or 1.0)
    nodata = var.attrs.get("nodata")
    nd = int(nodata) if nodata is not None and 0 <= float(nodata) <= 65535 else -1
    return 1.0 / scale, float(var.attrs.get("offset", 0.0) or 0.0), nd


def reflectance(var: xr.DataArray) -> xr.DataArray:
    """A band as the fused kernel reads it: float32, uint16 ``DN * scale + offset`` (NaN at nodata).

    Lazy, elementwise; the same arithmetic as :func:`eoflow.ops._fused_kernel.fused_features` (so equal
    bit for bit).
    """
    reading = dn_reading(var)
    if reading is None:
        return var.astype(np.float32)
    inv, off, nd = reading
    out = var.astype(np.float32) / np.float32(inv) + np.float32(off)
    return out.where(var != nd) if nd >= 0 else out


def add_indices(ds: xr.Dataset, names: list[str]) -> tuple[xr.Dataset, list[str]]:
    """Add each index in ``names`` whose bands exist; an index already present is kept as is.

    The bands are read as :func:`reflectance` (uint16 digital numbers with their scale/offset),
    as the fused kernel reads them.

    Returns the dataset and the list of indices it now has (in ``names`` order).
    """
    have = []
    for name in names:
        if name in ds:
            have.append(name)
            continue
        a, b = INDEX_BANDS[name]
        if a in ds and b in ds:
            ds = ds.assign({name: normalized_difference(reflectance(ds[a]), reflectance(ds[b]))})
            have.append(name)
    return ds, have
