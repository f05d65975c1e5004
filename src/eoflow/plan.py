"""What a run will cost, from metadata alone: ``eoflow plan``.

:func:`make_plan` turns a list of tiles, a date count, the bands and the cluster size into a
:class:`Plan`: cube bytes (raw and as stored), chunk shapes, task counts per stage, the expected
peak memory per worker and a runtime estimate. No pixel is read. A plan that cannot fit raises
:class:`~eoflow.errors.DataError` naming the numbers and what to change.

Model (deliberately simple, every constant below says where it comes from):

* a chunk is the full time series of a ``chunk_px x chunk_px`` block of one variable;
* stages per spatial block: ingest (read + store each variable), features (validity mask, indices,
  valid count), interpolate (each feature onto the regular grid), sample (one task per block plus
  one per tile), predict (predict + write per block);
* the peak of a task is its inputs plus outputs (see :func:`_task_bytes`); a worker runs
  ``threads_per_worker`` tasks at once, and may hold about one finished result per thread while it
  waits to be transferred, so peak = base + threads x largest task x 1.5;
* the runtime is pixel-dates / (throughput per core x cores), compute only (network reads of a
  remote catalog come on top).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from eoflow.errors import ConfigError, DataError
from eoflow.geo.tiles import Tile

__all__ = [
    "COMPRESSION_RATIO",
    "DEFAULT_BANDS",
    "THROUGHPUT_PIXEL_DATES_PER_S_PER_CORE",
    "Plan",
    "estimate_items",
    "make_plan",
    "parse_bytes",
    "plan_for_aoi",
]

#: Pixel-dates per second per core of generate + mask + 3 indices + interpolation + valid count
#: on one 73 x 256 x 256 block, one thread. Measured with ``python -m benchmarks.scale.throughput``
#: on 2026-11-27 on the 2-core x86_64 CI VM (shared): generate 3.50e6/s (stand-in for decoding),
#: features 2.39e7/s, end to end 3.05e6/s; the end-to-end figure is used.
THROUGHPUT_PIXEL_DATES_PER_S_PER_CORE = 3.0e6
#: Raw / stored size per dtype. float32 and uint16: 1.9 measured on the shipped sample COGs
#: (deflate); rounded to 2.0 for zstd Zarr chunks of reflectance. uint8 masks: 13.6 measured on
#: the sample, 10 assumed. Other dtypes: 1.5.
COMPRESSION_RATIO: dict[str, float] = {"uint16": 2.0, "float32": 2.0, "uint8": 10.0}
#: The ten 10 m / 20 m Sentinel-2 L2A reflectance bands plus the scene classification.
DEFAULT_BANDS: dict[str, str] = {
    **{b: "uint16" for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")},
    "SCL": "uint8",
}
#: Memory a worker process uses before any task (interpreter, numpy/dask/numba/GDAL), bytes.
WORKER_BASE_BYTES = 350 * 2**20
#: Dask's default ``distributed.worker.memory.pause`` fraction: above it a worker stops working.
PAUSE_FRACTION = 0.8
#: Dask's default ``distributed.worker.memory.target`` fraction: above it a worker spills.
TARGET_FRACTION = 0.6
#: Beyond this many tasks in one batch the scheduler's graph gets slow (about 1 kB per task).
MAX_TASKS_PER_BATCH = 500_000

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str | int) -> int:
    """``"4GB"``, ``"4GiB"``, ``"512M"`` or an int -> bytes (binary units, as Dask's defaults)."""
    if isinstance(text, int):
        return text
    s = str(text).strip().upper().replace("IB", "").replace("B", "")
    num = s.rstrip("KMGT")
    unit = s[len(num) :]
    try:
        value = float(num) * _UNITS[unit]
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"memory size {text!r} is not understood", "write e.g. 4GB or 512MB"
        ) from exc
    if value <= 0:
        raise ConfigError(f"memory size {text!r} must be positive", "write e.g. 4GB")
    return int(value)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _fmt_duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


