"""eo-learn 1.5.7's own virtual environment (it pins older dependencies than eoflow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.vs_eolearn import common

EOLEARN_VERSION = "1.5.7"
EOLEARN_REQUIREMENTS = (f"eo-learn=={EOLEARN_VERSION}", "numba", "scikit-learn", "psutil")
"""eo-learn's interpolation needs numba and its sampling module scikit-learn (both undeclared)."""


def venv_dir(work: Path = common.WORK) -> Path:
    """``benchmarks/.work/venv-eolearn``."""
    return work / "venv-eolearn"


def eolearn_python(work: Path = common.WORK) -> Path:
    """The eo-learn venv's interpreter."""
    return venv_dir(work) / "bin" / "python"


def ensure_eolearn_venv(work: Path = common.WORK) -> Path:
    """Create the venv and install eo-learn (idempotent; a stamp file marks success)."""
    py = eolearn_python(work)
    stamp = venv_dir(work) / ".vs_eolearn-ok"
    if stamp.exists() and py.exists():
        return py
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv_dir(work))], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *EOLEARN_REQUIREMENTS], check=True)
    subprocess.run(
        [
            str(py),
            "-c",
            "import eolearn.core, eolearn.features, eolearn.geometry, eolearn.ml_tools",
        ],
        check=True,
    )
    stamp.write_text(" ".join(EOLEARN_REQUIREMENTS) + "\n")
    return py


def eolearn_versions(work: Path = common.WORK) -> dict[str, str]:
    """Versions of the key packages in the eo-learn venv."""
    code = (
        "import json, importlib.metadata as m\n"
        "names = ['eo-learn', 'numpy', 'numba', 'opencv-python-headless', 'scikit-learn',"
        " 'geopandas', 'sentinelhub']\n"
        "out = {}\n"
        "for n in names:\n"
        "    try:\n"
        "        out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        pass\n"
        "print(json.dumps(out))\n"
    )
    import json

    res = subprocess.run([str(eolearn_python(work)), "-c", code], capture_output=True, text=True)
    return json.loads(res.stdout) if res.returncode == 0 else {}
