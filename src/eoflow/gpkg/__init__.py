"""GeoPackage as a first-class input and output.

* :mod:`eoflow.gpkg.catalog` -- list layers (vector, raster tiles, gridded coverages) with their
  CRS, extent, size and date; check and quote layer/column names.
* :mod:`eoflow.gpkg.dates` -- dates from ``RASTER_DATE`` metadata, descriptions, names, file names.
* :mod:`eoflow.gpkg.lazy` -- lazy, chunked raster reading (one Dask task per chunk), with explicit
  and reported reprojection to a :class:`~eoflow.geo.tiles.Tile`.
* :mod:`eoflow.gpkg.raster` -- dated raster layers <-> cube.
* :mod:`eoflow.gpkg.sql` -- spatial SQL (SpatiaLite through apsw): pixels in polygons, values at points.
* :mod:`eoflow.gpkg.export` -- class maps to polygons, CSV joins, incremental layer appends.
"""
