"""Date finding in metadata values, layer names and file names (property-based)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from eoflow.gpkg.dates import find_date, format_date, parse_date, strip_date

moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2089, 12, 31))


@given(moments, st.sampled_from(["NDVI_{}", "{}", "S2 scene of {} (L2A)", "b04-{}-v2"]))
def test_written_dates_are_found_again(moment, template):
    value = np.datetime64(moment.replace(microsecond=0), "s")
    text = template.format(format_date(value))
    assert parse_date(text) == value
    if template == "NDVI_{}":
        assert strip_date(text) == "NDVI"


def test_compact_tiff_and_invalid_forms():
    assert parse_date("S2_20170601_B04") == np.datetime64("2017-06-01")
    assert parse_date("2017:06:01 10:04:15") == np.datetime64("2017-06-01T10:04:15")
    assert parse_date("tile_20171301") is None  # month 13
    assert find_date("id 123456789") is None
    assert strip_date("ndvi_2017_06_01_final") == "ndvi_final"
