"""eoflow: a year of Sentinel-2 over an area of interest, lazily, to land-cover maps and pixel models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eoflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
