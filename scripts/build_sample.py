"""Rebuild the shipped Slovenia sample (``data/sample/``) from ``../shared/data/eolearn-example``.

Every pixel value is real (eo-learn example data, Copernicus Sentinel-2 derived); nothing is
synthesised. Writes one Cloud-Optimized GeoTIFF per date and asset, a static STAC catalog whose
Items look like Sentinel-2 Items (``proj:*``, ``eo:bands``, ``raster:bands``, cloud cover), the DEM,
the reference polygons (``LULC.gpkg``) and ``truth/`` arrays used by the tests.

Usage: ``python scripts/build_sample.py [--src ../shared/data/eolearn-example] [--dst data/sample]``
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
from rasterio.transform import from_bounds

BOUNDS = (465181.0522318204, 5079244.8912012065, 466180.53145382757, 5080254.63349641)
WIDTH, HEIGHT = 100, 101
EPSG = 32633
L1C_BANDS = [
    # name, common name, centre wavelength (um), gsd (m)
    ("B01", "coastal", 0.443, 60), ("B02", "blue", 0.490, 10), ("B03", "green", 0.560, 10),
    ("B04", "red", 0.665, 10), ("B05", "rededge", 0.705, 20), ("B06", "rededge", 0.740, 20),
    ("B07", "rededge", 0.783, 20), ("B08", "nir", 0.842, 10), ("B8A", "nir08", 0.865, 20),
    ("B09", "nir09", 0.945, 60), ("B10", "cirrus", 1.375, 60), ("B11", "swir16", 1.610, 20),
    ("B12", "swir22", 2.190, 20),
]  # fmt: skip
STAC_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]
ATTRIBUTION = (
    "Contains modified Copernicus Sentinel data 2015-2017, processed by Sentinel Hub; "
    "eo-learn example data (MIT, (c) 2017-2022 Sinergise and contributors)."
)


def transform():
    return from_bounds(*BOUNDS, width=WIDTH, height=HEIGHT)


def write_cog(path: Path, array: np.ndarray, nodata) -> None:
    """Write a single-band 2-D array as a deflate-compressed COG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="COG", width=WIDTH, height=HEIGHT, count=1, dtype=array.dtype.name,
        crs=f"EPSG:{EPSG}", transform=transform(), nodata=nodata, compress="DEFLATE",
        predictor=3 if array.dtype.kind == "f" else 2, blocksize=128,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def load_inputs(src: Path) -> dict:
    p = src / "TestEOPatch"
    times = [datetime.fromisoformat(t) for t in json.loads((p / "timestamps.json").read_text())]
    d = {
        "times": times,
        "NDVI": np.load(p / "data/NDVI.npy")[..., 0].astype("float32"),
        "CLP": np.load(p / "data/CLP.npy")[..., 0].astype("float32"),
        "CLM": np.load(p / "mask/CLM.npy")[..., 0].astype("uint8"),
        "IS_DATA": np.load(p / "mask/IS_DATA.npy")[..., 0].astype("uint8"),
        "cloud": np.load(p / "scalar/CLOUD_COVERAGE.npy")[:, 0].astype("float64"),
        "DEM": np.load(p / "data_timeless/DEM.npy")[..., 0].astype("float32"),
    }
    scl = np.load(src / "from-history/SCL_36dates_2016-12_2017-12.npy")[..., 0]
    scl_t = json.loads(
        (src / "from-history/SCL_36dates_2016-12_2017-12.timestamps.json").read_text()
    )
    d["SCL"] = dict(zip(scl_t, np.nan_to_num(scl).astype("uint8")))
    bands = {}
    for arr_name, ts_name in [
        ("REFERENCE_SCENES.npy", "REFERENCE_SCENES.timestamps.json"),
        (
            "from-history/REFERENCE_SCENES_2016-12_2017-02_masked.npy",
            "from-history/REFERENCE_SCENES_2016-12_2017-02_masked.timestamps.json",
        ),
    ]:
        arr = np.load(src / arr_name).astype("float32")
        for i, t in enumerate(json.loads((src / ts_name).read_text())):
            bands[t] = arr[i]
    d["BANDS"] = bands
    return d


