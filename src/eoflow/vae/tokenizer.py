"""Byte-level tokenizer (ByT5 convention) with sentinel ids above the byte range.

Ids: 0 = pad, 1 = eos, 2 = unk, byte ``b`` -> ``b + 3`` (3..258), sentinel ``i`` -> ``259 + i``
(259..381, as the Hugging Face ``ByT5Tokenizer``'s ``<extra_id_i>``), two task tokens that start the
decoder (382 = reconstruct the whole text, 383 = T5 span targets), vocabulary rows 384.
Sentinels never alias data bytes (the original t5x ByT5 reused the top byte ids instead).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = [
    "EOS_ID",
    "N_SENTINELS",
    "OFFSET",
    "PAD_ID",
    "SENTINEL_START",
    "TASK_SPANS_ID",
    "TASK_TEXT_ID",
    "UNK_ID",
    "VOCAB_SIZE",
    "decode",
    "encode",
    "sentinel_id",
]

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
OFFSET = 3
SENTINEL_START = 259
TASK_TEXT_ID = 382
TASK_SPANS_ID = 383
VOCAB_SIZE = 384
N_SENTINELS = TASK_TEXT_ID - SENTINEL_START  # 123


def sentinel_id(i: int) -> int:
    """Id of the ``i``-th sentinel (0-based, in order of appearance)."""
    if not 0 <= i < N_SENTINELS:
        raise ValueError(f"sentinel index {i} outside 0..{N_SENTINELS - 1}")
    return SENTINEL_START + i


def encode(text: str | bytes, *, add_eos: bool = True) -> np.ndarray:
    """UTF-8 bytes of ``text`` as ids (``b + 3``), with a trailing EOS by default.

    Returns
    -------
    numpy.ndarray
        int32 ids.
    """
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    ids = np.frombuffer(raw, dtype=np.uint8).astype(np.int32) + OFFSET
    if add_eos:
        ids = np.append(ids, np.int32(EOS_ID))
    return ids


def decode(ids: Iterable[int], *, stop_at_eos: bool = True, sentinels: bool = False) -> str:
    """Text of byte ids; pad/unk are dropped, EOS ends the text, invalid UTF-8 is replaced.

    Parameters
    ----------
    ids
        Token ids.
    stop_at_eos
        Stop at the first EOS.
    sentinels
        Render sentinels as ``<extra_id_i>`` (otherwise they are dropped).
    """
    out = bytearray()
    for i in (int(t) for t in ids):
        if i == EOS_ID and stop_at_eos:
            break
        if OFFSET <= i < SENTINEL_START:
            out.append(i - OFFSET)
        elif SENTINEL_START <= i < TASK_TEXT_ID and sentinels:
            out.extend(f"<extra_id_{i - SENTINEL_START}>".encode())
    return out.decode("utf-8", errors="replace")
