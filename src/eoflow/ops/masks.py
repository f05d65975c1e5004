"""Validity masks and valid-observation counts."""

from __future__ import annotations

import numpy as np
import xarray as xr

from eoflow.errors import DataError

__all__ = ["valid_count", "valid_mask"]


def valid_mask(
    ds: xr.Dataset, *, how: str = "auto", scl_valid_classes: list[int] = (4, 5, 6, 7, 11)
) -> xr.DataArray:
    """IS_VALID as a lazy bool ``(time, y, x)``.

    ``how="clm"``: ``IS_DATA & ~CLM`` (IS_DATA defaults to all true when absent);
    ``how="scl"``: SCL in ``scl_valid_classes``; ``"auto"``: CLM when present, else SCL.
    """
    tid = ds.attrs.get("tile_id", "?")
    if how == "auto":
        how = "clm" if "CLM" in ds else "scl"
    if how == "clm":
        if "CLM" not in ds:
            raise DataError(f"tile {tid} has no CLM band", "set features.valid_from: scl")
        valid = ds["CLM"] == 0
        if "IS_DATA" in ds:
            valid = valid & (ds["IS_DATA"] != 0)
    elif how == "scl":
        if "SCL" not in ds:
            raise DataError(f"tile {tid} has no SCL band", "set features.valid_from: clm")
        valid = ds["SCL"].isin(np.asarray(scl_valid_classes, dtype=ds["SCL"].dtype))
    else:
        raise DataError(f"unknown validity rule {how!r}", "use auto, clm or scl")
    return valid.rename("IS_VALID")


def valid_count(valid: xr.DataArray) -> xr.DataArray:
    """Number of valid observations per pixel, ``(y, x)`` uint16."""
    return valid.sum("time", dtype=np.uint16).rename("VALID_COUNT")
