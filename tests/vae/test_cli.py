"""End to end: eoflow vae pretrain -> finetune -> predict -> explore on the shipped Presto data."""

from __future__ import annotations

import json

import yaml

from eoflow.cli.main import main


def _config(tmp_path, presto_store, **over):
    cfg = {
        "out": str(tmp_path / "run"),
        "seed": 1,
        "threads": 1,
        "data": {
            "store": str(presto_store),
            "features": ["red", "nir", "ndvi"],
            "split_array": "is_test",
        },
        "serialize": {"precision": 3, "loc_precision": 2, "max_len": 256},
        "model": {"preset": "tiny", "n_enc_layers": 2, "latent_dim": 8, "n_mem": 2},
        "pretrain": {
            "steps": 6,
            "batch_size": 8,
            "checkpoint_every": 3,
            "log_every": 2,
            "num_workers": 0,
        },
        "finetune": {"target": "lfmc", "steps": 6, "batch_size": 16, "checkpoint_every": 3},
        "predict": {"split": "test", "batch_size": 128},
        "explore": {
            "n_points": 60,
            "n_prior": 2,
            "max_decode_len": 24,
            "interp_steps": 3,
            "traverse_steps": 3,
            "umap": False,
        },  # fmt: skip  (UMAP's numba JIT alone takes ~30 s on 2 cores)
    }
    cfg.update(over)
    path = tmp_path / "vae.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pretrain_finetune_predict_explore(tmp_path, presto_store, capsys):
    cfg = _config(tmp_path, presto_store)
    run = tmp_path / "run"
    assert main(["vae", "pretrain", str(cfg)]) == 0
    assert (run / "pretrain" / "model.safetensors").is_file()
    assert sorted(p.name for p in (run / "pretrain" / "checkpoints").iterdir()) == [
        "step-0000003",
        "step-0000006",
    ]
    man = json.loads((run / "pretrain" / "manifest.json").read_text())
    assert man["command"] == "vae pretrain" and man["seeds"]["seed"] == 1
    assert man["inputs"]["n"] == 2313 and man["parameters"]["pretrain"]["steps"] == 6
    assert {"torch", "numpy", "zarr", "python"} <= set(man["versions"]) and "commit" in man["git"]
    lines = [json.loads(x) for x in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "ce", "kl", "beta", "tokens_per_s"} <= set(lines[-1])

    assert main(["vae", "pretrain", str(cfg), "--resume"]) == 0  # nothing left to do, but resumes
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed"] is True

    assert main(["vae", "finetune", str(cfg)]) == 0
    ev = json.loads((run / "finetune" / "eval.json").read_text())
    assert ev["n"] == 735 and ev["rmse"] > 0

    assert main(["vae", "predict", str(cfg)]) == 0
    rows = (run / "predict" / "predictions.csv").read_text().splitlines()
    assert rows[0] == "row,prediction,truth" and len(rows) == 736
    assert json.loads((run / "predict" / "metrics.json").read_text())["rmse"] == ev["rmse"]
    assert (run / "predict" / "manifest.json").is_file()

    assert main(["vae", "explore", str(cfg)]) == 0
    s = json.loads((run / "explore" / "summary.json").read_text())
    assert 0.0 <= s["prior"]["parse_valid_rate"] <= 1.0 and s["n_points"] == 60
    assert {"kmeans", "gmm", "dbscan"} <= set(s["clustering"])
    for fig in ["prior_samples.png", "interpolation.png", "traversal.png", "pca_classes.png"]:
        assert (run / "explore" / fig).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "explore" / "manifest.json").read_text())["command"] == "vae explore"


def test_config_mistakes_are_one_line_errors(tmp_path, presto_store, capsys):
    bad = _config(tmp_path, presto_store, pretrain={"stepz": 3})
    assert main(["vae", "pretrain", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pretrain.stepz" in err and "\n" not in err
    slots = _config(tmp_path, presto_store, finetune={"head_input": "fields", "head_slot_dim": 0})
    assert main(["vae", "finetune", str(slots)]) == 2
    err = capsys.readouterr().err.strip()
    assert "finetune: " in err and "head_slot_dim" in err and "\n" not in err
    missing = _config(tmp_path, presto_store, data={"store": str(tmp_path / "nope.zarr")})
    assert main(["vae", "pretrain", str(missing)]) == 2
    assert "nope.zarr" in capsys.readouterr().err
    assert (
        main(["vae", "predict", str(_config(tmp_path, presto_store))]) == 2
    )  # nothing fine-tuned yet
    assert "finetune" in capsys.readouterr().err


def test_classification_head_on_reference_classes(tmp_path, presto_store):
    from eoflow.vae.config import load_vae_config
    from eoflow.vae.train import finetune, predict, pretrain

    cfg = load_vae_config(
        _config(
            tmp_path,
            presto_store,
            pretrain={"steps": 2, "batch_size": 8},
            finetune={"target": "class", "steps": 4, "batch_size": 16, "head_input": "mu"},
        )
    )
    pretrain(cfg)
    res = finetune(cfg)
    assert res["task"] == "classification" and res["head"]["class_ids"] == list(range(9))
    m = predict(cfg)
    assert m["n"] == 735 and 0.0 <= m["accuracy"] <= 1.0
    preds = (tmp_path / "run" / "predict" / "predictions.csv").read_text().splitlines()[1:]
    assert {int(float(r.split(",")[1])) for r in preds} <= set(range(9))
