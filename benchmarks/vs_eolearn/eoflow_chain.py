"""The seed's chain with eoflow's public functions on a dask.distributed LocalCluster.

What runs, per patch, through eoflow's stage runner's sliding window
(``eoflow.stages._runner.run_window``: one patch per worker thread computing, as eoflow's
``features`` stage runs tiles):

1. **filter** -- ``eoflow.stages.features.frame_fraction`` (``IS_DATA & ~CLM`` counted per frame
   by one numba pass per chunk, ``eoflow.ops.temporal.clm_frame_fraction``) to choose the frames
   with a valid fraction > 0.8; submitted at high priority a window ahead, as the stage does;
2. **features** -- ``eoflow.stages.features.tile_features``: NDWI/NDBI
   (``eoflow.ops.indices``; NDVI is the real band), VALID_COUNT, masked linear interpolation of the
   nine features onto the 25 grid instants (``eoflow.ops.fused``: one numba pass per chunk), erosion
   of every class with the radius-1 disk = 3x3 cross (``eoflow.ops.morphology.erode_classes``,
   ``map_overlap`` so chunk edges never act as borders; the array edge is padded by replication,
   so, like OpenCV, edge pixels are never eroded by the edge itself), written lazily with
   ``eoflow.cube.store.write_tile`` to ``features.zarr``;
3. **sampling** -- ``eoflow.stages.sample.sample_dataset`` on the same lazy features (0.25 of each
   class of the eroded labels, class 0 excluded): the sampled pixels are gathered from the chunks
   in memory, in the same graph as their write, and appended to ``samples.zarr``
   (``docs/formats.md``) in patch order. (eoflow's pipeline samples in its own ``sample`` stage,
   re-reading ``features.zarr`` with the same function, so that stage can be re-run alone.)

The grid is eo-learn's effective one (:func:`benchmarks.vs_eolearn.common.grid_instants`), so the
values can be compared; eoflow's own ``regular_grid`` puts it at midnight.

Per-stage times come from the Dask task stream (seconds of worker compute per task prefix); the
client's graph building and waiting are timed as well.

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

# Dask task-name components -> benchmark stage. Dask fuses chains of tasks into one task whose name
# joins the parts ("getitem-overlap-store-map"); a fused task is charged to its first component in
# this priority order, so e.g. the zarr write fused behind the interpolation counts as interpolation.
# eoflow.ops._fused_kernel.fused_features (indices, validity and interpolation in one numba pass per chunk)
# counts as interpolation: with it, the indices and masks columns only hold what runs outside it.
STAGE_PRIORITY = (
    (
        "interpolation",
        ("interp_block", "_interp_block", "transpose", "fused_features", "fused_block"),
    ),
    ("indices", ("normalized_difference", "_nd")),
    ("erosion", ("erode_labels", "overlap", "trim")),
    (
        "sampling",
        (
            "sample_tile",
            "sample_block",
            "sample_pixels",
            "gather_block",
            "assemble",
            "finish",
            "slice_part",
            "part_layout",
            "tag_part",
        ),
    ),
    ("filter", ("truediv", "maximum", "_clm_counts_block", "clm_counts_block")),
    ("masks", ("eq", "ne", "and_", "sum", "any", "astype", "aggregate")),
    ("merge", ("stack", "rechunk")),
    (
        "write",
        (
            "store",
            "map",
            "finalize_store",
            "store_block",
            "stored",
            "write_chunk",
            "checksum_after",
        ),
    ),
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
    return stages_of_prefixes(by_prefix), by_prefix


def stages_of_prefixes(by_prefix: dict[str, float]) -> dict[str, float]:
    """Seconds per benchmark stage from seconds per task prefix (the report recomputes with it)."""
    stages = dict.fromkeys(common.STAGES, 0.0)
    for prefix, dur in by_prefix.items():
        stages[_stage_of(prefix)] += dur
    return stages


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


def _cpu_seconds() -> dict:
    """User and system CPU seconds, minor page faults and peak RSS of the calling process."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": round(r.ru_utime, 2), "system": round(r.ru_stime, 2), "minflt": r.ru_minflt,
            "maxrss_mib": round(r.ru_maxrss / 1024)}  # fmt: skip


