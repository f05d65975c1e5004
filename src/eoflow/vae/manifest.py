"""``manifest.json``: what a run read, with which parameters, code and seeds, and what it wrote."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["git_revision", "versions", "write_manifest"]

_PACKAGES = (
    "eoflow",
    "torch",
    "numpy",
    "zarr",
    "safetensors",
    "scikit-learn",
    "umap-learn",
    "pydantic",
)


def versions() -> dict[str, str | None]:
    """Python and key package versions."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def git_revision() -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the checkout holding this source file (None outside git)."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if rev.returncode != 0:
            return {"commit": None, "dirty": None}
        st = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": rev.stdout.strip(), "dirty": bool(st.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def write_manifest(
    out_dir: str | Path,
    *,
    command: str,
    inputs: dict[str, Any],
    parameters: dict[str, Any],
    seeds: dict[str, Any],
    outputs: list[str],
    results: dict[str, Any] | None = None,
    started: dt.datetime | None = None,
) -> Path:
    """Write ``out_dir/manifest.json`` and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    doc = {
        "command": command,
        "started": (started or now).isoformat(timespec="seconds"),
        "finished": now.isoformat(timespec="seconds"),
        "inputs": inputs,
        "parameters": parameters,
        "seeds": seeds,
        "versions": versions(),
        "git": git_revision(),
        "host": {"platform": platform.platform(), "machine": platform.machine()},
        "outputs": sorted(outputs),
        "results": results or {},
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path
