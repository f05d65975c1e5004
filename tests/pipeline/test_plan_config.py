"""`eoflow plan CONFIG` costs a run from the catalog's real items without reading pixels."""

from __future__ import annotations

import json
from pathlib import Path

from eoflow.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_plan_of_the_sample_config(capsys):
    assert main(["plan", str(ROOT / "configs" / "sample.yaml"), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["n_tiles"] == 9 and plan["n_items"] == 36 and plan["n_dates"] == 36
    assert plan["bands"]["CLM"] == "uint8" and plan["bands"]["NDVI"] == "float32"
    assert plan["raw_bytes"] == 9 * 34 * 34 * 36 * (4 * 6 + 1 * 3)


def test_plan_needs_a_config_or_an_aoi(capsys):
    assert main(["plan"]) == 2
    assert "needs a CONFIG.yaml" in capsys.readouterr().err
