"""What an eoflow Dask worker does when it starts: the imports and numba's set-up of its tasks.

A local cluster (:func:`eoflow.cluster.connect`) preloads this module into its workers; on an
existing cluster start the workers with ``--preload eoflow.worker`` (``cluster/README.md``).
Without it the first task of each worker pays for them instead (about 1 s on a 2-core VM: xarray
and zarr imports, and numba's initialisation, ~0.3 s even when every kernel comes from its
cache), while the client waits; preloaded, that happens while the worker boots, in parallel with
the client's own start-up.
"""

from __future__ import annotations

import contextlib

__all__ = ["dask_setup", "warm_up"]


def warm_up() -> None:
    """Import what tasks use and initialise numba by calling two small cached kernels."""
    import numpy as np
    import xarray  # noqa: F401
    import zarr  # noqa: F401

    from eoflow.ops import _kernels

    a = np.zeros(2, np.float32)
    _kernels.normalized_difference(a, a)
    out = np.empty((1, 1, 1), np.float32)
    _kernels.gather_series((np.zeros((1, 1, 1), np.float32),), np.zeros(1, np.int64),
                           np.zeros(1, np.int64), out)  # fmt: skip


def dask_setup(worker) -> None:
    """Dask's preload hook: warm the worker up (a failure here never stops the worker)."""
    with contextlib.suppress(Exception):  # the first task then pays for it
        warm_up()
