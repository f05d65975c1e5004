"""The cube model: ``xarray.Dataset`` with dims ``time, y, x``, one variable per band."""
