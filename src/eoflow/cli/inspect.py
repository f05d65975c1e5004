"""``eoflow inspect PATH``: summarise any input or output before trusting it."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from eoflow.errors import InputError

__all__ = ["inspect_path", "register"]


def register(subparsers) -> None:
    """Add the ``inspect`` command."""
    p = subparsers.add_parser(
        "inspect", help="summarise a GeoTIFF/COG, GeoPackage, Zarr store, model or config"
    )
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_inspect)


def _raster(path: Path) -> dict:
    import numpy as np

    from eoflow.sources.rasters import open_raster

    with open_raster(path) as src:
        info = {"kind": "raster", "driver": src.driver, "crs": str(src.crs), "width": src.width,
                "height": src.height, "bands": src.count, "dtypes": list(src.dtypes), "nodata": src.nodata,
                "transform": list(src.transform)[:6], "bounds": list(src.bounds),
                "overviews": src.overviews(1), "descriptions": list(src.descriptions),
                "tags": src.tags()}  # fmt: skip
        step = max(1, max(src.width, src.height) // 1024)
        try:
            arr = src.read(
                1, out_shape=(max(1, src.height // step), max(1, src.width // step)), masked=True
            )
        except Exception as exc:
            raise InputError(f"raster {path} is corrupt: reading band 1 failed ({exc})",
                             "re-download or regenerate it") from exc  # fmt: skip
        finite = np.isfinite(arr.astype("float64").filled(np.nan))
        info["band1"] = {"min": float(arr.min()) if arr.count() else None,
                         "max": float(arr.max()) if arr.count() else None,
                         "non_finite": int((~finite).sum() - int(np.ma.getmaskarray(arr).sum())),
                         "masked": int(np.ma.getmaskarray(arr).sum())}  # fmt: skip
        with contextlib.suppress(ValueError):
            info["colormap_entries"] = len(src.colormap(1))
    return info


def _gpkg(path: Path) -> dict:
    import pyogrio

    try:
        layers = pyogrio.list_layers(path)
    except Exception as exc:
        raise InputError(f"{path} is not a readable GeoPackage ({' '.join(str(exc).split())[:120]})",
                         "check the file; a GeoPackage with no tables cannot be read") from exc  # fmt: skip
    out = []
    for name, geom in layers:
        info = pyogrio.read_info(path, layer=name)
        out.append({"layer": str(name), "geometry": geom, "features": int(info["features"]),
                    "crs": info["crs"], "fields": list(info["fields"]),
                    "bounds": list(info["total_bounds"]) if info.get("total_bounds") is not None else None})  # fmt: skip
    return {"kind": "geopackage", "layers": out}


def _zarr(path: Path) -> dict:
    import zarr

    from eoflow.cube.store import read_ledger

    root = zarr.open_group(str(path), mode="r")
    groups = {}
    for name, grp in root.groups():
        groups[name] = {
            "variables": {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in grp.arrays()
                          if k not in ("x", "y", "time", "spatial_ref")},
            "complete": read_ledger(path, name) is not None,
        }  # fmt: skip
    arrays = {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in root.arrays()}
    incomplete = [g for g, v in groups.items() if not v["complete"]]
    return {"kind": "zarr", "groups": groups, "arrays": arrays, "attrs": dict(root.attrs),
            "incomplete_tiles": incomplete}  # fmt: skip


def _model(path: Path) -> dict:
    from eoflow.models.lgbm import load_model

    folder = path if path.is_dir() else path.parent
    m = load_model(folder)
    return {"kind": "lightgbm-model", "trees": m.booster.num_trees(), "classes": m.sidecar.get("classes"),
            "n_features": len(m.feature_names), "time": m.sidecar.get("time"),
            "eoflow_version": m.sidecar.get("eoflow_version"),
            "train_tiles": m.sidecar.get("train_tiles"), "test_tiles": m.sidecar.get("test_tiles")}  # fmt: skip


def _config(path: Path) -> dict:
    from eoflow.config import config_hash, load_config
    from eoflow.pipeline import make_tiles

    cfg = load_config(path)
    tiles = make_tiles(cfg)
    return {"kind": "config", "name": cfg.name, "config_hash": config_hash(cfg), "tiles": len(tiles),
            "tile_ids": [t.tile_id for t in tiles][:50], "source": cfg.source.kind,
            "period": [str(cfg.start), str(cfg.end)]}  # fmt: skip


def _stac(path: Path) -> dict:
    import pystac

    root = pystac.read_file(str(path))
    items = list(root.get_items(recursive=True))
    assets = sorted({k for i in items for k in i.assets})
    times = sorted(i.datetime for i in items if i.datetime)
    return {"kind": "stac", "type": root.STAC_OBJECT_TYPE.value, "id": root.id, "items": len(items),
            "assets": assets, "first": str(times[0]) if times else None, "last": str(times[-1]) if times else None}  # fmt: skip


def inspect_path(path: Path) -> dict:
    """A summary dict of ``path``; raises :class:`InputError` for unreadable or unknown files."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the path")
    suffix = path.suffix.lower()
    if path.is_dir() and ((path / "zarr.json").exists() or suffix == ".zarr"):
        return _zarr(path)
    if (path.is_dir() and (path / "model.txt").exists()) or path.name == "model.txt":
        return _model(path)
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes)", "re-create or re-download it")
    if suffix in (".tif", ".tiff", ".jp2"):
        return _raster(path)
    if suffix == ".gpkg":
        return _gpkg(path)
    if suffix in (".yaml", ".yml"):
        return _config(path)
    if suffix == ".json":
        return _stac(path)
    raise InputError(
        f"{path}: unknown kind of file",
        "inspect takes .tif, .gpkg, .zarr, model/, .yaml, STAC .json",
    )


def _inspect(args) -> int:
    info = inspect_path(args.path)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{args.path}: {info['kind']}")
    for key, value in info.items():
        if key != "kind":
            text = json.dumps(value, default=str)
            print(f"  {key}: {text if len(text) < 300 else text[:297] + '...'}")
    return 0
