"""Scale curve on the SYNTHETIC Sentinel-2-like source through a LocalCluster.

For each tile count N (default 1, 4, 16, 64) a fresh LocalCluster (2 worker processes, 1 thread
each, all on 127.0.0.1) computes, for N tiles of 512 x 512 px x 24 dates, a per-chunk
reduction (valid-observation count and mean NDVI over valid observations) written to Zarr, tiles
submitted in batches (``--batch-tiles``). Recorded: wall time, throughput in pixel-dates per second
per core, peak RSS of each worker process, peak RSS of the client process (which hosts the
LocalCluster scheduler) and the scheduler's task-state count at its largest. Results go to
``results.jsonl`` and ``RESULTS.md`` next to this file (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _tiles(n: int, size: int):
    from eoflow.geo.tiles import Tile

    side = math.ceil(math.sqrt(n))
    out = []
    for i in range(n):
        r, c = divmod(i, side)
        left, top = 400000.0 + c * size * 10.0, 5200000.0 - r * size * 10.0
        out.append(Tile(f"32633_{c}_{r}", "EPSG:32633", (10.0, 0, left, 0, -10.0, top), size, size))
    return out


def _period(n_dates: int, revisit: int) -> tuple[dt.date, dt.date]:
    from eoflow.sources.synthetic import synthetic_dates

    dates = synthetic_dates("2021-01-01", "2023-12-31", revisit)[:n_dates]
    return dt.date(2021, 1, 1), dt.date.fromisoformat(str(dates[-1].astype("datetime64[D]")))


def _reduction(tile, start, end, revisit, chunk_px):
    """Lazy per-chunk reduction of one synthetic tile: VALID_COUNT (uint16), NDVI_MEAN (float32)."""
    import xarray as xr

    from eoflow.sources.synthetic import synthetic_cube

    ds = synthetic_cube(tile, start=start, end=end, revisit_days=revisit,
                        chunks={"time": -1, "y": chunk_px, "x": chunk_px})  # fmt: skip
    valid = (ds["CLM"] == 0) & (ds["IS_DATA"] == 1)
    nir, red = ds["B08"].astype("float32"), ds["B04"].astype("float32")
    ndvi = (nir - red) / (nir + red).where(valid)  # NaN where invalid, no 0/0
    out = xr.Dataset({
        "VALID_COUNT": valid.sum("time", dtype="uint16"),
        "NDVI_MEAN": ndvi.mean("time").astype("float32"),
    })  # fmt: skip
    return out.drop_vars("spatial_ref", errors="ignore"), ds.sizes["time"]


def _scheduler_tasks(client, wait_s: float = 1.0) -> int:
    """Task states held by the scheduler (polled briefly: graphs arrive asynchronously)."""
    n, deadline = 0, time.monotonic() + wait_s
    while time.monotonic() < deadline:
        n = max(n, client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))
        time.sleep(0.05)
    return n


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_one(n_tiles: int, args: argparse.Namespace, store_root: Path) -> dict:
    """Compute the reduction for ``n_tiles`` tiles on a fresh LocalCluster; return metrics."""
    from distributed import Client, LocalCluster

    start, end = _period(args.dates, args.revisit_days)
    tiles = _tiles(n_tiles, args.size)
    store = store_root / f"scale-{n_tiles}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=args.threads, processes=True,
                     host="127.0.0.1", dashboard_address="127.0.0.1:0", memory_limit=args.memory_limit,
                     silence_logs=40) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        warm, _ = _reduction(_tiles(1, 32)[0], start, end, args.revisit_days, args.chunk_px)
        client.compute(warm, sync=True)  # imports and first-call costs on every worker
        max_tasks = 0
        t0 = time.perf_counter()
        n_dates = 0
        for b in range(0, n_tiles, args.batch_tiles):
            futures = []
            for tile in tiles[b : b + args.batch_tiles]:
                red, n_dates = _reduction(tile, start, end, args.revisit_days, args.chunk_px)
                futures.append(
                    client.compute(red.to_zarr(store, group=tile.tile_id, mode="w", compute=False))
                )
            max_tasks = max(
                max_tasks, client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
            )
            client.gather(futures)
        wall = time.perf_counter() - t0
        worker_rss = client.run(_peak_rss_bytes)
        ok = client.run(lambda dask_worker: len(dask_worker.state.tasks))
    pixel_dates = n_tiles * args.size * args.size * n_dates
    cores = args.workers * args.threads
    return {
        "tiles": n_tiles,
        "tile_px": args.size,
        "dates": n_dates,
        "pixel_dates": pixel_dates,
        "wall_s": round(wall, 2),
        "pixel_dates_per_s_per_core": round(pixel_dates / wall / cores),
        "worker_peak_rss_mib": sorted(round(v / 2**20) for v in worker_rss.values()),
        "client_scheduler_peak_rss_mib": round(_peak_rss_bytes() / 2**20),
        "scheduler_max_tasks": max_tasks,
        "workers_alive_at_end": len(ok),
    }


def _context(args: argparse.Namespace) -> dict:
    import dask
    import distributed
    import xarray
    import zarr

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%MZ"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "python": platform.python_version(),
        "versions": f"dask {dask.__version__}, distributed {distributed.__version__}, "
        f"xarray {xarray.__version__}, zarr {zarr.__version__}",
        "cluster": f"LocalCluster {args.workers} workers x {args.threads} thread, "
        f"memory_limit {args.memory_limit}",
        "chunks": f"(time -1, y {args.chunk_px}, x {args.chunk_px}), batch {args.batch_tiles} tiles",
    }


def write_report(rows: list[dict], context: dict, command: str, path: Path) -> None:
    """Write the Markdown table of ``rows`` with the command and context."""
    head = (
        "| tiles | pixel-dates | wall (s) | pixel-dates/s/core | worker peak RSS (MiB) | "
        "client+scheduler peak RSS (MiB) | scheduler max tasks |\n|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['tiles']} | {r['pixel_dates']:,} | {r['wall_s']} | "
        f"{r['pixel_dates_per_s_per_core']:,} | {', '.join(map(str, r['worker_peak_rss_mib']))} | "
        f"{r['client_scheduler_peak_rss_mib']} | {r['scheduler_max_tasks']:,} |\n"
        for r in rows
    )
    ctx = "".join(f"- {k}: {v}\n" for k, v in context.items())
    path.write_text(
        "# Scale curve on the SYNTHETIC source\n\n"
        f"Command: `{command}`\n\n{ctx}\n{head}{body}\n"
        "Workload per tile: 512 x 512 px x 24 dates of `eoflow.sources.synthetic` (6 bands + CLM,\n"
        "IS_DATA, SCL generated per chunk), reduced per chunk to VALID_COUNT and mean NDVI over\n"
        "valid observations, written to Zarr (one group per tile), tiles submitted in batches.\n"
        "Peak RSS is `ru_maxrss` of each worker process; the LocalCluster scheduler runs inside\n"
        "the client process, so its memory is reported together with the client's.\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    p.add_argument("--tiles", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--dates", type=int, default=24)
    p.add_argument("--revisit-days", type=int, default=15)
    p.add_argument("--chunk-px", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory-limit", default="2GiB")
    p.add_argument("--batch-tiles", type=int, default=4)
    p.add_argument("--out", type=Path, default=HERE)
    args = p.parse_args(argv)
    rows: list[dict] = []
    context = _context(args)
    command = "python -m benchmarks.scale --tiles " + " ".join(map(str, args.tiles))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eoflow-scale-") as tmp:
        for n in args.tiles:
            row = run_one(n, args, Path(tmp))
            print(json.dumps(row), flush=True)
            rows.append(row)
            with (args.out / "results.jsonl").open("a") as f:
                f.write(json.dumps({**row, **context}) + "\n")
            write_report(rows, context, command, args.out / "RESULTS.md")  # after every size
    print(f"wrote {args.out / 'RESULTS.md'}")
    return 0
