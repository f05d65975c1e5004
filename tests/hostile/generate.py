"""Deterministic generator of hostile fixtures, built from the shipped sample.

``python tests/hostile/generate.py OUT_DIR`` writes every case; the tests call :func:`make_case`.
Each case is a folder holding a copy of the sample catalog (items trimmed to a few dates to stay
fast), a ``config.yaml`` and whatever the case breaks.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import struct
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
#: Dates kept in hostile catalogs (2017, mixed cloud cover).
KEEP = ("20170101T100407", "20170111T100351", "20170220T100635", "20170401T100022", "20170501T100029",
        "20170620T100453", "20170720T100027", "20170824T100022", "20171008T100322")  # fmt: skip
CLOUDY = ("20170908T100655", "20170918T100023")  # 100 % cloud cover


def _copy_sample(dst: Path, dates=KEEP) -> None:
    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder).name == "items":
            return [n for n in names if n not in dates]
        return [n for n in names if n == "truth"]

    shutil.copytree(SAMPLE, dst, ignore=ignore)
    col = json.loads((dst / "collection.json").read_text())
    col["links"] = [
        ln for ln in col["links"] if ln["rel"] != "item" or Path(ln["href"]).parent.name in dates
    ]
    (dst / "collection.json").write_text(json.dumps(col, indent=1))


def _config(case: Path, **over) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "sample.yaml").read_text())
    cfg["aoi"]["path"] = "data/aoi.geojson"
    cfg["source"]["catalog"] = "data/collection.json"
    cfg["reference"]["path"] = "data/reference/LULC.gpkg"
    cfg["cluster"] = {"n_workers": 1, "threads_per_worker": 2, "processes": False}
    cfg["model"]["n_estimators"] = 20
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = case / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _asset(case: Path, date: str = KEEP[1], name: str = "NDVI") -> Path:
    return case / "data" / "items" / date / f"{name}.tif"


def _gpkg_funcs(con: sqlite3.Connection) -> None:
    """GeoPackage R-tree triggers call ST_* functions that plain sqlite3 lacks."""
    import shapely

    def bound(blob, i):
        try:
            return shapely.from_wkb(_split_gpkg(blob)[1]).bounds[i]
        except Exception:
            return 0.0

    con.create_function("ST_IsEmpty", 1, lambda g: 0)
    for i, n in enumerate(("ST_MinX", "ST_MinY", "ST_MaxX", "ST_MaxY")):
        con.create_function(n, 1, lambda g, i=i: bound(g, i))


def _split_gpkg(blob: bytes) -> tuple[bytes, bytes]:
    env = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}[(blob[3] >> 1) & 7]
    return blob[: 8 + env], blob[8 + env :]


def _ring_wkb(coords) -> bytes:
    ring = struct.pack("<I", len(coords)) + b"".join(struct.pack("<dd", x, y) for x, y in coords)
    return struct.pack("<bI", 1, 3) + struct.pack("<I", 1) + ring


def break_polygons(gpkg: Path) -> tuple[int, int]:
    """Make feature 1's ring unclosed and feature 2 a bow-tie; returns their fids."""
    import shapely

    con = sqlite3.connect(gpkg)
    _gpkg_funcs(con)
    (f1, b1), (f2, b2) = con.execute("select fid, geom from LULC order by fid limit 2").fetchall()
    h1, w1 = _split_gpkg(b1)
    open_ring = list(shapely.from_wkb(w1).exterior.coords)[:-1]
    h2, w2 = _split_gpkg(b2)
    x0, y0, x1, y1 = shapely.from_wkb(w2).bounds
    bow = [(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)]
    con.execute("update LULC set geom=? where fid=?", (h1 + _ring_wkb(open_ring), f1))
    con.execute("update LULC set geom=? where fid=?", (h2 + _ring_wkb(bow), f2))
    con.commit()
    con.close()
    return f1, f2


def _rewrite_blocky(path: Path) -> None:
    """Rewrite a COG with 16 px blocks (so truncation breaks only some windows)."""
    import rasterio

    with rasterio.open(path) as src:
        data, profile = src.read(1), src.profile
    profile.update(driver="GTiff", tiled=True, blockxsize=16, blockysize=16, compress="NONE")
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


@case
def unknown_key(c):
    return _config(c, grid={"tile_size_px": 34, "tile_sise": 3})


@case
def wrong_type(c):
    return _config(c, grid={"tile_size_px": "big"})


@case
def impossible_date(c):
    return _config(c, end="2017-02-30")


@case
def yaml_python_tag(c):
    p = _config(c)
    p.write_text(p.read_text() + "evil: !!python/object/apply:os.system ['echo pwned']\n")
    return p


@case
def empty_aoi_file(c):
    (c / "data" / "aoi.geojson").write_bytes(b"")
    return _config(c)


@case
def aoi_outside_data(c):
    gj = json.loads((c / "data" / "aoi.geojson").read_text())
    gj["coordinates"] = [[[x + 50_000, y] for x, y in ring] for ring in gj["coordinates"]]
    (c / "data" / "aoi.geojson").write_text(json.dumps(gj))
    return _config(c)


@case
def zero_byte_asset(c):
    _asset(c).write_bytes(b"")
    return _config(c)


@case
def html_instead_of_tiff(c):
    _asset(c).write_text("<!doctype html><html><body>403 Forbidden</body></html>")
    return _config(c)


