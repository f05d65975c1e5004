"""The composing verb: area -> tiles -> cube -> features -> samples -> model -> maps -> report."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from eoflow.config import RunConfig, config_hash
from eoflow.errors import ConfigError, InputError
from eoflow.geo.aoi import load_aoi
from eoflow.geo.tiles import Tile
from eoflow.geo.tiling import split_aoi
from eoflow.stages.context import RunContext

__all__ = ["STAGES", "make_tiles", "run_pipeline"]

STAGES = ("ingest", "features", "sample", "train", "predict", "report")


def make_tiles(cfg: RunConfig) -> list[Tile]:
    """The run's tiles (optionally restricted to ``cfg.tiles``)."""
    a = cfg.aoi
    aoi = load_aoi(a.path, bbox=a.bbox, bbox_crs=a.bbox_crs, layer=a.layer, buffer_m=a.buffer_m)
    tiles = split_aoi(
        aoi, tile_size_px=cfg.grid.tile_size_px, res_m=cfg.grid.res_m, origin=cfg.grid.origin
    )
    if cfg.tiles:
        unknown = sorted(set(cfg.tiles) - {t.tile_id for t in tiles})
        if unknown:
            raise ConfigError(
                f"tiles {unknown} are not in the AOI's grid",
                f"tiles: {[t.tile_id for t in tiles][:20]}",
            )
        tiles = [t for t in tiles if t.tile_id in cfg.tiles]
    if not tiles:
        raise InputError(f"AOI {aoi.source} covers no tile", "check the AOI and grid settings")
    return tiles


@contextlib.contextmanager
def _lock(out: Path):
    """One writer per run directory; the lock file says who holds it."""
    import socket

    path = out / ".eoflow.lock"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        holder = path.read_text().strip() if path.exists() else "?"
        pid = int(holder.split("pid=")[-1].split()[0]) if "pid=" in holder else None
        if pid is not None and not _alive(pid) and socket.gethostname() in holder:
            path.unlink(missing_ok=True)  # stale lock of a dead process on this host
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        else:
            raise InputError(f"run directory {out} is in use by another eoflow run ({holder})",
                             "wait for it or use another --out") from None  # fmt: skip
    os.write(fd, f"host={socket.gethostname()} pid={os.getpid()}\n".encode())
    os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_pipeline(
    cfg: RunConfig,
    out: str | Path,
    *,
    stages: tuple[str, ...] = STAGES,
    scheduler: str | None = None,
    resume: bool = True,
    quiet: bool = False,
    settle_gc: bool = False,
) -> RunContext:
    """Run ``stages`` of the pipeline for ``cfg`` into ``out`` on a Dask cluster.

    Parameters
    ----------
    cfg
        Validated run configuration.
    out
        Run directory (created). Finished tiles are never rewritten.
    stages
        Subset of :data:`STAGES`, run in pipeline order.
    scheduler
        Address of an existing Dask scheduler; default a LocalCluster sized to the machine.
    resume
        Skip tiles whose ledger entry matches this config (always safe; False rewrites all).
    settle_gc
        Once the cluster is up (the start-up imports done), move every object alive to the
        garbage collector's permanent generation (``gc.freeze``), so that the collections during
        the run never rescan them (0.3-0.5 CPU s of a 16-tile run on a 2-core VM). For a process
        that ends with the run (the ``eoflow`` command); objects frozen are never collected.

    Returns
    -------
    RunContext
        Per-tile status, timings and paths.
    """
    from eoflow.cluster import connect
    from eoflow.manifest import write_manifest

    out = Path(out)
    tiles = make_tiles(cfg)
    ctx = RunContext(cfg=cfg, out=out, tiles=tiles, resume=resume, quiet=quiet)
    ctx.load_status()
    order = [s for s in STAGES if s in stages]
    ctx.retry_failed(order)
    preflight(ctx, order)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_lock(out))
        ctx.log(f"{len(tiles)} tile(s) of {cfg.grid.tile_size_px} px; run directory {out}")
        client = stack.enter_context(connect(cfg.cluster, address=scheduler, quiet=quiet))
        ctx.client = client
        if settle_gc:
            import gc

            gc.freeze()
        if not resume:
            _forget(out)
        for stage in order:
            ctx.timed(stage, lambda s=stage: _STAGE_FUNCS[s](ctx))
            _require_tiles(ctx, stage)
            if not ctx.changed:
                continue
            ctx.save_status()
            write_manifest(
                out,
                inputs={"config": cfg.model_dump(mode="json"), "source": ctx.source_info},
                parameters={
                    "config_hash": config_hash(cfg),
                    "stages": order,
                    "tiles": [t.tile_id for t in tiles],
                },
                seeds={
                    "sampling": cfg.sampling.seed,
                    "split": cfg.split.seed,
                    "model": cfg.model.seed,
                },
                timings=ctx.timings,
                extra={"tile_status": ctx.status, "plan": _plan_json(ctx)},
            )
    return ctx


