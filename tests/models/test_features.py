"""The log-mel front end: shapes, and streaming in any chunk sizes equals offline."""

from __future__ import annotations

import numpy as np
import pytest

from models.features import HOP, N_MELS, WIN, LogMel


def test_shape_and_frame_count() -> None:
    fe = LogMel()
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    f = fe.compute(x)
    assert f.shape == (1 + (16000 - WIN) // HOP, N_MELS)
    assert f.dtype == np.float32
    assert fe.compute(x[: WIN - 1]).shape == (0, N_MELS)


@pytest.mark.parametrize("chunk", [1, 160, 320, 333, 4000])
def test_streaming_equals_offline(chunk: int) -> None:
    fe = LogMel()
    x = np.random.default_rng(1).standard_normal(8123).astype(np.float32) * 0.1
    offline = fe.compute(x)
    s = fe.new_stream()
    parts = [s.push(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    np.testing.assert_allclose(np.concatenate(parts), offline, rtol=0, atol=1e-4)  # BLAS rounding


def test_tone_lands_in_the_right_band() -> None:
    fe = LogMel()
    t = np.arange(16000) / 16000
    f = fe.compute(np.sin(2 * np.pi * 1000 * t).astype(np.float32) * 0.5)
    low = fe.compute(np.sin(2 * np.pi * 200 * t).astype(np.float32) * 0.5)
    assert f.mean(0).argmax() > low.mean(0).argmax()
