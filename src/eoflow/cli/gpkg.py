"""``eoflow gpkg``: list layers, read class tables and run spatial SQL over GeoPackages."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["load_raster_source", "register"]


def register(subparsers) -> None:
    """Add ``eoflow gpkg {layers,classes,query}``."""
    p = subparsers.add_parser("gpkg", help="GeoPackage layers, class tables and spatial SQL")
    sub = p.add_subparsers(dest="gpkg_command", metavar="SUBCOMMAND", required=True)

    lay = sub.add_parser("layers", help="list vector and raster layers (with dates)")
    lay.add_argument("file", type=Path)
    lay.add_argument("--type", choices=("raster", "vector", "attributes"), dest="kind")
    lay.add_argument("--match", metavar="GLOB", help="keep layers whose name matches")
    lay.add_argument("--json", action="store_true", help="print JSON")
    lay.set_defaults(func=_layers)

    cls = sub.add_parser("classes", help="class table (ids, names, colours) of a vector layer")
    cls.add_argument("file", type=Path)
    cls.add_argument("--layer", help="vector layer (optional when the file has one layer)")
    cls.add_argument("--id-column", default="LULC_ID")
    cls.add_argument("--name-column", default="LULC_NAME")
    cls.add_argument("--color-column", default=None)
    cls.add_argument("--allow-unnamed", action="store_true", help="name unnamed ids 'class <id>'")
    cls.add_argument("--json", action="store_true", help="print [{id, name, color, count}]")
    cls.add_argument("--legend", type=Path, metavar="OUT.json", help="write the legend JSON")
    cls.add_argument("--qml", type=Path, metavar="OUT.qml", help="write a QGIS paletted style")
    cls.set_defaults(func=_classes)

    q = sub.add_parser("query", help="spatial SQL: pixels in polygons, values at points")
    qsub = q.add_subparsers(dest="query_kind", metavar="KIND", required=True)
    for kind, text in (("pixels", "every pixel centre inside the selected polygons"),
                       ("points", "values at the points of a point layer")):  # fmt: skip
        qp = qsub.add_parser(kind, help=text)
        qp.add_argument("file", type=Path, help="GeoPackage holding the vector layer")
        qp.add_argument("--layer", required=True, help="polygon or point layer")
        if kind == "pixels":
            qp.add_argument("--id", dest="ids", action="append", metavar="ID",
                            help="feature id (repeatable; values of --id-column)")  # fmt: skip
        qp.add_argument("--where", metavar="COL=VALUE",
                        help="attribute filter (= != < <= > >=, ~ for LIKE)")  # fmt: skip
        qp.add_argument("--id-column", help="identifier column (default: the layer's fid)")
        qp.add_argument("--raster", help="GeoPackage with dated raster layers, or GeoTIFF "
                        "folder/glob (default: FILE)")  # fmt: skip
        qp.add_argument("--match", metavar="GLOB", help="raster layers to use (GeoPackage)")
        qp.add_argument("--date-pattern", help="regex for dates in GeoTIFF file names")
        qp.add_argument("--bands", help="comma-separated band names for GeoTIFFs")
        qp.add_argument("--out", type=Path, help="write .parquet, .csv or .gpkg")
        qp.set_defaults(func=_query, query_kind=kind)


def _layers(args: argparse.Namespace) -> int:
    from eoflow.gpkg.catalog import list_layers

    layers = list_layers(args.file, kind=args.kind, match=args.match)
    if args.json:
        print(json.dumps([lyr.to_dict() for lyr in layers], indent=2, default=str))
        return 0
    rows = [("name", "kind", "type", "size", "crs", "extent", "date")]
    for lyr in layers:
        ext = "" if not lyr.extent else "{:.1f},{:.1f},{:.1f},{:.1f}".format(*lyr.extent)
        date = f"{lyr.date} ({lyr.date_source})" if lyr.date else ""
        rows.append((lyr.name, lyr.kind, lyr.summary(), lyr.size(), lyr.crs or "", ext, date))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"{len(layers)} layer(s) in {args.file}")
    return 0


def _classes(args: argparse.Namespace) -> int:
    from eoflow.reference.classes import summarize_classes

    summary = summarize_classes(args.file, layer=args.layer, id_column=args.id_column,
                                name_column=args.name_column, color_column=args.color_column)  # fmt: skip
    problems = summary.problems()
    if problems and not args.json:
        print(f"{summary.source}: {len(summary.ids)} ids, problems:")
        for i in summary.ids:
            names = summary.names.get(i) or ()
            flag = (
                " <- conflict"
                if len(names) > 1
                else (" <- no name" if i in summary.unnamed else "")
            )
            print(f"  {i:>6}  {' | '.join(names) or '-'}  ({summary.counts[i]} features){flag}")
    table = summary.to_table(allow_unnamed=args.allow_unnamed)  # raises on problems
    items = [dict(c, count=summary.counts[c["id"]]) for c in table.to_json()]
    if args.legend:
        args.legend.write_text(json.dumps(table.to_json(), indent=2) + "\n")
    if args.qml:
        args.qml.write_text(table.qgis_style())
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    print(f"{'id':>6}  {'color':7}  {'count':>6}  name")
    for it in items:
        print(f"{it['id']:>6}  {it['color']:7}  {it['count']:>6}  {it['name']}")
    print(f"{len(items)} classes in {summary.source}")
    for path in (args.legend, args.qml):
        if path:
            print(f"wrote {path}")
    return 0


def load_raster_source(spec: str | Path, *, match=None, date_pattern=None, bands=None):
    """A cube from a GeoPackage (dated raster layers) or a GeoTIFF folder/glob (own grid)."""
    from eoflow.gpkg.raster import load_gpkg_raster_cube

    text = str(spec)
    if text.lower().endswith(".gpkg"):
        return load_gpkg_raster_cube(text, match=match)
    from eoflow.gpkg.lazy import grid_of, open_checked
    from eoflow.sources.geotiff import find_geotiffs, load_geotiff_cube

    files = find_geotiffs(text)
    with open_checked(str(files[0])) as src:
        tile = grid_of(src, files[0].stem)
    names = [b.strip() for b in bands.split(",")] if bands else None
    return load_geotiff_cube(files, tile=tile, date_pattern=date_pattern, band_names=names)


def _query(args: argparse.Namespace) -> int:
    from eoflow.gpkg.sql import pixels_in_polygons, values_at_points, write_table

    cube = load_raster_source(args.raster or args.file, match=args.match,
                              date_pattern=args.date_pattern, bands=args.bands)  # fmt: skip
    t0 = time.perf_counter()
    if args.query_kind == "pixels":
        ids = None
        if args.ids:
            ids = [int(i) if i.lstrip("-").isdigit() else i for i in args.ids]
        gdf = pixels_in_polygons(args.file, args.layer, cube, ids=ids, where=args.where,
                                 id_column=args.id_column)  # fmt: skip
    else:
        gdf = values_at_points(args.file, args.layer, cube, where=args.where,
                               id_column=args.id_column)  # fmt: skip
    elapsed = time.perf_counter() - t0
    n_time = cube.sizes.get("time", 1)
    n_cells = len(gdf) // max(n_time, 1)
    print(f"{args.query_kind}: {gdf['feature_id'].nunique()} feature(s), {n_cells} pixel(s) x "
          f"{n_time} date(s) x {len(cube.data_vars)} variable(s) in {elapsed:.2f} s")  # fmt: skip
    if gdf.attrs.get("dropped"):
        print(
            f"note: {gdf.attrs['dropped']} point(s) fall outside the raster grid", file=sys.stderr
        )
    if args.out:
        write_table(gdf, args.out)
        print(f"wrote {args.out}")
    else:
        print(gdf.drop(columns="geometry").head(10).to_string(index=False))
    return 0
