"""Hypothesis invariants: interpolation, erosion and sampling."""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from eoflow.ops.masks import valid_count
from eoflow.ops.morphology import erode_classes, erode_labels
from eoflow.ops.temporal import interpolate_to_grid
from eoflow.sampling import sample_pixels
from eoflow.stages.sample import sample_dataset


@st.composite
def series(draw):
    t = draw(st.integers(2, 15))
    n = draw(st.integers(1, 6))
    days = draw(st.lists(st.integers(0, 364), min_size=t, max_size=t, unique=True))
    vals = draw(arrays(np.float32, (t, n), elements=st.floats(-1, 1, width=32)))
    valid = draw(arrays(np.bool_, (t, n)))
    times = np.datetime64("2017-01-01", "ns") + np.array(days) * np.timedelta64(1, "D")
    return times, vals, valid


def _da(times, vals, valid):
    coords = {"time": times, "x": np.arange(vals.shape[1])}
    return (xr.DataArray(vals[:, None, :], dims=("time", "y", "x"), coords=coords),
            xr.DataArray(valid[:, None, :], dims=("time", "y", "x"), coords=coords))  # fmt: skip


GRID = np.datetime64("2017-01-01", "ns") + np.arange(25) * np.timedelta64(15, "D")


@given(series(), st.randoms())
def test_interpolation_ignores_input_order(s, rnd):
    times, vals, valid = s
    perm = list(range(len(times)))
    rnd.shuffle(perm)
    a = interpolate_to_grid(*_da(times, vals, valid), GRID).values
    b = interpolate_to_grid(*_da(times[perm], vals[perm], valid[perm]), GRID).values
    np.testing.assert_array_equal(a, b)


@given(series())
def test_no_nan_where_two_valid_observations(s):
    times, vals, valid = s
    out = interpolate_to_grid(*_da(times, vals, valid), GRID).values[:, 0, :]
    enough = valid.sum(axis=0) >= 2
    assert np.isfinite(out[:, enough]).all()
    assert np.isnan(out[:, valid.sum(axis=0) == 0]).all()


@given(series())
def test_interpolation_matches_numpy_interp(s):
    times, vals, valid = s
    out = interpolate_to_grid(*_da(times, vals, valid), GRID).values[:, 0, :]
    order = np.argsort(times)
    t = (times[order] - GRID[0]) / np.timedelta64(1, "D")
    g = (GRID - GRID[0]) / np.timedelta64(1, "D")
    for p in range(vals.shape[1]):
        m = valid[order, p]
        if m.any():
            ref = np.interp(g, t[m], vals[order, p][m].astype(np.float64))
            np.testing.assert_allclose(out[:, p], ref, atol=1e-6)


labels_st = arrays(
    np.uint16, st.tuples(st.integers(3, 30), st.integers(3, 30)), elements=st.integers(0, 3)
)


@given(labels_st, st.integers(2, 40), st.integers(2, 40), st.integers(1, 2))
def test_erosion_chunk_edges_are_not_borders(labels, cy, cx, radius):
    """Any chunking (one chunk takes map_blocks, several map_overlap) equals the whole array."""
    whole = erode_labels(labels, radius)
    lazy = erode_classes(
        xr.DataArray(da.from_array(labels, chunks=(cy, cx)), dims=("y", "x"), name="L"),
        radius_px=radius,
    )
    np.testing.assert_array_equal(lazy.values, whole)


@given(labels_st)
def test_erosion_matches_per_class_binary_erosion(labels):
    cross = ndimage.generate_binary_structure(2, 1)
    expected = np.zeros_like(labels)
    for c in np.unique(labels):
        keep = ndimage.binary_erosion(labels == c, structure=cross, border_value=1)
        expected[keep] = c
    np.testing.assert_array_equal(erode_labels(labels, 1), expected)


