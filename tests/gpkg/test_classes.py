"""Class tables from real vector layers (LULC.gpkg, French LPIS parcels)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pyogrio
import pytest
from conftest import LULC, PARCELS, TIFF1

from eoflow.cli.main import main
from eoflow.errors import DataError, InputError
from eoflow.reference.classes import ClassTable, parse_color


def test_lulc_class_table():
    t = ClassTable.from_vector(LULC, layer="LULC")
    assert t.ids.tolist() == [0, 1, 2, 3, 4, 8]
    assert t.names == ["no data", "cultivated land", "forest", "grassland", "schrubland",
                       "artificial surface"]  # fmt: skip
    assert t.by_id(8).name == "artificial surface"
    assert len(set(t.colors)) == len(t)
    assert ClassTable.from_json(t.to_json()) == t
    with pytest.raises(KeyError, match="ids"):
        t.by_id(5)
    assert [m.value for m in t.to_enum()] == [0, 1, 2, 3, 4, 8]


def test_colormap_norm_maps_each_id_to_its_colour():
    t = ClassTable.from_vector(LULC)  # single-layer file: layer may be omitted
    cmap, norm = t.mpl_cmap_norm()
    rgba = cmap(norm(t.ids))
    hexes = ["#{:02x}{:02x}{:02x}".format(*(np.round(c[:3] * 255).astype(int))) for c in rgba]
    assert hexes == t.colors
    gdal = t.gdal_colormap()
    assert set(gdal) == set(t.ids.tolist()) and all(len(v) == 4 for v in gdal.values())
    root = ET.fromstring(t.qgis_style().split("\n", 1)[1])
    entries = root.findall(".//paletteEntry")
    assert [int(e.get("value")) for e in entries] == t.ids.tolist()
    assert entries[2].get("label") == "forest"


def test_conflicting_names_are_reported():
    # RABA_ID as "name": id 4 (shrubland) has two RABA codes, 1410 and 1500
    with pytest.raises(DataError, match=r"id 4 has 2 names.*1410.*1500"):
        ClassTable.from_vector(LULC, name_column="RABA_ID")


def test_unnamed_ids_are_reported(tmp_path):
    copy = tmp_path / "lulc.gpkg"
    gdf = pyogrio.read_dataframe(LULC)
    gdf.loc[gdf["LULC_ID"] == 8, "LULC_NAME"] = None
    pyogrio.write_dataframe(gdf, copy, layer="LULC")
    with pytest.raises(DataError, match=r"ids without a name.*\[8\]"):
        ClassTable.from_vector(copy)
    assert ClassTable.from_vector(copy, allow_unnamed=True).by_id(8).name == "class 8"


def test_missing_layer_and_column_list_what_exists(tmp_path):
    with pytest.raises(InputError, match=r"layer 'LUL' not found.*\['LULC'\]"):
        ClassTable.from_vector(LULC, layer="LUL")
    with pytest.raises(InputError, match=r"column 'CLASS' not found.*LULC_NAME"):
        ClassTable.from_vector(LULC, id_column="CLASS")
    with pytest.raises(InputError, match="not a readable vector file"):
        ClassTable.from_vector(TIFF1)


def test_parcels_crop_codes_as_classes():
    # id column must be integer: 'id' works, 'code_cultu' (text) does not
    with pytest.raises(DataError, match="not numeric"):
        ClassTable.from_vector(PARCELS, layer="lpis_iacs", id_column="code_cultu",
                               name_column="culture_d1")  # fmt: skip


def test_parse_color_forms():
    assert parse_color("#ABC") == "#aabbcc"
    assert parse_color("10, 20, 30") == "#0a141e"
    assert parse_color("#11223344") == "#112233"
    with pytest.raises(ValueError):
        parse_color("red-ish")


def test_cli_classes_json_legend_and_qml(tmp_path, capsys):
    legend, qml = tmp_path / "legend.json", tmp_path / "style.qml"
    rc = main(["gpkg", "classes", str(LULC), "--layer", "LULC", "--json", "--legend",
               str(legend), "--qml", str(qml)])  # fmt: skip
    assert rc == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["id"] for i in items] == [0, 1, 2, 3, 4, 8]
    assert sum(i["count"] for i in items) == 88
    assert {i["id"]: i["count"] for i in items}[4] == 33
    assert ClassTable.from_json(json.loads(legend.read_text())).names[2] == "forest"
    assert "paletted" in qml.read_text()


def test_cli_classes_conflict_exit_code(capsys):
    rc = main(["gpkg", "classes", str(LULC), "--layer", "LULC", "--name-column", "RABA_ID"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "<- conflict" in captured.out
    assert "id 4 has 2 names" in captured.err
