"""``prepare``: identical inputs for both systems, from the real Slovenia patch.

1. ``base.npz``: the real 101 x 100 px x 68-date NDVI/CLM/IS_DATA series (from the shipped sample
   ``data/sample/`` when present, else ``../shared/data/eolearn-example``), the LULC reference
   rasterised from the real ``LULC.gpkg`` onto that grid (checked against the sample's truth
   raster), the acquisition times and the six synthetic bands (see
   :func:`benchmarks.vs_eolearn.common.synthetic_bands`).
2. ``inputs/cubes.zarr``: one eoflow cube per patch (``make_cube`` + ``write_tile``; NDVI float32,
   the synthetic bands as uint16 digital numbers with ``scale`` 1e-4 -- Sentinel-2's native
   storage and eoflow's cube model; ``DN / 10000`` is eo-learn's float32 value bit for bit --,
   CLM/IS_DATA uint8 on ``time, y, x``, LULC uint16 on ``y, x``; chunks 68 x 512 x 512, i.e. one
   spatial chunk per 500 px patch, as eoflow's default ``grid.chunk_px``).
3. ``inputs/eopatches/pNNN``: the same arrays as eo-learn EOPatches (written by eo-learn itself in
   its own venv: ``data/NDVI``, ``data/BANDS`` = B02,B03,B04,B08,B11,B12, ``mask/CLM``, ``mask/IS_DATA``,
   ``mask_timeless/LULC``, uncompressed as eo-learn saves by default).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.vs_eolearn import common
from benchmarks.vs_eolearn.venv import eolearn_python

SAMPLE = common.ROOT / "data" / "sample"
INPUT_VERSION = "vs_eolearn-input-dn"
"""Ledger tag of the eoflow inputs (bands as uint16 DN); other tags are rebuilt."""
SHARED = common.ROOT.parent / "shared" / "data" / "eolearn-example"


def _from_sample() -> dict[str, np.ndarray]:
    import rasterio

    items = []
    for item_json in sorted(SAMPLE.glob("items/*/item.json")):
        meta = json.loads(item_json.read_text())
        items.append((meta["properties"]["datetime"], item_json.parent))
    items.sort()
    arrays: dict[str, list[np.ndarray]] = {"NDVI": [], "CLM": [], "IS_DATA": []}
    transform = None
    for _, folder in items:
        for name in arrays:
            with rasterio.open(folder / f"{name}.tif") as src:
                arrays[name].append(src.read(1))
                transform = src.transform
    times = np.array([t.rstrip("Z") for t, _ in items], dtype="datetime64[s]")
    out = {k: np.stack(v) for k, v in arrays.items()}
    out["times"] = times
    out["transform"] = np.array(tuple(transform)[:6], dtype=np.float64)
    out["source"] = np.array(str(SAMPLE))
    return out


def _from_shared() -> dict[str, np.ndarray]:
    p = SHARED / "TestEOPatch"
    out = {
        "NDVI": np.load(p / "data" / "NDVI.npy")[..., 0],
        "CLM": np.load(p / "mask" / "CLM.npy")[..., 0].astype(np.uint8),
        "IS_DATA": np.load(p / "mask" / "IS_DATA.npy")[..., 0].astype(np.uint8),
        "times": np.array(json.loads((p / "timestamps.json").read_text()), dtype="datetime64[s]"),
    }
    from affine import Affine

    b = (465181.0522318204, 5079244.8912012065, 466180.53145382757, 5080254.63349641)
    a = Affine((b[2] - b[0]) / 100, 0, b[0], 0, -(b[3] - b[1]) / 101, b[3])
    out["transform"] = np.array(tuple(a)[:6], dtype=np.float64)
    out["source"] = np.array(str(SHARED))
    return out


def _reference_paths() -> tuple[Path, Path | None]:
    if (SAMPLE / "reference" / "LULC.gpkg").exists():
        truth = SAMPLE / "truth" / "LULC.npy"
        return SAMPLE / "reference" / "LULC.gpkg", truth if truth.exists() else None
    p = SHARED / "TestEOPatch"
    return p / "vector_timeless" / "LULC.gpkg", p / "mask_timeless" / "LULC.npy"


def rasterize_reference(shape: tuple[int, int], transform: np.ndarray) -> np.ndarray:
    """Burn the real ``LULC.gpkg`` (``LULC_ID``) onto the base grid; checked against the truth raster."""
    import geopandas as gpd
    from affine import Affine
    from rasterio.features import rasterize

    gpkg, truth = _reference_paths()
    gdf = gpd.read_file(gpkg).to_crs(f"EPSG:{common.CRS_EPSG}")
    out = np.zeros(shape, dtype=np.uint16)
    shapes = [(g, int(v)) for g, v in zip(gdf.geometry, gdf["LULC_ID"]) if g is not None]
    rasterize(shapes, out=out, transform=Affine(*transform), all_touched=False)
    if truth is not None:
        ref = np.load(truth)
        ref = ref[..., 0] if ref.ndim == 3 else ref
        agree = float((ref == out).mean())
        if agree < 0.999:
            raise RuntimeError(f"rasterised {gpkg} agrees with {truth} on only {agree:.2%}")
    return out


def build_base(work: Path = common.WORK) -> Path:
    """Write ``base.npz`` (idempotent)."""
    path = common.base_path(work)
    if path.exists():
        with np.load(path) as z:
            if set(common.SYNTHETIC_BANDS) <= set(z.files):
                return path
        # made by an older recipe (fewer synthetic bands): rebuild it and everything made from it
        shutil.rmtree(work / "inputs", ignore_errors=True)
    src = _from_sample() if (SAMPLE / "items").exists() else _from_shared()
    if src["NDVI"].shape[0] != common.N_DATES:
        raise RuntimeError(f"expected {common.N_DATES} dates, got {src['NDVI'].shape[0]}")
    src["LULC"] = rasterize_reference(src["NDVI"].shape[1:], src["transform"])
    src.update(common.synthetic_bands(src["NDVI"], src["CLM"], src["times"]))
    src["NDVI"] = src["NDVI"].astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **src)
    return path


def write_eoflow_cubes(n: int, work: Path = common.WORK) -> Path:
    """Write patches ``0..n-1`` as eoflow cubes into ``inputs/cubes.zarr`` (skips existing ones)."""
    from eoflow.cube.model import make_cube, validate_cube
    from eoflow.cube.store import read_ledger, write_ledger, write_tile
    from eoflow.geo.tiles import Tile

    store = work / "inputs" / "cubes.zarr"
    entry = read_ledger(store, common.tile_id(0))
    if entry is not None and entry.get("config_hash") != INPUT_VERSION:
        # written by an older recipe (float32 bands): rebuild, ledger included
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(store.parent / "ledger" / store.stem, ignore_errors=True)
    base = common.load_base(work)
    base.pop("transform", None)
    base.pop("source", None)
    times = common.times_of(base)
    for k in range(n):
        tid = common.tile_id(k)
        if read_ledger(store, tid) is not None:
            continue
        p = common.make_patch(base, k)
        tile = Tile(tid, f"EPSG:{common.CRS_EPSG}", common.tile_transform(k), common.PATCH_PX,
                    common.PATCH_PX)  # fmt: skip
        variables = {name: p[name] for name in ("NDVI", "CLM", "IS_DATA")}
        for b in common.SYNTHETIC_BANDS:  # exact: the float32 values are DN / 10000
            variables[b] = np.round(p[b].astype(np.float64) * 1e4).astype(np.uint16)
        variables["LULC"] = p["LULC"]
        attrs = {
            b: {"synthetic": "yes (benchmarks/vs_eolearn/common.py)", "scale": 1e-4, "offset": 0.0}
            for b in common.SYNTHETIC_BANDS
        }
        ds = make_cube(variables, tile=tile, time=times, attrs=attrs)
        validate_cube(ds)
        ds = ds.chunk({"time": -1, "y": 512, "x": 512})
        write_tile(ds, store, tid)
        write_ledger(store, tid, config_hash=INPUT_VERSION)
    return store


def start_eopatch_writers(n: int, work: Path = common.WORK) -> list[subprocess.Popen]:
    """Start eo-learn (in its venv) writing patches ``0..n-1`` as EOPatches, one process per core."""
    import os

    out = work / "inputs" / "eopatches"
    procs = max(1, min(2, os.cpu_count() or 1, n))
    return [
        subprocess.Popen(
            [
                str(eolearn_python(work)),
                "-m",
                "benchmarks.vs_eolearn.eolearn_chain",
                "write-inputs",
                "--n",
                str(n),
                "--out",
                str(out),
                "--start",
                str(i),
                "--step",
                str(procs),
            ],
            cwd=common.ROOT,
            env=common.thread_env(),
        )
        for i in range(procs)
    ]


def prepare(n: int, work: Path = common.WORK) -> dict:
    """Everything ``run`` needs for up to ``n`` patches."""
    from benchmarks.vs_eolearn.venv import ensure_eolearn_venv

    t0 = time.perf_counter()
    ensure_eolearn_venv(work)
    build_base(work)
    writers = start_eopatch_writers(n, work)  # eo-learn's gzip writes run beside the cubes
    write_eoflow_cubes(n, work)
    if any(p.wait() != 0 for p in writers):
        raise RuntimeError("writing the EOPatches failed (see the output above)")
    info = {
        "patches": n,
        "seconds": round(time.perf_counter() - t0, 1),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(f"prepare: {n} patch(es) ready under {work / 'inputs'} ({info['seconds']} s)",
          file=sys.stderr)  # fmt: skip
    return info
