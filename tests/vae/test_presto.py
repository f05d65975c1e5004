"""The Presto converter writes a valid samples store with recomputed NDVI and the paper's split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from eoflow.vae.data import SamplesStore
from eoflow.vae.presto import FEATURES, convert_presto

REPO = Path(__file__).resolve().parents[2]


def test_convert_fuel_moisture(tmp_path):
    src = REPO / "data" / "presto" / "fuel_moisture" / "npy"
    out = convert_presto(src, tmp_path / "fm.zarr", chunk=500)
    s = SamplesStore(out)
    assert (s.n, s.n_time, s.n_feature) == (2313, 3, 18) and s.features == FEATURES
    assert s.targets == {"lfmc": "target"} and s.chunk_rows == 500
    raw = np.load(src / "s1_s2_era5_srtm.npy")
    x = np.asarray(zarr.open_group(str(out), mode="r")["X"][...])
    b4, b8 = raw[..., 4], raw[..., 8]
    np.testing.assert_allclose(
        x[..., FEATURES.index("ndvi")], (b8 - b4) / (b8 + b4), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(x[..., FEATURES.index("red")], b4 * 1e-4, rtol=1e-6)  # reflectance
    np.testing.assert_allclose(x[..., FEATURES.index("t2m")], raw[..., 13], rtol=1e-6)
    split = s.vector("is_test")
    assert (int((~split).sum()), int(split.sum())) == (1578, 735)
    np.testing.assert_allclose(s.vector("target"), np.load(src / "target.npy"), rtol=1e-6)
    dw = s.vector("dw")
    assert set(np.unique(s.vector("y"))) <= set(range(9)) and dw.shape == (2313, 3)
    days = s.vector("date")
    assert (np.diff(days, axis=1) >= 0).all()  # dates never go backwards within a sample
    blk = s.read_block(0, 2, [0])
    assert blk["dates"][0][0].startswith("2001-") and -125 < blk["x"][0] < -93
