"""Spatial SQL (SpatiaLite via apsw) over real GeoPackages, checked against independent
rasterisation (rasterio.features.rasterize) and direct rasterio reads."""

from __future__ import annotations

import shutil
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import rasterio.features
from conftest import LULC, PARCELS, SCENES
from pyproj import Transformer

from eoflow.cli.main import main
from eoflow.errors import InputError
from eoflow.geo.tiles import Tile
from eoflow.gpkg.raster import load_gpkg_raster_cube
from eoflow.gpkg.sql import (
    AttributeFilter,
    cells_in_polygons,
    parse_filter,
    pixels_in_polygons,
    values_at_points,
)


@pytest.fixture(autouse=True, scope="module")
def _spatialite():
    """Skip (with the reason) where SpatiaLite or apsw is not installed (make setup does both)."""
    from eoflow.gpkg.sql import connect

    try:
        connect(LULC).close()
    except InputError as exc:
        pytest.skip(f"spatial SQL engine unavailable: {exc}")


def _rasterize(geoms, tile: Tile) -> np.ndarray:
    return rasterio.features.rasterize([(g, 1) for g in geoms], out_shape=tile.shape,
                                       transform=tile.affine, dtype="uint8").astype(bool)  # fmt: skip


def test_cells_match_independent_rasterisation(patch_tile):
    cells = cells_in_polygons(LULC, "LULC", patch_tile)
    gdf = pyogrio.read_dataframe(LULC, fid_as_index=True)
    assert len(cells) == patch_tile.width * patch_tile.height  # the polygons tile the patch
    for fid, geom in gdf.geometry.items():
        got = cells[cells.feature_id == fid]
        ref = np.argwhere(_rasterize([geom], patch_tile))
        assert sorted(map(tuple, got[["row", "col"]].to_numpy())) == sorted(map(tuple, ref)), fid
    a, _, c, _, e, f = patch_tile.transform
    np.testing.assert_allclose(cells.x, c + a * (cells.col + 0.5))
    np.testing.assert_allclose(cells.y, f + e * (cells.row + 0.5))


def test_pixels_in_polygon_by_attribute_with_all_dates_and_bands(scene_cube, patch_tile):
    gdf = pixels_in_polygons(LULC, "LULC", scene_cube, where="LULC_NAME=forest")
    forest = pyogrio.read_dataframe(LULC, where="LULC_ID = 2").geometry
    mask = _rasterize(forest, patch_tile)
    assert len(gdf) == mask.sum() * scene_cube.sizes["time"] == 7601 * 4
    assert list(gdf.columns) == ["feature_id", "time", "row", "col", "x", "y", "NDVI", "CLM",
                                 "geometry"]  # fmt: skip
    assert gdf.crs.to_epsg() == 32633
    ndvi = scene_cube.NDVI.values
    np.testing.assert_array_equal(
        gdf.NDVI.to_numpy(),
        ndvi[np.repeat(np.arange(4), 7601), gdf.row.to_numpy(), gdf.col.to_numpy()],
    )
    t0 = scene_cube.time.values[0]
    first = gdf[gdf.time == t0]
    with rasterio.open(SCENES / "clm_0.tif") as src:
        clm = src.read(1)
    np.testing.assert_array_equal(first.CLM.to_numpy(), clm[first.row, first.col])


def test_pixels_in_polygon_by_id(scene_cube):
    one = pixels_in_polygons(LULC, "LULC", scene_cube, ids=[5])
    assert set(one.feature_id) == {5} and len(one) == 18 * 4
    by_col = pixels_in_polygons(LULC, "LULC", scene_cube, ids=["1300"], id_column="RABA_ID")
    assert len(by_col) // 4 == 1777  # grassland: the same pixel count as LULC_COUNTS[3]


