"""The seed's chain with eoflow's public functions on a dask.distributed LocalCluster.

What runs, per batch of 8 patches (as eoflow's ``features`` stage batches tiles):

1. **filter** -- ``eoflow.ops.masks.valid_mask`` (``IS_DATA & ~CLM``) and
   ``eoflow.ops.temporal.frame_valid_fraction``, computed eagerly (one number per frame) to choose
   the frames with a valid fraction > 0.8;
2. **features** -- ``eoflow.stages.features.tile_features``: NDWI/NDBI
   (``eoflow.ops.indices``; NDVI is the real band), VALID_COUNT, masked linear interpolation of the
   six features onto the 25 grid instants (``eoflow.ops.temporal.interpolate_to_grid``), erosion of
   every class with the radius-1 disk = 3x3 cross (``eoflow.ops.morphology.erode_classes``,
   ``map_overlap`` so chunk edges never act as borders; the array edge is padded by replication,
   so, like OpenCV, edge pixels are never eroded by the edge itself), written lazily with
   ``eoflow.cube.store.write_tile`` to ``features.zarr``;
3. **sampling** -- ``eoflow.stages.sample.sample_tile`` per patch (0.25 of each class of the eroded
   labels, class 0 excluded), gathered into ``samples.zarr`` (``docs/formats.md``).

The grid is eo-learn's effective one (:func:`benchmarks.vs_eolearn.common.grid_instants`), so the
values can be compared; eoflow's own ``regular_grid`` puts it at midnight.

Per-stage times come from the Dask task stream (seconds of worker compute per task prefix); the
filter and sampling phases are timed on the client as well.

Run from the repository root with the project's interpreter::

    .venv/bin/python -m benchmarks.vs_eolearn.eoflow_chain --store S --n 4 --workers 2 \
        --out OUT --result result.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.vs_eolearn import common

BATCH = 8
"""Patches submitted together (eoflow's ``cluster.batch_tiles`` default)."""

# Dask task-name components -> benchmark stage. Dask fuses chains of tasks into one task whose name
# joins the parts ("getitem-overlap-store-map"); a fused task is charged to its first component in
# this priority order, so e.g. the zarr write fused behind the interpolation counts as interpolation.
# eoflow.ops.fused.fused_features (indices, validity and interpolation in one numba pass per chunk)
# counts as interpolation: with it, the indices and masks columns only hold what runs outside it.
STAGE_PRIORITY = (
    (
        "interpolation",
        ("interp_block", "_interp_block", "transpose", "fused_features", "fused_block"),
    ),
    ("indices", ("normalized_difference", "_nd")),
    ("erosion", ("erode_labels", "overlap", "trim")),
    ("sampling", ("sample_tile",)),
    ("filter", ("truediv", "maximum")),
    ("masks", ("eq", "ne", "and_", "sum", "any", "astype", "aggregate")),
    ("merge", ("stack", "rechunk")),
    ("write", ("store", "map", "finalize_store")),
    ("read", ("original", "open_dataset")),
)


def _stage_of(prefix: str) -> str:
    parts = set(prefix.split("-"))
    parts.add(prefix)
    for stage, names in STAGE_PRIORITY:
        if parts & set(names):
            return stage
    return "other"


def stage_seconds(records: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Sum the compute time of task-stream records per stage and per task prefix."""
    from distributed.utils import key_split

    by_prefix: dict[str, float] = {}
    for rec in records:
        dur = sum(
            s["stop"] - s["start"] for s in rec.get("startstops", ()) if s["action"] == "compute"
        )
        prefix = key_split(rec["key"])
        by_prefix[prefix] = by_prefix.get(prefix, 0.0) + dur
    stages = dict.fromkeys(common.STAGES, 0.0)
    for prefix, dur in by_prefix.items():
        stages[_stage_of(prefix)] += dur
    return stages, by_prefix


def features_config():
    """The seed's feature settings as eoflow's ``FeaturesConfig``."""
    from eoflow.config import FeaturesConfig

    return FeaturesConfig(
        valid_from="clm",
        indices=["NDVI", "NDWI", "NDBI"],
        bands=list(common.SYNTHETIC_BANDS),
        min_valid_fraction=common.MIN_VALID_FRACTION,
        step_days=common.GRID_STEP_DAYS,
        erosion_radius_px=1,
    )


class SamplesWriter:
    """Append each patch's samples to ``samples.zarr`` (``docs/formats.md``) as it arrives.

    Streaming, as eoflow's ``sample`` stage does, so the client never holds every patch's samples
    at once (its memory stays flat in the number of patches).
    """

    NAMES = ("X", "y", "tile", "row", "col", "xcoord", "ycoord")

    def __init__(self, path: Path, attrs: dict):
        import zarr

        shutil.rmtree(path, ignore_errors=True)
        self.root = zarr.open_group(str(path), mode="w", zarr_format=3)
        self.root.attrs.update(attrs)
        self.n = 0

    def append(self, part: dict, tile_index: int) -> None:
        """Append one patch's rows."""
        k = int(part["y"].shape[0])
        part = {**part, "tile": np.full(k, tile_index, np.int32)}
        for name in self.NAMES:
            arr = np.asarray(part[name])
            if name not in self.root:
                self.root.create_array(name, shape=(0, *arr.shape[1:]), dtype=arr.dtype,
                                       chunks=(65_536, *arr.shape[1:]))  # fmt: skip
            z = self.root[name]
            z.resize((self.n + k, *arr.shape[1:]))
            z[self.n : self.n + k] = arr
        self.n += k


def run(store: Path, n: int, workers: int, out: Path, result: Path) -> dict:
    """Run the chain on patches ``0..n-1`` with ``workers`` single-threaded Dask workers."""
    t_start = time.perf_counter()
    import dask
    from distributed import as_completed, get_task_stream

    from eoflow.cluster import connect
    from eoflow.config import ClusterConfig
    from eoflow.cube.store import open_tile, write_ledger, write_tile
    from eoflow.ops.masks import valid_mask
    from eoflow.ops.temporal import frame_valid_fraction
    from eoflow.stages.features import feature_recipes, footprint, tile_features
    from eoflow.stages.sample import sample_tile

    t_import = time.perf_counter() - t_start
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    fstore, sstore = out / "features.zarr", out / "samples.zarr"
    fcfg = features_config()
    tile_ids = [common.tile_id(k) for k in range(n)]
    phases = {"cluster_start": 0.0, "filter": 0.0, "features": 0.0, "sampling": 0.0}
    frames_kept: dict[str, int] = {}
    t0 = time.perf_counter()
    cluster_cfg = ClusterConfig(n_workers=workers, threads_per_worker=1, dashboard_address=":0")
    with connect(cluster_cfg, quiet=True) as client:
        phases["cluster_start"] = time.perf_counter() - t0
        with get_task_stream(client) as ts:
            grid = None
            for b in range(0, n, BATCH):
                batch = tile_ids[b : b + BATCH]
                t1 = time.perf_counter()
                cubes, fractions = {}, {}
                for tid in batch:
                    ds = open_tile(store, tid)
                    feature_recipes(ds, fcfg)  # validates the bands early, as the stage does
                    cubes[tid] = ds  # the raw cube: tile_features adds the indices itself
                    fractions[tid] = frame_valid_fraction(valid_mask(ds, how="clm"), footprint(ds))
                values = dask.compute(*fractions.values())
                keeps = {
                    tid: np.asarray(v) > fcfg.min_valid_fraction for tid, v in zip(batch, values)
                }
                t2 = time.perf_counter()
                phases["filter"] += t2 - t1
                writes = []
                for tid in batch:
                    ds = cubes.pop(tid)
                    if grid is None:
                        grid = common.grid_instants(ds["time"].values).astype("datetime64[ns]")
                    feats = tile_features(ds, keeps[tid], ds["LULC"], fcfg=fcfg, grid=grid)
                    frames_kept[tid] = int(keeps[tid].sum())
                    writes.append(write_tile(feats, fstore, tid, compute=False))
                # one submission per batch, one future per patch (as eoflow's stage runner does)
                futures = dict(zip(client.compute(writes), batch, strict=True))
                for fut in as_completed(list(futures)):
                    fut.result()
                    write_ledger(fstore, futures[fut], config_hash="vs_eolearn")
                phases["features"] += time.perf_counter() - t2
            t3 = time.perf_counter()
            futs = [
                client.submit(sample_tile, str(fstore), tid, fraction=common.SAMPLE_FRACTION,
                              exclude=list(common.SAMPLE_EXCLUDE), seed=common.SAMPLE_SEED,
                              pure=False)
                for tid in tile_ids
            ]  # fmt: skip
            attrs = {
                "features": list(common.FEATURES),
                "time": [str(t)[:19] for t in grid],
                "tiles": tile_ids,
                "crs": f"EPSG:{common.CRS_EPSG}",
                "sampling": {"fraction": common.SAMPLE_FRACTION, "seed": common.SAMPLE_SEED,
                             "exclude": list(common.SAMPLE_EXCLUDE)},
            }  # fmt: skip
            writer = SamplesWriter(sstore, attrs)
            for i, fut in enumerate(futs):  # in patch order, one patch in the client at a time
                writer.append(fut.result(), i)
                fut.release()
            n_samples = writer.n
            phases["sampling"] = time.perf_counter() - t3
        records = ts.data
    stages, by_prefix = stage_seconds(records)
    info = {
        "system": "eoflow",
        "patches": n,
        "workers": workers,
        "exec_seconds": phases["filter"] + phases["features"] + phases["sampling"],
        "process_seconds": time.perf_counter() - t_start,
        "import_seconds": t_import,
        "phases": phases,
        "stage_seconds": stages,
        "task_prefix_seconds": dict(sorted(by_prefix.items(), key=lambda kv: -kv[1])),
        "frames_kept": frames_kept,
        "n_samples": n_samples,
        "failed": 0,
    }
    common.write_json(result, info)
    return info


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="eoflow_chain")
    ap.add_argument("--store", type=Path, default=common.WORK / "inputs" / "cubes.zarr")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--result", type=Path, required=True)
    args = ap.parse_args(argv)
    run(args.store, args.n, args.workers, args.out, args.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
