"""Convert Presto's evaluation arrays (``data/presto/<task>/npy``) to an eoflow samples store.

Input: the ``.npy`` files of nasaharvest/presto (MIT) for ``fuel_moisture`` or ``algae_blooms``
(see ``data/presto/README.md``).  Output: a Zarr v3 group in the samples-store layout of
``docs/formats.md``:

* ``X`` float32 ``(n, n_time, 18)``; Sentinel-2 bands as **reflectance = DN * 0.0001** (L1C TOA),
  ``ndvi`` recomputed from B8 and B4 (Presto's channel 17 was computed from B7 and B3), Sentinel-1
  VV/VH in dB, ERA5 2 m temperature (K) and total precipitation (m), SRTM elevation (m) and slope (deg).
* ``y`` int32: the Dynamic World class most frequent over the sample's months (ties: lowest id).
* ``dw`` uint8 ``(n, n_time)``: Dynamic World class per month.
* ``date`` int32 ``(n, n_time)``: per-sample dates as days since 1970-01-01.  Presto stores only the
  calendar month, so dates are the 15th of that month in a *nominal* year 2001 (2002 after a wrap
  to January); ``attrs["time"]`` holds the nominal dates of the first sample's grid.
* ``is_test`` bool: Presto's train/test split; ``target`` float32: the measured target, named in
  ``attrs["targets"]`` (``lfmc`` = live fuel moisture %, or ``severity`` for algae blooms).
* ``tile`` (all 0), ``row`` (sample index), ``col`` (0), ``xcoord`` = lon, ``ycoord`` = lat
  (``attrs["crs"] = "EPSG:4326"``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np

from eoflow.errors import InputError

__all__ = ["FEATURES", "convert_presto"]

#: eoflow feature names for Presto's 18 channels (channel 17 replaced by a recomputed NDVI).
FEATURES = [
    "vv", "vh", "blue", "green", "red", "re1", "re2", "re3", "nir", "nir08", "wv",
    "swir1", "swir2", "t2m", "tp", "elev", "slope", "ndvi",
]  # fmt: skip
BAND_NAMES = [
    "VV", "VH", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9",
    "B11", "B12", "temperature_2m", "total_precipitation", "elevation", "slope", "NDVI(B8,B4)",
]  # fmt: skip
S2_SLICE = slice(2, 13)
REFLECTANCE_SCALE = 1e-4
DW_CLASSES = [
    (0, "water", "#419bdf"),
    (1, "trees", "#397d49"),
    (2, "grass", "#88b053"),
    (3, "flooded_vegetation", "#7a87c6"),
    (4, "crops", "#e49635"),
    (5, "shrub_and_scrub", "#dfc35a"),
    (6, "built", "#c4281b"),
    (7, "bare", "#a59b8f"),
    (8, "snow_and_ice", "#b39fe1"),
]
TARGET_NAMES = {"fuel_moisture": "lfmc", "algae_blooms": "severity"}
NOMINAL_YEAR = 2001


def _load(src: Path, name: str) -> np.ndarray:
    path = src / f"{name}.npy"
    if not path.exists():
        raise InputError(f"{path}: missing", "point SRC at a Presto task's npy/ folder")
    return np.load(path, allow_pickle=False)


def _dates(months: np.ndarray) -> np.ndarray:
    """Days since epoch of the 15th of each month, nominal year, increasing within a sample."""
    wraps = np.concatenate(
        [np.zeros((months.shape[0], 1), int), np.cumsum(np.diff(months, axis=1) < 0, axis=1)],
        axis=1,
    )
    years = NOMINAL_YEAR + wraps
    epoch = dt.date(1970, 1, 1)
    out = np.empty(months.shape, dtype=np.int32)
    for idx in np.ndindex(months.shape):
        out[idx] = (dt.date(int(years[idx]), int(months[idx]) + 1, 15) - epoch).days
    return out


def _mode(classes: np.ndarray) -> np.ndarray:
    counts = np.stack([(classes == c).sum(1) for c in range(len(DW_CLASSES))], axis=1)
    return counts.argmax(1).astype(np.int32)


def convert_presto(
    src: str | Path, dst: str | Path, *, task: str | None = None, chunk: int = 256
) -> Path:
    """Write a samples store from one Presto task folder.

    Parameters
    ----------
    src
        Folder with Presto's ``.npy`` files (``.../fuel_moisture/npy``).
    dst
        Output ``.zarr`` path (overwritten).
    task
        ``fuel_moisture`` or ``algae_blooms``; guessed from ``src`` when omitted.
    chunk
        Rows per chunk (= shard for the streaming reader).

    Returns
    -------
    pathlib.Path
        ``dst``.
    """
    import zarr

    src = Path(src)
    task = task or next((t for t in TARGET_NAMES if t in str(src)), None)
    if task not in TARGET_NAMES:
        raise InputError(
            f"{src}: cannot tell the Presto task", "pass task='fuel_moisture' or 'algae_blooms'"
        )
    x = _load(src, "s1_s2_era5_srtm").astype(np.float64)
    if x.ndim != 3 or x.shape[2] != 18:
        raise InputError(f"{src}/s1_s2_era5_srtm.npy: shape {x.shape}, expected (n, t, 18)")
    feats = x.copy()
    feats[..., S2_SLICE] = x[..., S2_SLICE] * REFLECTANCE_SCALE
    nir, red = x[..., 8], x[..., 4]
    with np.errstate(invalid="ignore", divide="ignore"):
        feats[..., 17] = np.where(nir + red > 0, (nir - red) / (nir + red), np.nan)
    dw = _load(src, "dynamic_world").astype(np.uint8)
    months = _load(src, "month").astype(np.int64)
    latlon = _load(src, "latlon").astype(np.float64)
    target = _load(src, "target").astype(np.float32)
    is_test = _load(src, "is_test").astype(bool)
    n = feats.shape[0]
    dates = _dates(months)
    grid = [str(dt.date(1970, 1, 1) + dt.timedelta(days=int(d))) for d in dates[0]]

    root = zarr.open_group(str(dst), mode="w", zarr_format=3)

    def put(name: str, arr: np.ndarray) -> None:
        chunks = (min(chunk, n), *arr.shape[1:])
        a = root.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=chunks)
        a[...] = arr

    put("X", feats.astype(np.float32))
    put("y", _mode(dw))
    put("dw", dw)
    put("date", dates)
    put("tile", np.zeros(n, np.int32))
    put("row", np.arange(n, dtype=np.int32))
    put("col", np.zeros(n, np.int32))
    put("xcoord", latlon[:, 1].copy())
    put("ycoord", latlon[:, 0].copy())
    put("is_test", is_test)
    put("target", target)
    root.attrs.update(
        {
            "features": FEATURES,
            "source_bands": BAND_NAMES,
            "time": grid,
            "time_note": "per-sample dates in array 'date' (days since 1970-01-01); Presto gives "
            f"calendar months only, the year {NOMINAL_YEAR} is nominal",
            "tiles": [f"presto-{task}"],
            "crs": "EPSG:4326",
            "classes": [{"id": i, "name": nm, "color": c} for i, nm, c in DW_CLASSES],
            "class_note": "y = most frequent Google Dynamic World class over the sample's months",
            "targets": {TARGET_NAMES[task]: "target"},
            "split": "is_test",
            "scales": {"reflectance": "S2 bands = L1C TOA DN * 0.0001"},
            "source": f"nasaharvest/presto data/{task}/npy @ 13173d0 (MIT; Copernicus S1/S2/ERA5, "
            "SRTM, Dynamic World CC BY 4.0, targets: see data/presto/README.md)",
        }
    )
    return Path(dst)


def main(argv: list[str] | None = None) -> int:
    """``python -m eoflow.vae.presto SRC DST [--task T]``."""
    p = argparse.ArgumentParser(description="Presto .npy -> eoflow samples.zarr")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--task", choices=sorted(TARGET_NAMES))
    p.add_argument("--chunk", type=int, default=256)
    a = p.parse_args(argv)
    out = convert_presto(a.src, a.dst, task=a.task, chunk=a.chunk)
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