def test_reprojected_polygons_on_another_grid(patch_tile):
    """LULC polygons (EPSG:32633) on an EPSG:3035 grid: ST_Transform in SQL vs geopandas."""
    tile = Tile("laea", "EPSG:3035", (20.0, 0.0, 4_674_000.0, 0.0, -20.0, 2_541_000.0), 140, 130)
    gdf = pyogrio.read_dataframe(LULC, fid_as_index=True).to_crs(3035)
    cells = cells_in_polygons(LULC, "LULC", tile)
    assert len(cells) > 5000
    diff = 0
    for fid, geom in gdf.geometry.items():
        ref = set(map(tuple, np.argwhere(_rasterize([geom], tile))))
        got = set(map(tuple, cells[cells.feature_id == fid][["row", "col"]].to_numpy()))
        diff += len(ref ^ got)
    assert diff <= 2  # only pixel centres within ~1e-9 m of an edge may differ


def test_french_parcels_epsg2154(tmp_path):
    """Real LPIS parcels (EPSG:2154) with a dated raster of parcel ids in the same GeoPackage."""
    gpkg = tmp_path / "parcels.gpkg"
    shutil.copy(PARCELS, gpkg)
    parcels = pyogrio.read_dataframe(gpkg, layer="lpis_iacs", fid_as_index=True)
    x0, y0, x1, y1 = parcels.total_bounds
    tile = Tile("rpg", "EPSG:2154", (10.0, 0.0, np.floor(x0), 0.0, -10.0, np.ceil(y1)),
                int(np.ceil((x1 - x0) / 10)) + 1, int(np.ceil((y1 - y0) / 10)) + 1)  # fmt: skip
    ids = rasterio.features.rasterize(zip(parcels.geometry, parcels.index), out_shape=tile.shape,
                                      transform=tile.affine, dtype="uint16")  # fmt: skip
    with rasterio.open(gpkg, "w", driver="GPKG", width=tile.width, height=tile.height, count=1,
                       dtype="uint16", crs=tile.crs, transform=tile.affine,
                       RASTER_TABLE="parcel_id", APPEND_SUBDATASET="YES") as dst:  # fmt: skip
        dst.write(ids, 1)
        dst.update_tags(RASTER_DATE="2021-05-15")
    cube = load_gpkg_raster_cube(gpkg)
    assert list(cube.data_vars) == ["value"] and str(cube.time.values[0])[:10] == "2021-05-15"
    gdf = pixels_in_polygons(gpkg, "lpis_iacs", cube, where=parse_filter("code_cultu=MIS"))
    maize = parcels[parcels.code_cultu == "MIS"]
    assert gdf.feature_id.nunique() == len(maize) == 59
    assert len(gdf) == _rasterize(maize.geometry, tile).sum()
    assert (gdf.value.to_numpy() == gdf.feature_id.to_numpy()).all()  # raster of parcel fids
    cells = cells_in_polygons(gpkg, "lpis_iacs", tile)  # every parcel, vs rasterize per parcel
    grouped = {fid: set(map(tuple, g[["row", "col"]].to_numpy())) for fid, g in
               cells.groupby("feature_id")}  # fmt: skip
    for fid, geom in parcels.geometry.items():
        assert grouped.get(fid, set()) == set(map(tuple, np.argwhere(_rasterize([geom], tile))))
    big = pixels_in_polygons(gpkg, "lpis_iacs", cube, where="surf_parc>=10")
    assert big.feature_id.nunique() == (parcels.surf_parc >= 10).sum() > 0


