"""Pipeline stages: ingest -> features -> sample -> train -> predict -> report.

Each stage reads the previous stage's store from the run directory, works tile by tile in
batches through a Dask client, records per-tile status and never rewrites a finished tile.
"""
