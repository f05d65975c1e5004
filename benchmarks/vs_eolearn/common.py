"""Shared constants and the deterministic patch recipe (numpy and the standard library only).

Both virtual environments (eoflow's and eo-learn's) import this module, so each builds exactly the
same arrays from ``base.npz`` without moving 500 x 500 x 68 patches between them.

The recipe
----------
* **Real data** (``NDVI``, ``CLM``, ``IS_DATA`` for 68 dates, and the ``LULC`` reference rasterised
  from ``LULC.gpkg``) come from the 101 x 100 px Slovenia patch. A 500 x 500 px benchmark patch is a
  window of the plane tiled with mirrored copies of that patch (``numpy.pad(mode="symmetric")``
  repeated), so every value is a real value: nothing is interpolated or invented. Patch ``k`` starts
  at a different offset in that plane, so patches differ from each other.
* **Synthetic bands** ``B02``, ``B03``, ``B04``, ``B08``, ``B11``, ``B12`` (the six bands of
  eo-learn's land-cover example, so the merged features have the 9 channels of issue 7's
  measurement; B03/B08/B11 make NDWI and NDBI; the real 13-band series only exists for 10 of the
  68 dates): a deterministic model of the real NDVI, the real cloud mask and a seasonal term,
  quantised to 1e-4 reflectance. See :func:`synthetic_bands`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
"""Repository root."""
WORK = Path(os.environ.get("EOFLOW_BENCH_WORK", ROOT / "benchmarks" / ".work"))
"""Scratch space (git-ignored): venv, inputs, outputs, raw results."""
RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"

PATCH_PX = 500
"""Benchmark patches are PATCH_PX x PATCH_PX pixels."""
N_DATES = 68
GRID_START, GRID_END, GRID_STEP_DAYS = "2017-01-01", "2017-12-31", 15
"""The regular time grid (one year, 15 days; 25 instants)."""
MIN_VALID_FRACTION = 0.8
"""Frames with a valid fraction <= this are dropped."""
SAMPLE_FRACTION, SAMPLE_EXCLUDE, SAMPLE_SEED = 0.25, (0,), 42
SYNTHETIC_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
"""eo-learn's ``BANDS`` feature, in this order."""
FEATURES = ("NDVI", "NDWI", "NDBI", *SYNTHETIC_BANDS)
"""Time-varying features (9 channels), in the order of eo-learn's merged ``FEATURES`` channels."""
CRS_EPSG = 32633
PIXEL_M = 10.0
TILE_ORIGIN = (465_000.0, 5_080_000.0)
"""Nominal placement of patch 0 (upper-left corner); patch k sits k columns of 8 along."""

STAGES = (
    "read",
    "masks",
    "indices",
    "merge",
    "filter",
    "interpolation",
    "erosion",
    "sampling",
    "write",
    "other",
)
"""Per-stage columns of the results (seconds of worker time, summed over patches)."""


