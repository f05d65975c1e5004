"""Regenerate the dated GeoTIFF/COG fixture in ``data/gpkg/scenes/`` from the eo-learn sample.

Real data: NDVI (float32) and the Sentinel Hub cloud mask CLM (uint8) of four TestEOPatch
acquisitions, on the TestEOPatch grid (EPSG:32633, 100 x 101 px). NDVI files carry the date in
their name (``S2_YYYYMMDD_NDVI.tif``); CLM files carry it only in the ``ACQUISITION_DATE`` TIFF
tag (``clm_<k>.tif``), so both date sources are exercised. Band descriptions name the bands.

Run from the repository root::

    .venv/bin/python data/gpkg/make_fixture.py [path/to/shared/data/eolearn-example]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile
from rasterio.transform import from_bounds

#: Indices into TestEOPatch/timestamps.json of the frames kept.
INDICES = (0, 20, 40, 60)
TRANSFORM = from_bounds(465181.0522318204, 5079244.8912012065, 466180.53145382757,
                        5080254.63349641, width=100, height=101)  # fmt: skip


def write_cog(path: Path, frame: np.ndarray, description: str, tags: dict[str, str]) -> None:
    """Write one single-band COG (deflate) with a band description and tags."""
    profile = {"driver": "GTiff", "width": frame.shape[1], "height": frame.shape[0], "count": 1,
               "dtype": str(frame.dtype), "crs": "EPSG:32633", "transform": TRANSFORM}  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**profile) as tmp:
            tmp.write(frame, 1)
            tmp.set_band_description(1, description)
            tmp.update_tags(**tags)
        with mem.open() as tmp:
            rasterio.shutil.copy(tmp, path, driver="COG", compress="DEFLATE", blocksize=64)


def main(root: str) -> None:
    """Write the fixture from the eo-learn example data at ``root``."""
    patch = Path(root) / "TestEOPatch"
    ndvi = np.load(patch / "data" / "NDVI.npy", mmap_mode="r")[..., 0]
    clm = np.load(patch / "mask" / "CLM.npy", mmap_mode="r")[..., 0]
    stamps = json.loads((patch / "timestamps.json").read_text())
    out = Path(__file__).parent / "scenes"
    out.mkdir(exist_ok=True)
    for k, i in enumerate(INDICES):
        day = stamps[i][:10]
        write_cog(out / f"S2_{day.replace('-', '')}_NDVI.tif", np.ascontiguousarray(ndvi[i]),
                  "NDVI", {})  # fmt: skip
        write_cog(out / f"clm_{k}.tif", np.ascontiguousarray(clm[i]).astype(np.uint8), "CLM",
                  {"ACQUISITION_DATE": day})  # fmt: skip
        print(day, "NDVI", "CLM")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/eolearn-example")
