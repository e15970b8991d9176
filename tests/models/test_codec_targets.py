"""Codec targets: deterministic sentence split and deterministic text -> z -> tokens."""

from __future__ import annotations

import numpy as np
import pytest

from models.training import codec_targets


def test_split_is_deterministic_and_large_enough() -> None:
    sentences = codec_targets.answer_sentences()
    fit, held = codec_targets.split_sentences(sentences)
    assert len(held) >= 200 and len(fit) > 0
    assert not set(fit) & set(held) and set(fit) | set(held) == set(sentences)
    # independent of input order
    assert codec_targets.split_sentences(reversed(sentences)) == (fit, held)


def test_variant_scales_are_stable() -> None:
    a = codec_targets.variant_scales("Goodbye!", 3)
    assert a == codec_targets.variant_scales("Goodbye!", 3)
    assert a[0] == codec_targets.DEFAULT_SCALES and len(set(a)) == 3


def test_text_to_z_is_deterministic_with_durations() -> None:
    pytest.importorskip("piper")
    from models.training.piper_z import PiperTextToZ

    tz = PiperTextToZ.load()
    a = tz.synthesize("Hello! How can I help you?", seed=0)
    b = tz.synthesize("Hello! How can I help you?", seed=0)
    c = tz.synthesize("Hello! How can I help you?", seed=1)
    np.testing.assert_array_equal(a.z, b.z)
    assert not np.array_equal(a.z, c.z)
    assert a.z.shape[0] == 192 and a.durations.sum() == a.z.shape[1]
    assert len(a.durations) == len(a.phoneme_ids) and len(a.phonemes) == 2  # two sentences
    slow = tz.synthesize("Hello! How can I help you?", length_scale=1.5, seed=0)
    assert slow.z.shape[1] > 1.3 * a.z.shape[1]


def test_word_errors() -> None:
    from models.training.codec_eval import word_errors

    assert word_errors("a b c".split(), "a b c".split()) == 0
    assert word_errors("a b c".split(), "a x c d".split()) == 2
    assert word_errors([], "a".split()) == 1 and word_errors("a b".split(), []) == 2
