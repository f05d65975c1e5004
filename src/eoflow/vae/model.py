"""Byte-level encoder-decoder transformer (ByT5-style) with a beta-VAE bottleneck.

* Heavy encoder (ByT5's 3:1 encoder:decoder depth), pre-norm RMSNorm blocks, gated-GELU FFN,
  untied LM head, no biases (T5.1.1).
* Attention is :func:`torch.nn.functional.scaled_dot_product_attention`.  Positions are rotary
  (RoPE) instead of T5's relative-position buckets: an additive bias would rule out the flash
  kernel, RoPE keeps it (no mask at all for unpadded batches, ``is_causal`` in the decoder).
* Bottleneck: masked mean of the encoder states -> ``mu, logvar`` -> ``z``.  The decoder's
  cross-attention memory is *only* ``n_mem`` tokens projected from ``z`` (it never sees the encoder
  states), and ``W z`` is added to every decoder input embedding (Optimus' "memory + embedding").
* A seq-to-value head for regression or classification: an MLP on ``mu``, on the mean-pooled
  states, on ``head_queries`` learned queries that attend over the encoder states (attention
  pooling, so the head can pick out the bytes of the numbers that matter), or on the states laid
  out by *atom and digit place* (``head_input: fields``, :class:`FieldPool`): the i-th atom of the
  s-expression and each digit's place counted from the atom's last digit (Abacus-style) index a
  slot, so the head reads the j-th number of the text whatever the widths before it; or on the
  states read as *decimal numbers* (``head_input: values``, :class:`ValuePool`): each digit's state
  is classified into its digit (kept exact by an auxiliary cross-entropy against the byte), weighed
  by its place value (0.1, 0.01, ... from the atom's first digit) and summed per atom, then
  standardised, so the head starts from one number per field instead of ten loosely related
  digits, in which a leading zero's reading error would weigh a thousand times a trailing one's.
  Optionally (``head_periodic``) each number the head reads enters its MLP through a periodic
  embedding of its own (:class:`PeriodicEmbedding`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from eoflow.vae.tokenizer import EOS_ID, OFFSET, PAD_ID, SENTINEL_START, TASK_TEXT_ID, VOCAB_SIZE

__all__ = [
    "PRESETS",
    "ByteVAE",
    "FieldPool",
    "ModelConfig",
    "PeriodicEmbedding",
    "ValuePool",
    "atom_digits",
    "atom_slots",
    "kl_per_dim",
    "model_config",
    "n_atoms",
]


@dataclass
class ModelConfig:
    """Architecture of :class:`ByteVAE` (JSON-serialisable)."""

    d_model: int = 64
    d_kv: int = 16
    n_heads: int = 4
    d_ff: int = 128
    n_enc_layers: int = 3
    n_dec_layers: int = 1
    latent_dim: int = 16
    n_mem: int = 4
    vocab_size: int = VOCAB_SIZE
    dropout: float = 0.0
    eps: float = 1e-6
    rope_base: float = 10_000.0
    z_to_embedding: bool = True
    head_outputs: int = 0
    head_task: Literal["regression", "classification"] = "regression"
    head_input: Literal["mu", "pooled", "attention", "fields", "values"] = "mu"
    head_hidden: int = 64
    head_queries: int = 4
    head_fields: int = 256
    head_places: int = 6
    head_slot_dim: int = 4
    head_dropout: float = 0.0
    head_value_grad: bool = True
    head_norm: str = "batch"
    head_periodic: int = 0
    head_periodic_dim: int = 16
    head_periodic_sigma: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise ``TypeError``)."""
        return cls(**d)


