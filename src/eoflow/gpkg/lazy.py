"""Lazy, chunked reading of raster layers and files onto a :class:`~eoflow.geo.tiles.Tile`.

Each Dask task opens its raster, reads one ``(1, rows, cols)`` window and closes it: one task per
chunk, nothing read before ``compute``. A raster whose grid is not the tile's is reprojected
through a GDAL ``WarpedVRT`` (nearest neighbour by default, so values and dtype are kept); that
happens only when asked for (a target tile is given) and is reported with a
:class:`ReprojectionWarning` and in the cube's ``attrs["reprojected"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eoflow.errors import InputError
from eoflow.geo.tiles import Tile

__all__ = [
    "ALLOWED_DRIVERS",
    "BandEntry",
    "RasterRef",
    "ReprojectionWarning",
    "build_cube",
    "default_fill",
    "grid_of",
    "lazy_stack",
    "normalize_chunks",
    "open_checked",
    "same_grid",
]

#: Drivers eoflow reads rasters with (GDAL opens by content: VRT and others are refused).
ALLOWED_DRIVERS = frozenset({"GTiff", "COG", "GPKG"})


class ReprojectionWarning(UserWarning):
    """A raster was reprojected/resampled onto the target tile grid."""


@dataclass(frozen=True)
class RasterRef:
    """One band of one raster, as a Dask task reads it."""

    href: str
    """rasterio path (``file.tif`` or ``GPKG:file.gpkg:table``)."""
    band: int
    """1-based band index."""
    open_options: tuple[tuple[str, str], ...] = ()
    warp: bool = False
    """Reproject through a WarpedVRT (the grid differs from the tile)."""
    label: str = ""
    """Human name (layer or file) for messages."""

    def __dask_tokenize__(self) -> tuple:
        return ("eoflow.RasterRef", self.href, self.band, self.open_options, self.warp)


def open_checked(href: str, *, label: str | None = None, open_options: Mapping | None = None):
    """Open ``href`` with rasterio and refuse drivers outside :data:`ALLOWED_DRIVERS`.

    Raises
    ------
    InputError
        Unreadable file, non-GeoTIFF/COG/GPKG driver (e.g. a VRT named ``.tif``), or no CRS.
    """
    import rasterio
    from rasterio.errors import RasterioIOError

    label = label or href
    try:
        src = rasterio.open(href, **dict(open_options or {}))
    except RasterioIOError as exc:
        raise InputError(
            f"raster {label} cannot be opened: {' '.join(str(exc).split())[:160]}",
            "pass a complete GeoTIFF/COG or GeoPackage raster",
        ) from None
    if src.driver not in ALLOWED_DRIVERS:
        src.close()
        raise InputError(
            f"raster {label} is a {src.driver} file, not GeoTIFF/COG/GeoPackage",
            "convert it to GeoTIFF (VRT and other indirections are refused)",
        )
    if src.crs is None:
        src.close()
        raise InputError(f"raster {label} has no CRS", "assign one (gdal_edit.py -a_srs EPSG:...)")
    return src


def _crs_string(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def grid_of(src, tile_id: str) -> Tile:
    """The :class:`Tile` of an open rasterio dataset."""
    t = src.transform
    return Tile(
        tile_id, _crs_string(src.crs), (t.a, t.b, t.c, t.d, t.e, t.f), src.width, src.height
    )


def same_grid(a: Tile, b: Tile, *, rtol: float = 1e-6) -> bool:
    """Same CRS, shape and transform (within ``rtol`` of a pixel)."""
    if a.shape != b.shape or a.crs != b.crs:
        return False
    px = max(a.res)
    return all(math.isclose(p, q, abs_tol=rtol * px) for p, q in zip(a.transform, b.transform))


def normalize_chunks(chunks: Mapping | None, tile: Tile) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Row and column chunk sizes (default 1024 x 1024) for ``tile``."""
    chunks = dict(chunks or {})
    bad = set(chunks) - {"y", "x", "time"}
    if bad or chunks.get("time", 1) not in (1, -1, None):
        raise InputError(
            f"chunks {chunks} not understood", 'use {"y": N, "x": N} (time is one layer per chunk)'
        )

    def split(n: int, size: int | None) -> tuple[int, ...]:
        size = n if size in (None, -1) else int(size)
        if size <= 0:
            raise InputError(f"chunk size {size} must be positive", "use e.g. 512")
        return tuple(min(size, n - i) for i in range(0, n, size))

    return split(tile.height, chunks.get("y", 1024)), split(tile.width, chunks.get("x", 1024))