@given(labels_st, st.sampled_from([0.1, 0.25, 0.5, 1.0]), st.integers(0, 2**31))
def test_sampling_fraction_and_exclusion(labels, fraction, seed):
    r, c = sample_pixels(labels, fraction=fraction, exclude=[0], seed=seed, tile_id="t")
    got = labels[r, c]
    assert not (got == 0).any()
    for k in np.unique(labels):
        if k == 0:
            continue
        assert (got == k).sum() == int(np.rint(fraction * (labels == k).sum()))
    assert len(set(zip(r.tolist(), c.tolist()))) == len(r)


@given(labels_st, st.integers(0, 2**31))
def test_sampling_is_deterministic_and_position_based(labels, seed):
    a = sample_pixels(labels, fraction=0.25, exclude=[0], seed=seed, tile_id="t")
    b = sample_pixels(labels.copy(), fraction=0.25, exclude=[0], seed=seed, tile_id="t")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@given(labels_st, st.integers(2, 40), st.integers(2, 40), st.integers(0, 2**31))
def test_lazy_sampling_gathers_the_sampled_pixels_whatever_the_chunks(labels, cy, cx, seed):
    """One block (one task) or several (gather per block, then assemble): the same rows."""
    h, w = labels.shape
    rng = np.random.default_rng(seed)
    feat = rng.random((3, h, w), dtype=np.float32)
    feat2 = rng.random((3, h, w), dtype=np.float32)
    static = rng.random((h, w), dtype=np.float32)
    ds = xr.Dataset(
        {  # time split and the second feature's blocks unlike the labels': realigned
            "F": (("time", "y", "x"), da.from_array(feat, chunks=(2, cy, cx))),
            "G": (("time", "y", "x"), da.from_array(feat2, chunks=(3, cx, cy))),
            "H": (("y", "x"), da.from_array(static, chunks=(cy, cx))),
            "LULC_ERODED": (("y", "x"), da.from_array(labels, chunks=(cy, cx))),
        },
        coords={"y": np.arange(h) * -10.0, "x": np.arange(w) * 10.0},
        attrs={"features": ["F", "G"], "static_features": ["H"]},
    )
    got = sample_dataset(ds, "t", fraction=0.5, exclude=[0], seed=seed).compute(scheduler="sync")
    r, c = sample_pixels(labels, fraction=0.5, exclude=[0], seed=seed, tile_id="t")
    np.testing.assert_array_equal(got["row"], r)
    np.testing.assert_array_equal(got["col"], c)
    np.testing.assert_array_equal(got["X"][:, :, 0], feat[:, r, c].T)
    np.testing.assert_array_equal(got["X"][:, :, 1], feat2[:, r, c].T)
    assert got["X"].dtype == np.float32 and got["X"].shape == (r.size, 3, 2)
    np.testing.assert_array_equal(got["S"][:, 0], static[r, c])
    np.testing.assert_array_equal(got["y"], labels[r, c])
    np.testing.assert_array_equal(got["xcoord"], c * 10.0)


@given(series(), st.sampled_from([np.inf, -np.inf, np.nan]))
def test_non_finite_values_never_count_as_observations(s, bad):
    times, vals, valid = s
    dirty = vals.copy()
    dirty[0, :] = bad
    clean_valid = valid.copy()
    clean_valid[0, :] = False
    a = interpolate_to_grid(*_da(times, dirty, valid), GRID).values
    b = interpolate_to_grid(*_da(times, vals, clean_valid), GRID).values
    np.testing.assert_array_equal(a, b)


