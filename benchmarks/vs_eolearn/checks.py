"""Do both systems compute the same thing? (project venv; reads eo-learn's files with numpy)

Per checked patch:

* **inputs** -- the EOPatch arrays equal the eoflow cube's (bit for bit);
* **indices** -- NDWI/NDBI from eo-learn's ``NormalizedDifferenceIndexTask`` (run in its venv) and
  from ``eoflow.ops.indices.normalized_difference`` are equal (NaN where undefined in both);
* **valid count** -- ``VALID_COUNT`` equal;
* **interpolation** -- on the same 25 instants (dates compared), ``|eoflow - eo-learn| <= 1e-5``
  wherever both are finite; cells where only one is NaN are counted (eo-learn gives NaN after a
  pixel's last valid observation, eoflow holds the last valid value);
* **erosion** -- ``LULC_ERODED`` equal;
* **samples** -- the number of samples per class equal (eo-learn draws at random, so the pixels
  differ; eo-learn rounds with Python's ``round`` (half to even), eoflow with half up).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from benchmarks.vs_eolearn import common
from benchmarks.vs_eolearn.venv import eolearn_python

INTERP_TOL = 1e-5


def _npy(path: Path) -> np.ndarray:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            return np.load(fh)
    return np.load(path)


def _feature(patch_dir: Path, ftype: str, name: str) -> np.ndarray:
    base = patch_dir / ftype / name
    for cand in (base.with_name(name + ".npy.gz"), base.with_name(name + ".npy")):
        if cand.exists():
            return _npy(cand)
    raise FileNotFoundError(base)


def _eq_nan(a: np.ndarray, b: np.ndarray) -> tuple[bool, int]:
    same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b
    return bool(same.all()), int((~same).sum())


def check_inputs(k: int, work: Path = common.WORK) -> dict:
    """EOPatch arrays == eoflow cube arrays for patch ``k`` (eoflow's uint16 bands as reflectance)."""
    import xarray as xr

    from eoflow.ops.indices import reflectance

    ep = work / "inputs" / "eopatches" / common.tile_id(k)
    ds = xr.open_zarr(work / "inputs" / "cubes.zarr", group=common.tile_id(k), consolidated=False)
    bands = _feature(ep, "data", "BANDS")
    pairs = {
        "NDVI": (_feature(ep, "data", "NDVI")[..., 0], ds["NDVI"].values),
        "CLM": (_feature(ep, "mask", "CLM")[..., 0], ds["CLM"].values),
        "IS_DATA": (_feature(ep, "mask", "IS_DATA")[..., 0], ds["IS_DATA"].values),
        "LULC": (_feature(ep, "mask_timeless", "LULC")[..., 0], ds["LULC"].values),
    }
    for i, b in enumerate(common.SYNTHETIC_BANDS):  # eoflow: uint16 DN, read as the kernel does
        pairs[b] = (bands[..., i], reflectance(ds[b]).values)
    out = {}
    for name, (a, b) in pairs.items():
        ok, n_bad = _eq_nan(a, b) if a.shape == b.shape else (False, -1)
        out[name] = {"equal": ok, "n_diff": n_bad, "dtype_eolearn": str(a.dtype),
                     "dtype_eoflow": str(ds[name].dtype)}  # fmt: skip
    return {"ok": all(v["equal"] for v in out.values()), "arrays": out}


def check_indices(k: int, work: Path = common.WORK) -> dict:
    """eo-learn's NDWI/NDBI (computed in its venv) == eoflow's for patch ``k``."""
    import xarray as xr

    from eoflow.ops.indices import INDEX_BANDS, normalized_difference, reflectance

    tmp = work / "checks" / f"indices-{common.tile_id(k)}"
    cmd = [str(eolearn_python(work)), "-m", "benchmarks.vs_eolearn.eolearn_chain", "indices",
           "--inputs", str(work / "inputs" / "eopatches"), "--k", str(k), "--out", str(tmp)]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=common.ROOT, env=common.thread_env())
    ds = xr.open_zarr(work / "inputs" / "cubes.zarr", group=common.tile_id(k), consolidated=False)
    out = {}
    for name in ("NDWI", "NDBI"):
        a_name, b_name = INDEX_BANDS[name]
        ours = normalized_difference(reflectance(ds[a_name]), reflectance(ds[b_name])).values
        theirs = np.load(tmp / f"{name}.npy")
        ok, n_bad = _eq_nan(theirs, ours)
        diff = np.nanmax(np.abs(theirs.astype(np.float64) - ours)) if theirs.size else 0.0
        out[name] = {"equal": ok, "n_diff": n_bad, "max_abs_diff": float(diff),
                     "dtype_eolearn": str(theirs.dtype), "dtype_eoflow": str(ours.dtype)}  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    return {"ok": all(v["equal"] for v in out.values()), "indices": out}


