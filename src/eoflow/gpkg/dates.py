"""Finding acquisition dates in metadata values, layer names and file names."""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np

__all__ = ["DATE_REGEX", "find_date", "format_date", "parse_date", "strip_date"]

#: ISO date (``2017-06-01``, ``2017-06-01T10:04:15``, ``2017_06_01``) or compact ``20170601``.
DATE_REGEX = re.compile(
    r"(?<!\d)(?P<y>(?:19|20)\d{2})(?P<s>[-_]?)(?P<m>[01]\d)(?P=s)(?P<d>[0-3]\d)"
    r"(?:[T ](?P<H>[0-2]\d):?(?P<M>[0-5]\d)(?::?(?P<S>[0-5]\d))?)?(?!\d)"
)


def _from_match(m: re.Match) -> np.datetime64 | None:
    try:
        dt = datetime(
            int(m["y"]), int(m["m"]), int(m["d"]),
            int(m["H"] or 0), int(m["M"] or 0), int(m["S"] or 0),
        )  # fmt: skip
    except ValueError:
        return None
    return np.datetime64(dt, "s")


def find_date(text: str | None) -> tuple[np.datetime64, tuple[int, int]] | None:
    """First valid date in ``text`` and its span, or None.

    Parameters
    ----------
    text
        Any string (metadata value, layer name, file name).

    Returns
    -------
    tuple or None
        ``(datetime64[s], (start, end))``.
    """
    if not text:
        return None
    for m in DATE_REGEX.finditer(str(text)):
        value = _from_match(m)
        if value is not None:
            return value, m.span()
    return None


def parse_date(text: str | None) -> np.datetime64 | None:
    """The date in ``text`` (see :data:`DATE_REGEX`), also TIFF's ``YYYY:MM:DD HH:MM:SS``."""
    if not text:
        return None
    tiff = re.fullmatch(r"\s*(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})\s*", str(text))
    if tiff:
        try:
            return np.datetime64(datetime(*map(int, tiff.groups())), "s")
        except ValueError:
            return None
    found = find_date(text)
    return found[0] if found else None


def strip_date(name: str) -> str:
    """``name`` without its date and the separators around it (``NDVI_2017-06-01`` -> ``NDVI``)."""
    found = find_date(name)
    if not found:
        return name
    start, end = found[1]
    return (name[:start].rstrip("_- .") + "_" + name[end:].lstrip("_- .")).strip("_")


def format_date(value: np.datetime64) -> str:
    """``YYYY-MM-DD`` at midnight, else ``YYYY-MM-DDTHH:MM:SS`` (the ``RASTER_DATE`` we write)."""
    sec = np.datetime64(value, "s")
    if sec == np.datetime64(value, "D"):
        return str(np.datetime64(value, "D"))
    return str(sec)