def mirror_index(n: int, start: int, length: int) -> np.ndarray:
    """Indices into an axis of length ``n`` for a window of the mirror-tiled infinite axis.

    The tiling repeats ``[0..n-1, n-1..0]`` (``numpy.pad(mode="symmetric")``), so neighbours across
    a seam are real neighbours and no value is invented.
    """
    i = (start + np.arange(length)) % (2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


def patch_offsets(k: int, shape: tuple[int, int]) -> tuple[int, int]:
    """Row and column offset of patch ``k`` in the mirror-tiled plane (patch 0 at the origin)."""
    h, w = shape
    return (k * 37) % (2 * h), (k * 59) % (2 * w)


def tile_id(k: int) -> str:
    """Stable id of benchmark patch ``k``."""
    return f"p{k:03d}"


def tile_transform(k: int) -> tuple[float, float, float, float, float, float]:
    """Affine ``(a, b, c, d, e, f)`` of patch ``k`` (nominal placement in EPSG:32633)."""
    x0 = TILE_ORIGIN[0] + (k % 8) * PATCH_PX * PIXEL_M
    y0 = TILE_ORIGIN[1] - (k // 8) * PATCH_PX * PIXEL_M
    return (PIXEL_M, 0.0, x0, 0.0, -PIXEL_M, y0)


def synthetic_bands(ndvi: np.ndarray, clm: np.ndarray, times: np.ndarray) -> dict[str, np.ndarray]:
    """Deterministic, clearly synthetic B02/B03/B04/B08/B11/B12 reflectances from real NDVI and CLM.

    ``v = clip(NDVI, 0, 1)``, ``s = cos(2 pi (doy - 172) / 365.25)`` (1 at midsummer),
    ``c = CLM``:

    * ``B08 = 0.10 + 0.28 v + 0.020 s + 0.25 c``
    * ``B03 = 0.07 + 0.03 (1 - v) + 0.005 s + 0.30 c``
    * ``B11 = 0.24 - 0.12 v + 0.010 s + 0.20 c``
    * ``B02 = 0.05 + 0.04 (1 - v) + 0.003 s + 0.32 c``
    * ``B04 = 0.03 + 0.10 (1 - v) + 0.004 s + 0.30 c``
    * ``B12 = 0.16 - 0.10 v + 0.008 s + 0.15 c``

    rounded to 1e-4 (like L2A DN * 1e-4) and stored as float32.
    """
    doy = np.array([t.timetuple().tm_yday for t in _as_datetimes(times)], dtype=np.float64)
    s = np.cos(2 * np.pi * (doy - 172.0) / 365.25)[:, None, None]
    v = np.clip(ndvi.astype(np.float64), 0.0, 1.0)
    c = clm.astype(np.float64)
    raw = {
        "B03": 0.07 + 0.03 * (1.0 - v) + 0.005 * s + 0.30 * c,
        "B08": 0.10 + 0.28 * v + 0.020 * s + 0.25 * c,
        "B11": 0.24 - 0.12 * v + 0.010 * s + 0.20 * c,
        "B02": 0.05 + 0.04 * (1.0 - v) + 0.003 * s + 0.32 * c,
        "B04": 0.03 + 0.10 * (1.0 - v) + 0.004 * s + 0.30 * c,
        "B12": 0.16 - 0.10 * v + 0.008 * s + 0.15 * c,
    }
    return {k: (np.round(a * 1e4) / 1e4).astype(np.float32) for k, a in raw.items()}


def _as_datetimes(times: np.ndarray) -> list[dt.datetime]:
    return [
        dt.datetime.fromisoformat(str(t)[:19]) for t in np.asarray(times).astype("datetime64[s]")
    ]


def base_path(work: Path = WORK) -> Path:
    """Where ``prepare`` stores the 101 x 100 px real base arrays (plus the synthetic bands)."""
    return work / "base.npz"


def load_base(work: Path = WORK) -> dict[str, np.ndarray]:
    """Read ``base.npz``: NDVI/CLM/IS_DATA and the synthetic bands ``(68, 101, 100)``, LULC, times."""
    with np.load(base_path(work)) as z:
        return {k: z[k] for k in z.files}


def make_patch(base: dict[str, np.ndarray], k: int, px: int = PATCH_PX) -> dict[str, np.ndarray]:
    """Patch ``k``: every base array windowed from the mirror-tiled plane, dtypes kept."""
    h, w = base["LULC"].shape
    oy, ox = patch_offsets(k, (h, w))
    iy, ix = mirror_index(h, oy, px), mirror_index(w, ox, px)
    out = {}
    for name, arr in base.items():
        if arr.ndim < 2:
            continue  # times, transform, source
        out[name] = np.ascontiguousarray(arr[..., iy, :][..., ix])
    return out


def times_of(base: dict[str, np.ndarray]) -> np.ndarray:
    """Acquisition times as ``datetime64[s]``."""
    return base["times"].astype("datetime64[s]")


def grid_instants(times: np.ndarray) -> np.ndarray:
    """The instants where eo-learn 1.5.7 evaluates its 15-day grid, as ``datetime64[s]``.

    ``LinearInterpolationTask(resample_range=(start, end, 15))`` labels its output with midnight
    dates, but measures the grid from the *first acquisition's time of day* (its times are relative
    to the first timestamp and the date offset is added in whole days), so the values belong to
    ``start + time_of_day(first acquisition) + k * 15 days`` -- 10:00:08 here. Both systems are
    compared (and eoflow is evaluated) on these instants.
    """
    first = np.asarray(times).astype("datetime64[s]").min()
    tod = first - first.astype("datetime64[D]").astype("datetime64[s]")
    start = np.datetime64(GRID_START, "s")
    end = np.datetime64(GRID_END, "s")
    step = np.timedelta64(GRID_STEP_DAYS, "D").astype("timedelta64[s]")
    n = 1
    while start + n * step < end:  # eo-learn's rule: append while day + step < end
        n += 1
    return start + tod + np.arange(n) * step


def pixel_dates(n_patches: int) -> int:
    """Input pixel-dates of ``n_patches`` patches."""
    return n_patches * PATCH_PX * PATCH_PX * N_DATES


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (0 when missing)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as JSON (atomic rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def thread_env(base_env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment pinning BLAS/OpenMP/numba pools to one thread (a worker is one core)."""
    env = dict(os.environ if base_env is None else base_env)
    for var in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "BLOSC_NTHREADS",
    ):
        env[var] = "1"
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    return env