def test_values_at_points_match_direct_reads(tmp_path, scene_cube, dated_gpkg):
    pts = pyogrio.read_dataframe(LULC).representative_point().to_crs(4326)
    points = gpd.GeoDataFrame({"name": [f"p{i}" for i in range(len(pts))]}, geometry=pts)
    points.loc[len(points)] = ["far away", gpd.points_from_xy([13.0], [46.0])[0]]
    path = tmp_path / "points.gpkg"
    pyogrio.write_dataframe(points.set_crs(4326), path, layer="samples")
    cube = load_gpkg_raster_cube(dated_gpkg)
    got = values_at_points(path, "samples", cube)
    to_utm = Transformer.from_crs(4326, 32633, always_xy=True)
    x, y = to_utm.transform(points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
    with rasterio.open(SCENES / "S2_20160605_NDVI.tif") as src:
        frame = src.read(1)
        rc = [src.index(a, b) for a, b in zip(x, y)]
    inside = [(0 <= r < 101 and 0 <= c < 100) for r, c in rc]
    assert got.attrs["dropped"] == len(points) - sum(inside) >= 1
    day = got[got.time == np.datetime64("2016-06-05")].sort_values("feature_id")
    expected = [frame[r, c] for (r, c), ok in zip(rc, inside) if ok]
    np.testing.assert_array_equal(day.NDVI.to_numpy(), np.array(expected, dtype=np.float32))
    assert len(got) == 4 * sum(inside)


def test_names_checked_and_values_bound(tmp_path, scene_cube, patch_tile):
    copy = tmp_path / "lulc.gpkg"
    shutil.copy(LULC, copy)
    with pytest.raises(InputError, match=r"not found.*existing layers: \['LULC'\]"):
        cells_in_polygons(copy, 'LULC"; DROP TABLE "LULC', patch_tile)
    with pytest.raises(InputError, match="column 'x\" OR 1=1 --' not found"):
        cells_in_polygons(copy, "LULC", patch_tile, where=AttributeFilter('x" OR 1=1 --', "=", 1))
    with pytest.raises(InputError, match="operator"):
        cells_in_polygons(copy, "LULC", patch_tile, where=AttributeFilter("fid", "= 1 OR 1 =", 1))
    none = cells_in_polygons(copy, "LULC", patch_tile, where="LULC_NAME=forest' OR '1'='1")
    assert len(none) == 0  # bound as a value, not SQL
    assert pyogrio.read_info(copy, layer="LULC")["features"] == 88
    with pytest.raises(InputError, match="not points"):
        values_at_points(copy, "LULC", scene_cube)
    with pytest.raises(InputError, match="not understood"):
        parse_filter("no operator")


def test_cli_query_pixels_and_points(tmp_path, dated_gpkg, capsys):
    out = tmp_path / "forest5.parquet"
    rc = main(["gpkg", "query", "pixels", str(LULC), "--layer", "LULC", "--id", "5",
               "--raster", str(dated_gpkg), "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert "1 feature(s), 18 pixel(s) x 4 date(s) x 2 variable(s)" in capsys.readouterr().out
    back = gpd.read_parquet(out)
    assert len(back) == 72 and back.crs.to_epsg() == 32633
    csv = tmp_path / "forest.csv"
    rc = main(["gpkg", "query", "pixels", str(LULC), "--layer", "LULC", "--where",
               "LULC_NAME=forest", "--raster", str(SCENES), "--out", str(csv)])  # fmt: skip
    assert rc == 0
    table = pd.read_csv(csv)
    assert len(table) == 7601 * 4 and {"NDVI", "CLM", "wkt"} <= set(table.columns)
    rc = main(["gpkg", "query", "points", str(LULC), "--layer", "LULC", "--raster",
               str(dated_gpkg)])  # fmt: skip
    assert rc == 2 and "not points" in capsys.readouterr().err


def test_spatialite_does_not_capture_bundled_geos():
    """Connecting first, then using shapely/pyproj must work (SQLite loads RTLD_GLOBAL)."""
    code = (
        "from eoflow.gpkg.sql import connect\n"
        f"c = connect({str(LULC)!r}); c.execute('SELECT ST_Area(geom) FROM LULC').fetchall()\n"
        "c.close()\n"
        "import geopandas as gpd, shapely\n"
        "g = gpd.GeoDataFrame(geometry=gpd.points_from_xy([1.0], [2.0]), crs=32633)\n"
        "assert shapely.to_wkb(g.geometry.iloc[0], flavor='iso')\n"
        "print(g.to_crs(4326).geometry.iloc[0].x)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