@dataclass(frozen=True)
class Plan:
    """Cost of a run, computed from metadata only (see the module docstring for the model)."""

    n_tiles: int
    """Tiles to process."""
    tile_shape: tuple[int, int]
    """``(height, width)`` of a tile in pixels."""
    res_m: float
    """Pixel size in metres."""
    n_pixels: int
    """Pixels over all tiles."""
    n_dates: int
    """Acquisition dates per tile."""
    n_items: int
    """Matching catalog items (estimated when there is no catalog, see :attr:`items_note`)."""
    items_note: str
    """Where :attr:`n_items` comes from."""
    bands: dict[str, str]
    """Variable name -> dtype of the cube."""
    chunk_shape: tuple[int, int, int]
    """``(time, y, x)`` of a full chunk."""
    chunk_bytes: int
    """Bytes of the largest chunk of one variable."""
    chunks_per_tile: int
    """Spatial blocks per tile."""
    raw_bytes: int
    """Cube bytes in memory (all tiles, dates, variables)."""
    stored_bytes: int
    """Cube bytes as stored (compressed Zarr)."""
    compression_note: str
    """The compression ratio assumption."""
    tasks: dict[str, int]
    """Stage -> task count over all tiles."""
    batch_tiles: int
    """Tiles submitted together."""
    tasks_per_batch: int
    """Tasks of one batch (the scheduler's graph size)."""
    workers: int
    """Dask workers."""
    threads_per_worker: int
    """Threads per worker."""
    memory_per_worker_bytes: int
    """Memory limit of a worker."""
    peak_task_bytes: dict[str, int]
    """Stage -> working set of its largest task."""
    peak_worker_bytes: int
    """Expected peak memory of a worker."""
    throughput: float
    """Pixel-dates per second per core used for the estimate."""
    runtime_s: float
    """Estimated wall time (compute only)."""
    aoi_km2: float | None = None
    """Area of the AOI itself (the tiles cover more), when known."""
    problems: list[str] = field(default_factory=list)
    """Why the plan cannot run as given (empty when it fits)."""
    warnings: list[str] = field(default_factory=list)
    """What may run badly but will run."""

    @property
    def fits(self) -> bool:
        """True when there is no problem."""
        return not self.problems

    @property
    def pixel_dates(self) -> int:
        """Pixels x dates over all tiles."""
        return self.n_pixels * self.n_dates

    def to_json(self) -> str:
        """The plan as a JSON object (bytes as ints, seconds as floats)."""
        d = asdict(self)
        d.update(fits=self.fits, pixel_dates=self.pixel_dates)
        return json.dumps(d, indent=1)

    def to_text(self) -> str:
        """Human-readable report, one fact per line."""
        h, w = self.tile_shape
        t, cy, cx = self.chunk_shape
        cores = self.workers * self.threads_per_worker
        bands = ", ".join(f"{k}:{v}" for k, v in self.bands.items())
        lines = [
            f"tiles            {self.n_tiles} of {h} x {w} px at {self.res_m:g} m "
            f"({self.n_pixels:,} px, {self.n_pixels * self.res_m**2 / 1e6:,.0f} km2"
            + (f"; AOI {self.aoi_km2:,.0f} km2)" if self.aoi_km2 else ")"),
            f"dates            {self.n_dates} per tile",
            f"matching items   {self.n_items:,} ({self.items_note})",
            f"variables        {len(self.bands)} ({bands})",
            f"cube raw         {_fmt_bytes(self.raw_bytes)} ({self.pixel_dates:,} pixel-dates)",
            f"cube stored      {_fmt_bytes(self.stored_bytes)} ({self.compression_note})",
            f"chunks           ({t}, {cy}, {cx}) = {_fmt_bytes(self.chunk_bytes)} per variable; "
            f"{self.chunks_per_tile} blocks per tile",
            "tasks            "
            + ", ".join(f"{k} {v:,}" for k, v in self.tasks.items())
            + f"; {self.tasks_per_batch:,} per batch of {self.batch_tiles} tiles",
            f"cluster          {self.workers} workers x {self.threads_per_worker} threads, "
            f"{_fmt_bytes(self.memory_per_worker_bytes)} each",
            f"peak per worker  {_fmt_bytes(self.peak_worker_bytes)} "
            f"({self.peak_worker_bytes / self.memory_per_worker_bytes:.0%} of the limit; largest "
            f"task: {max(self.peak_task_bytes, key=self.peak_task_bytes.get)} "
            f"{_fmt_bytes(max(self.peak_task_bytes.values()))})",
            f"runtime          about {_fmt_duration(self.runtime_s)} on {cores} cores "
            f"(compute only, at {self.throughput:.2g} pixel-dates/s/core, measured; network reads "
            "come on top)",
        ]
        lines += [f"warning          {w}" for w in self.warnings]
        lines += [f"PROBLEM          {p}" for p in self.problems]
        lines.append("verdict          " + ("fits" if self.fits else "does NOT fit"))
        return "\n".join(lines)


