"""The end-of-turn miss classes on hand-made traces (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from models.training.eot_misses import classify  # noqa: E402
from models.training.eot_tune import Trace  # noqa: E402

WIN = 512


def trace(vad: list[float], head: list[float], end_window: int) -> Trace:
    n = len(vad)
    ends = np.arange(1, n + 1) * WIN
    return Trace({"end": end_window * WIN}, ends, np.array(vad), np.array(head), np.zeros(n, int))


SPEECH, QUIET = [0.95] * 12, [0.0] * 60


def test_a_sure_head_after_a_quick_pause_is_within() -> None:
    tr = trace(SPEECH + QUIET, [0.0] * 12 + [0.99] * 60, 12)
    assert classify(tr, 0.97, 3) == "within"


def test_a_head_under_the_threshold_is_unsure() -> None:
    tr = trace(SPEECH + QUIET, [0.0] * 12 + [0.9] * 60, 12)
    assert classify(tr, 0.97, 3) == "unsure"


def test_a_vad_that_stays_high_past_200_ms_is_a_slow_pause() -> None:
    tr = trace(SPEECH + [0.95] * 8 + QUIET, [0.0] * 12 + [0.99] * 68, 12)
    assert classify(tr, 0.97, 3) == "slow_pause"


def test_a_fire_in_a_mid_question_pause_is_early() -> None:
    vad = SPEECH + [0.0] * 10 + SPEECH + QUIET
    head = [0.0] * 12 + [0.99] * 10 + [0.0] * 12 + [0.99] * 60
    assert classify(trace(vad, head, 34), 0.97, 3) == "early"


def test_a_head_sure_only_before_the_pause_is_confirmed_is_other() -> None:
    head = [0.0] * 12 + [0.99] + [0.5] * 59
    assert classify(trace(SPEECH + QUIET, head, 12), 0.97, 3) == "other"


def test_early_fires_say_how_long_before_the_end_and_where() -> None:
    from models.training.eot_misses import early_where

    vad = SPEECH + [0.0] * 10 + SPEECH + QUIET
    head = [0.0] * 12 + [0.99] * 10 + [0.0] * 12 + [0.99] * 60
    tr = trace(vad, head, 34)
    tr.item.update(pause=(12 * WIN, 22 * WIN), text="what is one times zero please", pause_word=5,
                   skill="multiplication")
    ms, where = early_where(tr, 0.97, 3)
    assert where == "pause before fillers" and ms == pytest.approx((34 - 15) * WIN / 16)
    tr.item.update(pause_word=4)  # "times zero please" still to come
    assert early_where(tr, 0.97, 3)[1] == "pause"
    tr.item.update(pause=(16 * WIN, 22 * WIN))  # the labelled pause begins after the fire
    assert early_where(tr, 0.97, 3)[1] == "gap"
    on_time = trace(SPEECH + QUIET, [0.0] * 12 + [0.99] * 60, 12)
    assert early_where(on_time, 0.97, 3) is None
