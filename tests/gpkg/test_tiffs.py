"""The two eo-learn test GeoTIFFs (EPSG:32633 at 30 m, EPSG:4326 partly overlapping) on the
TestEOPatch grid: explicit, reported reprojection checked against direct per-pixel reads."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import rasterio
from conftest import TIFF1, TIFF2
from pyproj import Transformer

from eoflow.gpkg.lazy import ReprojectionWarning
from eoflow.gpkg.raster import load_gpkg_raster_cube, write_gpkg_raster_cube
from eoflow.sources.geotiff import load_geotiff_cube


def _nearest_reads(path, tile, band=1):
    """Value of the source pixel containing each tile pixel centre (NaN outside)."""
    xs, ys = np.meshgrid(tile.x_coords(), tile.y_coords())
    with rasterio.open(path) as src:
        data = src.read(band)
        if src.crs.to_epsg() != tile.epsg:
            xs, ys = Transformer.from_crs(tile.crs, src.crs, always_xy=True).transform(xs, ys)
        rows, cols = rasterio.transform.rowcol(src.transform, xs.ravel(), ys.ravel())
    rows, cols = np.asarray(rows).reshape(xs.shape), np.asarray(cols).reshape(xs.shape)
    inside = (rows >= 0) & (rows < data.shape[0]) & (cols >= 0) & (cols < data.shape[1])
    out = np.full(xs.shape, np.nan)
    out[inside] = data[rows[inside], cols[inside]]
    return out, inside


@pytest.fixture(scope="module")
def dated_tiffs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiffs")
    shutil.copy(TIFF1, d / "landsat_2017-06-01.tiff")
    shutil.copy(TIFF2, d / "refl_2017-06-01.tiff")
    return d


def test_utm_30m_tiff_resampled_to_10m_grid(dated_tiffs, patch_tile):
    with pytest.warns(ReprojectionWarning, match=r"landsat_2017-06-01.tiff \(EPSG:32633 30x30"):
        c = load_geotiff_cube(dated_tiffs / "landsat_*.tiff", tile=patch_tile, band_names=["L8"])
    assert c.L8.dtype == np.uint16
    got = c.L8.isel(time=0).values
    ref, inside = _nearest_reads(TIFF1, patch_tile)
    assert inside.all()  # the 30 m image covers the whole patch
    assert (got == ref).mean() > 0.999  # nearest neighbour == containing source pixel


def test_wgs84_tiff_partial_overlap(dated_tiffs, patch_tile):
    with pytest.warns(ReprojectionWarning, match="EPSG:4326"):
        c = load_geotiff_cube(dated_tiffs / "refl_*.tiff", tile=patch_tile)
    assert list(c.data_vars) == [f"band_{k}" for k in range(1, 6)]
    assert c.attrs["reprojected"] == ["refl_2017-06-01.tiff (EPSG:4326 0.0008x0.000552941 -> "
                                      "EPSG:32633 9.99479x9.99745)"]  # fmt: skip
    for k in (1, 5):
        got = c[f"band_{k}"].isel(time=0).values
        ref, inside = _nearest_reads(TIFF2, patch_tile, band=k)
        assert 0.05 < inside.mean() < 0.2  # partial overlap
        assert (np.isfinite(got) == inside).mean() > 0.995
        both = np.isfinite(got) & inside
        assert (got[both] == ref[both]).mean() > 0.995


def test_mixed_crs_set_through_geopackage(dated_tiffs, patch_tile, tmp_path):
    """Both TIFFs on the patch grid -> GeoPackage (one layer per band and date) -> cube again."""
    import xarray as xr

    with pytest.warns(ReprojectionWarning):
        l8 = load_geotiff_cube(dated_tiffs / "landsat_*", tile=patch_tile, band_names=["L8"])
        refl = load_geotiff_cube(dated_tiffs / "refl_*", tile=patch_tile)
    cube = xr.merge([l8, refl], compat="no_conflicts", join="exact", combine_attrs="override")
    out = tmp_path / "mixed.gpkg"
    names = write_gpkg_raster_cube(cube, out)
    assert len(names) == 6 and all(n.endswith("_2017-06-01") for n in names)
    back = load_gpkg_raster_cube(out, tile=patch_tile)
    assert back.attrs["reprojected"] == []
    for var in cube.data_vars:
        assert back[var].dtype == cube[var].dtype
        np.testing.assert_array_equal(back[var].values, cube[var].values)  # NaN where no overlap


def test_same_band_twice_is_refused(dated_tiffs, patch_tile, tmp_path):
    from eoflow.errors import DataError

    shutil.copy(TIFF2, tmp_path / "a_2017-06-01.tiff")
    shutil.copy(TIFF2, tmp_path / "b_2017-06-01.tiff")
    with pytest.raises(DataError, match=r"both give .band_1."):
        load_geotiff_cube(tmp_path, tile=patch_tile)
    out = tmp_path / "refl.gpkg"
    with pytest.warns(ReprojectionWarning):
        cube = load_geotiff_cube(tmp_path / "a_*.tiff", tile=patch_tile)
    write_gpkg_raster_cube(cube, out)
    back = load_gpkg_raster_cube(out)
    np.testing.assert_array_equal(back.band_3.values, cube.band_3.values)
