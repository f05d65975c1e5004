"""What the VAE's value head has to work with: the same MLP on the numbers, the digits, or the
place values of the fine-tuning texts (fuel moisture, Presto's split).

    python -m benchmarks.vae.head_inputs [--config YAML] [--pretrained DIR]

Every row trains the MLP of ``mlp_reference`` (epochs by 5-fold CV over training sites, then
8 seeds on every training row, test split used once) on one view of the same pixels:

* ``numbers``: the 54 store values plus the location (``mlp_reference``'s own inputs);
* ``digits``: each digit byte of the text in its (atom, place) slot, the layout the ``fields``
  head reads;
* ``values``: each atom's digits read as a decimal number by place value (``0104`` -> 0.0104),
  plus a count of its minus signs, with exact digits;
* ``values, signed``: the same numbers negated where the atom opens with a minus sign, one column
  per atom: what the ``values`` head reads (``head_slot_dim: 0``), with exact digits; and again
  through the values head's own input layer, ``head_periodic`` (``values, signed, periodic``;
  ``numbers, periodic`` is that network on the 56 numbers);
* ``values, probed digits`` (with ``--pretrained``): the same, but every digit read back from the
  pretrained encoder's state by a least-squares probe, as a head would have to before
  ``finetune.digit_loss`` (the probe's digit RMSE is printed too).

The digits and values are computed from the bytes of the texts the VAE fine-tunes on (the
config's serialisation), so the rows differ only in how the same numbers reach the network.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _texts(cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Byte ids (padded) and targets of ``split``'s fine-tuning texts, in store order."""
    from eoflow.vae.train import _value_dataset, text_spec

    ds = _value_dataset(cfg, cfg.finetune.target, split, shuffle=False, text=text_spec(cfg))
    rows = sorted(ds, key=lambda ex: int(ex["index"]))
    n = max(len(ex["input_ids"]) for ex in rows)
    ids = np.stack(
        [np.pad(np.asarray(ex["input_ids"]), (0, n - len(ex["input_ids"]))) for ex in rows]
    )
    return ids, np.array([float(ex["value"]) for ex in rows])


def digits(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which bytes of ``ids`` are digits, and each byte's digit value (0 elsewhere)."""
    from eoflow.vae.tokenizer import OFFSET

    mask = (ids >= OFFSET + ord("0")) & (ids <= OFFSET + ord("9"))
    return mask, np.where(mask, ids - OFFSET - ord("0"), 0).astype(np.float64)


def views(ids: np.ndarray, n_fields: int, digit_value: np.ndarray, places: int = 6) -> dict:
    """``digits`` (atom x place slots), ``values`` (place value per atom + minus signs) and
    ``values, signed`` (place value per atom, negated when the atom opens with a minus sign)."""
    import torch

    from eoflow.vae.model import _atom_sign, atom_digits, atom_slots
    from eoflow.vae.tokenizer import OFFSET

    t = torch.as_tensor(ids, dtype=torch.long)
    digit, _ = digits(ids)
    minus = ids == OFFSET + ord("-")
    rows = np.arange(len(ids))[:, None].repeat(ids.shape[1], 1)
    slots = atom_slots(t, n_fields, places).numpy()
    dig = np.zeros((len(ids), n_fields * places + 1))
    np.add.at(dig, (rows[digit], slots[digit]), digit_value[digit])
    atom, weight = (a.numpy() for a in atom_digits(t, n_fields))
    val = np.zeros((len(ids), n_fields + 1))
    np.add.at(val, (rows, atom), digit_value * weight)
    every = atom_slots(t, n_fields, 2) // 2  # every byte's atom
    which = every.numpy()
    sign = np.zeros((len(ids), n_fields + 1))
    np.add.at(sign, (rows[minus], which[minus]), 1.0)
    signed = val * _atom_sign(t, every, n_fields).numpy()
    return {
        "digits": dig[:, :-1],
        "values": np.concatenate([val[:, :-1], sign[:, :-1]], 1),
        "values, signed": signed[:, :-1],
    }


def probed_digits(
    pretrained: Path, ids: np.ndarray, fit_rows: np.ndarray
) -> tuple[np.ndarray, float]:
    """Every byte's digit read from the pretrained encoder's state by a ridge probe fitted on the
    digit bytes of ``fit_rows``; returns the readings and the probe's digit RMSE on the others."""
    import torch
    from sklearn.linear_model import Ridge

    from eoflow.vae.checkpoint import load_model

    model, _ = load_model(pretrained)
    model.eval()
    states = []
    with torch.no_grad():
        for i in range(0, len(ids), 64):
            b = torch.as_tensor(ids[i : i + 64], dtype=torch.long)
            h, _ = model.encode(b, bool((b == 0).any()))
            states.append(h.float().numpy())
    h = np.concatenate(states)
    digit, true = digits(ids)
    fit = digit & fit_rows[:, None]
    probe = Ridge(alpha=1.0).fit(h[fit], true[fit])
    read = np.where(digit, probe.predict(h.reshape(-1, h.shape[-1])).reshape(ids.shape), 0.0)
    held = digit & ~fit_rows[:, None]
    return read, float(np.sqrt(np.mean((read[held] - true[held]) ** 2)))


def main(argv: list[str] | None = None) -> int:
    from benchmarks.vae.fuel_moisture import load_xy
    from benchmarks.vae.mlp_reference import mlp_reference
    from eoflow.vae.config import load_vae_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=HERE / "fuel_moisture.yaml")
    p.add_argument("--pretrained", type=Path, help="pretrain output dir: adds the probed row")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    cfg = load_vae_config(a.config)
    x, y, test = load_xy(cfg.path(cfg.data.store))
    site = np.unique(x[:, -2:], axis=0, return_inverse=True)[1].ravel()
    tr_ids, tr_y = _texts(cfg, "train")
    te_ids, te_y = _texts(cfg, "test")
    assert np.allclose(tr_y, y[~test]) and np.allclose(te_y, y[test]), "texts follow store order"
    n = max(tr_ids.shape[1], te_ids.shape[1])
    ids = np.zeros((len(y), n), np.int64)
    ids[~test, : tr_ids.shape[1]], ids[test, : te_ids.shape[1]] = tr_ids, te_ids
    f = cfg.finetune.head_fields
    inputs = {"numbers": x, **views(ids, f, digits(ids)[1])}
    extra = {}
    if a.pretrained:
        read, err = probed_digits(a.pretrained, ids, ~test)
        inputs["values, probed digits"] = views(ids, f, read)["values"]
        extra["probe digit RMSE (test texts)"] = round(err, 4)
    periodic = {"numbers, periodic": "numbers", "values, signed, periodic": "values, signed"}
    res = {}
    for name in [*inputs, *periodic]:
        feats = inputs[periodic.get(name, name)]
        res[name] = mlp_reference(feats, y, test, a.seed, site=site, periodic=name in periodic)
        print(f"| {name} | {feats.shape[1]} | {res[name]['rmse']:.2f} | {res[name]['cv_rmse']:.2f} |"
              f" {res[name]['epochs']} |", flush=True)  # fmt: skip
    out = cfg.path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "head_inputs.json").write_text(json.dumps({**res, **extra}, indent=2) + "\n")
    print(json.dumps(extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