def estimate_items(tiles: Sequence[Tile], n_dates: int) -> tuple[int, str]:
    """Items when there is no catalog: dates x Sentinel-2 granules (100 km UTM squares) touched.

    Returns
    -------
    tuple of (int, str)
        The estimate and a note saying how it was made.
    """
    squares = set()
    for t in tiles:
        left, bottom, right, top = t.bounds
        for i in range(math.floor(left / 1e5), math.ceil(right / 1e5)):
            for j in range(math.floor(bottom / 1e5), math.ceil(top / 1e5)):
                squares.add((t.crs, i, j))
    note = f"estimated: {n_dates} dates x {len(squares)} granules (100 km squares touched)"
    return n_dates * len(squares), note


def _chunk_sizes(tile: Tile, chunks: Mapping[str, int], n_dates: int) -> tuple[int, int, int]:
    t = chunks.get("time", -1)
    cy, cx = chunks.get("y", 512), chunks.get("x", 512)
    t = n_dates if t in (-1, None) else min(int(t), n_dates)
    cy = tile.height if cy in (-1, None) else min(int(cy), tile.height)
    cx = tile.width if cx in (-1, None) else min(int(cx), tile.width)
    if min(t, cy, cx) < 1:
        raise ConfigError(f"chunks {dict(chunks)} must be positive", "e.g. time=-1, y=512, x=512")
    return t, cy, cx


def _task_bytes(
    bands: Mapping[str, np.dtype], block: int, n_dates: int, n_features: int, n_grid: int
) -> dict[str, int]:
    """Working set of the largest task of each stage for a block of ``block`` pixels."""
    sizes = [np.dtype(d).itemsize for d in bands.values()]
    pd = block * n_dates
    inputs = sum(sorted(sizes, reverse=True)[:4]) + 1  # bands of one index + a mask
    return {
        "ingest": 2 * pd * max(sizes),  # decode buffer + chunk
        "features": pd * (inputs + 1 + 4 * n_features),  # inputs, valid, float32 indices
        "interpolate": pd * (4 + 1) + block * n_grid * 4 * (1 + n_features),
        "sample": block * n_grid * 4 * n_features + block * 8,
        "predict": block * n_grid * 4 * n_features + block * 4 * 16,
    }


def _task_counts(n_tiles: int, blocks: int, n_vars: int, n_features: int) -> dict[str, int]:
    per_tile = {
        "ingest": 2 * blocks * n_vars,
        "features": blocks * (n_features + 2),
        "interpolate": blocks * n_features,
        "sample": blocks + 1,
        "predict": 2 * blocks,
    }
    return {k: v * n_tiles for k, v in per_tile.items()}


def _stored_bytes(bands: Mapping[str, np.dtype], pixel_dates: int) -> tuple[int, str]:
    total = 0.0
    for d in bands.values():
        name = np.dtype(d).name
        total += pixel_dates * np.dtype(d).itemsize / COMPRESSION_RATIO.get(name, 1.5)
    used = sorted({np.dtype(d).name for d in bands.values()})
    ratios = ", ".join(f"{n} x{COMPRESSION_RATIO.get(n, 1.5):g}" for n in used)
    return int(total), f"assumed compression {ratios}"


