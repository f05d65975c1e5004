"""Dated rasters: GeoTIFF/COG folder -> cube -> GeoPackage -> list -> cube, with real NDVI/CLM."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
from conftest import LULC, PATCH_TRANSFORM, SCENE_DATES, SCENES, TIFF1

from eoflow.cli.main import main
from eoflow.errors import DataError, InputError
from eoflow.geo.tiles import Tile
from eoflow.gpkg.catalog import list_layers
from eoflow.gpkg.lazy import ReprojectionWarning
from eoflow.gpkg.raster import load_gpkg_raster_cube, write_gpkg_raster_cube
from eoflow.sources.geotiff import load_geotiff_cube


def _read(path):
    with rasterio.open(path) as src:
        return src.read(1)


def test_geotiff_folder_to_cube(scene_cube):
    c = scene_cube
    assert list(c.data_vars) == ["NDVI", "CLM"]  # names from band descriptions
    assert [str(t)[:10] for t in c.time.values] == SCENE_DATES  # name dates and tag dates merged
    assert c.NDVI.dtype == np.float32 and c.CLM.dtype == np.uint8
    assert c.NDVI.data.chunksize == (1, 64, 64)
    assert c.attrs["reprojected"] == []
    ndvi = c.NDVI.isel(time=2).values
    assert np.array_equal(ndvi, _read(SCENES / "S2_20170501_NDVI.tif"))
    assert np.array_equal(c.CLM.isel(time=1).values, _read(SCENES / "clm_1.tif"))


def test_one_task_per_chunk(scene_cube):
    arr = scene_cube.NDVI.data
    assert len(arr.__dask_graph__()) == arr.npartitions == 4 * 2 * 2


def test_export_list_reimport_roundtrip(dated_gpkg, scene_cube, patch_tile, capsys):
    layers = list_layers(dated_gpkg, kind="raster")
    assert len(layers) == 8
    assert sorted({lyr.date for lyr in layers}) == SCENE_DATES
    assert {lyr.date_source for lyr in layers} == {"RASTER_DATE"}
    assert {(lyr.dtype, lyr.band_count) for lyr in layers} == {("float32", 1), ("uint8", 1)}
    back = load_gpkg_raster_cube(dated_gpkg, tile=patch_tile)
    assert back.attrs["reprojected"] == []
    np.testing.assert_array_equal(back.time.values, scene_cube.time.values)
    for var in ("NDVI", "CLM"):
        assert back[var].dtype == scene_cube[var].dtype
        np.testing.assert_array_equal(back[var].values, scene_cube[var].values)
    own = load_gpkg_raster_cube(dated_gpkg, match="NDVI_*")  # tile=None: the layers' own grid
    assert list(own.data_vars) == ["NDVI"] and own.sizes == {"time": 4, "y": 101, "x": 100}
    np.testing.assert_allclose(own.x.values, back.x.values, rtol=0, atol=1e-6)
    assert main(["gpkg", "layers", str(dated_gpkg), "--type", "raster", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [x["date"] for x in listed if x["name"].startswith("CLM")] == SCENE_DATES


def test_gdal_style_layers_dates_from_metadata_description_and_name(tmp_path, scene_cube):
    """Layers written the way gdal_translate -of GPKG writes them (no eoflow metadata)."""
    path = tmp_path / "foreign.gpkg"
    frames = scene_cube.NDVI.values
    specs = [("scene_a", {"RASTER_DATE": SCENE_DATES[0]}, ""),
             ("scene_b", {}, f"S2 acquisition of {SCENE_DATES[1]}"),
             (f"ndvi_{SCENE_DATES[2].replace('-', '')}", {}, "")]  # fmt: skip
    for k, (name, tags, desc) in enumerate(specs):
        opts = {"RASTER_TABLE": name, "TILE_FORMAT": "TIFF"}
        if desc:
            opts["RASTER_DESCRIPTION"] = desc
        if path.exists():
            opts["APPEND_SUBDATASET"] = "YES"
        with rasterio.open(path, "w", driver="GPKG", width=100, height=101, count=1,
                           dtype="float32", crs="EPSG:32633", transform=PATCH_TRANSFORM,
                           **opts) as dst:  # fmt: skip
            dst.write(frames[k], 1)
            dst.update_tags(**tags)
    layers = {x.name: x for x in list_layers(path)}
    assert layers["scene_a"].date_source == "RASTER_DATE"
    assert (layers["scene_b"].date, layers["scene_b"].date_source) == (
        SCENE_DATES[1],
        "description",
    )
    assert layers["ndvi_20170501"].date_source == "name"
    with pytest.raises(DataError, match=r"'value' is missing at.*2017-05-01"):
        load_gpkg_raster_cube(path)  # 'value' (undated names) and 'ndvi' cover different dates
    c = load_gpkg_raster_cube(path, match="scene_*")
    assert list(c.data_vars) == ["value"]
    assert [str(t)[:10] for t in c.time.values] == SCENE_DATES[:2]
    np.testing.assert_array_equal(c.value.values, frames[:2])


def test_different_grids_need_explicit_tile(tmp_path, patch_tile):
    path = tmp_path / "mixed.gpkg"
    shutil.copy(LULC, path)  # vector layer stays untouched next to the rasters
    assert main(["export", "append", str(TIFF1), "--to", str(path), "--as", "L8_2017-06-01"]) == 0
    assert main(["export", "append", str(SCENES / "S2_20170501_NDVI.tif"), "--to", str(path),
                 "--as", "NDVI_2017-06-01", "--date", "2017-06-01"]) == 0  # fmt: skip
    with pytest.raises(InputError, match=r"different grids.*pass a target tile"):
        load_gpkg_raster_cube(path)
    with pytest.warns(ReprojectionWarning, match="L8_2017-06-01"):
        c = load_gpkg_raster_cube(path, tile=patch_tile)
    assert len(c.attrs["reprojected"]) == 1 and "30x30" in c.attrs["reprojected"][0]
    assert c.L8.dtype == np.uint16 and int(c.L8.min()) > 7000


def test_write_refuses_unsupported_dtype_and_existing_layers(tmp_path, scene_cube, dated_gpkg):
    with pytest.raises(DataError, match="float64"):
        write_gpkg_raster_cube(scene_cube.astype("float64"), tmp_path / "x.gpkg")
    with pytest.raises(DataError, match="already exists"):
        write_gpkg_raster_cube(scene_cube, dated_gpkg)


def test_bad_inputs_give_typed_errors(tmp_path, patch_tile):
    with pytest.raises(InputError, match="not a GeoPackage"):
        list_layers(TIFF1)
    with pytest.raises(InputError, match=r"no raster layers.*existing layers: \[.LULC.\]"):
        load_gpkg_raster_cube(LULC)
    vrt = tmp_path / "scene_2017-05-01.tif"  # a VRT disguised as a GeoTIFF
    vrt.write_text(
        f'<VRTDataset rasterXSize="100" rasterYSize="101"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>{', '.join(map(str, tuple(PATCH_TRANSFORM)[:6]))}</GeoTransform>"
        f'<VRTRasterBand dataType="Float32" band="1"><SimpleSource><SourceFilename '
        f'relativeToVRT="0">{SCENES / "S2_20170501_NDVI.tif"}</SourceFilename>'
        f"<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>"
    )
    with rasterio.open(vrt) as src:
        assert src.driver == "VRT"  # GDAL would happily read it
    with pytest.raises(InputError, match="VRT file, not GeoTIFF"):
        load_geotiff_cube(vrt, tile=patch_tile)
    with pytest.raises(InputError, match="no acquisition date"):
        load_geotiff_cube(TIFF1, tile=patch_tile)
    with pytest.raises(InputError, match="no GeoTIFF files"):
        load_geotiff_cube(tmp_path / "*.tiff", tile=patch_tile)
    rc = main(["gpkg", "layers", str(tmp_path / "missing.gpkg")])
    assert rc == 2


def test_date_pattern_and_band_names(tmp_path, patch_tile):
    for k, name in enumerate(["a_2017-06-01_x.tiff", "a_2017-07-01_x.tiff"]):
        shutil.copy(TIFF1, tmp_path / name)
        if k == 0:
            shutil.copy(TIFF1, tmp_path / "unrelated.txt")
    with pytest.warns(ReprojectionWarning):
        c = load_geotiff_cube(str(tmp_path / "a_*.tiff"), tile=patch_tile,
                              date_pattern=r"a_(?P<date>\d{4}-\d{2}-\d{2})", band_names=["L8"])  # fmt: skip
    assert list(c.data_vars) == ["L8"]
    assert [str(t)[:10] for t in c.time.values] == ["2017-06-01", "2017-07-01"]
    with pytest.raises(Exception, match="band names"):
        load_geotiff_cube(tmp_path, tile=patch_tile, band_names=["a", "b"])
    small = Tile("t", "EPSG:32633", tuple(PATCH_TRANSFORM)[:6], 10, 10)
    with pytest.warns(ReprojectionWarning):
        assert load_geotiff_cube(tmp_path, tile=small).sizes == {"time": 2, "y": 10, "x": 10}


def test_truncated_cog_fails_with_typed_error_when_read(tmp_path, patch_tile):
    data = (SCENES / "S2_20170501_NDVI.tif").read_bytes()
    (tmp_path / "S2_20170501_NDVI.tif").write_bytes(data[: len(data) // 2])
    cube = load_geotiff_cube(tmp_path, tile=patch_tile, chunks={"y": 64, "x": 64})  # opens fine
    with pytest.raises(InputError, match=r"S2_20170501_NDVI\.tif band 1 cannot be read"):
        cube.NDVI.values  # noqa: B018


def test_gdal_written_byte_tiles_read_as_one_band(tmp_path, scene_cube):
    """A 1-band uint8 layer as GDAL writes it (grey+alpha PNG tiles, no eoflow metadata)."""
    path = tmp_path / "clm.gpkg"
    clm = scene_cube.CLM.values
    for k in range(2):
        opts = {"RASTER_TABLE": f"clm_{SCENE_DATES[k]}"}
        if path.exists():
            opts["APPEND_SUBDATASET"] = "YES"
        with rasterio.open(path, "w", driver="GPKG", width=100, height=101, count=1,
                           dtype="uint8", crs="EPSG:32633", transform=PATCH_TRANSFORM,
                           **opts) as dst:  # fmt: skip
            dst.write(clm[k], 1)
    with rasterio.open(f"GPKG:{path}:clm_{SCENE_DATES[0]}") as src:
        assert src.count == 4  # what plain GDAL exposes
    layers = list_layers(path)
    assert [(x.band_count, x.dtype, x.tile_bands, x.date_source) for x in layers] == [
        (1, "uint8", 1, "name")] * 2  # fmt: skip
    cube = load_gpkg_raster_cube(path)
    assert list(cube.data_vars) == ["clm"]
    np.testing.assert_array_equal(cube.clm.values, clm[:2])
