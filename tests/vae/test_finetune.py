"""Fine-tuning choices: held-out locations pick the step, log targets, Huber loss, the heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from eoflow.errors import ConfigError, DataError
from eoflow.vae.checkpoint import load_model
from eoflow.vae.config import load_vae_config
from eoflow.vae.data import SamplesStore, SeriesStream, TextSpec
from eoflow.vae.model import (
    ByteVAE,
    PeriodicEmbedding,
    ValuePool,
    _atom_sign,
    atom_digits,
    atom_slots,
    model_config,
    n_atoms,
)
from eoflow.vae.serialize import PixelSeries, to_sexpr
from eoflow.vae.tokenizer import encode
from eoflow.vae.train import finetune, predict, pretrain, text_spec

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
    assert out.shape == (2, 1) and m.head[1].in_features == 3 * cfg.d_model


def _number_slots(text: str) -> list[list[int]]:
    """Slots of the digits of every number-like atom, in text order."""
    ids = torch.tensor(encode(text, add_eos=True))[None]
    slots = atom_slots(ids, 64, 6)[0].tolist()
    atoms: dict[int, list[int]] = {}
    for ch, sl in zip(text, slots):
        if ch.isdigit():
            atoms.setdefault(sl // 6, []).append(sl)
    return [atoms[a] for a in sorted(atoms)]


def test_field_slots_name_a_number_and_its_digit_places_whatever_the_widths():
    s = PixelSeries(x=-9.5, y=43.25, dates=["2020-01-15", "2020-02-15"], features=["vv", "red"],
                    values=np.array([[-7.5, 0.081], [-12.25, 0.1234]]))  # fmt: skip
    narrow = to_sexpr(s, precision={"vv": 1, "red": 3}, loc_precision=1)
    wide = to_sexpr(s.__class__(**{**s.__dict__, "x": -109.5}), precision={"vv": 1, "red": 3},
                    loc_precision=1, widths=5)  # fmt: skip
    a, b = _number_slots(narrow), _number_slots(wide)
    assert len(a) == len(b)  # same atoms, in the same slots: the n-th number is the n-th atom
    for da, db in zip(a, b):
        assert {x // 6 for x in da} == {x // 6 for x in db}
        assert da[-1] % 6 == db[-1] % 6 == 0  # last digit: place 0 whatever the width
        assert [x % 6 for x in da] == [min(len(da) - 1 - i, 4) for i in range(len(da))]
    assert n_atoms(torch.tensor(encode(narrow))[None]) == n_atoms(torch.tensor(encode(wide))[None])


def test_fields_head_ignores_padding_and_reads_digits():
    torch.manual_seed(0)
    cfg = model_config("tiny", head_outputs=1, head_input="fields", head_fields=40, head_places=4)
    m = ByteVAE(cfg).eval()
    ids = torch.tensor(np.stack([encode("((pts (0104 -12) (0099 7)))")] * 2))
    ids[1, 7] = encode("5")[0]  # one digit differs: the output must too
    out, _ = m.predict_value(ids)
    padded = torch.cat([ids, torch.zeros(2, 9, dtype=torch.long)], 1)
    torch.testing.assert_close(m.predict_value(padded)[0], out, atol=1e-5, rtol=1e-5)
    assert out[0] != out[1] and m.head[1].in_features == 40 * 4 * cfg.head_slot_dim


def test_atom_digits_read_each_atom_as_a_decimal_fraction():
    text = "(a -0104 (t 2001-04-15) 7.25)"
    ids = torch.tensor(np.array([encode(text)]))
    atom, weight = atom_digits(ids, 6)
    got: dict[int, float] = {}
    for ch, a, w in zip(text, atom[0].tolist(), weight[0].tolist()):
        if a < 6:
            got[a] = got.get(a, 0.0) + int(ch) * w
    # every separator opens an atom: -0104 is atom 2, 2001-04-15 atom 5, 7.25 atom 7 (no slot)
    assert sorted(got) == [2, 5]
    assert [got[2], got[5]] == pytest.approx([0.0104, 0.20010415], rel=1e-6)
    assert float(weight[0, -5:].sum()) == 0.0 and int(atom[0, 0]) == 6
    # the values head negates an atom that opens with a minus sign, not a date's hyphens
    sign = _atom_sign(ids, atom_slots(ids, 8, 2) // 2, 8)
    assert sign[0, :8].tolist() == [1, 1, -1, 1, 1, 1, 1, 1]


@pytest.mark.parametrize("k", [0, 1])
def test_values_head_reads_place_values_and_ignores_padding(k):
    torch.manual_seed(0)
    cfg = model_config("tiny", head_outputs=1, head_input="values", head_fields=10, head_slot_dim=k)
    pool = ValuePool(cfg).eval()
    pool.norm.running_var.fill_(1 - pool.norm.eps)  # identity standardisation
    ids = torch.tensor(np.array([encode("((pts (0104 -12) (0099 7)))")]))
    digit = (ids[0] >= encode("0")[0]) & (ids[0] <= encode("9")[0])
    h = torch.zeros(1, ids.shape[1], cfg.d_model)  # state dims 0-9: one-hot of the digit
    h[0, digit, ids[0, digit] - encode("0")[0]] = 1.0
    with torch.no_grad():
        pool.digit.weight.zero_()
        pool.digit.weight[:, :10] = 50 * torch.eye(10)
        pool.digit.bias.zero_()
    x = pool(h, ids).detach()
    # atoms 4, 5, 8, 9 hold 0104, -12, 0099, 7: their signed place values (value first of 1 + k per atom)
    np.testing.assert_allclose(
        x[0, [a * (1 + k) for a in (4, 5, 8, 9)]].numpy(), [0.0104, -0.12, 0.0099, 0.7], rtol=1e-4
    )
    assert float(pool.digit_loss.detach()) < 1e-3  # the reading agrees with the bytes
    assert x.shape == (1, 10 * (1 + 2 * k))  # k = 0: the values alone
    m = ByteVAE(cfg).eval()
    out, aux = m.predict_value(ids)
    padded = torch.cat([ids, torch.zeros(1, 9, dtype=torch.long)], 1)
    torch.testing.assert_close(m.predict_value(padded)[0], out, atol=1e-5, rtol=1e-5)
    assert float(aux["digit_loss"].detach()) > 1.0  # untrained: about ln 10
    m.train()
    assert m.predict_value(ids)[0].shape == (1, 1)  # one row in training mode: running statistics


@pytest.mark.parametrize("grad", [True, False])
def test_values_head_can_keep_the_target_gradient_off_its_digit_reading(grad):
    torch.manual_seed(0)
    cfg = model_config(
        "tiny", head_outputs=1, head_input="values", head_fields=10, head_slot_dim=0,
        head_value_grad=grad,
    )  # fmt: skip
    m = ByteVAE(cfg).train()
    texts = ["((pts (0104 -12) (0099 7)))", "((pts (0317 -45) (0021 3)))"]  # batch statistics
    ids = torch.tensor(np.array([encode(t) for t in texts]))
    out, aux = m.predict_value(ids)
    out.sum().backward(retain_graph=True)  # the target's path only
    digit = m.head_fields.digit.weight.grad
    assert (digit is not None and float(digit.abs().sum()) > 0) is grad
    assert float(m.embed.weight.grad.abs().sum()) > 0 if grad else m.embed.weight.grad is None
    aux["digit_loss"].backward()  # digit_loss trains the reading either way
    assert float(m.head_fields.digit.weight.grad.abs().sum()) > 0


def test_periodic_embedding_gives_each_number_its_own_features():
    torch.manual_seed(0)
    emb = PeriodicEmbedding(3, k=4, dim=5, sigma=1.0)
    x = torch.tensor([[0.5, -1.0, 2.0], [0.5, 3.0, 2.0]])
    e = emb(x).view(2, 3, 5)
    assert e.shape == (2, 3, 5) and bool((e >= 0).all())  # ReLU output
    # only the second number differs between the rows: only its features may differ
    torch.testing.assert_close(e[0, [0, 2]], e[1, [0, 2]])
    assert not torch.allclose(e[0, 1], e[1, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 whatever the autocast dtype
        assert emb(x).dtype == torch.float32
    a = 2 * torch.pi * emb.freq[1] * -1.0  # number 1 of row 0 by hand
    want = torch.relu(torch.cat([a.sin(), a.cos()]) @ emb.weight[1] + emb.bias[1])
    torch.testing.assert_close(e[0, 1], want)


def test_periodic_inputs_shape_the_head_and_survive_a_checkpoint(tmp_path):
    from eoflow.vae.checkpoint import load_model, save_model

    cfg = model_config(
        "tiny", head_outputs=1, head_input="values", head_fields=10, head_slot_dim=0,
        head_hidden=8, head_periodic=4, head_periodic_dim=3,
    )  # fmt: skip
    m = ByteVAE(cfg).eval()
    linear = [layer for layer in m.head if isinstance(layer, torch.nn.Linear)]
    assert isinstance(m.head[0], PeriodicEmbedding)
    assert [(lin.in_features, lin.out_features) for lin in linear] == [(30, 8), (8, 1)]
    ids = torch.tensor(np.array([encode("((pts (0104 -12) (0099 7)))")]))
    out = m.predict_value(ids)[0]
    save_model(m, tmp_path / "m", meta={})
    back, _ = load_model(tmp_path / "m")
    torch.testing.assert_close(back.eval().predict_value(ids)[0], out)


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


def test_fields_head_must_cover_the_texts(tmp_path, presto_store, cut):
    store = cut(tmp_path / "s.zarr", np.arange(40), chunk=20)
    cfg = _cfg(tmp_path, store, head_input="fields", head_fields=20, steps=2)
    pretrain(cfg)
    with pytest.raises(ConfigError, match="head_fields"):
        finetune(cfg)
    cfg = _cfg(tmp_path, store, head_input="fields", head_fields=96, steps=2)
    assert finetune(cfg)["steps"] == 2
    cfg = _cfg(tmp_path, store, head_input="values", head_fields=96, steps=2, head_periodic=4)
    assert finetune(cfg)["steps"] == 2
    from eoflow.vae.checkpoint import load_model

    model, _ = load_model(tmp_path / "run" / "finetune")  # finetune.head_* reach the model:
    # each atom's value and 2 x 4 context numbers (head_slot_dim 4), each through 4 frequencies
    assert isinstance(model.head[0], PeriodicEmbedding) and model.head[0].freq.shape == (96 * 9, 4)


def test_members_are_averaged_by_finetune_and_predict(tmp_path, presto_store, cut):
    from eoflow.vae.train import _value_dataset, evaluate, load_ensemble

    store = cut(tmp_path / "s.zarr", np.arange(300), chunk=100)
    cfg = _cfg(tmp_path, store, steps=4, members=2, val_fraction=0.2, eval_every=2,
               target_transform="log")  # fmt: skip
    pretrain(cfg)
    res = finetune(cfg)
    run = tmp_path / "run" / "finetune"
    assert json.loads((run / "model.json").read_text())["members"] == ["member-1"]
    assert (run / "member-1" / "model.safetensors").is_file() and len(res["members"]) == 2
    top, m1 = (json.loads((d / "manifest.json").read_text()) for d in (run, run / "member-1"))
    assert top["seeds"]["members"] == [0, 1] and m1["seeds"]["seed"] == 1  # member k: seed + k
    models, metas = load_ensemble(run)
    ds = _value_dataset(cfg, "lfmc", "test", shuffle=False, text=TextSpec(**metas[0]["text"]))
    _, p0, _, _ = evaluate(models[0], ds, metas[0], torch.device("cpu"))
    _, p1, _, _ = evaluate(models[1], ds, metas[1], torch.device("cpu"))
    _, pe, _, m = evaluate(models, ds, metas, torch.device("cpu"))
    np.testing.assert_allclose(pe, np.sqrt(p0 * p1), rtol=1e-6)  # mean of the logs
    assert not np.allclose(p0, p1)
    assert m["rmse"] == pytest.approx(res["test"]["rmse"])
    assert predict(cfg)["rmse"] == pytest.approx(m["rmse"])


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_encoder_lr_scale_freezes_or_slows_the_pretrained_body(tmp_path, presto_store, cut, scale):
    from eoflow.vae.checkpoint import load_model

    store = cut(tmp_path / "s.zarr", np.arange(80), chunk=40)
    cfg = _cfg(tmp_path, store, steps=3, encoder_lr_scale=scale, head_input="fields",
               head_fields=96)  # fmt: skip
    pretrain(cfg)
    finetune(cfg)
    pre, _ = load_model(tmp_path / "run" / "pretrain")
    fine, _ = load_model(tmp_path / "run" / "finetune")
    pre_sd, fine_sd = pre.state_dict(), fine.state_dict()
    moved = {k for k in pre_sd if not torch.equal(pre_sd[k], fine_sd[k])}
    if scale == 0:
        assert not moved  # frozen: every pretrained weight is as it was
    else:
        assert "embed.weight" in moved
    assert any(k.startswith("head") for k in fine_sd)


@pytest.mark.parametrize("refits", [None, 3])
def test_refit_picks_one_step_on_the_pooled_curves_then_trains_on_every_row(
    tmp_path, presto_store, cut, refits
):
    store = cut(tmp_path / "s.zarr", np.arange(300), chunk=100)
    cfg = _cfg(tmp_path, store, steps=8, members=2, val_fraction=0.2, eval_every=2, refit=True,
               target_transform="log", loss="huber", refit_members=refits)  # fmt: skip
    pretrain(cfg)
    res = finetune(cfg)
    run = tmp_path / "run" / "finetune"
    curves = []
    for k in (0, 1):
        lines = (run / "select" / f"member-{k}" / "metrics.jsonl").read_text().splitlines()
        curves.append({r["step"]: r["val"] for r in map(json.loads, lines) if "loss" not in r})
    assert set(curves[0]) == set(curves[1]) == {2, 4, 6, 8}
    pooled = {st: np.sqrt((curves[0][st] ** 2 + curves[1][st] ** 2) / 2) for st in curves[0]}
    step = min(pooled, key=lambda st: (pooled[st], st))
    assert res["refit"]["step"] == step
    assert res["refit"]["score"] == pytest.approx(pooled[step])
    n = refits or 2  # two members choose the step; refit_members refits are averaged
    assert sorted(p.name for p in (run / "select").iterdir()) == ["member-0", "member-1"]
    assert [m["steps"] for m in res["members"]] == [step] * n
    # the refits hold nothing out: no validation, no best/ directory
    for d in (run, *(run / f"member-{k}" for k in range(1, n))):
        man = json.loads((d / "manifest.json").read_text())
        assert "validation" not in man["results"] and not (d / "best").exists()
    members = [f"member-{k}" for k in range(1, n)]
    assert json.loads((run / "model.json").read_text())["members"] == members
    assert json.loads((run / "manifest.json").read_text())["seeds"]["members"] == list(range(n))
    assert predict(cfg)["rmse"] == pytest.approx(res["test"]["rmse"])


def test_refit_needs_held_out_sites(tmp_path, presto_store):
    cfg = _cfg(tmp_path, presto_store, refit=True)
    with pytest.raises(ConfigError, match="val_fraction"):
        finetune(cfg)
    with pytest.raises(ConfigError, match="refit_members needs refit"):
        _cfg(tmp_path, presto_store, refit_members=4)


def test_values_head_learns_to_read_its_digits(tmp_path, presto_store, cut):
    store = cut(tmp_path / "s.zarr", np.arange(200), chunk=100)
    cfg = _cfg(tmp_path, store, steps=30, head_input="values", head_fields=96, log_every=1,
               lr=0.01, checkpoint_every=30)  # fmt: skip
    pretrain(cfg)
    finetune(cfg)
    lines = (tmp_path / "run" / "finetune" / "metrics.jsonl").read_text().splitlines()
    ce = [r["digit_ce"] for r in map(json.loads, lines) if "digit_ce" in r]
    assert len(ce) == 30 and ce[0] > 1.5 and np.mean(ce[-5:]) < 0.5 * ce[0]


def test_fixed_value_norm_standardises_by_the_exact_numbers_of_the_training_texts(
    tmp_path, presto_store, cut
):
    text = "(a -0104 (t 2001-04-15) 7.25)"
    cfg = model_config("tiny", head_outputs=1, head_input="values", head_fields=8, head_slot_dim=0)
    x = ValuePool(cfg).exact(torch.tensor(np.array([encode(text)])))
    assert x[0].tolist() == pytest.approx([0, 0, -0.0104, 0, 0, 0.20010415, 0, 0.725], rel=1e-6)

    store = cut(tmp_path / "s.zarr", np.arange(200), chunk=100)
    cfg = _cfg(tmp_path, store, steps=6, head_input="values", head_fields=96, head_slot_dim=0,
               head_norm="fixed", checkpoint_every=6)  # fmt: skip
    pretrain(cfg)
    finetune(cfg)
    model, _ = load_model(tmp_path / "run" / "finetune")
    pool = model.head_fields
    assert pool.fixed
    ds = SeriesStream(str(store), mode="value", text=text_spec(cfg), split_array="is_test",
                      split="train", target="lfmc")  # fmt: skip
    rows = torch.cat([pool.exact(torch.as_tensor(ex["input_ids"])[None]) for ex in ds])
    # computed once from the texts, not moved by the training batches
    assert pool.norm.running_mean.tolist() == pytest.approx(rows.mean(0).tolist(), abs=1e-6)
    assert pool.norm.running_var.tolist() == pytest.approx(rows.var(0).tolist(), abs=1e-6)
    with pytest.raises(ConfigError, match="head_norm: fixed"):
        _cfg(tmp_path, store, head_input="values", head_slot_dim=1, head_norm="fixed")