@case
def vrt_disguised_as_tif(c):
    target = _asset(c, KEEP[2])
    _asset(c).write_text(
        f'<VRTDataset rasterXSize="100" rasterYSize="101"><SRS>EPSG:32633</SRS>'
        f'<VRTRasterBand dataType="Float32" band="1"><SimpleSource><SourceFilename relativeToVRT="0">'
        f"{target}</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    return _config(c)


@case
def asset_without_crs(c):
    import rasterio

    path = _asset(c)
    with rasterio.open(path) as src:
        data, profile = src.read(1), src.profile
    profile.update(driver="GTiff", crs=None)
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return _config(c)


@case
def missing_band(c):
    return _config(
        c, source={"kind": "stac", "catalog": "data/collection.json", "assets": ["NDVI", "B99"]}
    )


@case
def unsafe_asset_key(c):
    item = c / "data" / "items" / KEEP[0] / "item.json"
    d = json.loads(item.read_text())
    d["assets"]["../../evil"] = d["assets"]["NDVI"]
    item.write_text(json.dumps(d))
    return _config(
        c,
        source={
            "kind": "stac",
            "catalog": "data/collection.json",
            "assets": ["NDVI", "../../evil"],
        },
    )


@case
def missing_reference_layer(c):
    return _config(c, reference={"layer": "LANDUSE"})


@case
def reference_without_tables(c):
    con = sqlite3.connect(c / "data" / "reference" / "empty.gpkg")
    con.execute("PRAGMA application_id = 1196444487")
    con.execute(
        "create table gpkg_contents (table_name text primary key, data_type text, identifier text)"
    )
    con.commit()
    con.close()
    return _config(c, reference={"path": "data/reference/empty.gpkg"})


@case
def broken_polygons(c):
    break_polygons(c / "data" / "reference" / "LULC.gpkg")
    return _config(c)


@case
def truncated_asset(c):
    path = _asset(c)
    _rewrite_blocky(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.55)])
    return _config(c)


@case
def all_cloudy(c):
    return _config(c, start="2017-09-05", end="2017-09-20",
                   source={"kind": "stac", "catalog": "data/collection.json", "assets": ["NDVI", "CLM", "IS_DATA"]})  # fmt: skip


@case
def duplicated_timestamps(c):
    items = c / "data" / "items"
    src = items / KEEP[0]
    dup = items / (KEEP[0] + "b")
    shutil.copytree(src, dup)
    d = json.loads((dup / "item.json").read_text())
    d["id"] += "-duplicate"
    (dup / "item.json").write_text(json.dumps(d))
    col = json.loads((c / "data" / "collection.json").read_text())
    col["links"].append(
        {"rel": "item", "href": f"./items/{dup.name}/item.json", "type": "application/geo+json"}
    )
    (c / "data" / "collection.json").write_text(json.dumps(col))
    return _config(c)


@case
def unsorted_timestamps(c):
    col = json.loads((c / "data" / "collection.json").read_text())
    items = [ln for ln in col["links"] if ln["rel"] == "item"]
    others = [ln for ln in col["links"] if ln["rel"] != "item"]
    col["links"] = others + items[::-1]
    (c / "data" / "collection.json").write_text(json.dumps(col))
    return _config(c)


@case
def single_date(c):
    return _config(c, start="2017-01-01", end="2017-01-05")


@case
def aoi_spans_utm_zones(c):
    return _config(c, aoi={"bbox": [5.0, 45.0, 25.0, 46.0], "path": None})


@case
def chunk_too_large_for_memory(c):
    return _config(
        c,
        grid={"tile_size_px": 12000, "chunk_px": 12000},
        cluster={"n_workers": 2, "memory_limit": "1GB"},
    )


@case
def mixed_resolution(c):
    """B11 of one date rewritten at 20 m (every 2 x 2 block from its top-left pixel)."""
    import rasterio
    from rasterio.transform import Affine

    path = _asset(c, KEEP[0], "B11")
    with rasterio.open(path) as src:
        data, profile = src.read(1), src.profile
    t = profile["transform"]
    coarse = data[::2, ::2]
    profile.update(driver="GTiff", width=coarse.shape[1], height=coarse.shape[0],
                   transform=Affine(t.a * 2, 0, t.c, 0, t.e * 2, t.f), blockxsize=16, blockysize=16, tiled=True)  # fmt: skip
    path.unlink()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(coarse, 1)
    item = c / "data" / "items" / KEEP[0] / "item.json"
    d = json.loads(item.read_text())
    d["assets"]["B11"]["proj:shape"] = list(coarse.shape)
    d["assets"]["B11"]["proj:transform"] = [t.a * 2, 0, t.c, 0, t.e * 2, t.f]
    item.write_text(json.dumps(d))
    return _config(c)


def make_case(name: str, root: Path) -> Path:
    """Build case ``name`` under ``root``; returns the config path."""
    c = root / name
    shutil.rmtree(c, ignore_errors=True)
    c.mkdir(parents=True)
    dates = KEEP + CLOUDY if name == "all_cloudy" else KEEP
    _copy_sample(c / "data", dates)
    return CASES[name](c)


def repair_asset(config: Path) -> None:
    """Put back the intact asset that ``truncated_asset`` cut (the user replacing a bad file)."""
    path = _asset(config.parent)
    shutil.copy(SAMPLE / path.relative_to(config.parent / "data"), path)


def truncate_model(model_dir: Path, keep: float = 0.5) -> None:
    """Cut a LightGBM text model in the middle of its trees."""
    path = model_dir / "model.txt"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-fixtures")
    for name in CASES:
        print(make_case(name, out))
    np.random.default_rng(0)  # the generator uses no randomness; kept explicit for reviewers