def read_window(
    ref: RasterRef, tile: Tile, rows: tuple[int, int], cols: tuple[int, int], dtype: str,
    fill: float | int, resampling: str,
) -> np.ndarray:  # fmt: skip
    """Read ``rows x cols`` of ``tile`` from ``ref``; returns ``(1, h, w)`` of ``dtype``."""
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    window = Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])
    with open_checked(ref.href, label=ref.label, open_options=dict(ref.open_options)) as src:
        try:
            if not ref.warp:
                data = src.read(ref.band, window=window, boundless=True, fill_value=fill)
            else:
                with WarpedVRT(
                    src, crs=tile.crs, transform=tile.affine, width=tile.width,
                    height=tile.height, resampling=Resampling[resampling], nodata=fill,
                    src_nodata=src.nodata, tolerance=1e-6,  # (near-)exact per-pixel transforms
                ) as vrt:  # fmt: skip
                    data = vrt.read(ref.band, window=window)
        except RasterioError as exc:  # corrupt tiles / truncated files fail only when read
            raise InputError(
                f"raster {ref.label or ref.href} band {ref.band} cannot be read at rows "
                f"{rows[0]}-{rows[1]}, cols {cols[0]}-{cols[1]}: {' '.join(str(exc).split())[:160]}",
                "the file is corrupt or truncated: re-create or re-download it",
            ) from None
    return data.astype(dtype, copy=False)[None]


