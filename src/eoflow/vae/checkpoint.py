"""Checkpoints in safetensors plus JSON (no pickle anywhere).

A checkpoint directory holds ``model.safetensors`` (weights), ``model.json`` (architecture and data
settings), and for resumable training ``optimizer.safetensors`` (optimizer tensors and RNG states)
and ``state.json`` (step, epoch, batches done in the epoch, optimizer param groups, seeds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from eoflow.errors import ModelError
from eoflow.vae.model import ByteVAE, ModelConfig

__all__ = [
    "latest_checkpoint",
    "load_model",
    "load_training_state",
    "save_model",
    "save_training_state",
]


def save_model(model: ByteVAE, directory: str | Path, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``model.json`` (architecture + ``meta``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    raw = getattr(model, "_orig_mod", model)
    state = {k: v.detach().contiguous().cpu() for k, v in raw.state_dict().items()}
    save_file(state, str(d / "model.safetensors"))
    doc = {**meta, "model": raw.cfg.to_dict()}
    (d / "model.json").write_text(json.dumps(doc, indent=2) + "\n")


def load_model(
    directory: str | Path, *, overrides: dict[str, Any] | None = None, strict: bool = True
) -> tuple[ByteVAE, dict[str, Any]]:
    """Build a :class:`ByteVAE` from a model directory.

    Parameters
    ----------
    directory
        Holds ``model.safetensors`` and ``model.json``.
    overrides
        Architecture fields to change (e.g. add a value head); missing weights then stay initialised.
    strict
        Require every weight of the file and of the model to match.

    Raises
    ------
    ModelError
        Missing or inconsistent files.
    """
    d = Path(directory)
    wpath, jpath = d / "model.safetensors", d / "model.json"
    if not (wpath.is_file() and jpath.is_file()):
        raise ModelError(
            f"{d}: no model.safetensors/model.json",
            "run the previous vae command first or fix the path",
        )
    try:
        meta = json.loads(jpath.read_text())
        cfg = ModelConfig.from_dict({**meta["model"], **(overrides or {})})
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{jpath}: unreadable model config ({exc})") from exc
    model = ByteVAE(cfg)
    try:
        state = load_file(str(wpath))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{wpath}: unreadable weights ({exc})", "delete it and retrain") from exc
    if not strict:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise ModelError(
            f"{wpath}: weights do not fit model.json ({str(exc).splitlines()[0]})"
        ) from exc
    return model, meta


def save_training_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    """Write ``optimizer.safetensors`` (moments + RNG states) and ``state.json``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{k}"] = v
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    save_file(tensors, str(d / "optimizer.safetensors"))
    doc = {**state, "param_groups": sd["param_groups"], "optimizer_scalars": scalars}
    (d / "state.json").write_text(json.dumps(doc, indent=2) + "\n")


def load_training_state(directory: str | Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimizer and RNG states; return ``state.json``'s contents."""
    d = Path(directory)
    try:
        tensors = load_file(str(d / "optimizer.safetensors"))
        doc = json.loads((d / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{d}: unreadable training state ({exc})", "resume from an earlier checkpoint"
        ) from exc
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in doc.get("optimizer_scalars", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in doc["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    return doc


def latest_checkpoint(root: str | Path) -> Path | None:
    """The ``step-*`` directory with the highest step under ``root`` (None if none)."""
    r = Path(root)
    steps = sorted(
        (int(p.name.split("-")[1]), p)
        for p in r.glob("step-*")
        if p.is_dir() and (p / "state.json").is_file()
    )
    return steps[-1][1] if steps else None