@given(series(), st.integers(1, 4))
def test_fused_features_equal_separate_ops(s, chunk):
    """The one-pass kernel gives exactly the per-feature interpolation of per-frame indices."""
    from eoflow.ops.fused import interpolate_features, recipes_for
    from eoflow.ops.indices import add_indices

    times, vals, valid = s
    a, v = _da(times, vals, valid)
    ds = xr.Dataset({"B03": a, "B08": a * 0.5 + 0.25, "NDVI": a}).chunk({"x": chunk})
    feats, n_obs, count = interpolate_features(
        ds, v.chunk({"x": chunk}), recipes_for(ds, ["NDVI", "NDWI"], ["B08"]), GRID
    )
    full, _ = add_indices(ds, ["NDWI"])
    for name in ("NDVI", "NDWI", "B08"):
        ref = interpolate_to_grid(full[name].astype("float32"), v, GRID).values
        np.testing.assert_array_equal(feats[name].values, ref)
    np.testing.assert_array_equal(n_obs.values, valid.sum(axis=0)[None, :])
    np.testing.assert_array_equal(count.values, valid_count(v).values)
    assert count.dtype == np.uint16


@given(series(), st.integers(1, 4), st.randoms(), st.sampled_from([np.inf, np.nan]))
def test_fused_features_on_chosen_frames_with_non_finite_values(s, chunk, rnd, bad):
    """``frames=`` equals selecting the frames first; non-finite values take the general path."""
    from eoflow.ops.fused import interpolate_features, recipes_for

    times, vals, valid = s
    dirty = vals.copy()
    dirty[rnd.randrange(len(times)), rnd.randrange(vals.shape[1])] = bad
    frames = np.array(sorted(rnd.sample(range(len(times)), rnd.randint(1, len(times)))))
    a, v = _da(times, dirty, valid)
    ds = xr.Dataset({"B03": a, "B08": a * 0.5 + 0.25, "NDVI": a}).chunk({"x": chunk})
    vc = v.chunk({"x": chunk})
    recipes = recipes_for(ds, ["NDVI", "NDWI"], ["B08"])
    got, n_got, c_got = interpolate_features(ds, vc, recipes, GRID, frames=frames[::-1])
    ref, n_ref, _ = interpolate_features(ds.isel(time=frames), vc.isel(time=frames), recipes, GRID)
    for name in ("NDVI", "NDWI", "B08"):
        np.testing.assert_array_equal(got[name].values, ref[name].values)
    np.testing.assert_array_equal(n_got.values, n_ref.values)
    # VALID_COUNT counts every frame, kept or not
    np.testing.assert_array_equal(c_got.values, valid_count(v).values)
    # the general path (non-finite values) equals the separate per-feature interpolation
    ndvi = interpolate_to_grid(a.isel(time=frames), v.isel(time=frames), GRID).values
    np.testing.assert_array_equal(got["NDVI"].values, ndvi)


