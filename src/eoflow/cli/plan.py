"""``eoflow plan``: what a run will cost, before reading any pixel."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plan`` command to the ``eoflow`` parser."""
    p = subparsers.add_parser(
        "plan",
        help="estimate tiles, bytes, tasks, memory and runtime of a run (reads no pixel)",
        description=(
            "Print what a run over an AOI will cost without reading pixels: tiles, matching "
            "items, cube bytes raw and stored, chunk shapes, task counts per stage, peak memory "
            "per worker and a runtime estimate. Exits 2 when the plan cannot fit."
        ),
    )
    p.add_argument("config", nargs="?", help="a run config (YAML); or use --aoi/--start/--end")
    p.add_argument("--aoi", help="GeoJSON/GeoPackage with the area polygon(s)")
    p.add_argument("--start", help="first date, YYYY-MM-DD")
    p.add_argument("--end", help="last date, YYYY-MM-DD")
    p.add_argument("--tile-size-px", type=int, default=1000, help="tile side in pixels (1000)")
    p.add_argument("--res-m", type=float, default=10.0, help="pixel size in metres (10)")
    p.add_argument("--chunk-px", type=int, default=512, help="spatial chunk side in pixels (512)")
    p.add_argument(
        "--bands", nargs="+", default=None, metavar="BAND[:DTYPE]",
        help="cube variables, e.g. B04 B08 SCL:uint8 (default 10 L2A bands uint16 + SCL uint8)",
    )  # fmt: skip
    p.add_argument("--revisit-days", type=int, default=5, help="days between acquisitions (5)")
    p.add_argument("--workers", type=int, default=4, help="Dask workers (4)")
    p.add_argument("--threads-per-worker", type=int, default=2, help="threads per worker (2)")
    p.add_argument("--memory-per-worker", default="4GB", help="memory limit per worker (4GB)")
    p.add_argument("--batch-tiles", type=int, default=8, help="tiles submitted together (8)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)


def _bands(specs: list[str] | None) -> dict[str, str] | None:
    from eoflow.errors import ConfigError

    if not specs:
        return None
    out = {}
    for spec in specs:
        name, _, dtype = spec.partition(":")
        dtype = dtype or ("uint8" if name in ("SCL", "CLM", "IS_DATA") else "uint16")
        try:
            import numpy as np

            np.dtype(dtype)
        except TypeError as exc:
            raise ConfigError(
                f"--bands {spec!r}: unknown dtype {dtype!r}", "e.g. B04:uint16"
            ) from exc
        out[name] = dtype
    return out


def run(args: argparse.Namespace) -> int:
    """Make the plan and print it; exit 2 (via the error) when it cannot fit."""
    from eoflow.errors import ConfigError
    from eoflow.plan import parse_bytes, plan_for_aoi

    if args.config:
        return _plan_config(args)
    if not (args.aoi and args.start and args.end):
        raise ConfigError("eoflow plan needs a CONFIG.yaml or all of --aoi, --start and --end",
                          "e.g. eoflow plan --aoi area.geojson --start 2021-01-01 --end 2021-12-31")  # fmt: skip
    plan = plan_for_aoi(
        args.aoi, start=args.start, end=args.end, tile_size_px=args.tile_size_px,
        res_m=args.res_m, bands=_bands(args.bands), revisit_days=args.revisit_days,
        chunk_px=args.chunk_px, workers=args.workers, threads_per_worker=args.threads_per_worker,
        memory_per_worker_bytes=parse_bytes(args.memory_per_worker),
        batch_tiles=args.batch_tiles,
    )  # fmt: skip
    print(plan.to_json() if args.json else plan.to_text())
    return 0


def _plan_config(args: argparse.Namespace) -> int:
    """Plan a run config: the catalog's real items and asset dtypes, the config's grid and cluster."""
    from eoflow.config import load_config
    from eoflow.errors import ConfigError
    from eoflow.pipeline import make_tiles, plan_run
    from eoflow.stages.ingest import open_source

    cfg = load_config(args.config)
    tiles = make_tiles(cfg)
    _, info = open_source(cfg, tiles)
    plan = plan_run(cfg, tiles, info)
    if plan is None:
        raise ConfigError(f"source kind {cfg.source.kind!r} cannot be planned without reading pixels",
                          "use --aoi/--start/--end with --bands for an estimate")  # fmt: skip
    print(plan.to_json() if args.json else plan.to_text())
    return 0
