"""What an eoflow Dask worker does when it starts: the imports and numba's set-up of its tasks.

A local cluster (:func:`eoflow.cluster.connect`) forks its workers from a fork server that has
run this once (:mod:`eoflow._warm`) and also preloads it into each worker (a no-op by then, the
warm-up where workers are spawned); on an existing cluster start the workers with
``--preload eoflow.worker`` (``cluster/README.md``). Without it the first task of each worker
pays for them instead (about 1 s on a 2-core VM: the imports of xarray, zarr and of the modules
whose functions the tasks call, and numba loading each kernel from its on-disk cache), while the
client waits; preloaded, that happens while the worker boots, in parallel with the client's own
start-up.
"""

from __future__ import annotations

import contextlib
import importlib

__all__ = ["dask_setup", "warm_up"]

TASK_MODULES = (
    "xarray",
    "zarr",
    "eoflow._blocks",
    "eoflow.cube.store",
    "eoflow.ops.fused",
    "eoflow.ops.temporal",
    "eoflow.ops.morphology",
    "eoflow.stages.features",
    "eoflow.stages.sample",
)
"""Modules whose functions eoflow's tasks call (unpickling a task imports them)."""


def warm_up() -> None:
    """Import what tasks use and load every numba kernel signature already in numba's cache.

    A kernel's compiled code for a given argument signature is loaded from the on-disk cache on
    its first call in each process (~50 ms per signature); loading here every signature the
    cache holds (those earlier runs on this machine compiled) takes that off the first tasks.
    """
    import numpy as np

    for name in TASK_MODULES:
        importlib.import_module(name)
    from eoflow.ops import _fused_kernel, _kernels

    a = np.zeros(2, np.float32)
    _kernels.normalized_difference(a, a)  # numba's own set-up, even with an empty cache
    for kernel in (_fused_kernel.fused_features, _kernels.clm_frame_counts,
                   _kernels.gather_series, _kernels.normalized_difference):  # fmt: skip
        _load_cached(kernel)


def _load_cached(kernel) -> None:
    """Load every signature of a ``cache=True`` numba dispatcher that its cache index lists."""
    with contextlib.suppress(Exception):  # numba internals: a miss only costs the first call
        for key in kernel._cache._cache_file._load_index():
            kernel.compile(key[0])


def dask_setup(worker) -> None:
    """Dask's preload hook: warm the worker up (a failure here never stops the worker)."""
    with contextlib.suppress(Exception):  # the first task then pays for it
        warm_up()
