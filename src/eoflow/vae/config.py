"""YAML configuration of the ``eoflow vae`` commands (pydantic, unknown keys are errors).

One file configures all four commands; each reads its own section.  Relative paths are resolved
against the directory of the YAML file.  Outputs go to ``<out>/pretrain``, ``<out>/finetune``,
``<out>/predict`` and ``<out>/explore``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from eoflow.errors import ConfigError, InputError

__all__ = [
    "DataConfig",
    "ExploreConfig",
    "FinetuneConfig",
    "KLConfig",
    "ModelSection",
    "PredictConfig",
    "PretrainConfig",
    "SerializeConfig",
    "VAERunConfig",
    "load_vae_config",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Model):
    """Which samples store, features and split."""

    store: str = Field(..., description="samples.zarr path (docs/formats.md)")
    features: list[str] | None = Field(None, description="feature subset (default: all)")
    split_array: str | None = Field(None, description="bool array marking test rows, e.g. is_test")
    train_split: Literal["train", "test", "all"] = "train"
    rows_per_shard: int | None = Field(None, ge=1, description="default: the store's chunk rows")


class SerializeConfig(_Model):
    """How a pixel series becomes text."""

    compact: bool = True
    precision: int | dict[str, int] = Field(3, description="decimals, one or per feature")
    default_precision: int = Field(3, ge=0, le=8, description="for features missing in a dict")
    loc_precision: int = Field(4, ge=0, le=8)
    max_len: int = Field(2048, ge=16, description="encoder length in bytes (longer texts: error)")
    widths: int | dict[str, int] | None = Field(
        None,
        description="compact: zero-pad scaled integers to this many digits (one or per feature)",
    )


class ModelSection(_Model):
    """Model size: a preset plus overrides."""

    preset: Literal["tiny", "mini", "small-cpu", "byt5-small"] = "tiny"
    d_model: int | None = None
    d_kv: int | None = None
    n_heads: int | None = None
    d_ff: int | None = None
    n_enc_layers: int | None = None
    n_dec_layers: int | None = None
    latent_dim: int | None = None
    n_mem: int | None = None
    dropout: float | None = None
    z_to_embedding: bool | None = None


class KLConfig(_Model):
    """Cyclical beta schedule (Fu et al. 2019) with free bits per latent dimension."""

    beta_max: float = Field(0.5, ge=0)
    n_cycles: int = Field(4, ge=1)
    ratio_zero: float = Field(0.25, ge=0, le=1, description="part of a cycle at beta 0")
    ratio_increase: float = Field(0.5, ge=0, le=1, description="part of a cycle ramping up")
    free_bits: float = Field(0.5, ge=0, description="KL floor per dim (nats), Optimus lambda")


class _TrainCommon(_Model):
    steps: int = Field(200, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(20, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    num_workers: int = Field(0, ge=0)
    checkpoint_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    compile: bool = False
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 on CUDA")


class PretrainConfig(_TrainCommon):
    """Span corruption (+ whole-text denoising) with a KL term."""

    density: float = Field(0.15, gt=0, lt=1)
    mean_span: float = Field(20.0, gt=0)
    denoise_fraction: float = Field(
        0.5, ge=0, le=1, description="share of examples whose target is the whole text"
    )
    kl: KLConfig = KLConfig()


class FinetuneConfig(_TrainCommon):
    """Value prediction from the sequence."""

    init: str | None = Field(None, description="pretrain output dir (default <out>/pretrain)")
    target: str = Field("class", description="'class' (y) or a name in attrs['targets']")
    task: Literal["regression", "classification"] | None = None
    head_input: Literal["mu", "pooled", "attention", "fields", "values"] = "mu"
    head_hidden: int = Field(64, ge=1)
    head_queries: int = Field(4, ge=1, description="learned queries of head_input: attention")
    head_fields: int = Field(
        256,
        ge=1,
        description="head_input: fields / values: atoms of the text read (must cover the text)",
    )
    head_places: int = Field(
        6, ge=2, description="head_input: fields: digit places per atom, plus one for other bytes"
    )
    head_slot_dim: int = Field(
        4,
        ge=0,
        description="head_input: fields: numbers per slot (at least 1); values: context numbers "
        "per atom beside its value (0: the values alone)",
    )
    head_dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout on the head's input and hidden layer"
    )
    head_periodic: int = Field(
        0,
        ge=0,
        description="learned frequencies per input number of the head: each number enters the MLP "
        "as head_periodic_dim features of its sines and cosines (periodic embeddings; 0: the "
        "numbers themselves)",
    )
    head_periodic_dim: int = Field(16, ge=1, description="features per number (head_periodic)")
    head_periodic_sigma: float = Field(
        0.1, gt=0, description="initial spread of the frequencies (head_periodic)"
    )
    head_value_grad: bool = Field(
        True,
        description="head_input: values: let the target's gradient reach the digit reading "
        "(false: only digit_loss trains it, so the values stay the text's numbers)",
    )
    head_norm: Literal["batch", "fixed"] = Field(
        "batch",
        description="head_input: values: standardise the values by batch statistics (running "
        "ones at evaluation), or by fixed ones: the exact numbers of every training text, "
        "computed once before fine-tuning (needs head_slot_dim: 0)",
    )
    encoder_lr_scale: float = Field(
        1.0,
        ge=0,
        description="learning rate of the pretrained model relative to the head's (0 freezes it)",
    )
    digit_loss: float = Field(
        1.0,
        ge=0,
        description="head_input: values: weight of the cross-entropy that keeps its reading of "
        "each digit byte exact",
    )
    beta: float = Field(0.0, ge=0, description="KL weight kept during fine-tuning")
    target_transform: Literal["none", "log"] = Field(
        "none",
        description="regression: fit log(target) (positive, skewed targets); report in units",
    )
    loss: Literal["mse", "huber"] = Field(
        "mse", description="regression loss on the standardised (transformed) target"
    )
    huber_delta: float = Field(1.0, gt=0, description="in standard deviations of the target")
    val_fraction: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="share of training rows held out, whole locations at a time, to pick the step",
    )
    eval_every: int = Field(100, ge=1, description="steps between validation passes")
    members: int = Field(
        1,
        ge=1,
        description="fine-tunes averaged at prediction; member k uses seed + k (its own head "
        "initialisation, order and held-out sites)",
    )
    refit: bool = Field(
        False,
        description="members first train with their held-out sites, then one step is chosen on "
        "their pooled validation curves and every member is trained again on all training rows "
        "for that many steps (about twice the cost; the step is far less noisy)",
    )
    refit_members: int | None = Field(
        None,
        ge=1,
        description="with refit: how many refits to train and average (seeds seed + k), when "
        "more than the members that choose the step (a refit costs the chosen step's steps, no "
        "validation); default: members",
    )
    patience: int | None = Field(
        None, ge=1, description="stop after this many validation passes without improvement"
    )

    @model_validator(mode="after")
    def _slots(self) -> FinetuneConfig:
        if self.head_input == "fields" and self.head_slot_dim < 1:
            raise ValueError("head_slot_dim must be at least 1 with head_input: fields")
        if self.head_norm == "fixed" and (self.head_input != "values" or self.head_slot_dim):
            raise ValueError("head_norm: fixed needs head_input: values and head_slot_dim: 0")
        if self.refit_members is not None and not self.refit:
            raise ValueError("refit_members needs refit: true")
        return self


class PredictConfig(_Model):
    """Predict values with a fine-tuned model."""

    checkpoint: str | None = Field(None, description="finetune output dir (default <out>/finetune)")
    split: Literal["train", "test", "all"] = "test"
    batch_size: int = Field(64, ge=1)


class ExploreConfig(_Model):
    """Latent-space exploration."""

    checkpoint: str | None = Field(None, description="model dir (default <out>/pretrain)")
    split: Literal["train", "test", "all"] = "all"
    n_points: int = Field(512, ge=10, description="samples encoded for UMAP/clustering")
    n_prior: int = Field(16, ge=1)
    max_decode_len: int = Field(600, ge=8)
    temperature: float = Field(0.0, ge=0)
    interp_steps: int = Field(7, ge=2)
    traverse_steps: int = Field(7, ge=2)
    umap: bool = True
    umap_n_epochs: int | None = Field(None, ge=1)
    dbscan_eps: float | None = Field(None, gt=0, description="default: from k-distances")
    plot_feature: str = "ndvi"


class VAERunConfig(_Model):
    """Top level of the YAML file."""

    out: str = Field(..., description="output root directory")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    data: DataConfig
    serialize: SerializeConfig = SerializeConfig()
    model: ModelSection = ModelSection()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    predict: PredictConfig = PredictConfig()
    explore: ExploreConfig = ExploreConfig()
    base_dir: str = Field(".", description="set by the loader: directory of the YAML file")

    def path(self, p: str) -> Path:
        """``p`` resolved against :attr:`base_dir`."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else (Path(self.base_dir) / q)


def _where(err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
    return f"{loc}: {e['msg']}"


def load_vae_config(path: str | Path) -> VAERunConfig:
    """Read and validate a YAML config (``yaml.safe_load``).

    Raises
    ------
    InputError
        The file is missing or not YAML.
    ConfigError
        A key is unknown, missing or has a bad value (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found", "give the path to a YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping", "see configs/vae/tiny.yaml")
    raw.setdefault("base_dir", str(path.resolve().parent))
    try:
        return VAERunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{path}: {_where(exc)}", "fix that key (see configs/vae/tiny.yaml)"
        ) from exc