def _incoming_by_prefix(dask_worker) -> dict:
    """Bytes fetched from other workers per task prefix."""
    from distributed.utils import key_split

    out: dict[str, int] = {}
    for t in dask_worker.transfer_incoming_log:
        for key, nbytes in t["keys"].items():
            out[key_split(key)] = out.get(key_split(key), 0) + int(nbytes)
    return out


def _prepass(client, store: Path, tids: list[str], fcfg) -> dict:
    """Open each patch and submit its frame filter (one number per frame) at high priority."""
    from eoflow.cube.store import open_tile
    from eoflow.stages.features import feature_recipes, frame_fraction

    out = {}
    for tid in tids:
        ds = open_tile(store, tid)
        feature_recipes(ds, fcfg)  # validates the bands early, as the stage does
        fraction = frame_fraction(ds, fcfg)
        out[tid] = (ds, client.compute(fraction, priority=10))
    return out


def run(
    store: Path,
    n: int,
    workers: int,
    out: Path,
    result: Path,
    allocator: str | None = None,
    window: int | None = None,
) -> dict:
    """Run the chain on patches ``0..n-1`` with ``workers`` single-threaded Dask workers."""
    t_start = time.perf_counter()
    from eoflow.cluster import connect
    from eoflow.config import ClusterConfig

    t_import = time.perf_counter() - t_start
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    fstore, sstore = out / "features.zarr", out / "samples.zarr"
    fcfg = features_config()
    tile_ids = [common.tile_id(k) for k in range(n)]
    phases = {"cluster_start": 0.0, "build": 0.0, "compute": 0.0, "append": 0.0}
    frames_kept: dict[str, int] = {}
    t0 = time.perf_counter()
    alloc = {} if allocator is None else {"allocator": allocator}  # None: eoflow's default
    cluster_cfg = ClusterConfig(
        n_workers=workers, threads_per_worker=1, dashboard_address=":0", **alloc
    )
    with connect(cluster_cfg, quiet=True) as client:
        # the workers boot in the background (eoflow.cluster.connect) while this process imports
        phases["cluster_start"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        import dask
        from distributed import get_task_stream

        from eoflow.cube.store import checksum_after, write_ledger, write_tile
        from eoflow.stages._runner import run_window
        from eoflow.stages.features import tile_features
        from eoflow.stages.sample import SampleWriter, part_layout, sample_dataset, tag_part

        t_import += time.perf_counter() - t1
        import gc

        gc.freeze()  # as the eoflow command does once its cluster is up (run_pipeline settle_gc)
        with get_task_stream(client) as ts:
            state: dict = {"grid": None, "writer": None}
            pending: dict = {}

            def prepare(tid: str) -> None:
                pending.update(_prepass(client, store, [tid], fcfg))

            def build(tid: str) -> list:
                # built in the client one patch ahead, while the cluster computes (as eoflow's
                # stage runner does: ``eoflow.stages._runner.run_window``)
                t1 = time.perf_counter()
                ds, fraction = pending.pop(tid)
                keep = np.asarray(fraction.result()) > fcfg.min_valid_fraction
                if state["grid"] is None:
                    grid = common.grid_instants(ds["time"].values).astype("datetime64[ns]")
                    state["grid"] = grid
                    state["writer"] = SampleWriter(sstore, samples_attrs(tile_ids, grid),
                                                   client=client)  # fmt: skip
                feats = tile_features(ds, keep, ds["LULC"], fcfg=fcfg, grid=state["grid"])
                frames_kept[tid] = int(keep.sum())
                written = dask.delayed(checksum_after, pure=False)(
                    write_tile(feats, fstore, tid, compute=False), str(fstore), tid
                )
                # the samples are gathered from the features in memory, in the same graph; they
                # stay on the worker, which also writes them into samples.zarr
                sampled = sample_dataset(feats, tid, fraction=common.SAMPLE_FRACTION,
                                         exclude=list(common.SAMPLE_EXCLUDE),
                                         seed=common.SAMPLE_SEED)  # fmt: skip
                part = dask.delayed(tag_part, pure=True)(sampled, tile_ids.index(tid))
                layout = dask.delayed(part_layout, pure=True)(part)  # rows, for the writer
                phases["build"] += time.perf_counter() - t1
                return [written, part, layout]

            def launch(tid: str, graphs: list) -> list:
                t1 = time.perf_counter()
                futures = client.compute(graphs)
                phases["build"] += time.perf_counter() - t1
                return futures

            def finish(tid: str, futures: list) -> None:
                # in patch order, so samples.zarr rows stay ordered
                t2 = time.perf_counter()
                checksum = futures[0].result()  # read by a worker after the write
                write_ledger(fstore, tid, config_hash="vs_eolearn", checksum=checksum)
                t3 = time.perf_counter()
                state["writer"].add(futures[1], futures[2])  # only a row count comes back
                phases["append"] += time.perf_counter() - t3
                futures[0].release()
                phases["compute"] += time.perf_counter() - t2

            # eoflow's default window (cluster.batch_tiles): one patch per worker thread
            run_window(tile_ids, build, launch, finish, window=window or workers,
                       prepare=prepare)  # fmt: skip
            n_samples = state["writer"].close()
        records = ts.data
        cpu = {"workers": list(client.run(_cpu_seconds).values()), "main": _cpu_seconds()}
        transfer_by_prefix: dict[str, int] = {}
        for log in client.run(_incoming_by_prefix).values():
            for k, v in log.items():
                transfer_by_prefix[k] = transfer_by_prefix.get(k, 0) + v
    stages, by_prefix = stage_seconds(records)
    transfer = sum(
        s["stop"] - s["start"]
        for rec in records
        for s in rec.get("startstops", ())
        if s["action"] == "transfer"
    )
    info = {
        "system": "eoflow",
        "patches": n,
        "workers": workers,
        "exec_seconds": phases["build"] + phases["compute"],
        "process_seconds": time.perf_counter() - t_start,
        "import_seconds": t_import,
        "phases": phases,
        "stage_seconds": stages,
        "task_prefix_seconds": dict(sorted(by_prefix.items(), key=lambda kv: -kv[1])),
        "frames_kept": frames_kept,
        "cpu_seconds": cpu,
        "transfer_seconds": transfer,
        "transfer_bytes": sum(transfer_by_prefix.values()),
        "transfer_bytes_by_prefix": transfer_by_prefix,
        "n_samples": n_samples,
        "failed": 0,
    }
    common.write_json(result, info)
    return info


def samples_attrs(tile_ids: list[str], grid: np.ndarray) -> dict:
    """Attributes of ``samples.zarr`` (``docs/formats.md``)."""
    return {
        "features": list(common.FEATURES),
        "time": [str(t)[:19] for t in grid],
        "tiles": tile_ids,
        "crs": f"EPSG:{common.CRS_EPSG}",
        "sampling": {"fraction": common.SAMPLE_FRACTION, "seed": common.SAMPLE_SEED,
                     "exclude": list(common.SAMPLE_EXCLUDE)},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="eoflow_chain")
    ap.add_argument("--store", type=Path, default=common.WORK / "inputs" / "cubes.zarr")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--result", type=Path, required=True)
    ap.add_argument(
        "--allocator",
        default=None,
        choices=("system", "retain", "jemalloc"),
        help="cluster.allocator of the workers (default: eoflow's default, retain)",
    )
    ap.add_argument(
        "--window",
        type=int,
        default=None,
        help="patches computing at once (default: eoflow's, one per worker thread)",
    )
    args = ap.parse_args(argv)
    run(args.store, args.n, args.workers, args.out, args.result, allocator=args.allocator,
        window=args.window)  # fmt: skip
    return 0


if __name__ == "__main__":
    code = main()
    import gc

    gc.freeze()  # as the eoflow command does (eoflow.cli.main.run): no final sweep at exit
    sys.exit(code)