@given(
    series(),
    st.integers(1, 4),
    st.sampled_from([(1e-4, 0.0), (1e-4, -0.1), (2.75e-5, -0.2)]),
    st.sampled_from([None, 0, 7]),
)
def test_fused_features_read_uint16_digital_numbers_as_reflectance(s, chunk, scale_off, nodata):
    """uint16 bands are read in place as ``float32(DN) / (1 / scale) + offset`` (nodata invalid)."""
    from eoflow.ops.fused import interpolate_features, recipes_for

    times, vals, valid = s
    scale, offset = scale_off
    dn = np.round((vals + 1.0) * 4000).astype(np.uint16)  # 0 .. 8000
    if nodata is not None:
        dn[0, :] = nodata
    attrs = {"scale": scale, "offset": offset, **({} if nodata is None else {"nodata": nodata})}
    a, v = _da(times, dn, valid)
    ds_dn = xr.Dataset({"B03": a.assign_attrs(attrs), "B08": (a // 2).assign_attrs(attrs)})
    ds_f = xr.Dataset({"B03": _da(times, _refl(dn, scale, offset, nodata), valid)[0],
                       "B08": _da(times, _refl(dn // 2, scale, offset, nodata), valid)[0]})  # fmt: skip
    recipes = recipes_for(ds_dn, ["NDWI"], ["B03", "B08"])
    vc = v.chunk({"x": chunk})
    got, n_got, _ = interpolate_features(ds_dn.chunk({"x": chunk}), vc, recipes, GRID)
    ref, n_ref, _ = interpolate_features(ds_f.chunk({"x": chunk}), vc, recipes, GRID)
    for name in ("NDWI", "B03", "B08"):
        np.testing.assert_array_equal(got[name].values, ref[name].values)
    np.testing.assert_array_equal(n_got.values, n_ref.values)
    if (scale, offset, nodata) == (1e-4, 0.0, None):  # exactly the float32 of DN / 10000
        exact = (dn.astype(np.float64) / 10000).astype(np.float32)
        np.testing.assert_array_equal(_refl(dn, scale, offset, nodata), exact)


def _refl(dn, scale, offset, nodata):
    """Reference reflectance of digital numbers, as float32 (NaN at nodata)."""
    out = np.float32(dn) / np.float32(1.0 / scale) + np.float32(offset)
    if nodata is not None:
        out[dn == nodata] = np.nan
    return out


@given(st.lists(st.integers(0, 40), min_size=1, max_size=8), st.integers(1, 32))
def test_sample_writer_streams_whole_chunks_and_keeps_every_row(sizes, chunk_rows):
    """Staged parts become whole chunks in tile order; a part goes once its rows are written."""
    import tempfile
    from pathlib import Path

    import zarr

    from eoflow.stages.sample import SAMPLE_ARRAYS, SampleWriter, open_samples, tag_part

    rng = np.random.default_rng(len(sizes) * 100 + chunk_rows)
    parts = [
        {
            "X": rng.random((k, 3, 2), dtype=np.float32),
            "S": np.zeros((k, 0), np.float32),
            "y": rng.integers(1, 5, k).astype(np.int32),
            "row": np.arange(k, dtype=np.int32),
            "col": np.arange(k, dtype=np.int32),
            "xcoord": rng.random(k),
            "ycoord": rng.random(k),
        }
        for k in sizes
    ]
    with tempfile.TemporaryDirectory() as tmp:
        w = SampleWriter(Path(tmp) / "s.zarr", {"a": 1}, chunk_rows=chunk_rows)
        for i, part in enumerate(parts):
            w.add(tag_part(part, i))
            assert w.n - w._submitted < chunk_rows  # every full chunk is written at once
            # only parts with rows not yet handed to a chunk write are held
            assert sum(hi - lo for _, lo, hi in w._queue) == w.n - w._submitted
        assert w.close() == sum(sizes)
        assert zarr.open_group(str(Path(tmp) / "s.zarr"), mode="r")["X"].chunks[0] == chunk_rows
        got = open_samples(Path(tmp) / "s.zarr")
    for name in SAMPLE_ARRAYS:
        want = (np.concatenate([np.full(k, i, np.int32) for i, k in enumerate(sizes)])
                if name == "tile" else np.concatenate([p[name] for p in parts]))  # fmt: skip
        np.testing.assert_array_equal(got[name], want)
    assert got["attrs"] == {"a": 1}


def test_add_indices_reads_digital_numbers_as_reflectance():
    """NDVI from uint16 bands with an offset is the NDVI of the reflectances, not of the DN."""
    from eoflow.ops.indices import add_indices, normalized_difference

    rng = np.random.default_rng(3)
    attrs = {"scale": 1e-4, "offset": -0.1, "nodata": 0}
    dn = {b: rng.integers(1, 6000, (3, 4, 5)).astype(np.uint16) for b in ("B04", "B08")}
    dn["B04"][0, 0, 0] = 0  # nodata
    ds = xr.Dataset({b: (("time", "y", "x"), v, attrs) for b, v in dn.items()}).chunk({"x": 2})
    got = add_indices(ds, ["NDVI"])[0]["NDVI"].values
    refl = {b: np.float32(v) / np.float32(1e4) - np.float32(0.1) for b, v in dn.items()}
    want = normalized_difference(xr.DataArray(refl["B08"]), xr.DataArray(refl["B04"])).values
    want[0, 0, 0] = np.nan
    np.testing.assert_array_equal(got, want)
    b08, b04 = dn["B08"].astype(np.float64), dn["B04"].astype(np.float64)
    assert not np.allclose(got[1:], ((b08 - b04) / (b08 + b04))[1:])  # the DN's own NDVI differs


@st.composite
def runs_of_masks(draw):
    """A 2 x w block whose pixels come in runs sharing their valid frames (as under clouds)."""
    t = draw(st.integers(1, 12))
    lengths = draw(st.lists(st.integers(1, 9), min_size=1, max_size=6))
    patterns = draw(arrays(np.bool_, (len(lengths), t)))
    valid = np.concatenate([np.repeat(p[:, None], n, axis=1) for p, n in zip(patterns, lengths)],
                           axis=1)  # fmt: skip
    valid = np.stack([valid, valid[:, ::-1]], axis=1)  # (t, 2, w): two rows
    w = valid.shape[2]
    vals = draw(arrays(np.float32, (t, 2, w), elements=st.floats(-1, 1, width=32)))
    days = draw(st.lists(st.integers(0, 364), min_size=t, max_size=t, unique=True))
    times = np.datetime64("2017-01-01", "ns") + np.array(sorted(days)) * np.timedelta64(1, "D")
    return times, vals, valid


@given(runs_of_masks(), st.integers(1, 5))
def test_fused_features_on_runs_of_pixels_sharing_their_frames(s, chunk):
    """Runs of pixels that share their valid frames (interpolated with shared weights) give
    exactly the per-pixel interpolation, whatever the runs' lengths and the chunking."""
    from eoflow.ops.fused import interpolate_features, recipes_for

    times, vals, valid = s
    coords = {"time": times, "y": [0, 1], "x": np.arange(vals.shape[2])}
    a = xr.DataArray(vals, dims=("time", "y", "x"), coords=coords)
    v = xr.DataArray(valid, dims=("time", "y", "x"), coords=coords)
    ds = xr.Dataset({"B03": a, "B08": a * 0.5 + 0.25}).chunk({"x": chunk})
    feats, n_obs, _ = interpolate_features(
        ds, v.chunk({"x": chunk}), recipes_for(ds, ["NDWI"], ["B08"]), GRID
    )
    for name in ("B08",):
        ref = interpolate_to_grid(ds[name], v, GRID).values
        np.testing.assert_array_equal(feats[name].values, ref)
    np.testing.assert_array_equal(n_obs.values, valid.sum(axis=0))


@given(
    arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 7)),
           elements=st.integers(0, 2)),
    st.data(),
)  # fmt: skip
def test_clm_frame_fraction_equals_the_mask_path(clm, data):
    """The one-pass CLM frame fraction equals valid_mask + frame_valid_fraction, with or
    without IS_DATA and on any chunking."""
    from eoflow.ops.masks import valid_mask
    from eoflow.ops.temporal import clm_frame_fraction, frame_valid_fraction

    t, h, w = clm.shape
    is_data = data.draw(arrays(np.uint8, clm.shape, elements=st.integers(0, 1)))
    cy, cx = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    times = np.datetime64("2017-01-01", "ns") + np.arange(t) * np.timedelta64(5, "D")
    dims = ("time", "y", "x")
    for with_data in (True, False):
        vars_ = {"CLM": (dims, clm)} | ({"IS_DATA": (dims, is_data)} if with_data else {})
        ds = xr.Dataset(vars_, coords={"time": times}).chunk({"y": cy, "x": cx})
        foot = (ds["IS_DATA"] != 0).any("time") if with_data else xr.ones_like(ds["CLM"][0])
        want = frame_valid_fraction(valid_mask(ds, how="clm"), foot).values
        got = clm_frame_fraction(ds)
        np.testing.assert_array_equal(got.values, want)
        assert got.dtype == np.float32 and list(got["time"].values) == list(times)
