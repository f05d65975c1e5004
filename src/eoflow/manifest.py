"""Run manifests: inputs, parameters, versions, git revision, seeds, timings."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["git_revision", "package_versions", "write_manifest"]

_PACKAGES = ("eoflow", "numpy", "xarray", "dask", "distributed", "zarr", "stackstac", "pystac",
             "rasterio", "geopandas", "dask-geopandas", "lightgbm", "numba", "scikit-learn", "torch")  # fmt: skip


def git_revision() -> str | None:
    """The eoflow source tree's git revision (with ``-dirty``), or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)  # fmt: skip
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the results."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def write_manifest(
    folder: Path,
    *,
    inputs: dict,
    parameters: dict,
    seeds: dict,
    timings: dict,
    extra: dict | None = None,
) -> Path:
    """Write ``manifest.json`` into ``folder`` (atomically) and return its path."""
    doc = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "inputs": inputs,
        "parameters": parameters,
        "seeds": seeds,
        "versions": package_versions(),
        "git_revision": git_revision(),
        "platform": platform.platform(),
        "timings_s": timings,
        **(extra or {}),
    }
    path = Path(folder) / "manifest.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)
    return path
