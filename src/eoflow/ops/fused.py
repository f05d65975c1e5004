"""One pass per spatial chunk: indices, validity and masked interpolation of every feature.

The chunk is read once; each image row is transposed into a small time-contiguous buffer (fits in
cache), and every pixel's valid observation times and interpolation weights are found once for
all its features. Nothing of size ``(time, y, x)`` is materialised besides the inputs (not even
a copy of the kept frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
import xarray as xr

from eoflow.ops.indices import INDEX_BANDS, dn_reading
from eoflow.ops.temporal import _to_days

__all__ = ["FeatureRecipe", "interpolate_features", "recipes_for"]

COPY, NORM_DIFF = 0, 1


@dataclass(frozen=True)
class FeatureRecipe:
    """How a feature is made from cube variables: a copy or ``(a - b) / (a + b)``."""

    name: str
    kind: int
    a: str
    b: str | None = None


def recipes_for(ds: xr.Dataset, indices: list[str], bands: list[str]) -> list[FeatureRecipe]:
    """Recipes for the indices whose bands exist (an index present in ``ds`` is copied) and bands."""
    out = []
    for name in indices:
        if name in ds:
            out.append(FeatureRecipe(name, COPY, name))
        elif all(b in ds for b in INDEX_BANDS[name]):
            out.append(FeatureRecipe(name, NORM_DIFF, *INDEX_BANDS[name]))
    out.extend(FeatureRecipe(b, COPY, b) for b in bands if b in ds)
    return out


def _fused_block(mask, *arrays, n_dn, dn_inv, dn_off, dn_nodata, **kw):
    """One chunk: float32 sources as they are (other dtypes copied), uint16 ones read in place."""
    from eoflow.ops._fused_kernel import fused_features  # numba: on the workers only

    n_f = len(arrays) - n_dn
    srcs = tuple(np.ascontiguousarray(a, dtype=np.float32) for a in arrays[:n_f])
    dns = tuple(np.ascontiguousarray(a) for a in arrays[n_f:])
    return fused_features(srcs or (_NO_F32,), n_f, dns or (_NO_DN,), n_dn, dn_inv, dn_off,
                          dn_nodata, np.ascontiguousarray(mask), **kw)  # fmt: skip


_NO_F32 = np.zeros((0, 0, 0), np.float32)
_NO_DN = np.zeros((0, 0, 0), np.uint16)


def interpolate_features(
    ds: xr.Dataset,
    valid: xr.DataArray,
    recipes: list[FeatureRecipe],
    grid: np.ndarray,
    frames: np.ndarray | None = None,
) -> tuple[dict[str, xr.DataArray], xr.DataArray, xr.DataArray]:
    """Lazy interpolated features (float32, ``time = grid``), ``N_OBS`` and ``VALID_COUNT``.

    One task per chunk. ``N_OBS`` (uint16) counts each pixel's valid observations among
    ``frames``, ``VALID_COUNT`` (uint16, as :func:`eoflow.ops.masks.valid_count`) among all frames;
    both come from the kernel's pass over ``valid``, so the mask is computed inside the chunk's
    task and never materialised as a separate array.

    ``frames`` (integer positions along ``time``, default all) are the frames to use, in any
    order; the others are never copied, the kernel skips them. uint16 bands are read in place as
    ``DN * scale + offset`` from their ``scale``/``offset`` attributes (``nodata`` is invalid), so
    band features and indices are reflectances whatever the cube stores.
    """
    times = ds["time"].values
    frames = np.arange(times.size) if frames is None else np.asarray(frames, dtype=np.int64)
    frames = frames[np.argsort(times[frames], kind="stable")]
    used = sorted({r.a for r in recipes} | {r.b for r in recipes if r.b})
    reading = {n: dn_reading(ds[n]) for n in used}
    # float32 (and other) sources first, then the uint16 ones the kernel reads in place
    names = [n for n in used if reading[n] is None] + [n for n in used if reading[n] is not None]
    dn = [reading[n] for n in names if reading[n] is not None]
    index = {n: i for i, n in enumerate(names)}
    arrays = [ds[n].data.rechunk({0: -1}) for n in names]
    mask = valid.data.rechunk({0: -1})
    kind = np.array([r.kind for r in recipes], np.int64)
    ia = np.array([index[r.a] for r in recipes], np.int64)
    ib = np.array([index[r.b] if r.b else 0 for r in recipes], np.int64)
    k = len(grid)
    planes = len(recipes) * k + 2
    out = da.map_blocks(
        _fused_block, mask, *arrays, frames=frames, kind=kind, ia=ia, ib=ib,
        src_t=_to_days(times[frames]), dst_t=_to_days(grid), n_dn=len(dn),
        dn_inv=np.array([d[0] for d in dn], np.float64),
        dn_off=np.array([d[1] for d in dn], np.float64),
        dn_nodata=np.array([d[2] for d in dn], np.int64),
        dtype=np.float32, chunks=((planes,), *mask.chunks[1:]),
        meta=np.empty((0, 0, 0), np.float32),  # never call the kernel to learn its output type
    )  # fmt: skip
    # one Dataset, so the indexes are built once (not once per feature)
    res = xr.Dataset(
        {r.name: (("time", "y", "x"), out[f * k : (f + 1) * k]) for f, r in enumerate(recipes)}
        | {"N_OBS": (("y", "x"), out[-2].astype(np.uint16)),
           "VALID_COUNT": (("y", "x"), out[-1].astype(np.uint16))},
        coords={"time": grid, "y": ds["y"].variable, "x": ds["x"].variable},
    )  # fmt: skip
    feats = {r.name: res[r.name] for r in recipes}
    return feats, res["N_OBS"], res["VALID_COUNT"]
