"""Streaming reader: exact coverage across DataLoader workers and ranks, store validation."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from torch.utils.data import DataLoader

from eoflow.errors import InputError
from eoflow.vae.data import SamplesStore, SeriesStream, TextSpec, collate
from eoflow.vae.serialize import from_sexpr
from eoflow.vae.tokenizer import EOS_ID, TASK_SPANS_ID, TASK_TEXT_ID, decode

FEATS = TextSpec(features=["red", "nir", "ndvi"])


def _rows(loader) -> list[int]:
    return [int(i) for batch in loader for i in batch["index"]]


def test_every_sample_once_per_epoch_across_workers(tmp_path, cut):
    store = cut(tmp_path / "s.zarr", np.arange(203), chunk=16)  # 13 shards, last one short
    ds = SeriesStream(str(store), mode="pretrain", text=FEATS, seed=3)
    seen = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate)
        rows = _rows(loader)
        assert sorted(rows) == list(range(203))  # each exactly once
        seen.append(rows)
    assert seen[0] != seen[1]  # reshuffled per epoch
    ds.set_epoch(0)
    assert (
        _rows(DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate)) == seen[0]
    )  # reproducible


def test_ranks_and_workers_partition_the_split(tmp_path, cut):
    store = cut(tmp_path / "s.zarr", np.arange(150), chunk=10)
    test_rows = set(np.flatnonzero(zarr.open_group(str(store), mode="r")["is_test"][...]).tolist())
    parts = []
    for rank in range(2):
        ds = SeriesStream(str(store), mode="value", target="lfmc", text=FEATS, split_array="is_test",
                          split="train", rank=rank, world_size=2)  # fmt: skip
        parts.append(_rows(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)))
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(set(range(150)) - test_rows)


def test_examples_are_real_text_and_t5_targets(presto_store):
    ds = SeriesStream(str(presto_store), mode="pretrain", text=FEATS, denoise_fraction=0.5, seed=0)
    exs = [ex for _, ex in zip(range(40), ds)]
    assert {e["start"] for e in exs} == {TASK_TEXT_ID, TASK_SPANS_ID}
    for e in exs:
        assert e["labels"][-1] == EOS_ID
        if e["start"] == TASK_TEXT_ID:  # whole-text target parses back to the stored series
            s = from_sexpr(decode(e["labels"]))
            assert s.features == ["red", "nir", "ndvi"] and len(s.dates) == 3
    b = collate(exs[:4])
    assert b["decoder_input_ids"][:, 0].tolist() == [e["start"] for e in exs[:4]]
    assert (
        b["labels"][:, :-1][b["labels"][:, 1:] != -100]
        == b["decoder_input_ids"][:, 1:][b["labels"][:, 1:] != -100]
    ).all()


def test_reader_accepts_the_pipeline_layout(tmp_path):
    # docs/formats.md layout as the sample stage writes it: shared time grid, no per-sample dates
    g = zarr.open_group(str(tmp_path / "samples.zarr"), mode="w", zarr_format=3)
    n, t, f = 10, 24, 9
    rng = np.random.default_rng(0)
    arrays = {"X": rng.uniform(-1, 1, (n, t, f)).astype("float32"), "y": rng.integers(1, 4, n).astype("int32"),
              "tile": np.zeros(n, "int32"), "row": np.arange(n, dtype="int32"), "col": np.arange(n, dtype="int32"),
              "xcoord": np.linspace(465000, 466000, n), "ycoord": np.linspace(5080000, 5081000, n)}  # fmt: skip
    for k, a in arrays.items():
        g.create_array(k, shape=a.shape, dtype=a.dtype, chunks=(4, *a.shape[1:]))[...] = a
    feats = ["NDVI", "NDWI", "B03", "B04", "B08", "B11", "NDBI", "MSAVI", "DEM"]
    g.attrs.update({"features": feats, "time": [f"2017-{m:02d}-{d:02d}" for m in range(1, 13) for d in (1, 16)],
                    "tiles": ["t0"], "crs": "EPSG:32633",
                    "classes": [{"id": i, "name": f"c{i}", "color": "#000000"} for i in (1, 2, 3)]})  # fmt: skip
    ds = SeriesStream(
        str(tmp_path / "samples.zarr"), mode="value", target="class", text=TextSpec(loc_precision=2)
    )
    exs = list(ds)
    assert sorted(e["index"] for e in exs) == list(range(n))
    s = from_sexpr(decode(exs[0]["input_ids"]))
    assert s.features == feats and s.dates[0] == "2017-01-01" and len(s.dates) == 24
    assert len(exs[0]["input_ids"]) <= 2048  # a 24 x 9 year fits the default encoder length
    assert {e["value"] for e in exs} <= {0.0, 1.0, 2.0}  # class ids 1..3 -> indices


def test_store_errors_name_the_culprit(tmp_path, presto_store):
    with pytest.raises(InputError, match="not found"):
        SamplesStore(tmp_path / "nope.zarr")
    with pytest.raises(InputError, match="features"):
        SamplesStore(presto_store).feature_index(["blue", "nope"])
    with pytest.raises(InputError, match="target 'x'"):
        SamplesStore(presto_store).target_array("x")
