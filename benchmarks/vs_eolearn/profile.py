"""``profile``: eoflow's ops one by one on patch 0, in one process, no Dask (project venv).

Each op runs ``repeats`` times on in-memory numpy data; the first call (numba JIT or cache load)
is reported apart from the best steady-state time. The interpolation is also timed with a
reference kernel, :func:`interp_time_major`, the fastest formulation found here (numba, time-major,
two streaming passes, no transpose), to say how far ``eoflow.ops.temporal.interpolate_to_grid`` is
from what the hardware allows (issue 7's third target).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numba
import numpy as np

from benchmarks.vs_eolearn import common


@numba.njit(cache=True, nogil=True)
def interp_time_major(values, valid, src_t, dst_t):  # pragma: no cover - compiled
    """Masked linear interpolation, ``values``/``valid`` shaped ``(t, n)``, output ``(k, n)`` float32.

    Forward pass over time keeps each pixel's last valid (time, value) and fills the grid instants
    that fall before the next source time; a backward pass does the same with the next valid
    observation; the output is the lerp of the two (held at the ends, NaN without any valid value,
    i.e. ``eoflow.ops._kernels.interp_masked`` semantics). Memory is read contiguously.
    """
    t, n = values.shape
    k = dst_t.shape[0]
    prev_t = np.full((k, n), np.nan, dtype=np.float64)
    prev_v = np.empty((k, n), dtype=np.float32)
    next_t = np.full((k, n), np.nan, dtype=np.float64)
    next_v = np.empty((k, n), dtype=np.float32)
    last_t = np.full(n, np.nan, dtype=np.float64)
    last_v = np.empty(n, dtype=np.float32)
    q = 0
    for i in range(t):
        while q < k and dst_t[q] < src_t[i]:
            for p in range(n):
                prev_t[q, p] = last_t[p]
                prev_v[q, p] = last_v[p]
            q += 1
        for p in range(n):
            v = values[i, p]
            if valid[i, p] and v == v:
                last_t[p] = src_t[i]
                last_v[p] = v
    while q < k:
        for p in range(n):
            prev_t[q, p] = last_t[p]
            prev_v[q, p] = last_v[p]
        q += 1
    last_t[:] = np.nan
    q = k - 1
    for i in range(t - 1, -1, -1):
        while q >= 0 and dst_t[q] >= src_t[i]:
            for p in range(n):
                next_t[q, p] = last_t[p]
                next_v[q, p] = last_v[p]
            q -= 1
        for p in range(n):
            v = values[i, p]
            if valid[i, p] and v == v:
                last_t[p] = src_t[i]
                last_v[p] = v
    while q >= 0:
        for p in range(n):
            next_t[q, p] = last_t[p]
            next_v[q, p] = last_v[p]
        q -= 1
    out = np.empty((k, n), dtype=np.float32)
    for q in range(k):
        x = dst_t[q]
        for p in range(n):
            a, b = prev_t[q, p], next_t[q, p]
            if a == a and b == b:
                if b == a:
                    out[q, p] = prev_v[q, p]
                else:
                    w = (x - a) / (b - a)
                    va = np.float64(prev_v[q, p])
                    out[q, p] = va + w * (np.float64(next_v[q, p]) - va)
            elif a == a:
                out[q, p] = prev_v[q, p]
            elif b == b:
                out[q, p] = next_v[q, p]
            else:
                out[q, p] = np.nan
    return out


def _timeit(fn, repeats: int) -> tuple[float, float, object]:
    t0 = time.perf_counter()
    res = fn()
    first = time.perf_counter() - t0
    best = first
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return first, best, res


def profile(k: int = 0, repeats: int = 3, work: Path = common.WORK) -> dict:
    """Time eoflow's ops on patch ``k`` (in-memory, single thread)."""
    import xarray as xr

    from eoflow.ops._kernels import normalized_difference as nd_kernel
    from eoflow.ops.masks import valid_count, valid_mask
    from eoflow.ops.morphology import erode_labels
    from eoflow.ops.temporal import interpolate_to_grid

    res: dict = {"record": "profile", "patch": common.tile_id(k), "repeats": repeats}
    t0 = time.perf_counter()
    ds = xr.open_zarr(work / "inputs" / "cubes.zarr", group=common.tile_id(k), consolidated=False)
    ds = ds.load()
    res["read_zarr_s"] = time.perf_counter() - t0
    ops: dict[str, dict] = {}

    def rec(name: str, fn) -> object:
        first, best, out = _timeit(fn, repeats)
        ops[name] = {"first_s": first, "best_s": best}
        return out

    valid = rec("valid_mask", lambda: valid_mask(ds, how="clm").values)
    vda = xr.DataArray(valid, dims=("time", "y", "x"), coords={"time": ds["time"]})
    rec("valid_count", lambda: valid_count(vda).values)
    rec("ndwi_kernel", lambda: nd_kernel(ds["B03"].values, ds["B08"].values))
    rec("ndwi_numpy", lambda: _nd_numpy(ds["B03"].values, ds["B08"].values))
    frac = rec("frame_fraction", lambda: valid.reshape(valid.shape[0], -1).mean(axis=1))
    keep = np.flatnonzero(frac > common.MIN_VALID_FRACTION)
    grid = common.grid_instants(ds["time"].values).astype("datetime64[ns]")
    ndvi = ds["NDVI"].isel(time=keep)
    vk = vda.isel(time=keep)
    ours = rec(
        "interpolate_to_grid (1 feature)", lambda: interpolate_to_grid(ndvi, vk, grid).values
    )
    src_t = ndvi["time"].values.astype("datetime64[ns]").astype(np.int64) / 86_400e9
    dst_t = grid.astype(np.int64) / 86_400e9
    v2 = np.ascontiguousarray(ndvi.values.reshape(len(keep), -1))
    m2 = np.ascontiguousarray(vk.values.reshape(len(keep), -1))
    ref = rec("reference time-major kernel (1 feature)",
              lambda: interp_time_major(v2, m2, src_t, dst_t))  # fmt: skip
    res["reference_max_abs_diff"] = float(np.nanmax(np.abs(ref.reshape(ours.shape) - ours)))
    try:  # the fused per-chunk kernel (indices + validity + interpolation of all features)
        from eoflow.ops.fused import interpolate_features, recipes_for

        recipes = recipes_for(ds, ["NDVI", "NDWI", "NDBI"], list(common.SYNTHETIC_BANDS))
        dsk = ds.chunk({"time": -1, "y": 512, "x": 512})
        vkk = vda.chunk({"time": -1, "y": 512, "x": 512})

        def fused() -> object:
            import dask

            feats, _, _ = interpolate_features(dsk, vkk, recipes, grid, frames=keep)
            with dask.config.set(scheduler="sync"):
                return dict(zip(feats, dask.compute(*[v.data for v in feats.values()])))

        fused_out = rec(f"fused interpolate_features ({len(recipes)} features)", fused)
        res["fused_vs_separate_max_abs_diff"] = float(np.nanmax(np.abs(fused_out["NDVI"] - ours)))
    except ImportError:
        pass
    labels = ds["LULC"].values
    rec("erode_labels", lambda: erode_labels(labels, 1))
    res["ops"] = ops
    res["frames_kept"] = len(keep)
    a = ops["interpolate_to_grid (1 feature)"]["best_s"]
    b = ops["reference time-major kernel (1 feature)"]["best_s"]
    res["interp_vs_reference"] = a / b
    res["codecs"] = codecs(ds["NDVI"].values, ours.astype(np.float32))
    return res