#: Named sizes; ``byt5-small`` is ByT5-small's stack (d_model 1472, d_ff 3584, 12/4 layers, 6x64).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, d_kv=16, n_heads=4, d_ff=128, n_enc_layers=3, n_dec_layers=1),
    "mini": dict(d_model=128, d_kv=32, n_heads=4, d_ff=256, n_enc_layers=3, n_dec_layers=1),
    "small-cpu": dict(d_model=256, d_kv=32, n_heads=8, d_ff=640, n_enc_layers=6, n_dec_layers=2),
    "byt5-small": dict(
        d_model=1472,
        d_kv=64,
        n_heads=6,
        d_ff=3584,
        n_enc_layers=12,
        n_dec_layers=4,
        latent_dim=128,
        n_mem=16,
    ),
}


def model_config(preset: str = "tiny", **overrides: Any) -> ModelConfig:
    """A :class:`ModelConfig` from a preset name plus overrides (``None`` values are ignored)."""
    if preset not in PRESETS:
        raise KeyError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    kw = dict(PRESETS[preset])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return ModelConfig(**kw)


class RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction, computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * self.weight.float()).to(x.dtype)


def _rope(length: int, dim: int, base: float, device: torch.device) -> tuple[torch.Tensor, ...]:
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    ang = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv)
    return ang.cos()[None, None], ang.sin()[None, None]


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with RoPE through SDPA."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.h, self.dk = cfg.n_heads, cfg.d_kv
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.n_heads * cfg.d_kv, bias=False)
        self.o = nn.Linear(cfg.n_heads * cfg.d_kv, cfg.d_model, bias=False)
        self.p = cfg.dropout

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.h, self.dk).permute(2, 0, 3, 1, 4)
        q, k = _apply_rope(q, *rope), _apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.p if self.training else 0.0
        )
        return self.o(out.transpose(1, 2).reshape(b, n, self.h * self.dk))


class CrossAttention(nn.Module):
    """Attention from decoder states to the latent memory tokens (no positions)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.h, self.dk = cfg.n_heads, cfg.d_kv
        self.q = nn.Linear(cfg.d_model, cfg.n_heads * cfg.d_kv, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.n_heads * cfg.d_kv, bias=False)
        self.o = nn.Linear(cfg.n_heads * cfg.d_kv, cfg.d_model, bias=False)
        self.p = cfg.dropout

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        m = mem.shape[1]
        q = self.q(x).view(b, n, self.h, self.dk).transpose(1, 2)
        k, v = self.kv(mem).view(b, m, 2, self.h, self.dk).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0)
        return self.o(out.transpose(1, 2).reshape(b, n, self.h * self.dk))


class GatedGelu(nn.Module):
    """T5.1.1 feed-forward: ``wo(gelu(wi_0 x) * wi_1 x)``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.wi = nn.Linear(cfg.d_model, 2 * cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, lin = self.wi(x).chunk(2, dim=-1)
        return self.wo(self.drop(F.gelu(gate, approximate="tanh") * lin))


class EncoderBlock(nn.Module):
    """Pre-norm self-attention + FFN."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n1, self.n2 = RMSNorm(cfg.d_model, cfg.eps), RMSNorm(cfg.d_model, cfg.eps)
        self.attn, self.ff = SelfAttention(cfg), GatedGelu(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.n1(x), rope, mask))
        return x + self.drop(self.ff(self.n2(x)))


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention, cross-attention to the latent memory, FFN."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n1, self.n2, self.n3 = (RMSNorm(cfg.d_model, cfg.eps) for _ in range(3))
        self.attn, self.cross, self.ff = SelfAttention(cfg), CrossAttention(cfg), GatedGelu(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple, mem: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.n1(x), rope, None, causal=True))
        x = x + self.drop(self.cross(self.n2(x), mem))
        return x + self.drop(self.ff(self.n3(x)))


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per latent dimension, averaged over the batch (nats)."""
    kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float())
    return kl.mean(0)


