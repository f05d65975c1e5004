"""Round trips and validity of the pixel s-expression format."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eoflow.vae.serialize import (
    PixelSeries,
    SexprError,
    compact_byte_budget,
    from_sexpr,
    is_valid_sexpr,
    parse_sexpr,
    quantize,
    to_sexpr,
)

names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
dates = st.dates().map(lambda d: d.isoformat()).filter(lambda s: len(s) == 10)
value = st.one_of(st.floats(-1e4, 1e4, allow_nan=False), st.just(math.nan))


@st.composite
def series(draw):
    feats = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    n_t = draw(st.integers(1, 6))
    vals = draw(
        st.lists(
            st.lists(value, min_size=len(feats), max_size=len(feats)), min_size=n_t, max_size=n_t
        )
    )
    targets = draw(
        st.dictionaries(
            names.filter(lambda n: n != "nan"), st.floats(-1e5, 1e5, allow_nan=False), max_size=2
        )
    )
    return PixelSeries(
        x=draw(st.floats(-1e6, 1e6, allow_nan=False)),
        y=draw(st.floats(-1e6, 1e6, allow_nan=False)),
        dates=draw(st.lists(dates, min_size=n_t, max_size=n_t)),
        features=feats,
        values=np.asarray(vals, dtype=np.float64).reshape(n_t, len(feats)),
        targets=targets,
    )


def _same(a: PixelSeries, b: PixelSeries) -> None:
    assert (a.x, a.y, a.dates, a.features, a.targets) == (b.x, b.y, b.dates, b.features, b.targets)
    np.testing.assert_array_equal(a.values, b.values)  # exact, NaN == NaN


@settings(max_examples=150, deadline=None)
@given(series(), st.booleans(), st.integers(0, 5))
def test_round_trip_exact_at_precision(s, compact, prec):
    text = to_sexpr(s, compact=compact, precision=prec, loc_precision=3, target_precision=2)
    back = from_sexpr(text)
    _same(back, quantize(s, precision=prec, loc_precision=3, target_precision=2))
    # writing the parsed series again gives the same bytes
    assert (
        to_sexpr(back, compact=compact, precision=prec, loc_precision=3, target_precision=2) == text
    )
    assert is_valid_sexpr(text, features=s.features, n_time=len(s.dates))
    # values are within half a unit of the last written decimal
    ok = np.isfinite(s.values)
    assert np.all(
        np.abs(back.values[ok] - s.values[ok]) <= 0.5 * 10.0**-prec + 1e-9 * np.abs(s.values[ok])
    )


@settings(max_examples=80, deadline=None)
@given(series(), st.integers(0, 4), st.integers(0, 8))
def test_fixed_width_digits_round_trip(s, prec, width):
    kw = dict(compact=True, precision=prec, loc_precision=3, target_precision=2)
    text = to_sexpr(s, widths=width, **kw)
    back = from_sexpr(text)
    _same(back, quantize(s, precision=prec, loc_precision=3, target_precision=2))
    assert to_sexpr(back, widths=width, **kw) == text  # same widths: same bytes
    assert from_sexpr(to_sexpr(s, **kw)).values.tobytes() == back.values.tobytes()
    pts = parse_sexpr(text)[0][4][1:]  # (data-seq (loc) (cols) (dec) (pts ...))
    toks = [tok for pt in pts for tok in pt[1:]]
    assert toks and all(t == "nan" or len(t.lstrip("-")) >= width for t in toks)  # all padded


def test_fixed_widths_per_feature_align_place_values():
    s = PixelSeries(x=1.0, y=2.0, dates=["2023-01-15", "2023-01-31"], features=["blue", "ndvi"],
                    values=np.array([[0.0412, 0.6903], [0.5, -0.01]]))  # fmt: skip
    text = to_sexpr(s, precision={"blue": 4, "ndvi": 3}, loc_precision=1, widths={"blue": 5})
    assert "(pts (2023-01-15 00412 690) (2023-01-31 05000 -10))" in text
    assert from_sexpr(text).values.tolist() == [[0.0412, 0.69], [0.5, -0.01]]


def test_full_layout_is_the_users_format():
    s = PixelSeries(x=523415.5, y=5123456.5, dates=["2023-01-15", "2023-01-31"], features=["blue", "ndvi"],
                    values=np.array([[0.0412, 0.6903], [0.05, -0.1]]), targets={"lfmc": 103.8})  # fmt: skip
    text = to_sexpr(s, compact=False, precision=4, loc_precision=1)
    assert text == (
        "((data-seq ((data-pt (loc (x 523415.5) (y 5123456.5) (t 2023-01-15)) (blue 0.0412) (ndvi 0.6903)) "
        "(data-pt (loc (x 523415.5) (y 5123456.5) (t 2023-01-31)) (blue 0.0500) (ndvi -0.1000)))) "
        "(predictions (lfmc 103.80)))"
    )
    compact = to_sexpr(s, compact=True, precision={"blue": 4, "ndvi": 3}, loc_precision=1)
    assert compact == (
        "((data-seq (loc (x 523415.5) (y 5123456.5)) (cols blue ndvi) (dec 4 3) "
        "(pts (2023-01-15 412 690) (2023-01-31 500 -100))) (predictions (lfmc 103.80)))"
    )
    assert from_sexpr(compact).values.tolist() == [[0.0412, 0.69], [0.05, -0.1]]


def test_byte_budget_of_a_24_step_year_fits_the_encoder():
    feats = ["blue", "green", "red", "nir", "swir1", "swir2", "ndvi", "ndwi", "ndbi"]
    rng = np.random.default_rng(0)
    s = PixelSeries(x=523415.55, y=5123456.55, dates=[f"2023-{m:02d}-{d:02d}" for m in range(1, 13) for d in (1, 15)],
                    features=feats, values=rng.uniform(-1, 1, (24, 9)), targets={})  # fmt: skip
    text = to_sexpr(s, compact=True, precision=4, loc_precision=2)
    budget = compact_byte_budget(24, feats, precision=4, max_abs=1.0, loc_chars=10)
    assert len(text) <= budget <= 2048 - 1  # + EOS fits the 2048-byte encoder
    s.values[:] = -1.0  # worst case: every value has a sign and 5 digits
    assert len(to_sexpr(s, compact=True, precision=4, loc_precision=2)) <= budget
    assert (
        len(to_sexpr(s, compact=False, precision=4, loc_precision=2)) > 2048
    )  # why compact exists


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "((data-seq (loc (x 1) (y 2)) (cols a) (dec 2) (pts (2020-01-01 5)))",  # unclosed
        "((data-seq (loc (x 1) (y 2)) (cols a) (dec 2) (pts (2020-01-01 5 6))))",  # too many values
        "((data-seq (loc (x 1) (y 2)) (cols a) (dec 2) (pts (2020-1-01 5))))",  # bad date
        "((data-seq (loc (x 1) (y 2)) (cols a) (dec 2) (pts (2020-01-01 5.5))))",  # not an integer
        "((data-seq ((data-pt (loc (x 1) (y 2) (t 2020-01-01)) (a 1)) (data-pt (loc (x 1) (y 3) (t 2020-01-02)) (a 1)))))",
        "((data-seq ((data-pt (loc (x 1) (y 2) (t 2020-01-01)) (a 1)) (data-pt (loc (x 1) (y 2) (t 2020-01-02)) (b 1)))))",
        "((data-seq (loc (x 1) (y 2)) (cols a) (dec 2) (pts (2020-01-01 5))) (predictions (a)))",
        "((data-seq (loc (x 1) (y 2)) (cols a) (dec 2) (pts (2020-01-01 5)))) trailing)",
        "((data-seq (loc (x 1) (y 2)) (cols a) (dec 2) (pts (2020-01-01 5é))))",
    ],
)
def test_invalid_text_is_rejected(bad):
    assert not is_valid_sexpr(bad)
    with pytest.raises(SexprError):
        from_sexpr(bad)


def test_validity_checks_features_and_length():
    text = "((data-seq (loc (x 1) (y 2)) (cols a b) (dec 2 0) (pts (2020-01-01 5 nan))))"
    assert is_valid_sexpr(text)
    assert is_valid_sexpr(text, features=["a", "b"], n_time=1)
    assert not is_valid_sexpr(text, features=["a"])
    assert not is_valid_sexpr(text, n_time=2)
    assert math.isnan(from_sexpr(text).values[0, 1])