def codecs(frames: np.ndarray, interpolated: np.ndarray) -> list[dict]:
    """Write and read time, and ratio, of Zarr v3 codecs on one input band and one output feature.

    Each array is one chunk (as in the benchmark's stores); reads are the best of 3.
    """
    import shutil
    import tempfile

    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    cands = {
        "zstd level 3 (zarr's default)": [ZstdCodec(level=3)],
        "zstd level 1 (eoflow's)": [ZstdCodec(level=1)],
        "blosc lz4 + byte shuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
        "blosc zstd 1 + byte shuffle": [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")],
        "none": None,
    }
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, arr in (("input band (68 frames)", frames), ("output feature", interpolated)):
            for name, comp in cands.items():
                path = Path(tmp) / "a.zarr"
                shutil.rmtree(path, ignore_errors=True)
                t0 = time.perf_counter()
                z = zarr.create_array(str(path), shape=arr.shape, chunks=arr.shape,
                                      dtype=arr.dtype, compressors=comp)  # fmt: skip
                z[:] = arr
                write = time.perf_counter() - t0
                read = min(_timeit(lambda p=path: zarr.open_array(str(p), mode="r")[:], 3)[:2])
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                out.append({"array": label, "codec": name, "write_s": write, "read_s": read,
                            "ratio": arr.nbytes / size, "mb": arr.nbytes / 1e6})  # fmt: skip
    return out


def _nd_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a - b) / (a + b)


def main(argv: list[str] | None = None) -> int:
    """Print the profile as JSON and append it to a results file (default: the newest)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m benchmarks.vs_eolearn.profile")
    ap.add_argument("--results", type=Path, default=None, help="JSON-lines file to append to")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    res = profile(repeats=args.repeats)
    print(json.dumps(res, indent=1))
    files = [args.results] if args.results else sorted((common.WORK / "results").glob("*.jsonl"))
    if files:
        with files[-1].open("a") as fh:
            fh.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
