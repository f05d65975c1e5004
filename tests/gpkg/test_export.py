"""Exports into GeoPackages: class polygons, CSV joins, incremental appends (others untouched)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import rasterio.features
from conftest import LULC, PATCH_TRANSFORM, SCENES, TIFF2

from eoflow.cli.main import main
from eoflow.errors import DataError, InputError
from eoflow.gpkg.catalog import list_layers
from eoflow.gpkg.export import append_layer, join_csv, vectorize_classes
from eoflow.gpkg.raster import load_gpkg_raster_cube
from eoflow.reference.classes import ClassTable


@pytest.fixture(scope="module")
def class_map(tmp_path_factory):
    """LULC.gpkg rasterised on the TestEOPatch grid, as a uint8 GeoTIFF with a colour table."""
    gdf = pyogrio.read_dataframe(LULC)
    arr = rasterio.features.rasterize(zip(gdf.geometry, gdf.LULC_ID), out_shape=(101, 100),
                                      transform=PATCH_TRANSFORM, dtype="uint8")  # fmt: skip
    path = tmp_path_factory.mktemp("pred") / "prediction.tif"
    with rasterio.open(path, "w", driver="GTiff", width=100, height=101, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=PATCH_TRANSFORM) as dst:  # fmt: skip
        dst.write(arr, 1)
        dst.write_colormap(1, ClassTable.from_vector(LULC).gdal_colormap())
    return path, arr


def _table_digests(path) -> dict[str, str]:
    """Digest of every data table (incl. R-tree indexes) and of each layer's gpkg_contents row."""
    with sqlite3.connect(path) as con:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out = {}
        for n in names:
            if n.startswith(("gpkg_", "sqlite_")):
                continue
            rows = con.execute(f'SELECT * FROM "{n}" ORDER BY 1').fetchall()
            out[n] = hashlib.sha256(repr(rows).encode()).hexdigest()
        for row in con.execute("SELECT * FROM gpkg_contents"):
            out[f"contents:{row[0]}"] = repr(row)
    return out


def test_vectorised_areas_equal_pixel_counts(class_map):
    path, arr = class_map
    gdf = vectorize_classes(path, classes=ClassTable.from_vector(LULC))
    px_area = PATCH_TRANSFORM.a * -PATCH_TRANSFORM.e
    areas = gdf.groupby("class_id").area_m2.sum() / px_area
    ids, counts = np.unique(arr, return_counts=True)
    np.testing.assert_allclose(areas.loc[ids].to_numpy(), counts, rtol=1e-9)
    assert counts.tolist() == [155, 11, 7601, 1777, 358, 198]  # LULC_COUNTS of the EOPatch
    assert set(gdf.class_name) == {"no data", "cultivated land", "forest", "grassland",
                                   "schrubland", "artificial surface"}  # fmt: skip
    back = rasterio.features.rasterize(zip(gdf.geometry, gdf.class_id), out_shape=arr.shape,
                                       transform=PATCH_TRANSFORM, dtype="uint8")  # fmt: skip
    assert np.array_equal(back, arr)


def test_cli_polygons_join_append_leave_other_layers_untouched(tmp_path, class_map, capsys):
    path, _ = class_map
    out = tmp_path / "results.gpkg"
    shutil.copy(LULC, out)
    before = _table_digests(out)
    legend = tmp_path / "legend.json"
    assert main(["gpkg", "classes", str(LULC), "--legend", str(legend)]) == 0
    rc = main(["export", "polygons", str(path), "--out", str(out), "--classes", str(legend),
               "--skip", "0"])  # fmt: skip
    assert rc == 0
    pred = pyogrio.read_dataframe(out, layer="predictions")
    assert 0 not in set(pred.class_id) and list(pred.columns[:3]) == ["class_id", "class_name",
                                                                      "area_m2"]  # fmt: skip
    after = _table_digests(out)
    assert all(after[t] == d for t, d in before.items())
    assert main(["export", "polygons", str(path), "--out", str(out)]) == 2  # layer exists
    assert "already exists" in capsys.readouterr().err

    csv = tmp_path / "crops.csv"
    pd.DataFrame({"code": [2, 3, 99], "label": ["Forest", "Grass", "none"],
                  "AREA": [1.0, 2.0, 3.0]}).to_csv(csv, index=False)  # fmt: skip
    rc = main(["export", "join", str(out), "--layer", "LULC", "--csv", str(csv), "--key",
               "LULC_ID", "--csv-key", "code", "--out", str(out)])  # fmt: skip
    assert rc == 0
    joined = pyogrio.read_dataframe(out, layer="LULC_joined")
    lulc = pyogrio.read_dataframe(LULC)
    assert len(joined) == len(lulc) == 88  # LEFT JOIN keeps every feature
    assert (joined.label == "Forest").sum() == (lulc.LULC_ID == 2).sum()
    assert joined.label.isna().sum() == (~lulc.LULC_ID.isin([2, 3])).sum()
    assert "AREA_csv" in joined.columns and (joined.AREA == lulc.AREA).all()

    before = _table_digests(out)
    rc = main(["export", "append", str(SCENES / "S2_20160605_NDVI.tif"), "--to", str(out),
               "--as", "ndvi_june"])  # fmt: skip
    assert rc == 0
    after = _table_digests(out)
    assert len(before) > 8 and all(after[t] == d for t, d in before.items())
    layers = {x.name: x for x in list_layers(out)}
    assert layers["ndvi_june"].date == "2016-06-05"  # from the file name, written as RASTER_DATE
    assert layers["ndvi_june"].date_source == "RASTER_DATE"
    assert set(layers) == {"LULC", "predictions", "LULC_joined", "ndvi_june"}
    with rasterio.open(SCENES / "S2_20160605_NDVI.tif") as src:
        ref = src.read(1)
    cube = load_gpkg_raster_cube(out)
    np.testing.assert_array_equal(cube.value.isel(time=0).values, ref)


def test_join_errors(tmp_path):
    csv = tmp_path / "dup.csv"
    pd.DataFrame({"LULC_ID": [2, 2], "x": [1, 2]}).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"not unique.*\[2\]"):
        join_csv(LULC, "LULC", csv, key="LULC_ID")
    with pytest.raises(InputError, match=r"column 'nope' not found in .*dup\.csv"):
        join_csv(LULC, "LULC", csv, key="LULC_ID", csv_key="nope")
    with pytest.raises(InputError, match="column 'nope' not found in layer 'LULC'"):
        join_csv(LULC, "LULC", csv, key="nope")


def test_append_refuses_multiband_float(tmp_path):
    assert main(["export", "append", str(TIFF2), "--to", str(tmp_path / "x.gpkg")]) == 2
    with pytest.raises(DataError, match="5 band"):
        append_layer(TIFF2, tmp_path / "x.gpkg")
    assert not (tmp_path / "x.gpkg").exists()