def _key(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def asset(href: str, title: str, dtype: str, nodata, band: tuple | None = None) -> pystac.Asset:
    extra = {
        "proj:shape": [HEIGHT, WIDTH],
        "proj:transform": list(transform())[:6],
        "raster:bands": [{"data_type": dtype, "nodata": nodata, "spatial_resolution": 10}],
    }
    if band is not None:
        name, common, wl, gsd = band
        extra["eo:bands"] = [{"name": name, "common_name": common, "center_wavelength": wl}]
        extra["gsd"] = gsd
        extra["raster:bands"][0]["unit"] = "reflectance"
    return pystac.Asset(
        href=href, title=title, media_type=pystac.MediaType.COG, roles=["data"], extra_fields=extra
    )


def build(src: Path, dst: Path) -> None:
    d = load_inputs(src)
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "items").mkdir(parents=True)
    bbox_ll = [14.55134, 45.86589, 14.56429, 45.87503]
    extent = pystac.Extent(
        pystac.SpatialExtent([bbox_ll]), pystac.TemporalExtent([[d["times"][0], d["times"][-1]]])
    )
    collection = pystac.Collection(
        id="eoflow-slovenia-sample",
        description="Real Sentinel-2 derived 101x100 px patch near Ljubljana (eo-learn example data). "
        + ATTRIBUTION,
        extent=extent,
        license="MIT",
        extra_fields={"eoflow:attribution": ATTRIBUTION},
    )
    write_cog(dst / "static/DEM.tif", d["DEM"], None)
    collection.add_asset(
        "DEM", asset("static/DEM.tif", "Digital elevation model (m)", "float32", None)
    )
    collection.add_asset(
        "reference",
        pystac.Asset("reference/LULC.gpkg", title="LULC reference polygons",
                     media_type="application/geopackage+sqlite3", roles=["labels"]),
    )  # fmt: skip
    (dst / "reference").mkdir()
    shutil.copy(src / "TestEOPatch/vector_timeless/LULC.gpkg", dst / "reference/LULC.gpkg")
    geom = {
        "type": "Polygon",
        "coordinates": [[[bbox_ll[0], bbox_ll[1]], [bbox_ll[2], bbox_ll[1]],
                         [bbox_ll[2], bbox_ll[3]], [bbox_ll[0], bbox_ll[3]], [bbox_ll[0], bbox_ll[1]]]],
    }  # fmt: skip
    for i, t in enumerate(d["times"]):
        key = _key(t)
        item_id = f"S2_MSI_{t:%Y%m%dT%H%M%S}_T33TVM_sample"
        item = pystac.Item(
            id=item_id, geometry=geom, bbox=bbox_ll, datetime=t.replace(tzinfo=None),
            properties={
                "platform": "sentinel-2", "constellation": "sentinel-2", "instruments": ["msi"],
                "eo:cloud_cover": round(float(d["cloud"][i]) * 100, 2),
                "proj:epsg": EPSG, "proj:code": f"EPSG:{EPSG}",
                "s2:mgrs_tile": "33TVM", "eoflow:index": i,
            },
        )  # fmt: skip
        item.stac_extensions = STAC_EXTENSIONS
        rel = f"{t:%Y%m%dT%H%M%S}"
        folder = dst / "items" / rel
        for name, dtype, nodata in [("NDVI", "float32", None), ("CLP", "float32", None),
                                    ("CLM", "uint8", None), ("IS_DATA", "uint8", None)]:  # fmt: skip
            write_cog(folder / f"{name}.tif", d[name][i], nodata)
            item.add_asset(name, asset(f"{name}.tif", name, dtype, nodata))
        if key in d["SCL"]:
            write_cog(folder / "SCL.tif", d["SCL"][key], 0)
            item.add_asset("SCL", asset("SCL.tif", "Sen2Cor scene classification", "uint8", 0))
        if key in d["BANDS"]:
            cube = d["BANDS"][key]
            for b, band in enumerate(L1C_BANDS):
                write_cog(folder / f"{band[0]}.tif", cube[..., b], float("nan"))
                item.add_asset(band[0], asset(f"{band[0]}.tif", band[0], "float32", "nan", band))
        collection.add_item(item)
    catalog_path = dst / "collection.json"
    collection.normalize_hrefs(str(dst), strategy=_Layout())
    collection.make_all_asset_hrefs_relative()
    collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, dest_href=str(dst))
    assert catalog_path.exists()
    truth = dst / "truth"
    truth.mkdir()
    p = src / "TestEOPatch"
    np.save(
        truth / "VALID_COUNT.npy",
        np.load(p / "mask_timeless/VALID_COUNT.npy")[..., 0].astype("uint16"),
    )
    np.save(truth / "LULC.npy", np.load(p / "mask_timeless/LULC.npy")[..., 0])
    shutil.copy(p / "bbox.geojson", dst / "aoi.geojson")


class _Layout(pystac.layout.HrefLayoutStrategy):
    """Items at ``items/<YYYYmmddTHHMMSS>/item.json`` beside their COGs."""

    def get_catalog_href(self, cat, parent_dir, is_root):
        return f"{parent_dir}/catalog.json"

    def get_collection_href(self, col, parent_dir, is_root):
        return f"{parent_dir}/collection.json"

    def get_item_href(self, item, parent_dir):
        return f"{parent_dir}/items/{item.datetime:%Y%m%dT%H%M%S}/item.json"


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--src", type=Path, default=here.parent / "shared/data/eolearn-example")
    ap.add_argument("--dst", type=Path, default=here / "data/sample")
    a = ap.parse_args()
    build(a.src, a.dst)
    print(f"wrote {a.dst}")


if __name__ == "__main__":
    main()
