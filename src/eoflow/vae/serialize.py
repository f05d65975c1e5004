"""Pixel time series <-> s-expression text, exactly at a stated precision.

Two layouts are written and both are parsed back by :func:`from_sexpr`:

*full* (the users' format, one location per point, one named value per feature)::

    ((data-seq ((data-pt (loc (x 14.5012) (y 46.0512) (t 2017-01-15)) (blue 0.0412) (ndvi 0.6903))
                (data-pt ...)))
     (predictions (lfmc 103.80)))

*compact* (location once per sequence, column names once, values as integers scaled by
``10**dec`` with one ``dec`` per column)::

    ((data-seq (loc (x 14.5012) (y 46.0512)) (cols blue ndvi) (dec 4 4)
               (pts (2017-01-15 412 6903) (2017-01-31 433 6911)))
     (predictions (lfmc 103.80)))

Exactness: a value ``v`` written with ``p`` decimals is the integer ``round(v * 10**p)``; parsing
gives that integer divided by ``10**p``.  Hence ``from_sexpr(to_sexpr(s))`` equals
``quantize(s)`` and ``to_sexpr(from_sexpr(t)) == t`` byte for byte.  Missing values (NaN) are
written as ``nan``.  All text is ASCII, so every byte is one token.

Byte budget (compact, :func:`compact_byte_budget`): a 24-step year with 9 features in [-1, 1] at
``dec 4`` (names like ``NDVI``/``B08``, UTM coordinates at 2 decimals) needs at most 1951 bytes
(typical 1.5 KB; 1735 at ``dec 3``), so the default encoder length is 2048 bytes.  The full
layout of the same year is about 4.3 KB, which is why the compact layout exists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "PixelSeries",
    "SexprError",
    "compact_byte_budget",
    "from_sexpr",
    "is_valid_sexpr",
    "parse_sexpr",
    "quantize",
    "to_sexpr",
]

_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_INT = re.compile(r"^-?\d+$")


class SexprError(ValueError):
    """Text that is not a valid pixel s-expression (the message says where)."""


@dataclass
class PixelSeries:
    """One pixel's time series.

    Parameters
    ----------
    x, y
        Location (map or geographic coordinates).
    dates
        ISO dates ``YYYY-MM-DD``, one per time step.
    features
        Feature names (symbols: letters, digits, ``_ . -``, starting with a letter or ``_``).
    values
        ``(n_time, n_feature)`` float array; NaN marks a missing value.
    targets
        Optional predictions/targets: name -> number (or symbol string).
    """

    x: float
    y: float
    dates: list[str]
    features: list[str]
    values: np.ndarray
    targets: dict[str, float | str] = field(default_factory=dict)


def _per_feature(
    features: Sequence[str], value: int | Mapping[str, int] | None, default: int
) -> list[int]:
    """One integer per feature from one for all, a per-name mapping (``default`` if missing)
    or None (``default`` for all)."""
    if value is None:
        return [default] * len(features)
    if isinstance(value, Mapping):
        return [int(value.get(f, default)) for f in features]
    return [int(value)] * len(features)


def _precisions(features: Sequence[str], precision: int | Mapping[str, int]) -> list[int]:
    return _per_feature(features, precision, 4)


def _fmt_fixed(value: float, dec: int) -> str:
    """``value`` with exactly ``dec`` decimals, via the integer ``round(value * 10**dec)``."""
    if not math.isfinite(value):
        return "nan"
    q = round(value * 10**dec)
    if dec == 0:
        return str(q)
    sign = "-" if q < 0 else ""
    digits = str(abs(q)).rjust(dec + 1, "0")
    return f"{sign}{digits[:-dec]}.{digits[-dec:]}"


def _fmt_scaled(value: float, dec: int, width: int = 0) -> str:
    """``round(value * 10**dec)``, its digits zero-padded to ``width`` (sign outside)."""
    if not math.isfinite(value):
        return "nan"
    q = round(value * 10**dec)
    return ("-" if q < 0 else "") + str(abs(q)).rjust(width, "0")


def _fmt_target(value: float | str, dec: int) -> str:
    if isinstance(value, str):
        if not _SYMBOL.match(value):
            raise SexprError(f"target value {value!r} is not a symbol")
        return value
    return _fmt_fixed(float(value), dec)


def _check(series: PixelSeries) -> None:
    values = np.asarray(series.values)
    if values.shape != (len(series.dates), len(series.features)):
        raise SexprError(
            f"values shape {values.shape} != (n_dates {len(series.dates)}, "
            f"n_features {len(series.features)})"
        )
    for name in [*series.features, *series.targets]:
        if not _SYMBOL.match(name):
            raise SexprError(f"name {name!r} is not a symbol (letters, digits, _ . -)")
    for d in series.dates:
        if not _DATE.match(d):
            raise SexprError(f"date {d!r} is not YYYY-MM-DD")


def to_sexpr(
    series: PixelSeries,
    *,
    compact: bool = True,
    precision: int | Mapping[str, int] = 4,
    loc_precision: int = 4,
    target_precision: int = 2,
    with_targets: bool = True,
    widths: int | Mapping[str, int] | None = None,
) -> str:
    """Write one pixel series as an s-expression.

    Parameters
    ----------
    series
        The pixel series.
    compact
        Compact layout (location and column names once, scaled integers) or the full one.
    precision
        Decimals of feature values, one for all or per feature name (default 4).
    loc_precision, target_precision
        Decimals of ``x``/``y`` and of numeric targets.
    with_targets
        Append ``(predictions ...)`` when the series has targets.
    widths
        Compact layout only: zero-pad the digits of each scaled integer to this many (one for all
        or per feature name), so that a digit's place value is its position in the field (a sign
        goes in front; wider values are written whole).  Parsing needs no widths.

    Returns
    -------
    str
        ASCII text.
    """
    _check(series)
    decs = _precisions(series.features, precision)
    values = np.asarray(series.values, dtype=np.float64)
    x = _fmt_fixed(series.x, loc_precision)
    y = _fmt_fixed(series.y, loc_precision)
    if compact:
        wids = _per_feature(series.features, widths, 0)
        pts = " ".join(
            "(" + " ".join([d, *(_fmt_scaled(v, p, w) for v, p, w in zip(row, decs, wids))]) + ")"
            for d, row in zip(series.dates, values.tolist())
        )
        seq = (
            f"(data-seq (loc (x {x}) (y {y})) (cols {' '.join(series.features)}) "
            f"(dec {' '.join(map(str, decs))}) (pts {pts}))"
        )
    else:
        pts = " ".join(
            f"(data-pt (loc (x {x}) (y {y}) (t {d})) "
            + " ".join(f"({f} {_fmt_fixed(v, p)})" for f, v, p in zip(series.features, row, decs))
            + ")"
            for d, row in zip(series.dates, values.tolist())
        )
        seq = f"(data-seq ({pts}))"
    if with_targets and series.targets:
        preds = " ".join(
            f"({k} {_fmt_target(v, target_precision)})" for k, v in series.targets.items()
        )
        return f"({seq} (predictions {preds}))"
    return f"({seq})"


def quantize(
    series: PixelSeries,
    *,
    precision: int | Mapping[str, int] = 4,
    loc_precision: int = 4,
    target_precision: int = 2,
) -> PixelSeries:
    """The series as :func:`from_sexpr` gives it back after writing it at these precisions."""
    decs = np.asarray(_precisions(series.features, precision))
    vals = np.asarray(series.values, dtype=np.float64)
    scale = 10.0 ** decs.astype(np.float64)
    q = np.where(np.isfinite(vals), np.round(vals * scale), np.nan)
    # the parser divides the written integer by 10**dec; do the same arithmetic here
    out = np.array(
        [[(int(v) / s if math.isfinite(v) else math.nan) for v, s in zip(r, scale)] for r in q],
        dtype=np.float64,
    ).reshape(vals.shape)
    targets = {
        k: (v if isinstance(v, str) else _parse_number(_fmt_fixed(float(v), target_precision)))
        for k, v in series.targets.items()
    }
    return PixelSeries(
        x=_parse_number(_fmt_fixed(series.x, loc_precision)),
        y=_parse_number(_fmt_fixed(series.y, loc_precision)),
        dates=list(series.dates),
        features=list(series.features),
        values=out,
        targets=targets,
    )


# ----------------------------------------------------------------------------- parsing


def parse_sexpr(text: str) -> list:
    """Parse s-expression text into nested Python lists of atom strings.

    Raises
    ------
    SexprError
        Unbalanced parentheses, trailing text or characters outside printable ASCII.
    """
    if not text.isascii():
        raise SexprError("text has non-ASCII characters")
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    if not tokens:
        raise SexprError("empty text")
    stack: list[list] = [[]]
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise SexprError("unbalanced ')'")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise SexprError(f"{len(stack) - 1} unclosed '('")
    if len(stack[0]) != 1:
        raise SexprError("more than one top-level expression")
    return stack[0][0]


def _parse_number(tok: str) -> float:
    if tok == "nan":
        return math.nan
    if not _NUMBER.match(tok):
        raise SexprError(f"{tok!r} is not a number")
    return float(tok)


def _pair(node: object, name: str) -> str:
    if not (isinstance(node, list) and len(node) == 2 and node[0] == name):
        raise SexprError(f"expected ({name} VALUE), got {node!r:.60}")
    if not isinstance(node[1], str):
        raise SexprError(f"({name} ...) holds a list, expected an atom")
    return node[1]


def _parse_predictions(node: object) -> dict[str, float | str]:
    if not (isinstance(node, list) and node and node[0] == "predictions"):
        raise SexprError("second element must be (predictions ...)")
    out: dict[str, float | str] = {}
    for item in node[1:]:
        if not (
            isinstance(item, list) and len(item) == 2 and all(isinstance(t, str) for t in item)
        ):
            raise SexprError(f"prediction {item!r:.60} is not (NAME VALUE)")
        name, val = item
        out[name] = val if _SYMBOL.match(val) and val != "nan" else _parse_number(val)
    return out


def _parse_compact(seq: list) -> PixelSeries:
    if len(seq) != 5:
        raise SexprError("compact data-seq needs (loc) (cols) (dec) (pts)")
    loc, cols, dec, pts = seq[1:]
    if not (isinstance(loc, list) and len(loc) == 3 and loc[0] == "loc"):
        raise SexprError("expected (loc (x ..) (y ..))")
    x, y = _parse_number(_pair(loc[1], "x")), _parse_number(_pair(loc[2], "y"))
    if not (isinstance(cols, list) and cols[:1] == ["cols"]):
        raise SexprError("expected (cols NAME ...)")
    features = cols[1:]
    if not all(isinstance(f, str) and _SYMBOL.match(f) for f in features):
        raise SexprError("column names must be symbols")
    if not (isinstance(dec, list) and dec[:1] == ["dec"] and len(dec) == len(features) + 1):
        raise SexprError("expected (dec N ...) with one N per column")
    if not all(isinstance(d, str) and d.isdigit() for d in dec[1:]):
        raise SexprError("(dec ...) entries must be non-negative integers")
    decs = [int(d) for d in dec[1:]]
    if not (isinstance(pts, list) and pts[:1] == ["pts"]):
        raise SexprError("expected (pts (DATE V ...) ...)")
    dates, rows = [], []
    for pt in pts[1:]:
        if not (isinstance(pt, list) and len(pt) == len(features) + 1):
            raise SexprError(f"point {pt!r:.60} needs a date and {len(features)} values")
        if not (isinstance(pt[0], str) and _DATE.match(pt[0])):
            raise SexprError(f"point date {pt[0]!r:.30} is not YYYY-MM-DD")
        row = []
        for tok, p in zip(pt[1:], decs):
            if tok == "nan":
                row.append(math.nan)
            elif isinstance(tok, str) and _INT.match(tok):
                row.append(int(tok) / 10**p)
            else:
                raise SexprError(f"value {tok!r:.30} is not an integer")
        dates.append(pt[0])
        rows.append(row)
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(features))
    return PixelSeries(x=x, y=y, dates=dates, features=list(features), values=values)


def _parse_full(seq: list) -> PixelSeries:
    if len(seq) != 2 or not isinstance(seq[1], list):
        raise SexprError("full data-seq needs one list of (data-pt ...)")
    x = y = math.nan
    dates: list[str] = []
    features: list[str] | None = None
    rows: list[list[float]] = []
    for pt in seq[1]:
        if not (isinstance(pt, list) and len(pt) >= 2 and pt[0] == "data-pt"):
            raise SexprError(f"expected (data-pt ...), got {pt!r:.60}")
        loc = pt[1]
        if not (isinstance(loc, list) and len(loc) == 4 and loc[0] == "loc"):
            raise SexprError("expected (loc (x ..) (y ..) (t YYYY-MM-DD))")
        px, py = _parse_number(_pair(loc[1], "x")), _parse_number(_pair(loc[2], "y"))
        if rows and not (_same(px, x) and _same(py, y)):
            raise SexprError("location changes within one data-seq")
        x, y = px, py
        t = _pair(loc[3], "t")
        if not _DATE.match(t):
            raise SexprError(f"date {t!r:.30} is not YYYY-MM-DD")
        names = []
        row = []
        for item in pt[2:]:
            if not (
                isinstance(item, list) and len(item) == 2 and all(isinstance(s, str) for s in item)
            ):
                raise SexprError(f"feature {item!r:.60} is not (NAME VALUE)")
            if not _SYMBOL.match(item[0]):
                raise SexprError(f"feature name {item[0]!r:.30} is not a symbol")
            names.append(item[0])
            row.append(_parse_number(item[1]))
        if features is None:
            features = names
        elif names != features:
            raise SexprError("data points name different features")
        dates.append(t)
        rows.append(row)
    features = features or []
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(features))
    return PixelSeries(x=x, y=y, dates=dates, features=features, values=values)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def from_sexpr(text: str) -> PixelSeries:
    """Parse text written by :func:`to_sexpr` (either layout) back into a :class:`PixelSeries`.

    Raises
    ------
    SexprError
        When the text is not a well-formed pixel s-expression.
    """
    tree = parse_sexpr(text)
    if not (isinstance(tree, list) and 1 <= len(tree) <= 2):
        raise SexprError("top level must be ((data-seq ...) [(predictions ...)])")
    seq = tree[0]
    if not (isinstance(seq, list) and seq and seq[0] == "data-seq"):
        raise SexprError("first element must be (data-seq ...)")
    compact = len(seq) > 1 and isinstance(seq[1], list) and seq[1][:1] == ["loc"]
    series = _parse_compact(seq) if compact else _parse_full(seq)
    if len(tree) == 2:
        series.targets = _parse_predictions(tree[1])
    return series


def is_valid_sexpr(
    text: str, *, features: Sequence[str] | None = None, n_time: int | None = None
) -> bool:
    """Whether decoded text parses as a pixel series (optionally with these features / length)."""
    try:
        s = from_sexpr(text)
    except SexprError:
        return False
    if features is not None and list(s.features) != list(features):
        return False
    if n_time is not None and len(s.dates) != n_time:
        return False
    return len(s.dates) > 0


def compact_byte_budget(
    n_time: int,
    features: Sequence[str],
    *,
    precision: int | Mapping[str, int] = 4,
    max_abs: float | Mapping[str, float] = 1.0,
    loc_chars: int = 12,
    targets: Mapping[str, int] | None = None,
) -> int:
    """Upper bound of the compact text length in bytes (= tokens, before EOS).

    Parameters
    ----------
    n_time, features
        Series shape.
    precision
        Decimals per feature (as in :func:`to_sexpr`).
    max_abs
        Largest absolute value per feature (one for all or per name).
    loc_chars
        Characters of each written coordinate.
    targets
        Target name -> characters of its written value.
    """
    decs = _precisions(features, precision)
    widths = []
    for f, p in zip(features, decs):
        m = max_abs.get(f, 1.0) if isinstance(max_abs, Mapping) else max_abs
        widths.append(1 + len(str(round(m * 10**p))) + 1)  # sign + digits + separator
    point = 2 + 10 + sum(widths)  # parens + date + values
    header = (
        len("((data-seq (loc (x ) (y )) (cols ) (dec ) (pts ))")
        + 2 * loc_chars
        + sum(len(f) + 1 for f in features)
        + sum(len(str(p)) + 1 for p in decs)
    )
    preds = 0
    if targets:
        preds = len(" (predictions )") + sum(len(k) + w + 4 for k, w in targets.items())
    return header + n_time * (point + 1) + preds + 1
