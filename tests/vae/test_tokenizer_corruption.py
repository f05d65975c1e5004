"""Byte ids convention and T5 span-corruption invariants."""

from __future__ import annotations

import numpy as np
import pytest

from eoflow.vae.corruption import expected_lengths, noise_mask, reconstruct, span_corrupt
from eoflow.vae.tokenizer import (
    EOS_ID,
    N_SENTINELS,
    PAD_ID,
    SENTINEL_START,
    TASK_SPANS_ID,
    TASK_TEXT_ID,
    UNK_ID,
    VOCAB_SIZE,
    decode,
    encode,
    sentinel_id,
)


def test_id_convention_is_pinned():
    # ByT5 / seqio ByteVocabulary: pad 0, eos 1, unk 2, byte b -> b + 3
    assert (PAD_ID, EOS_ID, UNK_ID) == (0, 1, 2)
    assert encode("(a").tolist() == [ord("(") + 3, ord("a") + 3, 1]
    assert encode(bytes([0, 255]), add_eos=False).tolist() == [3, 258]
    # sentinels are the HF ByT5Tokenizer's <extra_id_i> = 259 + i, above every byte id
    assert (SENTINEL_START, sentinel_id(0), sentinel_id(1)) == (259, 259, 260)
    assert sentinel_id(N_SENTINELS - 1) == 381 and (TASK_TEXT_ID, TASK_SPANS_ID, VOCAB_SIZE) == (
        382,
        383,
        384,
    )
    with pytest.raises(ValueError):
        sentinel_id(N_SENTINELS)
    text = "((data-seq (loc (x 1.5) (y -2))))"
    assert decode(encode(text)) == text
    assert decode([*encode("ab", add_eos=False), 259, 0, 1, 70]) == "ab"
    assert decode([*encode("ab", add_eos=False), 260], sentinels=True) == "ab<extra_id_1>"


@pytest.mark.parametrize("length", [2, 3, 7, 30, 150, 1193])
def test_corruption_invariants(length):
    rng = np.random.default_rng(length)
    for _ in range(40):
        ids = rng.integers(3, 259, length).astype(np.int32)
        inputs, targets = span_corrupt(ids, rng)
        # EOS-terminated, exact T5 lengths
        assert inputs[-1] == EOS_ID and targets[-1] == EOS_ID
        assert (len(inputs), len(targets)) == expected_lengths(length)
        # sentinels appear in order 259, 260, ... in both, and pair up
        s_in = inputs[inputs >= SENTINEL_START]
        s_t = targets[targets >= SENTINEL_START]
        assert s_in.tolist() == list(range(SENTINEL_START, SENTINEL_START + len(s_in)))
        assert s_t.tolist() == s_in.tolist()
        # noise fraction = round(L * 0.15), clipped to [1, L - 1]
        n_noise = len(targets) - 1 - len(s_t)
        assert n_noise == min(max(round(length * 0.15), 1), length - 1)
        # the original comes back from inputs + targets
        np.testing.assert_array_equal(reconstruct(inputs, targets), ids)


def test_byt5_shapes_and_configurable_density():
    assert expected_lengths(1193) == (1024, 189)  # ByT5 pre-training: 1193 raw bytes -> 1024 / 189
    assert expected_lengths(568, mean_span=3) == (512, 114)  # classic T5
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 259, 1000)
    inp, tgt = span_corrupt(ids, rng, density=0.3, mean_span=5)
    assert len(inp) == 1000 - 300 + 60 + 1
    assert len(tgt) - 1 - (tgt >= SENTINEL_START).sum() == 300
    assert (tgt >= SENTINEL_START).sum() == 60


def test_noise_mask_is_random_for_short_sequences():
    # TF's random_spans_noise_mask always ends with noise and is fixed for length <= 30; ours is not
    rng = np.random.default_rng(1)
    masks = np.stack([noise_mask(12, rng) for _ in range(2000)])
    assert masks.sum(1).tolist() == [2] * 2000
    assert masks.any(0).all()  # every position is noise sometimes
    assert 0.05 < masks[:, -1].mean() < 0.5  # the last one is not always noise
    assert len({m.tobytes() for m in masks}) > 5
