"""Pretraining (span corruption + KL), fine-tuning (value prediction) and prediction.

The :class:`Trainer` runs a fixed number of optimizer steps over a :class:`SeriesStream`, with
AdamW (fused on CUDA), bf16 autocast on CUDA, optional ``torch.compile``, gradient clipping, a
warm-up + cosine learning rate, tqdm progress (loss, KL, beta, tokens/s), ``metrics.jsonl``, and
resumable safetensors checkpoints.  Resuming restores weights, optimizer moments, the torch RNG and
the position in the data stream, so the next step's loss is identical to an uninterrupted run.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from eoflow.errors import ConfigError, DataError, ModelError
from eoflow.vae.checkpoint import (
    latest_checkpoint,
    load_model,
    load_training_state,
    save_model,
    save_training_state,
)
from eoflow.vae.config import KLConfig, VAERunConfig, _TrainCommon
from eoflow.vae.data import SamplesStore, SeriesStream, TextSpec, collate
from eoflow.vae.manifest import write_manifest
from eoflow.vae.model import ByteVAE, kl_per_dim, model_config, n_atoms

__all__ = [
    "Trainer",
    "evaluate",
    "finetune",
    "kl_beta",
    "load_ensemble",
    "lr_factor",
    "predict",
    "pretrain",
    "resolve_device",
    "text_spec",
]

StepFn = Callable[[ByteVAE, dict[str, torch.Tensor], int], tuple[torch.Tensor, dict[str, float]]]


def kl_beta(step: int, total: int, kl: KLConfig) -> float:
    """Cyclical beta at ``step`` (0-based) of ``total``: 0, linear ramp, then ``beta_max``."""
    period = max(total / kl.n_cycles, 1.0)
    pos = (step % period) / period
    if pos < kl.ratio_zero:
        return 0.0
    if kl.ratio_increase <= 0:
        return kl.beta_max
    return kl.beta_max * min(1.0, (pos - kl.ratio_zero) / kl.ratio_increase)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10 % (step is 0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    frac = (step - warmup) / max(total - warmup, 1)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but no GPU is visible", "use device: auto or cpu")
    return torch.device(name)


def text_spec(cfg: VAERunConfig) -> TextSpec:
    """Serialisation settings of a run config."""
    s = cfg.serialize
    return TextSpec(
        features=cfg.data.features,
        compact=s.compact,
        precision=s.precision,
        default_precision=s.default_precision,
        loc_precision=s.loc_precision,
        max_len=s.max_len,
        widths=s.widths,
    )


class Trainer:
    """Fixed-step training loop with exact resume.

    Parameters
    ----------
    model
        The model (moved to ``device``).
    dataset
        Example stream; :meth:`SeriesStream.set_epoch` is called every epoch.
    tc
        Optimisation settings.
    out_dir
        Where ``checkpoints/step-N``, ``metrics.jsonl`` and the final model go.
    step_fn
        ``(model, batch, step) -> (loss, metrics)``.
    meta
        Extra ``model.json`` content (data and text settings).
    seed
        Seed recorded in every checkpoint.
    device
        Torch device.
    validate
        Optional ``model -> score`` (lower is better), run every ``eval_every`` steps and at the
        end: the best model is kept in ``out_dir/best`` and is the one saved as the final model;
        ``patience`` passes without improvement stop training early.
    eval_every, patience
        See ``validate``.
    body_lr_scale
        Learning rate of every parameter outside the head (``head*``) relative to ``tc.lr``;
        0 freezes them (fine-tuning only the head).
    """

    def __init__(
        self,
        model: ByteVAE,
        dataset: SeriesStream,
        tc: _TrainCommon,
        out_dir: str | Path,
        step_fn: StepFn,
        *,
        meta: dict[str, Any],
        seed: int,
        device: torch.device,
        validate: Callable[[ByteVAE], float] | None = None,
        eval_every: int = 100,
        patience: int | None = None,
        body_lr_scale: float = 1.0,
    ) -> None:
        self.model = model.to(device)
        self.validate, self.eval_every, self.patience = validate, eval_every, patience
        self.best: dict[str, Any] = {"score": math.inf, "step": 0, "stale": 0}
        self.dataset, self.tc, self.step_fn = dataset, tc, step_fn
        self.out = Path(out_dir)
        self.meta, self.seed, self.device = meta, seed, device
        on_cuda = device.type == "cuda"
        kw: dict[str, Any] = {"lr": tc.lr, "betas": (0.9, 0.98), "weight_decay": tc.weight_decay}
        if on_cuda:
            kw["fused"] = True
        self.opt = torch.optim.AdamW(self._param_groups(body_lr_scale), **kw)
        self.autocast = (on_cuda and tc.precision != "fp32") or tc.precision == "bf16"
        self.fwd = torch.compile(self.model) if tc.compile else self.model
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0

    def _param_groups(self, body_lr_scale: float) -> list[dict[str, Any]]:
        """The head (``head*`` parameters) at ``lr``, the pretrained body at ``lr * scale``.

        A scale of 0 freezes the body: its parameters get no gradient (nor optimizer state).
        """
        head, body = [], []
        for name, p in self.model.named_parameters():
            (head if name.startswith("head") else body).append(p)
        if body_lr_scale == 0:
            for p in body:
                p.requires_grad_(False)
            return [{"params": head, "lr_scale": 1.0}]
        groups = [{"params": body, "lr_scale": body_lr_scale}, {"params": head, "lr_scale": 1.0}]
        return [g for g in groups if g["params"]]

    def _loader(self) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_size=self.tc.batch_size,
            num_workers=self.tc.num_workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            # own generator: creating an iterator must not consume the global torch RNG (resume)
            generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch),
        )

    def resume(self) -> bool:
        """Load the latest checkpoint of ``out_dir``; False when there is none."""
        ck = latest_checkpoint(self.out / "checkpoints")
        if ck is None:
            return False
        model, _ = load_model(ck)
        if model.cfg != getattr(self.model, "cfg", None):
            raise ModelError(
                f"{ck}: checkpoint architecture differs from the config", "use a new out directory"
            )
        self.model.load_state_dict(model.state_dict())
        st = load_training_state(ck, self.opt)
        self.step, self.epoch, self.batch_in_epoch = st["step"], st["epoch"], st["batch_in_epoch"]
        self.best = st.get("best", self.best)
        return True

    def save(self) -> Path:
        """Checkpoint the current step."""
        d = self.out / "checkpoints" / f"step-{self.step:07d}"
        save_model(self.model, d, self.meta)
        save_training_state(
            d,
            self.opt,
            {
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "seed": self.seed,
                "best": self.best,
            },
        )
        return d

    def _train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
        for g in self.opt.param_groups:
            g["lr"] = (
                self.tc.lr
                * g["lr_scale"]
                * lr_factor(self.step, self.tc.steps, self.tc.warmup_steps)
            )
        self.model.train()
        padded = bool((batch["input_ids"] == 0).any())  # on the host: no device sync
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        batch["padded"] = padded  # type: ignore[assignment]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss, metrics = self.step_fn(self.fwd, batch, self.step)  # type: ignore[arg-type]
        if not torch.isfinite(loss):
            raise DataError(f"non-finite loss at step {self.step + 1}", "lower the learning rate")
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        metrics["grad_norm"] = float(gnorm)
        return float(loss.detach()), metrics

    def fit(self, stop_at: int | None = None) -> list[dict[str, float]]:
        """Train up to ``tc.steps`` (or ``stop_at``, on the same learning-rate schedule); return
        the per-step metrics of this call."""
        from tqdm.auto import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        history: list[dict[str, float]] = []
        end = min(stop_at, self.tc.steps) if stop_at is not None else self.tc.steps
        bar = tqdm(
            total=end,
            initial=self.step,
            desc=self.out.name,
            mininterval=1.0,
            file=sys.stderr,
        )
        log = (self.out / "metrics.jsonl").open("a")
        t_last, tok_acc = time.perf_counter(), 0
        try:
            while self.step < end:
                self.dataset.set_epoch(self.epoch)
                got = 0
                for i, batch in enumerate(self._loader()):
                    if i < self.batch_in_epoch:
                        continue  # already consumed before the checkpoint we resumed from
                    got += 1
                    loss, m = self._train_step(batch)
                    self.step += 1
                    self.batch_in_epoch = i + 1
                    tok_acc += int((batch["input_ids"] != 0).sum()) + int(m.pop("target_tokens", 0))
                    rec = {"step": self.step, "epoch": self.epoch, "loss": loss, **m}
                    history.append(rec)
                    bar.update(1)
                    if self.step % self.tc.log_every == 0 or self.step == end:
                        now = time.perf_counter()
                        rec["tokens_per_s"] = tok_acc / max(now - t_last, 1e-9)
                        t_last, tok_acc = now, 0
                        bar.set_postfix({k: f"{v:.3g}" for k, v in rec.items() if k in _SHOW})
                        log.write(json.dumps(rec) + "\n")
                        log.flush()
                    if self.validate is not None and (
                        self.step % self.eval_every == 0 or self.step == end
                    ):
                        rec["val"] = self._check(bar)
                        log.write(json.dumps({"step": self.step, "val": rec["val"]}) + "\n")
                        log.flush()
                    if self.step % self.tc.checkpoint_every == 0 or self.step == end:
                        self.save()
                    if self.step >= end or self._out_of_patience():
                        break
                else:
                    if got == 0 and self.batch_in_epoch == 0:
                        raise DataError(f"{self.dataset.store}: the selected split has no samples")
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    continue
                break  # steps done or out of patience
        finally:
            bar.close()
            log.close()
        if self.validate is not None and self.best["step"]:
            if self.best["step"] != self.step:
                best, _ = load_model(self.out / "best")
                self.model.load_state_dict(best.state_dict())
            self.meta = {**self.meta, "best": dict(self.best)}
        save_model(self.model, self.out, self.meta)
        return history

    def _check(self, bar: Any) -> float:
        """One validation pass; keep the model in ``out/best`` when it is the best so far."""
        assert self.validate is not None
        score = float(self.validate(self.model))
        if score < self.best["score"]:
            self.best = {"score": score, "step": self.step, "stale": 0}
            save_model(self.model, self.out / "best", {**self.meta, "best": dict(self.best)})
        else:
            self.best["stale"] += 1
        bar.write(
            f"{self.out.name} step {self.step}: validation {score:.4g} "
            f"(best {self.best['score']:.4g} at step {self.best['step']})",
            file=sys.stderr,
        )
        return score

    def _out_of_patience(self) -> bool:
        return self.patience is not None and self.best["stale"] >= self.patience


_SHOW = ("loss", "ce", "kl", "beta", "tokens_per_s", "mse", "acc", "digit_ce")


# ----------------------------------------------------------------------------- step functions


def pretrain_step_fn(kl: KLConfig, total: int) -> StepFn:
    """Span-corruption/denoising cross-entropy + beta * KL with free bits (per target token)."""

    def step(
        model: ByteVAE, batch: dict[str, torch.Tensor], i: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch["input_ids"], batch["decoder_input_ids"], padded=batch.get("padded"))
        labels = batch["labels"]
        n_tok = (labels != -100).sum().clamp_min(1)
        ce = F.cross_entropy(
            out["logits"].float().flatten(0, 1),
            labels.flatten(),
            ignore_index=-100,
            reduction="sum",
        )
        kl_dim = kl_per_dim(out["mu"], out["logvar"])
        kl_fb = torch.clamp(kl_dim, min=kl.free_bits).sum()
        beta = kl_beta(i, total, kl)
        b = labels.shape[0]
        loss = (ce + beta * kl_fb * b) / n_tok
        return loss, {
            "ce": float(ce.detach() / n_tok),
            "kl": float(kl_dim.sum().detach()),
            "beta": beta,
            "target_tokens": int(n_tok),
        }

    return step


def value_step_fn(
    task: str,
    mean: float,
    std: float,
    beta: float,
    *,
    transform: str = "none",
    loss: str = "mse",
    huber_delta: float = 1.0,
    digit_loss: float = 0.0,
) -> StepFn:
    """Regression: MSE or Huber on standardised (optionally log) targets; classification:
    cross-entropy; plus beta * KL, plus ``digit_loss`` times the values head's digit-reading
    cross-entropy (``head_input: values``)."""

    def step(
        model: ByteVAE, batch: dict[str, torch.Tensor], i: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        pred, aux = model.predict_value(batch["input_ids"], batch.get("padded"))
        if task == "regression":
            target = (_forward_transform(batch["value"], transform) - mean) / std
            mse = F.mse_loss(pred[:, 0], target)
            main = mse if loss == "mse" else F.huber_loss(pred[:, 0], target, delta=huber_delta)
            m = {"mse": float(mse.detach())}
        else:
            target = batch["value"].long()
            main = F.cross_entropy(pred, target)
            m = {"acc": float((pred.argmax(1) == target).float().mean())}
        kl = kl_per_dim(aux["mu"], aux["logvar"]).sum()
        m["kl"] = float(kl.detach())
        total = main + beta * kl
        if digit_loss and aux.get("digit_loss") is not None:
            total = total + digit_loss * aux["digit_loss"]
            m["digit_ce"] = float(aux["digit_loss"].detach())
        return total, m

    return step


def _forward_transform(v: Any, transform: str) -> Any:
    """Target -> the scale the head is fitted on (``log`` or unchanged)."""
    if transform == "log":
        return torch.log(v) if torch.is_tensor(v) else np.log(v)
    return v


def _inverse_transform(v: np.ndarray, transform: str) -> np.ndarray:
    return np.exp(v) if transform == "log" else v


# ----------------------------------------------------------------------------- commands


def _setup(cfg: VAERunConfig) -> torch.device:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    return resolve_device(cfg.device)


def _store_summary(path: Path) -> dict[str, Any]:
    s = SamplesStore(path)
    return {
        "store": str(path),
        "n": s.n,
        "n_time": s.n_time,
        "features": s.features,
        "targets": s.targets,
    }


def _meta(cfg: VAERunConfig, ds: SeriesStream, **extra: Any) -> dict[str, Any]:
    return {
        "text": asdict(text_spec(cfg)),
        "features": ds.features,
        "store": str(ds.store),
        **extra,
    }


def pretrain(cfg: VAERunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Pretrain a :class:`ByteVAE` (span corruption + denoising + KL) on the configured store.

    Writes ``<out>/pretrain/{model.safetensors, model.json, checkpoints/, metrics.jsonl,
    manifest.json}`` and returns a summary.
    """
    started = dt.datetime.now(dt.UTC)
    device = _setup(cfg)
    pc = cfg.pretrain
    store = cfg.path(cfg.data.store)
    ds = SeriesStream(
        str(store),
        mode="pretrain",
        text=text_spec(cfg),
        split_array=cfg.data.split_array,
        split=cfg.data.train_split,
        seed=cfg.seed,
        density=pc.density,
        mean_span=pc.mean_span,
        denoise_fraction=pc.denoise_fraction,
        rows_per_shard=cfg.data.rows_per_shard,
    )
    mc = model_config(**cfg.model.model_dump())
    model = ByteVAE(mc)
    out = cfg.path(cfg.out) / "pretrain"
    trainer = Trainer(
        model, ds, pc, out, pretrain_step_fn(pc.kl, pc.steps), meta=_meta(cfg, ds, kind="pretrain"),
        seed=cfg.seed, device=device,
    )  # fmt: skip
    resumed = trainer.resume() if resume else False
    hist = trainer.fit()
    last = hist[-1] if hist else {}
    results = {
        "params": model.n_params(),
        "steps": trainer.step,
        "resumed": resumed,
        "final": {k: last.get(k) for k in ("loss", "ce", "kl", "beta")},
        "device": str(device),
    }
    write_manifest(
        out, command="vae pretrain", inputs=_store_summary(store), parameters=cfg.model_dump(),
        seeds={"seed": cfg.seed, "torch_initial_seed": torch.initial_seed()},
        outputs=["model.safetensors", "model.json", "metrics.jsonl", "checkpoints/"], results=results,
        started=started,
    )  # fmt: skip
    return results