def make_plan(
    tiles: Sequence[Tile],
    *,
    n_dates: int,
    bands: Mapping[str, np.dtype | str],
    chunks: Mapping[str, int],
    workers: int,
    memory_per_worker_bytes: int,
    throughput_pixel_dates_per_s_per_core: float = THROUGHPUT_PIXEL_DATES_PER_S_PER_CORE,
    threads_per_worker: int = 2,
    n_items: int | None = None,
    n_features: int = 3,
    n_grid_dates: int | None = None,
    batch_tiles: int = 8,
    aoi_km2: float | None = None,
    strict: bool = True,
) -> Plan:
    """Cost a run from metadata alone.

    Parameters
    ----------
    tiles
        The tiles (all the same shape as the first one is assumed for per-tile numbers).
    n_dates
        Acquisition dates per tile.
    bands
        Variable name -> dtype of the cube (bands and masks).
    chunks
        ``{"time": -1, "y": px, "x": px}``; ``-1`` means the whole axis.
    workers, threads_per_worker, memory_per_worker_bytes
        The cluster.
    throughput_pixel_dates_per_s_per_core
        Measured compute throughput (default :data:`THROUGHPUT_PIXEL_DATES_PER_S_PER_CORE`).
    n_items
        Matching catalog items; estimated with :func:`estimate_items` when None.
    n_features
        Features per pixel and grid date (default the three indices).
    n_grid_dates
        Dates of the regular grid (default ``n_dates / 3``: a 15-day grid over 5-day revisits).
    batch_tiles
        Tiles submitted together.
    aoi_km2
        Area of the AOI, reported only.
    strict
        Raise :class:`~eoflow.errors.DataError` when the plan cannot fit (default).

    Returns
    -------
    Plan
        With ``problems`` listed (only when ``strict=False``) and ``warnings``.
    """
    _check_inputs(tiles, n_dates, bands, workers, threads_per_worker, memory_per_worker_bytes)
    bands = {k: np.dtype(v) for k, v in bands.items()}
    tile = tiles[0]
    t, cy, cx = _chunk_sizes(tile, chunks, n_dates)
    blocks = math.ceil(tile.height / cy) * math.ceil(tile.width / cx)
    n_pixels = sum(x.width * x.height for x in tiles)
    n_grid = n_grid_dates or max(2, math.ceil(n_dates * 5 / 15))
    pixel_dates = n_pixels * n_dates
    raw = pixel_dates * sum(d.itemsize for d in bands.values())
    stored, note = _stored_bytes(bands, pixel_dates)
    task_bytes = _task_bytes(bands, cy * cx, n_dates, n_features, n_grid)
    peak = WORKER_BASE_BYTES + int(threads_per_worker * max(task_bytes.values()) * 1.5)
    tasks = _task_counts(len(tiles), blocks, len(bands), n_features)
    per_batch = sum(tasks.values()) // len(tiles) * min(batch_tiles, len(tiles))
    if n_items is None:
        n_items, items_note = estimate_items(tiles, n_dates)
    else:
        items_note = "from the catalog"
    runtime = pixel_dates / (throughput_pixel_dates_per_s_per_core * workers * threads_per_worker)
    plan = Plan(
        n_tiles=len(tiles), tile_shape=tile.shape, res_m=tile.res[0], n_pixels=n_pixels,
        n_dates=n_dates, n_items=n_items, items_note=items_note,
        bands={k: v.name for k, v in bands.items()}, chunk_shape=(t, cy, cx),
        chunk_bytes=t * cy * cx * max(d.itemsize for d in bands.values()),
        chunks_per_tile=blocks, raw_bytes=raw, stored_bytes=stored, compression_note=note,
        tasks=tasks, batch_tiles=batch_tiles, tasks_per_batch=per_batch, workers=workers,
        threads_per_worker=threads_per_worker, memory_per_worker_bytes=memory_per_worker_bytes,
        peak_task_bytes=task_bytes, peak_worker_bytes=peak,
        throughput=throughput_pixel_dates_per_s_per_core, runtime_s=runtime, aoi_km2=aoi_km2,
    )  # fmt: skip
    _judge(plan)
    if strict and plan.problems:
        raise DataError(
            "plan does not fit: " + "; ".join(plan.problems),
            "lower --chunk-px or threads per worker, or raise --memory-per-worker",
        )
    return plan


