"""T5 span corruption in numpy, random for any length (ByT5: density 0.15, mean span 20).

The noise mask has ``round(L * density)`` noise tokens (at least 1, at most ``L - 1``) in
``round(noise / mean_span)`` spans (at least 1).  Unlike the T5/TF ``random_spans_noise_mask`` (which
always starts with non-noise and ends with noise, and is not random for short inputs), whether the
sequence starts and ends with a noise span is drawn at random too, so every position can be noise.

Inputs keep non-noise tokens and replace each noise span by one sentinel (259, 260, ... in order of
appearance), then EOS.  Targets are, per noise span, its sentinel and the dropped tokens, then EOS.
"""

from __future__ import annotations

import math

import numpy as np

from eoflow.vae.tokenizer import EOS_ID, N_SENTINELS, SENTINEL_START

__all__ = ["expected_lengths", "noise_mask", "reconstruct", "span_corrupt"]


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _segments(n_items: int, n_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Random composition of ``n_items`` into ``n_segments`` positive parts."""
    if n_segments <= 0:
        return np.zeros(0, dtype=np.int64)
    cuts = np.sort(rng.choice(np.arange(1, n_items), size=n_segments - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [n_items]]))


def noise_mask(
    length: int,
    rng: np.random.Generator,
    *,
    density: float = 0.15,
    mean_span: float = 20.0,
) -> np.ndarray:
    """Boolean noise mask of ``length`` tokens (True = noise).

    Parameters
    ----------
    length
        Sequence length (>= 2).
    rng
        Random generator.
    density
        Fraction of noise tokens.
    mean_span
        Mean noise span length.
    """
    if length < 2:
        raise ValueError("span corruption needs at least 2 tokens")
    n_noise = int(min(max(round(length * density), 1), length - 1))
    n_clean = length - n_noise
    n_spans = int(max(1, min(round(n_noise / mean_span), n_noise, n_clean + 1)))
    # (starts with noise, ends with noise) -> number of clean segments
    options = [
        (s, e)
        for s in (False, True)
        for e in (False, True)
        if 1 <= n_spans + 1 - int(s) - int(e) <= n_clean
    ]
    # weight each layout by its number of clean compositions: every arrangement is equally likely
    logw = np.array([_log_comb(n_clean - 1, n_spans - int(s) - int(e)) for s, e in options])
    weights = np.exp(logw - logw.max())
    start_noise, end_noise = options[rng.choice(len(options), p=weights / weights.sum())]
    n_clean_seg = n_spans + 1 - int(start_noise) - int(end_noise)
    noise_len = _segments(n_noise, n_spans, rng)
    clean_len = _segments(n_clean, n_clean_seg, rng)
    mask = np.zeros(length, dtype=bool)
    pos, ci, ni = 0, 0, 0
    is_noise = start_noise
    while pos < length:
        if is_noise:
            mask[pos : pos + noise_len[ni]] = True
            pos += noise_len[ni]
            ni += 1
        else:
            pos += clean_len[ci]
            ci += 1
        is_noise = not is_noise
    return mask


def span_corrupt(
    ids: np.ndarray,
    rng: np.random.Generator,
    *,
    density: float = 0.15,
    mean_span: float = 20.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Span-corrupt ``ids`` (without EOS) into T5 ``(inputs, targets)``, both ending with EOS.

    Returns
    -------
    tuple of numpy.ndarray
        int32 inputs and targets.
    """
    ids = np.asarray(ids, dtype=np.int32)
    mask = noise_mask(len(ids), rng, density=density, mean_span=mean_span)
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    n_spans = int(starts.sum())
    if n_spans > N_SENTINELS:
        raise ValueError(f"{n_spans} noise spans exceed the {N_SENTINELS} sentinel ids")
    span_idx = np.cumsum(starts) - 1
    sentinels = (SENTINEL_START + span_idx).astype(np.int32)
    keep_in = ~mask | starts
    inputs = np.where(starts, sentinels, ids)[keep_in]
    # targets: sentinel before each span's first token, then the span tokens
    noise_pos = np.flatnonzero(mask)
    n_t = len(noise_pos) + n_spans
    targets = np.empty(n_t, dtype=np.int32)
    shift = np.cumsum(starts[noise_pos])  # how many sentinels precede (and include) this token
    targets[np.arange(len(noise_pos)) + shift] = ids[noise_pos]
    first = noise_pos[starts[noise_pos]]
    targets[np.flatnonzero(starts[noise_pos]) + np.arange(n_spans)] = sentinels[first]
    eos = np.array([EOS_ID], dtype=np.int32)
    return np.concatenate([inputs, eos]), np.concatenate([targets, eos])


def reconstruct(inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Original ids (without EOS) from corrupted ``inputs`` and ``targets``."""
    inputs = np.asarray(inputs)
    targets = np.asarray(targets)
    inputs = inputs[: np.flatnonzero(inputs == EOS_ID)[0]] if EOS_ID in inputs else inputs
    targets = targets[: np.flatnonzero(targets == EOS_ID)[0]] if EOS_ID in targets else targets
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets.tolist():
        if t >= SENTINEL_START:
            current = t
            spans[current] = []
        elif current is not None:
            spans[current].append(t)
    out: list[int] = []
    for t in inputs.tolist():
        out.extend(spans[t] if t >= SENTINEL_START else [t])
    return np.asarray(out, dtype=np.int32)


def expected_lengths(
    length: int, *, density: float = 0.15, mean_span: float = 20.0
) -> tuple[int, int]:
    """Lengths ``(inputs, targets)`` incl. EOS that :func:`span_corrupt` gives for ``length`` ids."""
    n_noise = int(min(max(round(length * density), 1), length - 1))
    n_spans = int(max(1, min(round(n_noise / mean_span), n_noise, length - n_noise + 1)))
    return length - n_noise + n_spans + 1, n_noise + n_spans + 1