def _value_dataset(
    cfg: VAERunConfig,
    target: str,
    split: str,
    *,
    shuffle: bool,
    text: TextSpec,
    holdout: float = 0.0,
    part: str = "fit",
) -> SeriesStream:
    return SeriesStream(
        str(cfg.path(cfg.data.store)),
        mode="value",
        text=text,
        split_array=cfg.data.split_array,
        split=split,
        target=target,
        seed=cfg.seed,
        shuffle=shuffle,
        rows_per_shard=cfg.data.rows_per_shard,
        holdout=holdout,
        part=part,  # type: ignore[arg-type]
    )


@torch.no_grad()
def evaluate(
    model: ByteVAE | list[ByteVAE],
    ds: SeriesStream,
    meta: dict[str, Any] | list[dict[str, Any]],
    device: torch.device,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Predict every row of ``ds``; return ``(rows, predictions, truth, metrics)``.

    Regression predictions are de-standardised; classification predictions are class ids.  Lists
    of models and of their metadata (fine-tuned members of one target) are averaged: each
    member's de-standardised output before the inverse transform for regression, probabilities
    for classification.
    """
    models = model if isinstance(model, list) else [model]
    metas = meta if isinstance(meta, list) else [meta]
    for m in models:
        m.eval().to(device)
    head = metas[0]["head"]
    rows, preds, truth = [], [], []
    loader = DataLoader(ds, batch_size=batch_size, collate_fn=collate)
    for batch in loader:
        ids = batch["input_ids"].to(device)
        outs = [m.predict_value(ids)[0].float().cpu() for m in models]
        if head["task"] == "regression":
            z = np.mean(
                [o[:, 0].double().numpy() * mt["head"]["std"] + mt["head"]["mean"]
                 for o, mt in zip(outs, metas)],
                axis=0,
            )  # fmt: skip
            preds.append(_inverse_transform(z, head.get("transform", "none")))
        else:
            prob = torch.stack([o.softmax(-1) for o in outs]).mean(0)
            preds.append(np.asarray(head["class_ids"])[prob.argmax(1).numpy()])
        v = batch["value"].numpy()
        truth.append(
            v if head["task"] == "regression" else np.asarray(head["class_ids"])[v.astype(int)]
        )
        rows.append(batch["index"].numpy())
    r, p, t = (np.concatenate(a) if a else np.zeros(0) for a in (rows, preds, truth))
    order = np.argsort(r)
    r, p, t = r[order], p[order], t[order]
    if head["task"] == "regression":
        err = p - t
        ss = float(((t - t.mean()) ** 2).sum()) if len(t) else 0.0
        metrics = {
            "n": len(t),
            "rmse": float(np.sqrt(np.mean(err**2))) if len(t) else math.nan,
            "mae": float(np.mean(np.abs(err))) if len(t) else math.nan,
            "r2": float(1 - (err**2).sum() / ss) if ss > 0 else math.nan,
        }
    else:
        metrics = {"n": len(t), "accuracy": float(np.mean(p == t)) if len(t) else math.nan}
    return r, p, t, metrics


def _validator(
    ds: SeriesStream | None, meta: dict[str, Any], device: torch.device
) -> Callable[[ByteVAE], float] | None:
    """``model -> score`` on the held-out rows: RMSE, or the error rate for classes."""
    if ds is None:
        return None

    def score(model: ByteVAE) -> float:
        *_, m = evaluate(model, ds, meta, device)
        return m["rmse"] if meta["head"]["task"] == "regression" else 1.0 - m["accuracy"]

    return score


def _check_fields(ds: SeriesStream, head_fields: int) -> None:
    """``head_input: fields / values`` must have a slot for every atom of the texts (checked on the
    first)."""
    ex = next(iter(ds), None)
    if ex is None:
        return
    n = n_atoms(torch.as_tensor(ex["input_ids"], dtype=torch.long)[None])
    if n > head_fields:
        raise ConfigError(
            f"finetune.head_fields {head_fields} < {n} atoms in the texts of {ds.store}",
            f"set finetune.head_fields: {n} or more",
        )


def finetune(cfg: VAERunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Fine-tune the pretrained model with a value head on ``finetune.target``.

    Writes ``<out>/finetune/`` (model, checkpoints, metrics, manifest, ``eval.json`` when the store
    has a test split) and returns a summary.  With ``finetune.members`` K > 1, members 1..K-1
    (seeds ``seed + k``) go to ``finetune/member-k/``, the top-level ``model.json`` lists them, and
    ``predict`` (and the test score here) average all K.  With ``finetune.refit``, the K members
    first train holding out sites (``finetune/select/member-k/``) to choose one step, then
    ``finetune.refit_members`` (default K) refits train on every row for that step and are the
    ones averaged.
    """
    started = dt.datetime.now(dt.UTC)
    out = cfg.path(cfg.out) / "finetune"
    k_total = cfg.finetune.members
    refit: dict[str, Any] | None = None
    if cfg.finetune.refit:
        if cfg.finetune.val_fraction <= 0:
            raise ConfigError(
                "finetune.refit picks the step on held-out sites, but finetune.val_fraction is 0",
                "set finetune.val_fraction (e.g. 0.15) or refit: false",
            )
        sel = [out / "select" / f"member-{k}" for k in range(k_total)]
        chosen = [
            _finetune_member(
                cfg.model_copy(update={"seed": cfg.seed + k}), d, resume=resume, started=started
            )
            for k, d in enumerate(sel)
        ]
        refit = _common_step(sel, classification=_task(cfg.finetune) == "classification")
        refit["selection_steps"] = [r["steps"] for r in chosen]
        refit["selection_test"] = [r.get("test") for r in chosen]  # each alone, for the record
        k_total = cfg.finetune.refit_members or k_total
    runs = [
        _finetune_member(
            cfg.model_copy(update={"seed": cfg.seed + k}),
            out if k == 0 else out / f"member-{k}",
            resume=resume,
            started=started,
            refit_steps=refit["step"] if refit else None,
        )
        for k in range(k_total)
    ]
    if refit:
        for r in runs:
            r["refit"] = refit
    if k_total == 1:
        return runs[0]
    names = [f"member-{k}" for k in range(1, k_total)]
    jpath = out / "model.json"
    jpath.write_text(json.dumps({**json.loads(jpath.read_text()), "members": names}, indent=2))
    results: dict[str, Any] = {**runs[0], "members": runs}
    results.pop("test", None)
    if cfg.data.split_array:
        models, metas = load_ensemble(out)
        text = TextSpec(**metas[0]["text"])
        eval_ds = _value_dataset(cfg, cfg.finetune.target, "test", shuffle=False, text=text)
        *_, metrics = evaluate(models, eval_ds, metas, _setup(cfg))
        results["test"] = metrics
        (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_manifest(
        out, command="vae finetune", inputs={**_store_summary(cfg.path(cfg.data.store))},
        parameters=cfg.model_dump(), seeds={"seed": cfg.seed, "members": [cfg.seed + k for k in range(k_total)]},
        outputs=["model.safetensors", "model.json", "metrics.jsonl", "checkpoints/", "eval.json",
                 *(f"{n}/" for n in names)],
        results=results, started=started,
    )  # fmt: skip
    return results


def _task(fc: Any) -> str:
    """``finetune.task``, or what the target implies (``class``: classification)."""
    return fc.task or ("classification" if fc.target == "class" else "regression")


def _common_step(runs: list[Path], *, classification: bool) -> dict[str, Any]:
    """The validation step that is best for the pooled held-out rows of ``runs``.

    Each run's ``metrics.jsonl`` holds its validation curve (RMSE, or the error rate); the curves
    are pooled over the steps every run reached (root mean square of the RMSEs, or the mean error
    rate) and the earliest best step is returned with its pooled score and the pooled curve.
    """
    curves = []
    for d in runs:
        recs = (json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x)
        curves.append({r["step"]: r["val"] for r in recs if "val" in r and "loss" not in r})
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    if not steps:
        raise DataError(
            f"{runs[0].parent}: the members share no validation step",
            "set finetune.eval_every to a divisor of the steps the members reach",
        )
    pooled = {
        st: float(np.mean([c[st] for c in curves]))
        if classification
        else float(np.sqrt(np.mean([c[st] ** 2 for c in curves])))
        for st in steps
    }
    best = min(steps, key=lambda st: (pooled[st], st))
    return {"step": best, "score": pooled[best], "curve": pooled, "members": len(runs)}


def load_ensemble(directory: str | Path) -> tuple[list[ByteVAE], list[dict[str, Any]]]:
    """The fine-tuned model of ``directory`` plus the members its ``model.json`` lists."""
    model, meta = load_model(directory)
    members = [load_model(Path(directory) / name) for name in meta.get("members", [])]
    return [model, *(m for m, _ in members)], [meta, *(mt for _, mt in members)]


def _finetune_member(
    cfg: VAERunConfig,
    out: Path,
    *,
    resume: bool,
    started: dt.datetime,
    refit_steps: int | None = None,
) -> dict[str, Any]:
    """One fine-tune (seeded by ``cfg.seed``) into ``out``.

    With ``refit_steps``, on every training row (nothing held out) for that many steps of the
    configured learning-rate schedule.
    """
    device = _setup(cfg)
    fc = cfg.finetune
    init = cfg.path(fc.init) if fc.init else cfg.path(cfg.out) / "pretrain"
    _, pre_meta = load_model(init)
    text = TextSpec(**pre_meta["text"])
    train_split = cfg.data.train_split if cfg.data.split_array else "all"
    holdout = 0.0 if refit_steps is not None else fc.val_fraction
    ds = _value_dataset(cfg, fc.target, train_split, shuffle=True, text=text, holdout=holdout)
    if fc.head_input in ("fields", "values"):
        _check_fields(ds, fc.head_fields)
    task = _task(fc)
    vals = ds.values()[ds.selected_rows()]
    if vals.size == 0:
        raise DataError(f"{ds.store}: no training rows with target {fc.target!r}")
    if task == "regression":
        if fc.target_transform == "log" and not (vals > 0).all():
            raise DataError(
                f"{ds.store}: target {fc.target!r} has values <= 0",
                "finetune.target_transform: log needs positive targets; use none",
            )
        tv = _forward_transform(vals, fc.target_transform)
        head = {
            "task": task,
            "target": fc.target,
            "mean": float(tv.mean()),
            "std": float(tv.std() or 1.0),
            "transform": fc.target_transform,
        }
        n_out = 1
    else:
        ids = SamplesStore(ds.store).class_ids()
        head = {"task": task, "target": fc.target, "class_ids": ids}
        n_out = len(ids)
    model, _ = load_model(
        init,
        overrides={
            "head_outputs": n_out,
            "head_task": task,
            # every finetune.head_* option is the model field of the same name
            **{k: v for k, v in fc.model_dump().items() if k.startswith("head_")},
        },
        strict=False,
    )
    if fc.head_norm == "fixed":
        _fix_value_stats(model, ds)
    meta = {**pre_meta, "kind": "finetune", "head": head, "init": str(init)}
    step_fn = value_step_fn(
        task, head.get("mean", 0.0), head.get("std", 1.0), fc.beta,
        transform=fc.target_transform, loss=fc.loss, huber_delta=fc.huber_delta,
        digit_loss=fc.digit_loss,
    )  # fmt: skip
    val_ds = None
    if holdout > 0:
        val_ds = _value_dataset(
            cfg, fc.target, train_split, shuffle=False, text=text, holdout=fc.val_fraction,
            part="holdout",
        )  # fmt: skip
    validate = _validator(val_ds, meta, device)
    trainer = Trainer(
        model, ds, fc, out, step_fn, meta=meta, seed=cfg.seed, device=device, validate=validate,
        eval_every=fc.eval_every, patience=fc.patience, body_lr_scale=fc.encoder_lr_scale,
    )  # fmt: skip
    resumed = trainer.resume() if resume else False
    hist = trainer.fit(stop_at=refit_steps)
    results: dict[str, Any] = {
        "steps": trainer.step,
        "resumed": resumed,
        "task": task,
        "head": head,
    }
    results["final"] = {k: hist[-1].get(k) for k in ("loss", "mse", "acc", "kl")} if hist else {}
    if val_ds is not None:
        results["validation"] = {
            "rows": int(val_ds.selected_rows().size),
            "metric": "rmse" if task == "regression" else "error rate",
            **trainer.best,
        }
    if cfg.data.split_array:
        eval_ds = _value_dataset(cfg, fc.target, "test", shuffle=False, text=text)
        *_, metrics = evaluate(trainer.model, eval_ds, meta, device)
        results["test"] = metrics
        (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_manifest(
        out, command="vae finetune", inputs={**_store_summary(cfg.path(cfg.data.store)), "init": str(init)},
        parameters=cfg.model_dump(), seeds={"seed": cfg.seed, "torch_initial_seed": torch.initial_seed()},
        outputs=["model.safetensors", "model.json", "metrics.jsonl", "checkpoints/", "eval.json",
                 *(["best/"] if val_ds is not None else [])],
        results=results, started=started,
    )  # fmt: skip
    return results


def _fix_value_stats(model: ByteVAE, ds: SeriesStream) -> None:
    """Set the values head's standardisation to the mean and variance of the exact numbers of
    every text in ``ds`` (``head_norm: fixed``)."""
    pool = model.head_fields
    total = torch.zeros(2, pool.f, dtype=torch.float64)
    n = 0
    for batch in DataLoader(ds, batch_size=256, collate_fn=collate):
        x = pool.exact(batch["input_ids"]).double()
        total += torch.stack([x.sum(0), (x * x).sum(0)])
        n += len(x)
    mean = total[0] / max(n, 1)
    var = (total[1] / max(n, 1) - mean**2).clamp(min=0) * n / max(n - 1, 1)
    pool.norm.running_mean.copy_(mean.float())
    pool.norm.running_var.copy_(var.float())


def predict(cfg: VAERunConfig) -> dict[str, Any]:
    """Predict ``predict.split`` with the fine-tuned model; write ``predictions.csv`` + metrics."""
    started = dt.datetime.now(dt.UTC)
    device = _setup(cfg)
    pc = cfg.predict
    ck = cfg.path(pc.checkpoint) if pc.checkpoint else cfg.path(cfg.out) / "finetune"
    models, metas = load_ensemble(ck)
    meta = metas[0]
    if "head" not in meta or models[0].head is None:
        raise ModelError(f"{ck}: model has no value head", "run 'eoflow vae finetune' first")
    if pc.split != "all" and not cfg.data.split_array:
        raise ConfigError(
            f"predict.split={pc.split!r} needs data.split_array", "set it or use split: all"
        )
    ds = _value_dataset(
        cfg, meta["head"]["target"], pc.split, shuffle=False, text=TextSpec(**meta["text"])
    )
    rows, pred, truth, metrics = evaluate(models, ds, metas, device, pc.batch_size)
    out = cfg.path(cfg.out) / "predict"
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.csv").open("w") as f:
        f.write("row,prediction,truth\n")
        for r, p, t in zip(rows.tolist(), pred.tolist(), truth.tolist()):
            f.write(f"{r},{p:.6g},{t:.6g}\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_manifest(
        out, command="vae predict", inputs={**_store_summary(cfg.path(cfg.data.store)), "checkpoint": str(ck)},
        parameters=cfg.model_dump(), seeds={"seed": cfg.seed}, outputs=["predictions.csv", "metrics.json"],
        results=metrics, started=started,
    )  # fmt: skip
    return metrics
