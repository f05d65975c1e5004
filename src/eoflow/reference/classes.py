"""Class tables: the ids, names and colours of a land-cover nomenclature.

A :class:`ClassTable` is read once from the attribute table of a reference vector layer (a
GeoPackage such as ``LULC.gpkg``) and then drives everything that shows or stores classes: the
``classes`` attribute of the samples store (:meth:`ClassTable.to_json`), figures
(:meth:`ClassTable.mpl_cmap_norm`), GeoTIFF colour tables (:meth:`ClassTable.gdal_colormap`),
QGIS styles (:meth:`ClassTable.qgis_style`) and a Python enum (:meth:`ClassTable.to_enum`).

Ids may be non-contiguous; id 0 means "no data" and may have an empty name (it is then called
``"no data"``). Default colours come from a fixed palette (matplotlib's ``tab20`` order) assigned by
rank of the non-zero ids, id 0 being black.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np

from eoflow.errors import DataError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.colors import BoundaryNorm, ListedColormap

__all__ = [
    "NODATA_COLOR",
    "NODATA_NAME",
    "PALETTE",
    "ClassInfo",
    "ClassSummary",
    "ClassTable",
    "parse_color",
    "summarize_classes",
]

#: Fixed default palette (matplotlib ``tab20`` order), used by rank of the non-zero ids.
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
#: Colour of id 0 (no data) when the layer has no colour column.
NODATA_COLOR = "#000000"
#: Name given to id 0 when the layer leaves it empty.
NODATA_NAME = "no data"

_HEX = re.compile(r"^#?([0-9a-fA-F]{6})([0-9a-fA-F]{2})?$")
_HEX3 = re.compile(r"^#?([0-9a-fA-F]{3})$")


def parse_color(value: object) -> str:
    """Normalise a colour to ``"#rrggbb"``.

    Parameters
    ----------
    value
        ``"#rrggbb"``, ``"#rrggbbaa"`` (alpha dropped), ``"#rgb"``, ``"r,g,b"`` / ``"r g b"`` (0-255)
        or a sequence of three integers.

    Returns
    -------
    str
        Lower-case ``"#rrggbb"``.

    Raises
    ------
    ValueError
        If ``value`` is not a colour in one of those forms.
    """
    if isinstance(value, (tuple, list, np.ndarray)):
        parts = [int(v) for v in list(value)[:3]]
    else:
        text = str(value).strip()
        if m := _HEX.match(text):
            return "#" + m.group(1).lower()
        if m := _HEX3.match(text):
            return "#" + "".join(ch * 2 for ch in m.group(1).lower())
        try:
            parts = [int(float(p)) for p in re.split(r"[,;\s]+", text) if p][:3]
        except ValueError:
            raise ValueError(f"{value!r} is not a colour (#rrggbb or r,g,b)") from None
    if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"{value!r} is not a colour (#rrggbb or r,g,b with 0-255)")
    return "#{:02x}{:02x}{:02x}".format(*parts)


def _rgb(color: str) -> tuple[int, int, int]:
    h = color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


@dataclass(frozen=True)
class ClassInfo:
    """One class: integer id, display name and ``"#rrggbb"`` colour."""

    id: int
    name: str
    color: str


@dataclass(frozen=True)
class ClassTable:
    """An ordered set of classes (sorted by id, ids unique)."""

    classes: tuple[ClassInfo, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.classes, key=lambda c: c.id))
        ids = [c.id for c in ordered]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise DataError(f"class table has duplicate ids {dup}", "give every class one id")
        object.__setattr__(self, "classes", ordered)

    # -- accessors -------------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        """Class ids, ascending (int64)."""
        return np.array([c.id for c in self.classes], dtype=np.int64)

    @property
    def names(self) -> list[str]:
        """Class names in id order."""
        return [c.name for c in self.classes]

    @property
    def colors(self) -> list[str]:
        """Class colours (``"#rrggbb"``) in id order."""
        return [c.color for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    def by_id(self, i: int) -> ClassInfo:
        """The class with id ``i``.

        Raises
        ------
        KeyError
            If no class has that id (the message lists the known ids).
        """
        for c in self.classes:
            if c.id == int(i):
                return c
        raise KeyError(f"class id {i} not in the class table (ids: {self.ids.tolist()})")

    def name_of(self, i: int, default: str | None = None) -> str:
        """Name of id ``i``, or ``default`` (``"class <i>"`` when None) if unknown."""
        try:
            return self.by_id(i).name
        except KeyError:
            return default if default is not None else f"class {int(i)}"

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_records(
        cls, ids: Iterable[int], names: Iterable[str], colors: Iterable[str] | None = None
    ) -> ClassTable:
        """Build a table from parallel id / name (/ colour) sequences; default colours if None."""
        ids = [int(i) for i in ids]
        names = list(names)
        cols = list(colors) if colors is not None else default_colors(ids)
        return cls(tuple(ClassInfo(i, str(n), parse_color(c)) for i, n, c in zip(ids, names, cols)))

    @classmethod
    def from_vector(
        cls,
        path: str | Path,
        *,
        layer: str | None = None,
        id_column: str = "LULC_ID",
        name_column: str = "LULC_NAME",
        color_column: str | None = None,
        allow_unnamed: bool = False,
    ) -> ClassTable:
        """Read the distinct classes of a vector layer's attribute table.

        Only the attribute columns are read (no geometries).

        Parameters
        ----------
        path
            Vector file (GeoPackage, Shapefile, GeoJSON...).
        layer
            Layer name; may be omitted when the file has exactly one layer.
        id_column, name_column
            Integer class id and class name columns.
        color_column
            Optional colour column (``#rrggbb`` or ``r,g,b``); default palette when None.
        allow_unnamed
            If True, non-zero ids without a name are called ``"class <id>"`` instead of raising.

        Returns
        -------
        ClassTable

        Raises
        ------
        InputError
            File, layer or column missing (the message lists what exists).
        DataError
            One id carries several names (or colours), an id is not an integer, or (unless
            ``allow_unnamed``) a non-zero id has no name.
        """
        summary = summarize_classes(
            path, layer=layer, id_column=id_column, name_column=name_column,
            color_column=color_column,
        )  # fmt: skip
        return summary.to_table(allow_unnamed=allow_unnamed)

    # -- serialisation ---------------------------------------------------------------------
    def to_json(self) -> list[dict]:
        """``[{"id", "name", "color"}, ...]`` in id order (the legend / samples-store form)."""
        return [{"id": c.id, "name": c.name, "color": c.color} for c in self.classes]

    @classmethod
    def from_json(cls, items: Iterable[Mapping[str, Any]]) -> ClassTable:
        """Inverse of :meth:`to_json` (colours optional: defaults from the palette)."""
        items = list(items)
        try:
            ids = [int(it["id"]) for it in items]
            names = [str(it["name"]) for it in items]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"class list is malformed ({exc})", 'use [{"id": 1, "name": ...}]'
            ) from None
        defaults = default_colors(ids)
        colors = [it.get("color") or d for it, d in zip(items, defaults)]
        return cls.from_records(ids, names, colors)

    def to_enum(self, name: str = "LandCover") -> type[enum.IntEnum]:
        """An :class:`enum.IntEnum` whose members are the class names in UPPER_SNAKE_CASE."""
        members: dict[str, int] = {}
        for c in self.classes:
            key = re.sub(r"\W+", "_", c.name).strip("_").upper() or f"CLASS_{c.id}"
            if key[0].isdigit():
                key = f"C_{key}"
            while key in members:
                key = f"{key}_{c.id}"
            members[key] = c.id
        return enum.IntEnum(name, members)

    # -- rendering -------------------------------------------------------------------------
    def mpl_cmap_norm(self) -> tuple[ListedColormap, BoundaryNorm]:
        """Colormap and norm mapping each class id to its colour in ``imshow``.

        Bin edges lie half-way between consecutive ids, so non-contiguous ids work.
        """
        from matplotlib.colors import BoundaryNorm, ListedColormap

        ids = self.ids.astype(float)
        if len(ids) == 0:
            raise DataError("class table is empty", "read it from a layer with classes")
        if len(ids) == 1:
            bounds = [ids[0] - 0.5, ids[0] + 0.5]
        else:
            mids = (ids[:-1] + ids[1:]) / 2
            bounds = [ids[0] - 0.5, *mids.tolist(), ids[-1] + 0.5]
        cmap = ListedColormap(self.colors, name="eoflow_classes")
        return cmap, BoundaryNorm(bounds, ncolors=len(ids))

    def gdal_colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """``{id: (r, g, b, 255)}`` for :meth:`rasterio.io.DatasetWriter.write_colormap`."""
        return {c.id: (*_rgb(c.color), 255) for c in self.classes}

    def qgis_style(self, band: int = 1) -> str:
        """A QGIS ``.qml`` style: paletted (unique values) renderer of ``band`` with the legend."""
        entries = "\n".join(
            f'        <paletteEntry value="{c.id}" color={quoteattr(c.color)} '
            f'label={quoteattr(c.name)} alpha="255"/>'
            for c in self.classes
        )
        return (
            "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28.0" styleCategories="AllStyleCategories">\n'
            "  <pipe>\n"
            f'    <rasterrenderer type="paletted" band="{band}" opacity="1" alphaBand="-1" '
            'nodataColor="">\n'
            "      <rasterTransparency/>\n"
            "      <colorPalette>\n"
            f"{entries}\n"
            "      </colorPalette>\n"
            "    </rasterrenderer>\n"
            "  </pipe>\n"
            "  <blendMode>0</blendMode>\n"
            "</qgis>\n"
        )


def default_colors(ids: Iterable[int]) -> list[str]:
    """Palette colours for ``ids``: id 0 black, the others by rank in :data:`PALETTE`."""
    ids = [int(i) for i in ids]
    rank = {i: r for r, i in enumerate(sorted(i for i in set(ids) if i != 0))}
    return [NODATA_COLOR if i == 0 else PALETTE[rank[i] % len(PALETTE)] for i in ids]


@dataclass(frozen=True)
class ClassSummary:
    """What a vector layer says about its classes, problems included (nothing raised yet)."""

    source: str
    """``"file:layer"`` for messages."""
    id_column: str
    name_column: str
    ids: tuple[int, ...]
    """Distinct ids, ascending."""
    names: dict[int, tuple[str, ...]]
    """Distinct non-empty names per id (several = conflict; none = unnamed)."""
    colors: dict[int, tuple[str, ...]]
    """Distinct colours per id (empty when there is no colour column)."""
    counts: dict[int, int]
    """Number of features per id."""

    @property
    def conflicts(self) -> dict[int, tuple[str, ...]]:
        """Ids carrying more than one distinct name."""
        return {i: n for i, n in self.names.items() if len(n) > 1}

    @property
    def color_conflicts(self) -> dict[int, tuple[str, ...]]:
        """Ids carrying more than one distinct colour."""
        return {i: c for i, c in self.colors.items() if len(c) > 1}

    @property
    def unnamed(self) -> list[int]:
        """Non-zero ids without any name."""
        return [i for i in self.ids if i != 0 and not self.names.get(i)]

    def problems(self) -> list[str]:
        """Human-readable problems (empty when the table is clean)."""
        out = []
        for i, n in self.conflicts.items():
            out.append(
                f"id {i} has {len(n)} names in {self.name_column!r}: {', '.join(map(repr, n))}"
            )
        for i, c in self.color_conflicts.items():
            out.append(f"id {i} has {len(c)} colours: {', '.join(c)}")
        if self.unnamed:
            out.append(f"ids without a name in {self.name_column!r}: {self.unnamed}")
        return out

    def to_table(self, *, allow_unnamed: bool = False) -> ClassTable:
        """The :class:`ClassTable`, raising :class:`DataError` on conflicts (and unnamed ids)."""
        problems = [p for p in self.problems() if allow_unnamed is False or "without" not in p]
        if problems:
            raise DataError(
                f"class table of {self.source} is ambiguous: {'; '.join(problems)}",
                f"fix {self.name_column!r} so every {self.id_column!r} has exactly one name",
            )
        names = []
        for i in self.ids:
            found = self.names.get(i) or ()
            names.append(found[0] if found else (NODATA_NAME if i == 0 else f"class {i}"))
        defaults = default_colors(self.ids)
        colors = [(self.colors.get(i) or (d,))[0] for i, d in zip(self.ids, defaults)]
        return ClassTable.from_records(self.ids, names, colors)


def _check_layer(path: Path, layer: str | None) -> str:
    import pyogrio

    if not path.exists():
        raise InputError(f"vector file {path} does not exist", "check the path")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises several DataSource error types
        raise InputError(
            f"{path} is not a readable vector file ({' '.join(str(exc).split())[:120]})",
            "pass a GeoPackage, Shapefile or GeoJSON with the reference polygons",
        ) from None
    if layer is None:
        if len(layers) != 1:
            raise InputError(
                f"{path} has {len(layers)} layers and none was chosen",
                f"pass a layer: one of {layers}",
            )
        return layers[0]
    if layer not in layers:
        raise InputError(f"layer {layer!r} not found in {path}", f"existing layers: {layers}")
    return layer


def summarize_classes(
    path: str | Path,
    *,
    layer: str | None = None,
    id_column: str = "LULC_ID",
    name_column: str = "LULC_NAME",
    color_column: str | None = None,
) -> ClassSummary:
    """Read a vector layer's class columns and summarise them without judging.

    Parameters
    ----------
    path, layer, id_column, name_column, color_column
        As in :meth:`ClassTable.from_vector`.

    Returns
    -------
    ClassSummary
        Distinct ids, names, colours and feature counts, with conflicts visible.

    Raises
    ------
    InputError
        Missing file, layer or column (existing ones listed).
    DataError
        Ids that are not integers or colours that cannot be parsed.
    """
    import pyogrio

    path = Path(path)
    layer = _check_layer(path, layer)
    fields = [str(f) for f in pyogrio.read_info(path, layer=layer)["fields"]]
    wanted = [id_column, name_column] + ([color_column] if color_column else [])
    for col in wanted:
        if col not in fields:
            raise InputError(
                f"column {col!r} not found in layer {layer!r} of {path}",
                f"existing columns: {fields}",
            )
    df = pyogrio.read_dataframe(path, layer=layer, columns=wanted, read_geometry=False)
    return _summarize(df, f"{path}:{layer}", id_column, name_column, color_column)


def _summarize(
    df: pd.DataFrame, source: str, id_column: str, name_column: str, color_column: str | None
) -> ClassSummary:
    raw_ids = df[id_column]
    if raw_ids.isna().any():
        raise DataError(
            f"{raw_ids.isna().sum()} features of {source} have no {id_column!r}",
            "give every reference polygon a class id (or drop them)",
        )
    try:
        as_float = raw_ids.astype(float)
    except (TypeError, ValueError):
        raise DataError(
            f"column {id_column!r} of {source} is not numeric", "use integer class ids"
        ) from None
    if not all(math.isfinite(v) and float(v).is_integer() for v in as_float):
        raise DataError(f"column {id_column!r} of {source} has non-integer ids", "use integer ids")
    ids = as_float.astype(np.int64).to_numpy()
    names: dict[int, set[str]] = {}
    colors: dict[int, set[str]] = {}
    counts: dict[int, int] = {}
    name_vals = df[name_column].to_numpy()
    color_vals = df[color_column].to_numpy() if color_column else None
    for k, i in enumerate(ids.tolist()):
        counts[i] = counts.get(i, 0) + 1
        n = name_vals[k]
        names.setdefault(i, set())
        if n is not None and not (isinstance(n, float) and math.isnan(n)) and str(n).strip():
            names[i].add(str(n).strip())
        if color_vals is not None:
            c = color_vals[k]
            if c is None or (isinstance(c, float) and math.isnan(c)) or not str(c).strip():
                continue
            try:
                colors.setdefault(i, set()).add(parse_color(c))
            except ValueError as exc:
                raise DataError(
                    f"{source}: id {i}: {exc}", f"fix column {color_column!r}"
                ) from None
    uniq = tuple(sorted(counts))
    return ClassSummary(
        source=source,
        id_column=id_column,
        name_column=name_column,
        ids=uniq,
        names={i: tuple(sorted(names.get(i, ()))) for i in uniq},
        colors={i: tuple(sorted(colors[i])) for i in uniq if i in colors},
        counts=counts,
    )