def _check_inputs(tiles, n_dates, bands, workers, threads, memory) -> None:
    if not tiles:
        raise DataError("plan: no tile intersects the AOI", "check the AOI file and its CRS")
    if n_dates < 1:
        raise DataError("plan: no acquisition date in the period", "widen --start/--end")
    if not bands:
        raise ConfigError("plan: no band given", "list bands with --bands")
    if workers < 1 or threads < 1:
        raise ConfigError(
            f"plan: workers={workers}, threads_per_worker={threads}", "give at least 1 of each"
        )
    if memory < 1:
        raise ConfigError(
            f"plan: memory per worker {memory} bytes", "give e.g. --memory-per-worker 4GB"
        )


def _judge(plan: Plan) -> None:
    """Fill ``plan.problems`` and ``plan.warnings`` (mutates the lists of a frozen plan)."""
    limit = plan.memory_per_worker_bytes
    if plan.peak_worker_bytes > PAUSE_FRACTION * limit:
        plan.problems.append(
            f"expected peak per worker {_fmt_bytes(plan.peak_worker_bytes)} exceeds "
            f"{PAUSE_FRACTION:.0%} of its {_fmt_bytes(limit)} limit (largest task "
            f"{_fmt_bytes(max(plan.peak_task_bytes.values()))} x {plan.threads_per_worker} threads "
            f"+ {_fmt_bytes(WORKER_BASE_BYTES)} base)"
        )
    elif plan.peak_worker_bytes > TARGET_FRACTION * limit:
        plan.warnings.append(
            f"peak per worker {_fmt_bytes(plan.peak_worker_bytes)} is above the "
            f"{TARGET_FRACTION:.0%} spill target of {_fmt_bytes(limit)}: expect spilling"
        )
    if plan.tasks_per_batch > MAX_TASKS_PER_BATCH:
        plan.problems.append(
            f"{plan.tasks_per_batch:,} tasks per batch exceed {MAX_TASKS_PER_BATCH:,}: "
            "lower cluster.batch_tiles or raise --chunk-px"
        )
    if plan.chunk_bytes < 2**20:
        plan.warnings.append(
            f"chunks of {_fmt_bytes(plan.chunk_bytes)} are small: scheduling overhead will "
            "dominate; raise --chunk-px"
        )


def plan_for_aoi(
    aoi_path: str,
    *,
    start: str | dt.date,
    end: str | dt.date,
    tile_size_px: int = 1000,
    res_m: float = 10.0,
    bands: Mapping[str, str] | None = None,
    revisit_days: int = 5,
    chunk_px: int = 512,
    **kwargs,
) -> Plan:
    """Load and tile an AOI file, then :func:`make_plan` (dates estimated from the revisit).

    Other keyword arguments go to :func:`make_plan` (``workers``, ``memory_per_worker_bytes``...).
    """
    from eoflow.geo.aoi import load_aoi
    from eoflow.geo.tiling import split_aoi

    d0, d1 = _date(start, "--start"), _date(end, "--end")
    if d1 <= d0:
        raise ConfigError(f"--end {d1} is not after --start {d0}", "swap or fix the dates")
    if revisit_days < 1:
        raise ConfigError(f"--revisit-days {revisit_days} must be at least 1", "use 5 for S2A+S2B")
    aoi = load_aoi(aoi_path)
    tiles = split_aoi(aoi, tile_size_px=tile_size_px, res_m=res_m)
    kwargs.setdefault("aoi_km2", aoi.area_km2)
    n_dates = (d1 - d0).days // revisit_days + 1
    kwargs.setdefault("n_grid_dates", (d1 - d0).days // 15 + 1)
    chunks = {"time": -1, "y": chunk_px, "x": chunk_px}
    return make_plan(tiles, n_dates=n_dates, bands=bands or DEFAULT_BANDS, chunks=chunks, **kwargs)


def _date(value: str | dt.date, name: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"{name} {value!r} is not a date", "use YYYY-MM-DD") from exc
