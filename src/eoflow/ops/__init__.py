"""Operations on cubes: each a small numpy/numba kernel plus a thin, lazy xarray wrapper."""
