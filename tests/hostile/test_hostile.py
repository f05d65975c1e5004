"""Hostile inputs and faults: exact behaviour (exit code, one line naming the culprit, no
traceback, no partial outputs, nothing outside the output root, the parent surviving)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.generate import make_case, repair_asset, truncate_model


def eoflow(*args, timeout=600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-m", "eoflow.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)  # fmt: skip


def assert_user_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("eoflow: error: ") and "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


PREFLIGHT = {
    "unknown_key": ("grid.tile_sise", "unknown key"),
    "wrong_type": ("grid.tile_size_px", "integer"),
    "impossible_date": ("end", "not a real date"),
    "yaml_python_tag": ("not valid YAML", "python/object"),
    "empty_aoi_file": ("aoi.geojson", "empty (0 bytes)"),
    "aoi_outside_data": ("outside every Item",),
    "zero_byte_asset": ("asset NDVI of item S2_MSI_20170111T100351", "empty (0 bytes)"),
    "html_instead_of_tiff": (
        "asset NDVI of item S2_MSI_20170111T100351",
        "cannot be opened as GeoTIFF",
    ),
    "vrt_disguised_as_tif": ("is a VRT file", "refused"),
    "asset_without_crs": ("has no CRS",),
    "missing_band": ("['B99'] not found", "available assets"),
    "unsafe_asset_key": ("not safe variable names",),
    "missing_reference_layer": ("no layer 'LANDUSE'", "layers: ['LULC']"),
    "reference_without_tables": ("empty.gpkg", "cannot be opened"),
    "aoi_spans_utm_zones": ("spans UTM zones 31-35", "split the AOI by UTM zone"),
    "chunk_too_large_for_memory": ("plan does not fit", "GiB"),
}


@pytest.mark.parametrize("name", sorted(PREFLIGHT))
def test_refused_before_any_output(name, tmp_path):
    config = make_case(name, tmp_path)
    out = tmp_path / "out"
    before = {p for p in tmp_path.rglob("*")}
    proc = eoflow("run", config, "--out", out)
    assert_user_error(proc, *PREFLIGHT[name])
    assert not out.exists(), "nothing may be written for a refused run"
    assert {p for p in tmp_path.rglob("*")} == before, "no file may appear anywhere"


def test_truncated_asset_fails_only_its_tiles(tmp_path):
    config = make_case("truncated_asset", tmp_path)
    out = tmp_path / "out"
    proc = eoflow("ingest", config, "--out", out)
    assert proc.returncode == 3, proc.stderr[-2000:]
    status = json.loads((out / "tiles.json").read_text())
    failed = [t for t, s in status.items() if s.get("state") == "failed"]
    ok = [t for t, s in status.items() if s.get("state") == "ok"]
    assert failed and ok
    for t in failed:
        err = status[t]["error"]
        assert (
            "cannot read asset NDVI of item S2_MSI_20170111T100351" in err and "window col" in err
        )
        assert not (out / "cube.zarr" / t).exists(), "a failed tile must never be written"
        assert not (out / "ledger" / "cube" / f"{t}.json").exists()
    for t in ok:
        ds = xr.open_zarr(out / "cube.zarr", group=t, consolidated=False)
        assert float(ds["NDVI"].isel(time=1).max()) > 0  # the real values, not fill
    # the user replaces the file, as the error says, and --resume retries only those tiles
    repair_asset(config)
    proc = eoflow("ingest", config, "--out", out, "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"retrying {len(failed)} tile(s)" in proc.stderr
    status = json.loads((out / "tiles.json").read_text())
    assert all(s["state"] == "ok" for s in status.values()), status
    for t in failed:
        ds = xr.open_zarr(out / "cube.zarr", group=t, consolidated=False)
        assert float(ds["NDVI"].isel(time=1).max()) > 0


def test_all_cloudy_period_is_one_clear_error(tmp_path):
    config = make_case("all_cloudy", tmp_path)
    proc = eoflow("run", config, "--out", tmp_path / "out", "--until", "features", "--quiet")
    assert_user_error(proc, "every tile failed in stage features", "valid fraction <= 0.8")


@pytest.mark.parametrize("name", ["duplicated_timestamps", "unsorted_timestamps"])
def test_timestamps_are_sorted_and_deduplicated(name, tmp_path):
    config = make_case(name, tmp_path)
    out = tmp_path / "out"
    proc = eoflow("ingest", config, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    t = xr.open_zarr(out / "cube.zarr", group="32633_0_-1", consolidated=False)["time"].values
    assert len(t) == 9 and np.all(np.diff(t) > np.timedelta64(0, "ns"))
    items = json.loads((out / "manifest.json").read_text())["inputs"]["source"]["items"]
    assert not any(i.endswith("-duplicate") for i in items), "the first Item of a timestamp is kept"


def test_single_date_runs(tmp_path):
    config = make_case("single_date", tmp_path)
    out = tmp_path / "out"
    proc = eoflow("run", config, "--out", out, "--until", "features", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ds = xr.open_zarr(out / "features.zarr", group="32633_0_-1", consolidated=False)
    nd = ds["NDVI"].values
    assert np.isfinite(nd).any() and np.allclose(nd[0], nd[-1], equal_nan=True)  # held constant


def test_broken_polygons_are_repaired_and_reported(tmp_path):
    config = make_case("broken_polygons", tmp_path)
    out = tmp_path / "out"
    proc = eoflow("run", config, "--out", out, "--until", "features", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    repairs = json.loads((out / "reference_repairs.json").read_text())
    assert {r["fid"] for r in repairs} == {1, 2}
    assert any("unclosed ring" in r["action"] for r in repairs)
    assert any("Self-intersection" in r["action"] for r in repairs)


def test_lock_names_its_holder(tmp_path):
    config = make_case("single_date", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".eoflow.lock").write_text(f"host=elsewhere pid={os.getpid()}\n")
    proc = eoflow("run", config, "--out", out, "--until", "ingest")
    assert_user_error(proc, "in use by another eoflow run", f"pid={os.getpid()}")
    assert sorted(p.name for p in out.iterdir()) == [".eoflow.lock"]


def test_truncated_model_is_refused_and_parent_survives(tmp_path):
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    X, y = rng.random((200, 4)), rng.integers(0, 3, 200)
    booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbosity": -1}, lgb.Dataset(X, y), 20
    )
    model = tmp_path / "model"
    model.mkdir()
    booster.save_model(str(model / "model.txt"))
    (model / "model.json").write_text(
        json.dumps({"class_ids": [0, 1, 2], "features": list("abcd")})
    )
    assert eoflow("inspect", model).returncode == 0
    truncate_model(model)
    assert_user_error(eoflow("inspect", model), "not a complete LightGBM text model")
    from eoflow.errors import ModelError
    from eoflow.models.lgbm import load_model

    with pytest.raises(ModelError):
        load_model(model)  # in-process: an exception, not an abort


def test_missing_chunk_is_detected_and_resume_repairs_it(tmp_path):
    config = make_case("single_date", tmp_path)
    out = tmp_path / "out"
    assert eoflow("ingest", config, "--out", out, "--quiet").returncode == 0
    victim = next(
        p
        for p in (out / "cube.zarr" / "32633_1_-2" / "NDVI").rglob("*")
        if p.is_file() and "c" in p.parts
    )
    victim.unlink()
    from eoflow.cube.store import open_tile
    from eoflow.errors import DataError

    with pytest.raises(DataError, match="chunks missing"):
        open_tile(out / "cube.zarr", "32633_1_-2")
    proc = eoflow("ingest", config, "--out", out, "--quiet")
    assert proc.returncode == 0
    assert victim.exists()
    open_tile(out / "cube.zarr", "32633_1_-2")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    config = make_case("unsorted_timestamps", root)
    out = root / "out"
    proc = eoflow("run", config, "--out", out, "--until", "features", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return config, out


def _features(out: Path) -> dict:
    tiles = sorted(p.name for p in (out / "features.zarr").iterdir() if p.is_dir())
    return {
        t: xr.open_zarr(out / "features.zarr", group=t, consolidated=False).load() for t in tiles
    }


@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(delay=st.floats(min_value=3.0, max_value=20.0))
def test_kill_then_resume_equals_uninterrupted(delay, reference_run, tmp_path_factory):
    config, ref_out = reference_run
    out = tmp_path_factory.mktemp("killed") / "out"
    args = [
        sys.executable,
        "-m",
        "eoflow.cli.main",
        "run",
        str(config),
        "--out",
        str(out),
        "--until",
        "features",
        "--quiet",
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    resumed = eoflow("run", config, "--out", out, "--until", "features", "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _features(ref_out), _features(out)
    assert a.keys() == b.keys()
    for t in a:
        for var in a[t].data_vars:
            np.testing.assert_array_equal(a[t][var].values, b[t][var].values, err_msg=f"{t}/{var}")


def test_mixed_resolutions_are_resampled_explicitly(tmp_path):
    import rasterio

    config = make_case("mixed_resolution", tmp_path)
    out = tmp_path / "out"
    proc = eoflow("ingest", config, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    cube = xr.open_zarr(out / "cube.zarr", group="32633_0_-1", consolidated=False)
    got = cube["B11"].isel(time=0).values
    with rasterio.open(
        tmp_path / "mixed_resolution" / "data" / "items" / "20170101T100407" / "B11.tif"
    ) as src:
        coarse = src.read(1)
    expected = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:34, :34]
    np.testing.assert_array_equal(got, expected)


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_disk_too_small_is_refused_with_numbers(tmp_path, tiny_disk):
    config = make_case("unsorted_timestamps", tmp_path)
    proc = eoflow("run", config, "--out", tiny_disk / "out")
    assert_user_error(proc, "GB are free", "free disk space")
    assert not (tiny_disk / "out").exists()


@pytest.mark.parametrize("size", ["512k", "1m"])  # the disk fills at different points
def test_disk_full_mid_run_then_resume(size, tmp_path, tiny_disk):
    config = make_case("single_date", tmp_path)
    subprocess.run(["mount", "-o", f"remount,size={size}", str(tiny_disk)], check=True)
    out = tiny_disk / "out"
    proc = eoflow("run", config, "--out", out, "--until", "features", "--quiet")
    assert_user_error(proc, "disk full", "--resume")
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    proc = eoflow("run", config, "--out", out, "--until", "features", "--resume", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = tmp_path / "ref"
    assert eoflow("run", config, "--out", ref, "--until", "features", "--quiet").returncode == 0
    a, b = _features(ref), _features(out)
    assert a.keys() == b.keys()
    for t in a:
        for var in a[t].data_vars:
            np.testing.assert_array_equal(a[t][var].values, b[t][var].values, err_msg=f"{t}/{var}")


def test_aoi_antimeridian_and_invalid_geometry(tmp_path):
    from eoflow.errors import InputError
    from eoflow.geo.aoi import load_aoi

    with pytest.raises(InputError, match="antimeridian"):
        load_aoi(bbox=(170.0, 0.0, -170.0, 1.0))
    bowtie = {
        "type": "Polygon",
        "coordinates": [
            [[14.55, 45.86], [14.56, 45.87], [14.56, 45.86], [14.55, 45.87], [14.55, 45.86]]
        ],
    }
    path = tmp_path / "bowtie.geojson"
    path.write_text(json.dumps(bowtie))
    aoi = load_aoi(path)  # repaired with make_valid, never refused for a self-intersection
    assert aoi.geometry.is_valid and aoi.area_km2 > 0
    path.write_text(json.dumps({"type": "GeometryCollection", "geometries": []}))
    with pytest.raises(InputError):
        load_aoi(path)


def test_dashboard_and_scheduler_bind_to_loopback():
    from distributed import Client

    from eoflow.cluster import connect
    from eoflow.config import ClusterConfig

    with connect(
        ClusterConfig(n_workers=1, threads_per_worker=1, processes=False), quiet=True
    ) as client:
        assert isinstance(client, Client)
        assert client.scheduler.address.startswith(("tcp://127.0.0.1:", "inproc://"))
        assert client.dashboard_link.startswith("http://127.0.0.1:")