def preflight(ctx: RunContext, order: list[str]) -> None:
    """Check the inputs the stages will read before any cluster or graph exists."""
    from eoflow.reference.rasterize import open_reference, reference_classes
    from eoflow.stages.ingest import open_source

    cfg = ctx.cfg
    if "ingest" in order:
        ctx.source = open_source(cfg, ctx.tiles)
        ctx.plan = plan_run(cfg, ctx.tiles, ctx.source[1], out=ctx.out)
    if {"features", "sample", "report"} & set(order):
        r = cfg.reference
        if r.kind == "vector":
            ctx.reference = open_reference(r.path, layer=r.layer, value_column=r.value_column)
        reference_classes(cfg)


def _cube_bands(cfg: RunConfig, info: dict) -> tuple[int, dict[str, str]] | None:
    """Dates and band dtypes of the cube the source will give, when known without reading pixels."""
    from eoflow.config import StacSource, SyntheticSource

    if isinstance(cfg.source, StacSource) and info.get("asset_info"):
        wanted = cfg.source.assets or sorted(info["asset_info"])
        return len(info["items"]), {a: info["asset_info"][a]["dtype"] for a in wanted}
    if isinstance(cfg.source, SyntheticSource):
        n = (cfg.end - cfg.start).days // cfg.source.revisit_days + 1
        return n, {**dict.fromkeys(("B02", "B03", "B04", "B08", "B11", "B12"), "uint16"),
                   **dict.fromkeys(("CLM", "IS_DATA", "SCL"), "uint8")}  # fmt: skip
    return None


def plan_run(
    cfg: RunConfig,
    tiles: list[Tile],
    info: dict,
    *,
    out: Path | None = None,
    address: str | None = None,
):
    """Cost the run from metadata (:func:`eoflow.plan.make_plan`); refuse one that cannot fit.

    Checks the peak memory of a worker against its limit (local cluster) and the stored size
    against the free disk space of the run directory. Returns the plan, or None when the source
    cannot tell its size without reading pixels.
    """
    import shutil

    import psutil

    from eoflow.cluster import _local_sizes
    from eoflow.ops.temporal import regular_grid
    from eoflow.plan import make_plan, parse_bytes

    known = _cube_bands(cfg, info)
    if known is None:
        return None
    n_dates, bands = known
    workers, threads = _local_sizes(cfg.cluster)
    mem = cfg.cluster.memory_limit
    memory = psutil.virtual_memory().total // workers if mem == "auto" else parse_bytes(mem)
    c = cfg.grid.chunk_px
    plan = make_plan(
        tiles, n_dates=n_dates, bands=bands, chunks={"time": -1, "y": c, "x": c}, workers=workers,
        memory_per_worker_bytes=memory, threads_per_worker=threads,
        n_items=len(info.get("items", [])) or None,
        n_features=len(cfg.features.indices) + len(cfg.features.bands),
        n_grid_dates=len(regular_grid(cfg.start, cfg.end, cfg.features.step_days)),
        batch_tiles=cfg.cluster.batch_tiles or workers * threads, strict=address is None,
    )  # fmt: skip
    if out is not None:
        probe = Path(out).resolve()
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        need = 2 * plan.stored_bytes  # cube + features (features are about the cube's size)
        if need > free:
            raise InputError(
                f"the run needs about {need / 1e9:.1f} GB in {out} but only {free / 1e9:.1f} GB are free "
                f"({len(tiles)} tiles x {n_dates} dates x {len(bands)} bands)",
                "free disk space, choose another --out, or split the AOI",
            )
    return plan


def _plan_json(ctx: RunContext) -> dict | None:
    return json.loads(ctx.plan.to_json()) if ctx.plan is not None else None


def _require_tiles(ctx: RunContext, stage: str) -> None:
    """Stop with the first tile error when every tile has failed."""
    from eoflow.errors import DataError

    if ctx.tiles and not ctx.ok_tiles():
        ctx.save_status()
        first = next(iter(ctx.status.values()))
        raise DataError(f"every tile failed in stage {first.get('stage', stage)}; first error: {first.get('error')}",
                        f"see {ctx.out / 'tiles.json'}")  # fmt: skip


def _forget(out: Path) -> None:
    import shutil

    shutil.rmtree(out / "ledger", ignore_errors=True)


def _ingest(ctx):
    from eoflow.stages.ingest import run_ingest

    return run_ingest(ctx)


def _features(ctx):
    from eoflow.stages.features import run_features

    return run_features(ctx)


def _sample(ctx):
    from eoflow.stages.sample import run_sample

    return run_sample(ctx)


def _train(ctx):
    from eoflow.stages.train import run_train

    return run_train(ctx)


def _predict(ctx):
    from eoflow.stages.predict import run_predict

    return run_predict(ctx)


def _report(ctx):
    from eoflow.report.build import run_report

    return run_report(ctx)


_STAGE_FUNCS = {"ingest": _ingest, "features": _features, "sample": _sample,
                "train": _train, "predict": _predict, "report": _report}  # fmt: skip