class AttentionPool(nn.Module):
    """``m`` learned queries attend over the encoder states (padding masked): ``(B, m * d)``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.h, self.dk, self.m = cfg.n_heads, cfg.d_kv, cfg.head_queries
        self.query = nn.Parameter(
            torch.randn(self.m, self.h * self.dk) * (self.h * self.dk) ** -0.5
        )
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.n_heads * cfg.d_kv, bias=False)
        self.o = nn.Linear(cfg.n_heads * cfg.d_kv, cfg.d_model, bias=False)
        self.norm = RMSNorm(cfg.d_model, cfg.eps)

    def forward(self, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        q = self.query.to(h.dtype).view(1, self.m, self.h, self.dk).transpose(1, 2)
        k, v = self.kv(h).view(b, n, 2, self.h, self.dk).permute(2, 0, 3, 1, 4)
        mask = keep[:, None, None, :]
        out = F.scaled_dot_product_attention(q.expand(b, -1, -1, -1), k, v, attn_mask=mask)
        out = self.o(out.transpose(1, 2).reshape(b, self.m, self.h * self.dk))
        return self.norm(out).flatten(1)


_SEPARATORS = tuple(OFFSET + ord(c) for c in " ()")
_DIGIT_LO, _DIGIT_HI = OFFSET + ord("0"), OFFSET + ord("9")
_MINUS = OFFSET + ord("-")


def _separator(ids: torch.Tensor) -> torch.Tensor:
    """Bytes that end an atom: spaces, parentheses, padding, EOS and sentinels."""
    sep = (ids < OFFSET) | (ids >= SENTINEL_START)
    for b in _SEPARATORS:
        sep |= ids == b
    return sep


def atom_slots(ids: torch.Tensor, n_fields: int, n_places: int) -> torch.Tensor:
    """Slot of every byte: ``atom * n_places + place``; ``n_fields * n_places`` = no slot.

    Atoms are the runs of bytes between spaces and parentheses, counted from the start of the text
    (the separators, padding, EOS and sentinels have no slot).  A digit's place is the number of
    digits after it in its atom (0 = the last digit; places beyond ``n_places - 2`` share the top
    one); every other byte of an atom (sign, point, letters) goes to place ``n_places - 1``.  Atoms
    from ``n_fields`` on have no slot.
    """
    sep = _separator(ids)
    digit = (ids >= _DIGIT_LO) & (ids <= _DIGIT_HI)
    atom = torch.cumsum(sep.long(), dim=1)  # a separator opens the next atom
    dcum = torch.cumsum(digit.long(), dim=1)
    n_atoms = ids.shape[1] + 1
    total = torch.zeros(ids.shape[0], n_atoms, dtype=torch.long, device=ids.device)
    total.scatter_add_(1, atom, digit.long())
    base = torch.full_like(total, ids.shape[1] + 1)
    base.scatter_reduce_(1, atom, dcum - digit.long(), reduce="amin")
    place = total.gather(1, atom) - (dcum - base.gather(1, atom))
    place = torch.where(digit, place.clamp(max=n_places - 2), torch.full_like(place, n_places - 1))
    none = n_fields * n_places
    slot = atom * n_places + place
    return torch.where(sep | (atom >= n_fields), torch.full_like(slot, none), slot)


def n_atoms(ids: torch.Tensor) -> int:
    """Number of atoms (as :func:`atom_slots` counts them) of the longest text in ``ids``."""
    slots = atom_slots(ids, ids.shape[-1] + 1, 2)
    real = slots < 2 * (ids.shape[-1] + 1)
    return int(slots[real].max()) // 2 + 1 if bool(real.any()) else 0


class FieldPool(nn.Module):
    """Encoder states projected to ``head_slot_dim`` and summed into atom-by-place slots.

    Output ``(B, head_fields * head_places * head_slot_dim)``: the layout of an s-expression's
    numbers, so an MLP can weigh the n-th number's leading digit apart from its last one.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.f, self.p, self.k = cfg.head_fields, cfg.head_places, cfg.head_slot_dim
        self.proj = nn.Linear(cfg.d_model, self.k)

    def forward(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        b = h.shape[0]
        slots = atom_slots(ids, self.f, self.p)
        out = torch.zeros(b, self.f * self.p + 1, self.k, dtype=h.dtype, device=h.device)
        out.scatter_add_(1, slots.unsqueeze(-1).expand(-1, -1, self.k), self.proj(h))
        return out[:, :-1].flatten(1)


def atom_digits(ids: torch.Tensor, n_fields: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Atom of every digit byte and its place weight; ``n_fields`` (no slot) for other bytes.

    Atoms are counted as :func:`atom_slots` counts them.  The k-th digit of an atom (k = 0 first,
    whatever else lies between its digits) weighs ``10 ** -(k + 1)``, so an atom's digits read as
    the decimal fraction ``0.d0d1d2...`` (``-0104`` -> 0.0104, ``2001-04-15`` -> 0.20010415).
    """
    return _digit_layout(ids, n_fields)[2:]


def _digit_layout(ids: torch.Tensor, n_fields: int) -> tuple[torch.Tensor, ...]:
    """The digit bytes, every byte's atom (``n_fields``: none), each digit's atom and place
    weight (:func:`atom_digits`)."""
    digit = (ids >= _DIGIT_LO) & (ids <= _DIGIT_HI)
    every = atom_slots(ids, n_fields, 2) // 2
    return (digit, every, *_digit_atoms(digit, every, n_fields))


def _digit_atoms(
    digit: torch.Tensor, every: torch.Tensor, n_fields: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`atom_digits` from the digit mask and every byte's atom (``atom_slots // places``)."""
    atom = torch.where(digit, every, torch.full_like(every, n_fields))
    dcum = torch.cumsum(digit.long(), dim=1)
    b, n = digit.shape
    first = torch.full((b, n_fields + 1), n + 1, device=digit.device)
    first.scatter_reduce_(1, atom, dcum - digit.long(), reduce="amin")  # digits before the atom
    k = dcum - 1 - first.gather(1, atom)
    weight = torch.where(atom < n_fields, 10.0 ** -(k.float() + 1), torch.zeros(()))
    return atom, weight


def _atom_sign(ids: torch.Tensor, every: torch.Tensor, n_fields: int) -> torch.Tensor:
    """``(B, n_fields + 1)``: -1 for the atoms that open with a minus sign, else 1."""
    prev = F.pad(ids, (1, 0), value=_SEPARATORS[0])[:, :-1]
    opens = (ids == _MINUS) & _separator(prev)
    neg = torch.zeros(ids.shape[0], n_fields + 1, device=ids.device)
    neg.scatter_add_(1, every, opens.float())
    return 1.0 - 2.0 * neg.clamp(max=1.0)


class ValuePool(nn.Module):
    """Encoder states read as the text's decimal numbers, one standardised slot per atom.

    Every digit byte's state is classified into its digit (``W_d h``, 10 classes; fine-tuning adds
    the cross-entropy against the byte itself, :attr:`digit_loss`, so this reading becomes exact)
    and the expected digit is weighed by its place (``0.1, 0.01, ...`` from the atom's first digit)
    and summed per atom, negated when the atom opens with a minus sign: one number per field of the
    text, as a table model would see it (``-0104`` -> -0.0104).  Next to
    it, per atom, ``head_slot_dim`` context numbers (``W_v h`` summed over the digits with the same
    weights) and ``head_slot_dim`` for the bytes that are not digits (``W_o h``: sign, point, name);
    ``head_slot_dim: 0`` leaves the values alone.  With ``head_value_grad`` false the target's
    gradient stops at the values (only the digit cross-entropy trains their reading), so they stay
    the text's numbers rather than becoming a channel the fine-tune bends to fit its rows.
    Output ``(B, head_fields * (1 + 2 * head_slot_dim))``, standardised by batch statistics
    (running ones at evaluation, or for a batch of one row), or with ``head_norm: fixed`` always
    by the running ones, set from the :meth:`exact` numbers of the training texts before
    fine-tuning.  Computed in float32 whatever the autocast dtype: bf16 keeps 3 significant
    digits.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.f, self.k = cfg.head_fields, cfg.head_slot_dim
        self.value_grad = cfg.head_value_grad
        self.fixed = cfg.head_norm == "fixed"
        self.digit = nn.Linear(cfg.d_model, 10)
        # k = 0: the values alone, no context numbers
        self.val = nn.Linear(cfg.d_model, self.k) if self.k else None
        self.other = nn.Linear(cfg.d_model, self.k) if self.k else None
        self.norm = nn.BatchNorm1d(self.f * (1 + 2 * self.k), affine=False)
        self.register_buffer("_digits", torch.arange(10, dtype=torch.float32), persistent=False)
        #: mean cross-entropy of the digit reading on the last call's digit bytes (0 without any)
        self.digit_loss: torch.Tensor | None = None

    def forward(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        b, f, k = h.shape[0], self.f, self.k
        with torch.autocast(h.device.type, enabled=False):
            h = h.float()
            digit, every, atom, weight = _digit_layout(ids, f)
            logits = self.digit(h)
            target = (ids - _DIGIT_LO).clamp(0, 9).long()
            ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
            # masked mean over the digit bytes: no device sync, no data-dependent shapes
            self.digit_loss = (ce.view_as(ids) * digit).sum() / digit.sum().clamp(min=1)
            read = logits.softmax(-1) @ self._digits[:, None]
            if not self.value_grad:
                read = read.detach()
            if self.val is not None:
                read = torch.cat([read, self.val(h)], -1)
            vals = torch.zeros(b, f + 1, 1 + k, device=h.device)
            vals.scatter_add_(1, atom[..., None].expand(-1, -1, 1 + k), weight[..., None] * read)
            sign = _atom_sign(ids, every, f)[..., None]  # on the value, not the context numbers
            x = torch.cat([vals[..., :1] * sign, vals[..., 1:]], -1)[:, :-1].flatten(1)
            if self.other is not None:
                rest = torch.where(digit, torch.full_like(every, f), every)
                other = torch.zeros(b, f + 1, k, device=h.device)
                other.scatter_add_(1, rest[..., None].expand(-1, -1, k), self.other(h))
                x = torch.cat([x, other[:, :-1].flatten(1)], dim=1)
            n = self.norm  # batch statistics need two rows; one row uses the running ones
            train = self.training and b > 1 and not self.fixed
            return F.batch_norm(x, n.running_mean, n.running_var, training=train, eps=n.eps)

    def exact(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, head_fields)``: the signed numbers of the text as an exact digit reading gives
        them (before standardisation; the values alone, as with ``head_slot_dim: 0``)."""
        f = self.f
        digit, every, atom, weight = _digit_layout(ids, f)
        read = (ids - _DIGIT_LO).clamp(0, 9).float() * digit
        vals = torch.zeros(ids.shape[0], f + 1, device=ids.device)
        vals.scatter_add_(1, atom, weight * read)
        return (vals * _atom_sign(ids, every, f))[:, :-1]


class PeriodicEmbedding(nn.Module):
    """Each of ``n`` input numbers as ``dim`` features: ``ReLU(W_j [sin 2 pi c_j x, cos 2 pi c_j x])``.

    The periodic embeddings of numerical features (PLR, Gorishniy et al. 2022, "On Embeddings for
    Numerical Features in Tabular Deep Learning"): ``k`` learned frequencies ``c_j ~ N(0, sigma)``
    and a linear layer of its own for every number, so the MLP above starts from piecewise,
    non-monotone functions of each value instead of one weight per value.  Inputs should be
    standardised (the values head's are).  Computed in float32 whatever the autocast dtype.
    Output ``(B, n * dim)``.
    """

    def __init__(self, n: int, k: int, dim: int, sigma: float) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.randn(n, k) * sigma)
        self.weight = nn.Parameter(torch.randn(n, 2 * k, dim) * (2 * k) ** -0.5)
        self.bias = nn.Parameter(torch.zeros(n, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            a = 2 * torch.pi * self.freq * x.float()[..., None]
            e = torch.cat([a.sin(), a.cos()], -1)
            return F.relu(torch.einsum("bnk,nkd->bnd", e, self.weight) + self.bias).flatten(1)


class ByteVAE(nn.Module):
    """Encoder-decoder over byte ids with a VAE bottleneck and an optional value head.

    Parameters
    ----------
    cfg
        Architecture.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.d_kv % 2:
            raise ValueError(f"d_kv must be even for rotary positions, got {cfg.d_kv}")
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.enc = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.n_enc_layers))
        self.enc_norm = RMSNorm(d, cfg.eps)
        self.to_stats = nn.Linear(d, 2 * cfg.latent_dim)
        self.z_to_mem = nn.Linear(cfg.latent_dim, cfg.n_mem * d)
        self.mem_norm = RMSNorm(d, cfg.eps)
        self.z_to_emb = nn.Linear(cfg.latent_dim, d) if cfg.z_to_embedding else None
        self.dec = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.n_dec_layers))
        self.dec_norm = RMSNorm(d, cfg.eps)
        self.lm_head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.head: nn.Module | None = None
        self.head_pool: AttentionPool | None = None
        self.head_fields: FieldPool | ValuePool | None = None
        if cfg.head_outputs:
            h_in = {
                "mu": cfg.latent_dim,
                "pooled": d,
                "attention": cfg.head_queries * d,
                "fields": cfg.head_fields * cfg.head_places * cfg.head_slot_dim,
                "values": cfg.head_fields * (1 + 2 * cfg.head_slot_dim),
            }[cfg.head_input]
            if cfg.head_input == "attention":
                self.head_pool = AttentionPool(cfg)
            elif cfg.head_input == "fields":
                self.head_fields = FieldPool(cfg)
            elif cfg.head_input == "values":
                self.head_fields = ValuePool(cfg)
            self.head = self._mlp(cfg, h_in)
        self.apply(self._init)

    @staticmethod
    def _mlp(cfg: ModelConfig, h_in: int) -> nn.Sequential:
        """The head: [periodic embedding,] dropout, linear, GELU, dropout, linear."""
        layers: list[nn.Module] = []
        if cfg.head_periodic:
            k, dim = cfg.head_periodic, cfg.head_periodic_dim
            layers.append(PeriodicEmbedding(h_in, k, dim, cfg.head_periodic_sigma))
            h_in *= dim
        return nn.Sequential(
            *layers,
            nn.Dropout(cfg.head_dropout),
            nn.Linear(h_in, cfg.head_hidden),
            nn.GELU(),
            nn.Dropout(cfg.head_dropout),
            nn.Linear(cfg.head_hidden, cfg.head_outputs),
        )

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):  # fan-in init (t5x DenseGeneral), so initial loss ~ ln V
            nn.init.normal_(m.weight, 0.0, m.in_features**-0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 1.0)

    # ------------------------------------------------------------------ encoder side
    def encode(
        self, ids: torch.Tensor, padded: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states ``(B, L, d)`` and the key mask ``(B, L)`` (True = real token).

        ``padded=False`` promises there is no padding: no attention mask (flash-eligible SDPA) and
        no device sync; ``None`` checks the ids.
        """
        keep = ids != PAD_ID
        if padded is None:
            padded = not bool(keep.all())
        mask = keep[:, None, None, :] if padded else None
        rope = _rope(ids.shape[1], self.cfg.d_kv, self.cfg.rope_base, ids.device)
        h = self.embed(ids)
        for blk in self.enc:
            h = blk(h, rope, mask)
        return self.enc_norm(h), keep

    @staticmethod
    def pool(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Masked mean of encoder states."""
        w = keep.to(h.dtype).unsqueeze(-1)
        return (h * w).sum(1) / w.sum(1).clamp_min(1.0)

    def posterior(
        self, ids: torch.Tensor, padded: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``mu, logvar`` (float32) and the pooled encoder state."""
        mu, logvar, pooled, _ = self._posterior(ids, padded)
        return mu, logvar, pooled

    def _posterior(
        self, ids: torch.Tensor, padded: bool | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h, keep = self.encode(ids, padded)
        pooled = self.pool(h, keep)
        mu, logvar = self.to_stats(pooled).float().chunk(2, dim=-1)
        return mu, logvar.clamp(-20.0, 10.0), pooled, (h, keep)

    # ------------------------------------------------------------------ decoder side
    def decode(self, z: torch.Tensor, dec_in: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, V)`` for decoder inputs ``dec_in`` given latents ``z``."""
        dtype = self.embed.weight.dtype
        z = z.to(dtype)
        mem = self.mem_norm(self.z_to_mem(z).view(z.shape[0], self.cfg.n_mem, self.cfg.d_model))
        h = self.embed(dec_in)
        if self.z_to_emb is not None:
            h = h + self.z_to_emb(z).unsqueeze(1)
        rope = _rope(dec_in.shape[1], self.cfg.d_kv, self.cfg.rope_base, dec_in.device)
        for blk in self.dec:
            h = blk(h, rope, mem)
        return self.lm_head(self.dec_norm(h))

    def forward(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        sample: bool = True,
        padded: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode, sample ``z`` (reparameterised; ``mu`` when ``sample`` is False) and decode."""
        mu, logvar, _ = self.posterior(input_ids, padded)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return {"mu": mu, "logvar": logvar, "z": z, "logits": self.decode(z, decoder_input_ids)}

    def predict_value(
        self, input_ids: torch.Tensor, padded: bool | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Head output ``(B, head_outputs)`` plus ``mu``/``logvar`` (and ``digit_loss``, the values
        head's digit-reading cross-entropy)."""
        if self.head is None:
            raise RuntimeError("model has no value head (head_outputs=0)")
        mu, logvar, pooled, (h, keep) = self._posterior(input_ids, padded)
        if self.head_pool is not None:
            x = self.head_pool(h, keep)
        elif self.head_fields is not None:
            x = self.head_fields(h, input_ids)
        else:
            x = mu if self.cfg.head_input == "mu" else pooled
        aux = {"mu": mu, "logvar": logvar}
        if isinstance(self.head_fields, ValuePool) and self.head_fields.digit_loss is not None:
            aux["digit_loss"] = self.head_fields.digit_loss
        return self.head(x.to(self.lm_head.weight.dtype)).float(), aux

    @torch.no_grad()
    def generate(
        self,
        z: torch.Tensor,
        *,
        max_len: int = 512,
        start_id: int = TASK_TEXT_ID,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Decode byte ids from latents (greedy, or sampled at ``temperature``), until EOS.

        Only byte ids and EOS can be produced.  No KV cache: fine for the short texts here.
        """
        b = z.shape[0]
        allowed = torch.full((self.cfg.vocab_size,), float("-inf"), device=z.device)
        allowed[OFFSET:SENTINEL_START] = 0.0
        allowed[EOS_ID] = 0.0
        seq = torch.full((b, 1), start_id, dtype=torch.long, device=z.device)
        done = torch.zeros(b, dtype=torch.bool, device=z.device)
        for _ in range(max_len):
            logits = self.decode(z, seq)[:, -1].float() + allowed
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD_ID), nxt)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            done |= nxt == EOS_ID
            if bool(done.all()):
                break
        return [row[1:].tolist() for row in seq.cpu()]

    def n_params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())
