"""``eoflow export``: write results into GeoPackages (polygons, joins, dated rasters, appends)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers) -> None:
    """Add ``eoflow export {polygons,join,rasters,append}``."""
    p = subparsers.add_parser("export", help="write maps, tables and rasters into GeoPackages")
    sub = p.add_subparsers(dest="export_command", metavar="SUBCOMMAND", required=True)

    pol = sub.add_parser("polygons", help="vectorise a class map into polygons (id, name, area)")
    pol.add_argument("class_map", type=Path, help="GeoTIFF/COG or GeoPackage with the class map")
    pol.add_argument("--raster-layer", help="raster layer when CLASS_MAP is a GeoPackage")
    pol.add_argument("--out", type=Path, required=True, help="target GeoPackage")
    pol.add_argument("--layer", default="predictions", help="target layer name")
    pol.add_argument("--classes", type=Path, help="legend JSON or vector file with the classes")
    pol.add_argument("--classes-layer", help="layer of --classes")
    pol.add_argument("--id-column", default="LULC_ID")
    pol.add_argument("--name-column", default="LULC_NAME")
    pol.add_argument("--skip", type=int, action="append", default=[], metavar="ID",
                     help="class id to leave out (repeatable), e.g. 0")  # fmt: skip
    pol.add_argument("--connectivity", type=int, choices=(4, 8), default=4)
    pol.add_argument("--overwrite", action="store_true")
    pol.set_defaults(func=_polygons)

    join = sub.add_parser("join", help="LEFT JOIN a vector layer with a CSV on a key column")
    join.add_argument("file", type=Path, help="GeoPackage")
    join.add_argument("--layer", required=True)
    join.add_argument("--csv", type=Path, required=True)
    join.add_argument("--key", required=True, help="key column of the layer")
    join.add_argument("--csv-key", help="key column of the CSV (default: --key)")
    join.add_argument("--out", type=Path, required=True, help="target GeoPackage (may be FILE)")
    join.add_argument("--out-layer", help="target layer (default: <layer>_joined)")
    join.add_argument("--overwrite", action="store_true")
    join.set_defaults(func=_join)

    ras = sub.add_parser("rasters", help="write a cube as one raster layer per date")
    ras.add_argument("source", help="GeoPackage with dated raster layers or GeoTIFF folder/glob")
    ras.add_argument("--out", type=Path, required=True, help="target GeoPackage")
    ras.add_argument("--match", metavar="GLOB", help="source raster layers (GeoPackage)")
    ras.add_argument("--date-pattern", help="regex for dates in GeoTIFF file names")
    ras.add_argument("--bands", help="comma-separated band names for GeoTIFFs")
    ras.add_argument("--variables", help="comma-separated variables to write (default: all)")
    ras.add_argument("--template", default="{variable}_{date}", help="layer name template")
    ras.set_defaults(func=_rasters)

    app = sub.add_parser("append", help="append one layer to a GeoPackage, others untouched")
    app.add_argument("source", type=Path, help="GeoPackage, GeoTIFF/COG or vector file")
    app.add_argument("--to", type=Path, required=True, dest="target", help="target GeoPackage")
    app.add_argument("--layer", help="source layer (GeoPackage source)")
    app.add_argument("--as", dest="name", help="target layer name")
    app.add_argument("--date", help="RASTER_DATE for a raster (YYYY-MM-DD)")
    app.add_argument("--overwrite", action="store_true")
    app.set_defaults(func=_append)


def _class_table(args: argparse.Namespace):
    import json

    from eoflow.errors import InputError
    from eoflow.reference.classes import ClassTable

    if not args.classes:
        return None
    if args.classes.suffix.lower() == ".json":
        if not args.classes.exists():
            raise InputError(f"legend {args.classes} does not exist", "check the path")
        return ClassTable.from_json(json.loads(args.classes.read_text()))
    return ClassTable.from_vector(args.classes, layer=args.classes_layer,
                                  id_column=args.id_column, name_column=args.name_column)  # fmt: skip


def _polygons(args: argparse.Namespace) -> int:
    from eoflow.gpkg.export import read_class_map, vectorize_classes, write_vector_layer

    arr, transform, crs, nodata = read_class_map(args.class_map, layer=args.raster_layer)
    gdf = vectorize_classes(arr, classes=_class_table(args), transform=transform, crs=crs,
                            nodata=nodata, skip=tuple(args.skip),
                            connectivity=args.connectivity)  # fmt: skip
    write_vector_layer(gdf, args.out, args.layer, overwrite=args.overwrite)
    print(f"wrote {len(gdf)} polygons ({gdf['class_id'].nunique()} classes) to "
          f"{args.out}:{args.layer}")  # fmt: skip
    return 0


def _join(args: argparse.Namespace) -> int:
    from eoflow.gpkg.export import join_csv, write_vector_layer

    gdf = join_csv(args.file, args.layer, args.csv, key=args.key, csv_key=args.csv_key)
    layer = args.out_layer or f"{args.layer}_joined"
    write_vector_layer(gdf, args.out, layer, overwrite=args.overwrite)
    print(f"joined {gdf.attrs['matched']} of {len(gdf)} features with {args.csv}; "
          f"wrote {args.out}:{layer}")  # fmt: skip
    return 0


def _rasters(args: argparse.Namespace) -> int:
    from eoflow.cli.gpkg import load_raster_source
    from eoflow.gpkg.raster import write_gpkg_raster_cube

    cube = load_raster_source(args.source, match=args.match, date_pattern=args.date_pattern,
                              bands=args.bands)  # fmt: skip
    variables = [v.strip() for v in args.variables.split(",")] if args.variables else None
    names = write_gpkg_raster_cube(cube, args.out, variables=variables, template=args.template)
    print(f"wrote {len(names)} raster layers ({cube.sizes['time']} dates) to {args.out}")
    return 0


def _append(args: argparse.Namespace) -> int:
    from eoflow.gpkg.export import append_layer

    name = append_layer(args.source, args.target, layer=args.layer, name=args.name,
                        date=args.date, overwrite=args.overwrite)  # fmt: skip
    print(f"appended {name} to {args.target}")
    return 0
