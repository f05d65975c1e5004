"""Pixel classifiers: LightGBM (local and lightgbm.dask), saved as text + JSON sidecar."""
