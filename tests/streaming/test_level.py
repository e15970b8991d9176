from __future__ import annotations

import numpy as np

from streaming.level import first_audible, refine_speech_end

RATE = 16000


def tone(seconds: float, amp: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_moves_a_late_vad_end_back_to_the_level_drop() -> None:
    x = np.concatenate([tone(0.5, 0.3), np.zeros(RATE // 2, np.float32)])
    true_end = RATE // 2
    got = refine_speech_end(x, true_end + 1600, RATE)  # VAD said 100 ms late
    assert abs(got - true_end) <= RATE // 100


def test_noise_floor_raises_the_threshold() -> None:
    rng = np.random.default_rng(0)
    noise = (0.02 * rng.standard_normal(RATE)).astype(np.float32)  # about -34 dBFS
    x = noise.copy()
    x[: RATE // 2] += tone(0.5, 0.3)
    got = refine_speech_end(x, RATE // 2 + 1600, RATE)
    assert abs(got - RATE // 2) <= RATE // 100


def test_keeps_the_coarse_end_when_nothing_is_loud() -> None:
    x = np.zeros(RATE, np.float32)
    assert refine_speech_end(x, 8000, RATE) == 8000


def test_first_audible_skips_padding_and_keeps_a_lead_in() -> None:
    x = np.concatenate([np.zeros(RATE // 5, np.float32), tone(0.2, 0.3)])
    start = first_audible(x, RATE)
    assert start is not None and abs(start - (RATE // 5 - RATE // 100)) <= RATE // 100
    assert first_audible(np.zeros(RATE, np.float32), RATE) is None
