"""Sentinel-2 Items from a static STAC catalog (pystac) or a STAC API (pystac-client), stacked
lazily per tile with stackstac.

Traps handled here (see the developers' notes): pystac migrates ``proj:epsg`` to ``proj:code`` while
stackstac reads only ``proj:epsg``; stackstac defaults to float64, so each dtype group is stacked
with its own ``dtype``/``fill_value``; stackstac snaps bounds to multiples of the resolution, so we
pass ``snap_bounds=False`` with bounds grown by a quarter pixel to get exactly the tile's grid.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from eoflow.errors import InputError

__all__ = ["ItemSet", "preflight_assets", "search_items", "stack_items"]

#: Names that become Zarr variables/paths: no separators, no leading dot.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ItemSet:
    """Items (as plain dicts with absolute hrefs) plus the collection-level static assets."""

    items: tuple[dict, ...]
    static_assets: dict[str, dict]
    source: str

    def asset_info(self) -> dict[str, dict]:
        """Asset key -> first seen ``{dtype, nodata, scale, offset}`` (from ``raster:bands``).

        ``scale`` and ``offset`` are None when the item does not state them.
        """
        info: dict[str, dict] = {}
        for item in self.items:
            for key, a in item["assets"].items():
                if key in info or "data" not in a.get("roles", ["data"]):
                    continue
                rb = (a.get("raster:bands") or [{}])[0]
                info[key] = {"dtype": rb.get("data_type", "float32"), "nodata": rb.get("nodata"),
                             "scale": rb.get("scale"), "offset": rb.get("offset")}  # fmt: skip
        return info


def _epsg(item: dict) -> int | None:
    props = item["properties"]
    if props.get("proj:epsg"):
        return int(props["proj:epsg"])
    code = props.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        return int(code.split(":")[1])
    return None


def _normalise(item: dict) -> dict:
    """Ensure ``proj:epsg`` is present (stackstac reads only that field)."""
    epsg = _epsg(item)
    if epsg is not None:
        item["properties"]["proj:epsg"] = epsg
    return item


def _in_range(item: dict, start: dt.date, end: dt.date, max_cc: float | None) -> bool:
    t = item["properties"].get("datetime") or item["properties"].get("start_datetime")
    day = dt.date.fromisoformat(t[:10])
    if not start <= day <= end:
        return False
    cc = item["properties"].get("eo:cloud_cover")
    return max_cc is None or cc is None or cc <= max_cc


def _static_catalog(path: Path) -> tuple[list[dict], dict[str, dict]]:
    import pystac

    try:
        root = pystac.read_file(str(path))
    except Exception as exc:
        raise InputError(
            f"STAC catalog {path} cannot be read: {exc}", "give a catalog.json"
        ) from exc
    items = []
    for item in root.get_items(recursive=True):
        item = item.clone()
        item.make_asset_hrefs_absolute()
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        d["links"] = []
        items.append(d)
    static = {}
    for key, asset in getattr(root, "assets", {}).items():
        href = asset.get_absolute_href() or asset.href
        static[key] = {**asset.to_dict(), "href": href}
    return items, static


def _api(url: str, collections: list[str], bbox_ll, start: dt.date, end: dt.date):
    import pystac_client

    try:
        client = pystac_client.Client.open(url)
        search = client.search(
            collections=collections or None,
            bbox=bbox_ll,
            datetime=f"{start.isoformat()}/{end.isoformat()}",
        )
        items = [dict(i) for i in search.items_as_dicts()]
    except Exception as exc:
        raise InputError(f"STAC API {url} search failed: {' '.join(str(exc).split())[:200]}",
                         "check the URL and collection names") from exc  # fmt: skip
    static: dict[str, dict] = {}
    for c in collections:
        try:
            col = client.get_collection(c)
        except Exception:
            continue
        for key, asset in col.assets.items():
            static[key] = {**asset.to_dict(), "href": asset.get_absolute_href() or asset.href}
    return items, static


def search_items(
    catalog: str,
    *,
    start: dt.date,
    end: dt.date,
    bbox_ll: tuple[float, float, float, float] | None = None,
    collections: list[str] | None = None,
    max_cloud_cover: float | None = None,
) -> ItemSet:
    """Find the Items of a static catalog or STAC API in ``[start, end]``.

    Returns
    -------
    ItemSet
        Items sorted by time; of several Items with the same timestamp the first is kept.
    """
    if "://" in catalog and not catalog.startswith("file://"):
        items, static = _api(catalog, collections or [], bbox_ll, start, end)
    else:
        path = Path(catalog.removeprefix("file://"))
        if not path.exists():
            raise InputError(f"STAC catalog {path} does not exist", "check 'source.catalog'")
        items, static = _static_catalog(path)
        if collections:
            items = [i for i in items if i.get("collection") in collections]
    items = [_normalise(i) for i in items if _in_range(i, start, end, max_cloud_cover)]
    items.sort(key=lambda i: i["properties"]["datetime"])
    unique, seen = [], set()
    for i in items:
        if i["properties"]["datetime"] not in seen:
            seen.add(i["properties"]["datetime"])
            unique.append(i)
    return ItemSet(items=tuple(unique), static_assets=static, source=catalog)


def check_asset_names(itemset: ItemSet, assets: list[str] | None) -> list[str]:
    """The asset keys to load; refuse unknown or unsafe names (they become Zarr paths)."""
    info = itemset.asset_info()
    wanted = assets or sorted(info)
    bad = [a for a in wanted if not _SAFE_NAME.match(a)]
    if bad:
        raise InputError(f"asset key(s) {bad} of {itemset.source} are not safe variable names",
                         "asset keys may use letters, digits, '_', '-', '.' only")  # fmt: skip
    missing = [a for a in wanted if a not in info]
    if missing:
        raise InputError(
            f"asset(s) {missing} not found in any Item of {itemset.source}",
            f"available assets: {sorted(info)}",
        )
    return wanted


def preflight_assets(itemset: ItemSet, assets: list[str] | None, *, threads: int = 16) -> int:
    """Open the header of every asset file the run will read; refuse bad ones before any graph.

    Catches zero-byte, non-TIFF (e.g. an HTML error page), indirection drivers (VRT) and missing
    CRS. Files that are truncated after a valid header are caught when read (the tile fails).

    Returns
    -------
    int
        Number of files checked.
    """
    from concurrent.futures import ThreadPoolExecutor

    from eoflow.sources.rasters import open_raster

    wanted = set(check_asset_names(itemset, assets))
    jobs = [
        (i["id"], k, a["href"])
        for i in itemset.items
        for k, a in i["assets"].items()
        if k in wanted
    ]

    def check(job):
        item_id, key, href = job
        try:
            with open_raster(href):
                return None
        except InputError as exc:
            return InputError(f"asset {key} of item {item_id}: {exc.message}", exc.hint)

    with ThreadPoolExecutor(threads) as pool:
        for err in pool.map(check, jobs):
            if err is not None:
                raise err
    return len(jobs)


def _fill_for(dtype: str, nodata) -> object:
    if nodata is not None and not (isinstance(nodata, str) and nodata.lower() == "nan"):
        return np.dtype(dtype).type(nodata)
    return np.dtype(dtype).type(np.nan) if np.dtype(dtype).kind == "f" else np.dtype(dtype).type(0)


def stack_items(
    itemset: ItemSet, tile, *, assets: list[str] | None = None, chunk_px: int = 512
) -> tuple[dict[str, object], np.ndarray, dict[str, dict]]:
    """Stack the Items onto ``tile``'s grid, one lazy Dask array per asset in its own dtype.

    Returns
    -------
    arrays, times, attrs
        Asset -> Dask array ``(time, y, x)``; ``datetime64[ns]`` times; per-asset attrs (nodata,
        and scale/offset where ``raster:bands`` states them).
    """
    import stackstac

    info = itemset.asset_info()
    wanted = check_asset_names(itemset, assets)
    groups: dict[tuple, list[str]] = defaultdict(list)
    for a in wanted:
        groups[(info[a]["dtype"], str(info[a]["nodata"]))].append(a)
    left, bottom, right, top = tile.bounds
    rx, ry = tile.res
    bounds = (left, bottom - ry / 4, right + rx / 4, top)  # stackstac floors the size
    all_times = np.array(
        sorted(
            {np.datetime64(i["properties"]["datetime"].rstrip("Z"), "ns") for i in itemset.items}
        )
    )
    arrays, attrs = {}, {}
    for (dtype, _), keys in groups.items():
        fill = _fill_for(dtype, info[keys[0]]["nodata"])
        stacked = stackstac.stack(
            list(itemset.items), assets=keys, epsg=tile.epsg, resolution=(rx, ry), bounds=bounds,
            snap_bounds=False, dtype=np.dtype(dtype), fill_value=fill, rescale=False,
            chunksize=(-1, 1, chunk_px, chunk_px), resampling=_nearest(), sortby_date=False,
        )  # fmt: skip
        if stacked.shape[-2:] != tile.shape:
            raise InputError(
                f"stacked grid {stacked.shape[-2:]} differs from tile {tile.tile_id} {tile.shape}",
                "report this with the tile definition",
            )
        # stackstac drops Items holding none of a group's assets: put them back as fill
        stacked = stacked.assign_coords(time=stacked["time"].values.astype("datetime64[ns]"))
        stacked = stacked.reindex(time=all_times, fill_value=fill).chunk({"time": -1})
        for i, key in enumerate(keys):
            arrays[key] = stacked.data[:, i]
            attrs[key] = {"nodata": None if np.isnan(float(fill)) else fill.item()}
            # reflectance = DN * scale + offset, applied where bands are read (ops.indices.reflectance)
            attrs[key].update({k: float(info[key][k]) for k in ("scale", "offset")
                               if info[key].get(k) is not None})  # fmt: skip
    return arrays, all_times, attrs


def _nearest():
    from rasterio.enums import Resampling

    return Resampling.nearest


def load_static(itemset: ItemSet, key: str, tile, chunk_px: int) -> xr.DataArray:
    """A collection-level raster (e.g. a DEM) warped lazily onto ``tile`` (nearest), as (y, x)."""
    import dask
    import dask.array as da

    if key not in itemset.static_assets:
        raise InputError(
            f"static asset {key!r} not found in {itemset.source}",
            f"collection assets: {sorted(itemset.static_assets)}",
        )
    href = itemset.static_assets[key]["href"]
    probe = _read_warped(href, tile, probe=True)
    arr = da.from_delayed(dask.delayed(_read_warped)(href, tile), tile.shape, dtype=probe)
    return arr.rechunk((chunk_px, chunk_px))


def _read_warped(href: str, tile, probe: bool = False):
    import rasterio
    from rasterio.warp import Resampling, reproject

    from eoflow.sources.rasters import open_raster

    with open_raster(href) as src:
        if probe:
            return np.dtype(src.dtypes[0])
        out = np.zeros(tile.shape, dtype=src.dtypes[0])
        nodata = src.nodata
        reproject(
            rasterio.band(src, 1), out, dst_transform=tile.affine, dst_crs=tile.crs,
            resampling=Resampling.nearest, dst_nodata=nodata if nodata is not None else 0,
        )  # fmt: skip
        return out