def check_outputs(k: int, eolearn_out: Path, eoflow_out: Path) -> dict:
    """Compare features, valid count, erosion and per-class sample counts of patch ``k``."""
    import xarray as xr
    import zarr

    tid = common.tile_id(k)
    ef = eolearn_out / "features" / tid
    ds = xr.open_zarr(eoflow_out / "features.zarr", group=tid, consolidated=False)
    res: dict = {"patch": tid}

    # time grid: eo-learn labels midnight dates; eoflow carries the instants it evaluated
    el_dates = [s[:10] for s in json.loads((ef / "timestamps.json").read_text())]
    ef_dates = [str(t)[:10] for t in ds["time"].values]
    res["grid"] = {"equal_dates": el_dates == ef_dates, "n": len(el_dates),
                   "eoflow_instant_0": str(ds["time"].values[0])[:19]}  # fmt: skip

    feats = _feature(ef, "data", "FEATURES")  # (t, y, x, c) float64
    interp = {}
    for i, name in enumerate(common.FEATURES):
        theirs = feats[..., i]
        ours = ds[name].values
        both = np.isfinite(theirs) & np.isfinite(ours)
        d = np.abs(theirs[both] - ours[both].astype(np.float64))
        interp[name] = {
            "max_abs_diff": float(d.max()) if d.size else 0.0,
            "n_compared": int(both.sum()),
            "n_nan_eolearn_only": int((np.isnan(theirs) & np.isfinite(ours)).sum()),
            "n_nan_eoflow_only": int((np.isfinite(theirs) & np.isnan(ours)).sum()),
            "dtype_eolearn": str(theirs.dtype),
            "dtype_eoflow": str(ours.dtype),
        }
    worst = max(v["max_abs_diff"] for v in interp.values())
    res["interpolation"] = {"ok": worst <= INTERP_TOL, "max_abs_diff": worst, "per_feature": interp}
    # where only eo-learn is NaN: eoflow should hold the pixel's last/first valid value there
    res["interpolation"]["nan_rule"] = (
        "eo-learn: NaN outside a pixel's first..last valid observation (the last grid instant, "
        "2017-12-27, lies after the last acquisition, 2017-12-22); eoflow holds the nearest "
        "valid value"
    )

    vc_ok, vc_bad = _eq_nan(_feature(ef, "mask_timeless", "VALID_COUNT")[..., 0].astype(np.int64),
                            ds["VALID_COUNT"].values.astype(np.int64))  # fmt: skip
    res["valid_count"] = {"ok": vc_ok, "n_diff": vc_bad}
    er_theirs = _feature(ef, "mask_timeless", "LULC_ERODED")[..., 0]
    er_ours = ds["LULC_ERODED"].values
    er_ok, er_bad = _eq_nan(er_theirs.astype(np.int64), er_ours.astype(np.int64))
    lulc = ds["LULC"].values
    res["erosion"] = {
        "ok": er_ok,
        "n_diff": er_bad,
        "pixels_eroded_eolearn": int(((lulc != 0) & (er_theirs == 0)).sum()),
        "pixels_eroded_eoflow": int(((lulc != 0) & (er_ours == 0)).sum()),
    }

    lab = _feature(eolearn_out / "samples" / tid, "mask_timeless", "LULC_ERODED_SAMPLED").ravel()
    root = zarr.open_group(str(eoflow_out / "samples.zarr"), mode="r")
    tiles = list(root.attrs["tiles"])
    y, t = root["y"][:], root["tile"][:]
    ours_y = y[t == tiles.index(tid)]
    c_el = {int(c): int(n) for c, n in zip(*np.unique(lab, return_counts=True))}
    c_ef = {int(c): int(n) for c, n in zip(*np.unique(ours_y, return_counts=True))}
    eroded = np.unique(er_ours[er_ours != 0], return_counts=True)
    avail = {int(c): int(n) for c, n in zip(*eroded)}
    res["samples"] = {
        "ok": c_el == c_ef,
        "per_class_eolearn": c_el,
        "per_class_eoflow": c_ef,
        "available_per_class": avail,
        "rounding_note": "eo-learn round(n*0.25) is half-to-even; eoflow floor(n*0.25+0.5)",
    }
    res["ok"] = all(
        res[k2]["ok"] for k2 in ("interpolation", "valid_count", "erosion", "samples")
    ) and bool(res["grid"]["equal_dates"])
    return res


def sample_totals(n: int, eolearn_out: Path, eoflow_out: Path) -> dict:
    """Per-class sample counts of every patch and summed over all ``n`` patches, both systems.

    ``mismatches`` lists ``{patch, class, eolearn, eoflow, available}`` wherever they differ.
    """
    import xarray as xr
    import zarr

    root = zarr.open_group(str(eoflow_out / "samples.zarr"), mode="r")
    tiles = list(root.attrs["tiles"])
    y_all, t_all = root["y"][:], root["tile"][:]
    tot_el: dict[int, int] = {}
    tot_ef: dict[int, int] = {}
    mismatches = []
    for k in range(n):
        tid = common.tile_id(k)
        lab = _feature(eolearn_out / "samples" / tid, "mask_timeless", "LULC_ERODED_SAMPLED")
        c_el = {int(c): int(m) for c, m in zip(*np.unique(lab.ravel(), return_counts=True))}
        ours = y_all[t_all == tiles.index(tid)]
        c_ef = {int(c): int(m) for c, m in zip(*np.unique(ours, return_counts=True))}
        for c, m in c_el.items():
            tot_el[c] = tot_el.get(c, 0) + m
        for c, m in c_ef.items():
            tot_ef[c] = tot_ef.get(c, 0) + m
        if c_el != c_ef:
            er = xr.open_zarr(eoflow_out / "features.zarr", group=tid, consolidated=False)
            er = er["LULC_ERODED"].values
            for c in sorted(set(c_el) | set(c_ef)):
                if c_el.get(c, 0) != c_ef.get(c, 0):
                    mismatches.append({"patch": tid, "class": c, "eolearn": c_el.get(c, 0),
                                       "eoflow": c_ef.get(c, 0), "available": int((er == c).sum())})  # fmt: skip
    return {"ok": tot_el == tot_ef and not mismatches, "eolearn": tot_el, "eoflow": tot_ef,
            "mismatches": mismatches}  # fmt: skip
