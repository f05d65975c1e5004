"""``eoflow plan``: numbers checked by hand, Slovenia in seconds, refusal with exit code 2."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from eoflow.cli.main import main
from eoflow.errors import DataError
from eoflow.geo.tiles import Tile
from eoflow.plan import WORKER_BASE_BYTES, make_plan

ROOT = Path(__file__).resolve().parents[2]
SVN = ROOT / "data" / "aoi" / "svn_border.geojson"


def _two_tiles() -> list[Tile]:
    return [
        Tile("a", "EPSG:32633", (10.0, 0.0, 400000.0, 0.0, -10.0, 5100000.0), 1000, 1000),
        Tile("b", "EPSG:32633", (10.0, 0.0, 410000.0, 0.0, -10.0, 5100000.0), 1000, 1000),
    ]


def test_plan_numbers_by_hand():
    plan = make_plan(
        _two_tiles(), n_dates=73, bands={"B04": "uint16", "B08": "uint16", "SCL": "uint8"},
        chunks={"time": -1, "y": 500, "x": 500}, workers=2, threads_per_worker=2,
        memory_per_worker_bytes=4 * 2**30, throughput_pixel_dates_per_s_per_core=1e6,
    )  # fmt: skip
    # 2 tiles x 1e6 px x 73 dates = 1.46e8 pixel-dates; 5 bytes each (2 + 2 + 1)
    assert plan.n_pixels == 2_000_000 and plan.pixel_dates == 146_000_000
    assert plan.raw_bytes == 730_000_000
    # stored: uint16 / 2 twice + uint8 / 10 = 2.1 bytes per pixel-date
    assert plan.stored_bytes == pytest.approx(306_600_000, abs=2)
    assert plan.chunk_shape == (73, 500, 500) and plan.chunks_per_tile == 4
    assert plan.chunk_bytes == 73 * 500 * 500 * 2
    # per tile: ingest 2 x 4 blocks x 3 vars, features 4 x (3 + 2), interpolate 4 x 3,
    # sample 4 + 1, predict 2 x 4; times 2 tiles
    assert plan.tasks == {
        "ingest": 48, "features": 40, "interpolate": 24, "sample": 10, "predict": 16,
    }  # fmt: skip
    assert plan.tasks_per_batch == 138
    # features task: 250,000 px x 73 dates x (2 + 2 + 1 inputs + 1 mask + 1 valid + 3 x 4)
    assert plan.peak_task_bytes["features"] == 250_000 * 73 * 19
    assert plan.peak_worker_bytes == WORKER_BASE_BYTES + int(2 * 346_750_000 * 1.5)
    assert plan.runtime_s == pytest.approx(146e6 / (1e6 * 4))
    # both tiles lie in one 100 km square: 73 items
    assert plan.n_items == 73 and plan.fits and not plan.problems
    text = plan.to_text()
    assert "tiles            2 of 1000 x 1000 px" in text and "verdict          fits" in text
    assert '"n_tiles": 2' in plan.to_json()


def test_plan_refuses_when_memory_cannot_fit():
    with pytest.raises(DataError, match=r"plan does not fit: expected peak per worker .* GiB"):
        make_plan(
            _two_tiles(), n_dates=73, bands={"B04": "uint16"}, chunks={"y": 1000, "x": 1000},
            workers=1, memory_per_worker_bytes=2**30,
        )  # fmt: skip


def test_slovenia_plan_in_seconds(capsys):
    t0 = time.perf_counter()
    rc = main(["plan", "--aoi", str(SVN), "--start", "2021-01-01", "--end", "2021-12-31"])
    elapsed = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert rc == 0 and elapsed < 10, elapsed
    assert "tiles            260 of 1000 x 1000 px" in out and "AOI 20,313 km2" in out
    assert "dates            73 per tile" in out and "verdict          fits" in out


def test_oversize_plan_exits_2_with_one_line():
    cmd = [
        sys.executable, "-m", "eoflow.cli.main", "plan", "--aoi", str(SVN),
        "--start", "2021-01-01", "--end", "2021-12-31", "--tile-size-px", "4000",
        "--chunk-px", "4000", "--memory-per-worker", "2GB",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eoflow: error: plan does not fit")
    assert "GiB" in lines[0] and res.stdout == ""