def lazy_stack(
    refs: Sequence[RasterRef], tile: Tile, *, dtype: str, fill: float | int,
    chunks: Mapping | None = None, resampling: str = "nearest", name: str = "read",
):  # fmt: skip
    """A ``(time, y, x)`` Dask array with one task per ``(time, row-chunk, col-chunk)``.

    Parameters
    ----------
    refs
        One :class:`RasterRef` per time step.
    tile
        Target grid.
    dtype, fill
        Output dtype and value for pixels outside the source.
    chunks
        ``{"y": N, "x": N}``.
    resampling
        rasterio resampling name used when a source is warped.
    name
        Prefix of the Dask task names.

    Returns
    -------
    dask.array.Array
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    ychunks, xchunks = normalize_chunks(chunks, tile)
    key = f"{name}-{tokenize(list(refs), tile, dtype, fill, ychunks, xchunks, resampling)}"
    ystarts = np.cumsum((0, *ychunks))
    xstarts = np.cumsum((0, *xchunks))
    dsk = {}
    for t, ref in enumerate(refs):
        for i in range(len(ychunks)):
            for j in range(len(xchunks)):
                rows = (int(ystarts[i]), int(ystarts[i + 1]))
                cols = (int(xstarts[j]), int(xstarts[j + 1]))
                dsk[(key, t, i, j)] = (read_window, ref, tile, rows, cols, dtype, fill, resampling)
    graph = HighLevelGraph.from_collections(key, dsk, dependencies=())
    chunks_ = ((1,) * len(refs), ychunks, xchunks)
    return da.Array(graph, key, chunks_, meta=np.empty((0, 0, 0), dtype=dtype))


def default_fill(dtype: str, nodata: float | None) -> float | int:
    """The fill value: the source nodata, else NaN for floats and 0 for integers."""
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        return np.dtype(dtype).type(nodata).item()
    return float("nan") if np.dtype(dtype).kind == "f" else 0


@dataclass(frozen=True)
class BandEntry:
    """One band of one dated raster, before it becomes a slice of a cube variable."""

    time: np.datetime64
    variable: str
    ref: RasterRef
    grid: Tile
    dtype: str
    nodata: float | None


def _common_grid(entries: Sequence[BandEntry], tile_id: str) -> Tile:
    first = entries[0]
    for e in entries[1:]:
        if not same_grid(first.grid, e.grid):
            raise InputError(
                f"{first.ref.label} ({first.grid.crs}, {first.grid.width}x{first.grid.height}) and "
                f"{e.ref.label} ({e.grid.crs}, {e.grid.width}x{e.grid.height}) are on different grids",
                "pass a target tile to reproject them explicitly",
            )
    g = first.grid
    return Tile(tile_id, g.crs, g.transform, g.width, g.height)


def build_cube(
    entries: Sequence[BandEntry], *, tile: Tile | None, tile_id: str, source: str,
    chunks: Mapping | None = None, resampling: str = "nearest",
):  # fmt: skip
    """Assemble dated band entries into a lazy cube (see :mod:`eoflow.cube.model`).

    Parameters
    ----------
    entries
        Every (time, variable) exactly once.
    tile
        Target grid; None = the entries' common grid (error if they differ).
    tile_id
        Tile id used when ``tile`` is None.
    source
        Source description for messages and ``attrs["source"]``.
    chunks, resampling
        See :func:`lazy_stack`.

    Returns
    -------
    xarray.Dataset
        Dims ``time, y, x``; ``attrs["reprojected"]`` lists the warped inputs.

    Raises
    ------
    InputError
        No entries, or different grids without a target tile.
    DataError
        Duplicate (time, variable), a variable missing at some dates, or mixed dtypes.
    """
    import warnings

    from eoflow.cube.model import make_cube, validate_cube
    from eoflow.errors import DataError

    if not entries:
        raise InputError(f"no dated rasters found in {source}", "check the path, glob or --match")
    tile = tile if tile is not None else _common_grid(entries, tile_id)
    reprojected = []
    by_var: dict[str, dict[np.datetime64, BandEntry]] = {}
    for e in entries:
        warp = not same_grid(e.grid, tile)
        if warp:
            e = BandEntry(e.time, e.variable, RasterRef(e.ref.href, e.ref.band, e.ref.open_options,
                          True, e.ref.label), e.grid, e.dtype, e.nodata)  # fmt: skip
            note = (f"{e.ref.label} ({e.grid.crs} {e.grid.res[0]:.6g}x{e.grid.res[1]:.6g} -> "
                    f"{tile.crs} {tile.res[0]:.6g}x{tile.res[1]:.6g})")  # fmt: skip
            if note not in reprojected:
                reprojected.append(note)
        slot = by_var.setdefault(e.variable, {})
        if e.time in slot:
            raise DataError(
                f"{source}: {slot[e.time].ref.label} and {e.ref.label} both give {e.variable!r} "
                f"at {e.time}", "keep one raster per variable and date",
            )  # fmt: skip
        slot[e.time] = e
    times = sorted({t for slot in by_var.values() for t in slot})
    variables, attrs = {}, {}
    for var, slot in by_var.items():
        missing = [str(t) for t in times if t not in slot]
        if missing:
            raise DataError(f"{source}: variable {var!r} is missing at {missing}",
                            "provide every variable at every date (or filter with --match)")  # fmt: skip
        dtypes = {slot[t].dtype for t in times}
        if len(dtypes) > 1:
            raise DataError(f"{source}: variable {var!r} mixes dtypes {sorted(dtypes)}",
                            "write every date with the same dtype")  # fmt: skip
        dtype = dtypes.pop()
        fill = default_fill(dtype, slot[times[0]].nodata)
        refs = [slot[t].ref for t in times]
        variables[var] = lazy_stack(refs, tile, dtype=dtype, fill=fill, chunks=chunks,
                                    resampling=resampling, name=f"read-{var}")  # fmt: skip
        attrs[var] = {"nodata": fill}
    if reprojected:
        warnings.warn(
            f"{len(reprojected)} raster(s) of {source} reprojected to tile {tile.tile_id} "
            f"({tile.crs}, {resampling}): {', '.join(reprojected)}",
            ReprojectionWarning, stacklevel=3,
        )  # fmt: skip
    ds = make_cube(variables, tile=tile, time=np.array(times), attrs=attrs)
    ds.attrs["source"] = source
    ds.attrs["reprojected"] = reprojected
    validate_cube(ds)
    return ds
