"""Importing this module warms the process up for Dask work: the local cluster's fork server.

:func:`eoflow.cluster.connect` starts local worker processes from a fork server (Python's
``forkserver`` start method) that imports this module once; each worker is then a fork of a warm
process (Dask, xarray, zarr, eoflow's task modules and numba's kernels already imported and
loaded: :func:`eoflow.worker.warm_up`) instead of a fresh interpreter paying about 2 CPU
seconds for the same. Never raises: a failure here only means the workers warm up on their own.
"""

from __future__ import annotations

import contextlib
import gc

gc.disable()  # imports only make objects that live as long as the process (~15 % faster)
with contextlib.suppress(Exception):
    import dask.array  # noqa: F401
    import distributed.nanny
    import distributed.worker  # noqa: F401

    from eoflow.worker import warm_up

    warm_up()
# the forked workers never scan (nor copy, by touching them) what the server imported
gc.freeze()
gc.enable()
