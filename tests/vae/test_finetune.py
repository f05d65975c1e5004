"""Fine-tuning choices: held-out locations pick the step, log targets, Huber loss, attention head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from eoflow.errors import DataError
from eoflow.vae.config import load_vae_config
from eoflow.vae.data import SamplesStore, SeriesStream, TextSpec
from eoflow.vae.model import ByteVAE, model_config
from eoflow.vae.train import finetune, predict, pretrain

TEXT = TextSpec(features=["red", "nir", "ndvi"], precision=3, loc_precision=2, max_len=256)


def test_holdout_is_whole_locations_and_partitions_the_split(presto_store):
    kw = dict(mode="value", text=TEXT, split_array="is_test", split="train", target="lfmc")
    fit = SeriesStream(str(presto_store), holdout=0.2, part="fit", seed=3, **kw)
    held = SeriesStream(str(presto_store), holdout=0.2, part="holdout", seed=3, **kw)
    whole = SeriesStream(str(presto_store), **kw)
    a, b = fit.selected_rows(), held.selected_rows()
    assert not set(a) & set(b) and sorted({*a, *b}) == list(whole.selected_rows())
    assert 0.15 < b.size / whole.selected_rows().size < 0.3  # whole sites: not exactly 20 %
    s = SamplesStore(presto_store)
    xy = np.stack([s.vector("xcoord"), s.vector("ycoord")], 1)
    assert not {tuple(p) for p in xy[a]} & {tuple(p) for p in xy[b]}  # no site on both sides
    other = SeriesStream(str(presto_store), holdout=0.2, part="holdout", seed=4, **kw)
    assert set(other.selected_rows()) != set(b)  # the seed picks the sites
    assert sorted(x["index"] for x in held) == list(b)  # the stream yields exactly those rows


def test_attention_head_ignores_padding():
    torch.manual_seed(0)
    cfg = model_config("tiny", head_outputs=1, head_input="attention", head_queries=3)
    m = ByteVAE(cfg).eval()
    ids = torch.randint(3, 259, (2, 30))
    out, _ = m.predict_value(ids)
    padded = torch.cat([ids, torch.zeros(2, 9, dtype=torch.long)], 1)
    torch.testing.assert_close(m.predict_value(padded)[0], out, atol=1e-5, rtol=1e-5)
    assert out.shape == (2, 1) and m.head[0].in_features == 3 * cfg.d_model


def _cfg(tmp_path, presto_store, **finetune):
    cfg = {
        "out": str(tmp_path / "run"),
        "seed": 0,
        "threads": 1,
        "data": {"store": str(presto_store), "features": ["red", "nir", "ndvi", "tp"],
                 "split_array": "is_test"},
        "serialize": {"precision": 3, "loc_precision": 2, "max_len": 256},
        "model": {"preset": "tiny", "n_enc_layers": 1, "latent_dim": 8, "n_mem": 2},
        "pretrain": {"steps": 2, "batch_size": 8},
        "finetune": {"target": "lfmc", "steps": 12, "batch_size": 32, "lr": 0.003,
                     "checkpoint_every": 6, **finetune},
    }  # fmt: skip
    path = tmp_path / "vae.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_vae_config(path)


def test_validation_keeps_the_best_step_and_patience_stops(tmp_path, presto_store):
    cfg = _cfg(
        tmp_path, presto_store, val_fraction=0.15, eval_every=2, patience=2,
        target_transform="log", loss="huber",
    )  # fmt: skip
    pretrain(cfg)
    res = finetune(cfg)
    run = tmp_path / "run" / "finetune"
    vals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [(r["step"], r["val"]) for r in vals if "val" in r and "loss" not in r]
    best_step, best = min(vals, key=lambda sv: (sv[1], sv[0]))
    v = res["validation"]
    assert v["step"] == best_step and v["score"] == pytest.approx(best) and v["rows"] > 100
    # patience 2: training stops two passes after the best one, or runs all 12 steps
    assert res["steps"] == min(12, best_step + 2 * 2) == vals[-1][0]
    meta = json.loads((run / "model.json").read_text())
    assert meta["best"]["step"] == best_step and meta["head"]["transform"] == "log"
    man = json.loads((run / "manifest.json").read_text())
    assert "best/" in man["outputs"] and man["results"]["validation"]["step"] == best_step
    assert (run / "best" / "model.safetensors").is_file()
    # the saved model is the best one: predicting the held-out rows again gives its score
    from eoflow.vae.checkpoint import load_model
    from eoflow.vae.train import _validator, _value_dataset

    model, meta = load_model(run)
    held = _value_dataset(cfg, "lfmc", "train", shuffle=False, text=TextSpec(**meta["text"]),
                          holdout=0.15, part="holdout")  # fmt: skip
    score = _validator(held, meta, torch.device("cpu"))(model)
    assert score == pytest.approx(best, rel=1e-5)
    m = predict(cfg)
    preds = np.loadtxt(tmp_path / "run" / "predict" / "predictions.csv", delimiter=",", skiprows=1)
    assert m["n"] == 735 and (preds[:, 1] > 0).all()  # exp of the log-scale head: positive


def test_log_transform_needs_positive_targets(tmp_path, presto_store, cut):
    import zarr

    store = cut(tmp_path / "s.zarr", np.arange(40), chunk=20)
    g = zarr.open_group(str(store), mode="r+")
    t = np.asarray(g["target"][...])
    t[3] = 0.0
    g["target"][...] = t
    cfg = _cfg(tmp_path, store, target_transform="log", steps=2)
    pretrain(cfg)
    with pytest.raises(DataError, match="target_transform"):
        finetune(cfg)
