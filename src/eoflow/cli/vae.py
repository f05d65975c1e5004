"""``eoflow vae pretrain|finetune|predict|explore CONFIG``: the byte-level VAE for pixel series.

Heavy imports (torch, zarr, sklearn, umap) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _load(args: argparse.Namespace) -> Any:
    from eoflow.vae.config import load_vae_config

    cfg = load_vae_config(args.config)
    if getattr(args, "out", None):
        cfg = cfg.model_copy(update={"out": str(Path(args.out).resolve())})
    return cfg


def _print(result: dict[str, Any]) -> None:
    print(json.dumps(result, default=str))


def _pretrain(args: argparse.Namespace) -> int:
    from eoflow.vae.train import pretrain

    _print(pretrain(_load(args), resume=args.resume))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from eoflow.vae.train import finetune

    _print(finetune(_load(args), resume=args.resume))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from eoflow.vae.train import predict

    _print(predict(_load(args)))
    return 0


def _explore(args: argparse.Namespace) -> int:
    from eoflow.vae.explore import explore

    s = explore(_load(args))
    _print({k: s[k] for k in ("n_points", "active_units", "map", "clustering", "figures")}
           | {"prior_parse_valid_rate": s["prior"]["parse_valid_rate"]})  # fmt: skip
    return 0


def register(subparsers: Any) -> None:
    """Add the ``vae`` command group to the eoflow CLI."""
    p = subparsers.add_parser(
        "vae",
        help="byte-level encoder-decoder VAE for pixel time series",
        description="Pretrain (span corruption + KL), fine-tune (value head), predict and explore "
        "a ByT5-style byte transformer with a beta-VAE bottleneck. One YAML config for all four "
        "(see configs/vae/tiny.yaml).",
    )
    sub = p.add_subparsers(dest="vae_command", metavar="SUBCOMMAND", required=True)
    specs = [
        ("pretrain", _pretrain, "span-corruption + KL pretraining -> <out>/pretrain", True),
        ("finetune", _finetune, "value-head fine-tuning -> <out>/finetune", True),
        ("predict", _predict, "predictions + metrics -> <out>/predict", False),
        ("explore", _explore, "latent-space figures + summary.json -> <out>/explore", False),
    ]
    for name, func, help_, resumable in specs:
        q = sub.add_parser(name, help=help_, description=help_)
        q.add_argument("config", help="YAML config file")
        q.add_argument("--out", help="override the config's out directory")
        if resumable:
            q.add_argument(
                "--resume", action="store_true", help="continue from the latest checkpoint"
            )
        q.set_defaults(func=func)
