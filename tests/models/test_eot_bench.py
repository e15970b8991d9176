"""The bench replay's items and delays, on hand-made cases and traces (no model needed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from clients.bench.testset import Case  # noqa: E402
from models.training.eot_bench import bench_item, delay_ms, summary  # noqa: E402
from models.training.eot_tune import FALLBACK_MS, PREFIX, WIN, Trace  # noqa: E402

CASE = Case(id="c0001-pause", kind="pause", voice="v", question="what is two plus two",
            answer="Two plus two is four.", key_word="four", skill="addition", rate=16000,
            speech_start=4000, speech_end=30000, pauses=((12000, 20000),))  # fmt: skip


@pytest.mark.parametrize("phase", [0, 1, 300, WIN - 1])
def test_a_case_starts_at_its_phase_behind_the_session_prefix(phase: int) -> None:
    audio = np.linspace(-0.5, 0.5, 40000).astype(np.float32)
    it = bench_item(CASE, audio, phase)
    lead = len(it["pcm"]) - len(audio)
    assert lead >= PREFIX and lead % WIN == phase
    assert np.all(it["pcm"][:lead] == 0)
    assert it["pcm"][lead + 39999] == 16383  # the audio follows, as PCM16
    assert (it["start"], it["end"]) == (4000 + lead, 30000 + lead)
    assert it["pause"] == (12000 + lead, 20000 + lead)


def test_a_case_at_another_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="22050"):
        bench_item(replace(CASE, rate=22050), np.zeros(100, np.float32), 0)


def trace(head: list[float], end_window: int) -> Trace:
    vad = [0.95] * end_window + [0.0] * (len(head) - end_window)
    n = len(head)
    return Trace({"end": end_window * WIN}, np.arange(1, n + 1) * WIN, np.array(vad), np.array(head),
                 np.zeros(n, int))  # fmt: skip


def test_delays_follow_the_rule_and_fall_back_when_it_never_fires() -> None:
    rule = (0.95, 3, None, None)
    sure = trace([0.0] * 12 + [0.99] * 60, 12)
    assert delay_ms(sure, rule) == pytest.approx(3 * WIN / 16)  # three silent windows
    unsure = trace([0.0] * 12 + [0.9] * 20, 12)  # too short for the 1.5 s fallback
    assert delay_ms(unsure, rule) == FALLBACK_MS
    assert delay_ms(unsure, (0.9, 3, None, None)) == pytest.approx(3 * WIN / 16)


def test_summary_counts_takeovers_and_late_turns() -> None:
    s = summary(np.array([-50.0, 100.0, 150.0, 250.0, 800.0, FALLBACK_MS]))
    assert s["n"] == 6
    assert s["within200"] == pytest.approx(2 / 6)
    assert s["early"] == pytest.approx(1 / 6)
    assert s["late"] == 2
