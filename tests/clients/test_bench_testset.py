"""Benchmark test sets: deterministic, cached, and their ground truth is right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clients.bench.testset import (
    DEFAULT_VOICES,
    PAUSE_MS,
    Voice,
    generate_cases,
    heldout_voices,
    load_or_build,
    mix_noise,
    pause_split,
)
from models.domain import Example
from tests.clients.conftest import needs_espeak

ESPEAK = tuple(v for v in DEFAULT_VOICES if v.engine == "espeak")[:2]
KINDS = ("normal", "pause", "bargein", "noisy")
WIN = 160  # 10 ms at 16 kHz


def last_loud_window_end(x: np.ndarray, rate: int = 16000) -> int:
    """Independent reference: one past the last sample of the last 10 ms window above -40 dBFS."""
    win = rate // 100
    end = None
    for i in range(len(x) // win):
        w = x[i * win : (i + 1) * win].astype(np.float64)
        if 20 * np.log10(np.sqrt(np.mean(w**2)) + 1e-20) > -40:
            end = (i + 1) * win
    assert end is not None
    return end


@pytest.fixture(scope="module")
def cases_and_audio() -> tuple[list, dict]:  # type: ignore[type-arg]
    return generate_cases(seed=7, n_cases=7, kinds=KINDS, voices=ESPEAK)


@needs_espeak
def test_generation_is_deterministic(cases_and_audio: tuple[list, dict]) -> None:  # type: ignore[type-arg]
    cases, audio = cases_and_audio
    again_cases, again_audio = generate_cases(seed=7, n_cases=7, kinds=KINDS, voices=ESPEAK)
    assert again_cases == cases
    assert again_audio.keys() == audio.keys()
    for k in audio:
        np.testing.assert_array_equal(again_audio[k], audio[k])
    other, _ = generate_cases(seed=8, n_cases=7, kinds=KINDS, voices=ESPEAK)
    assert [c.question for c in other] != [c.question for c in cases]


@needs_espeak
def test_speech_end_is_the_clean_sources_last_loud_window(cases_and_audio: tuple[list, dict]) -> None:  # type: ignore[type-arg]
    cases, audio = cases_and_audio
    voices = {v.name: v for v in ESPEAK}
    assert {c.kind for c in cases} == set(KINDS)
    for c in cases:
        x = audio[c.id]
        if c.kind == "noisy":
            # The noise was mixed in after the ground truth: rebuild the clean source.
            clean = voices[c.voice].synthesize(c.question)
            lead = round(0.5 * c.rate)
            ref_end = lead + last_loud_window_end(clean)
            assert np.std(x[: c.speech_start]) > 1e-3  # noise before the speech...
            assert c.noise in ("white", "pink", "hum") and 8 <= (c.snr_db or 0) <= 20
        else:
            ref_end = last_loud_window_end(x)
        assert abs(c.speech_end - ref_end) <= WIN, c
        assert c.speech_start >= 0.3 * c.rate  # >= 300 ms of lead silence
        assert c.speech_start < c.speech_end <= len(x)


@needs_espeak
def test_pause_cases_have_the_pause_inside_the_question(cases_and_audio: tuple[list, dict]) -> None:  # type: ignore[type-arg]
    cases, audio = cases_and_audio
    pauses = [c for c in cases if c.kind == "pause"]
    assert pauses
    for c in pauses:
        (p0, p1), = c.pauses
        assert c.speech_start < p0 < p1 < c.speech_end
        assert PAUSE_MS[0] <= (p1 - p0) * 1000 / c.rate <= PAUSE_MS[1]
        x = audio[c.id]
        assert not np.any(x[p0:p1])  # silence inside
        assert last_loud_window_end(x[:p0]) >= p0 - WIN  # speech right before it...
        assert np.sqrt(np.mean(x[p1 : p1 + WIN] ** 2)) > 10 ** (-40 / 20)  # ...and right after


@needs_espeak
def test_barge_in_cases_carry_their_second_sound(cases_and_audio: tuple[list, dict]) -> None:  # type: ignore[type-arg]
    cases, audio = cases_and_audio
    barges = [c for c in cases if c.kind == "bargein"]
    assert barges
    for c in barges:
        b = audio[c.id + ".barge"]
        assert c.barge_start is not None and c.barge_end is not None
        assert 0 <= c.barge_start < c.barge_end <= len(b)
        assert 300 <= (c.barge_after_ms or 0) <= 800
        assert c.barge_kind == "speech" and c.barge_answer and c.barge_answer != c.answer


@needs_espeak
def test_every_third_barge_in_is_a_false_one() -> None:
    cases, audio = generate_cases(seed=1, n_cases=3, kinds=("bargein",), voices=ESPEAK[:1])
    assert [c.barge_kind for c in cases] == ["speech", "speech", "mm-hmm"]
    assert cases[2].false_barge and cases[2].barge_answer is None
    assert len(audio[cases[2].id + ".barge"]) < 16000 * 2


def test_noise_is_mixed_at_the_requested_snr() -> None:
    rng = np.random.default_rng(0)
    clean = np.zeros(16000, np.float32)
    clean[4000:12000] = 0.1 * np.sin(np.arange(8000) / 5)
    for kind in ("white", "pink", "hum"):
        noisy = mix_noise(clean, 4000, 12000, kind, 10.0, rng)
        noise = noisy - clean
        snr = 20 * np.log10(np.sqrt(np.mean(clean[4000:12000] ** 2)) / np.sqrt(np.mean(noise**2)))
        assert snr == pytest.approx(10.0, abs=0.2)


def test_pause_split_points() -> None:
    def ex(q: str, skill: str, fact: str = "") -> Example:
        return Example(q, "", skill, "", "heldout", False, q, fact)

    assert pause_split(ex("what is seven plus five", "addition")) == 4
    assert pause_split(ex("count from three to eight", "counting")) == 3
    assert pause_split(ex("what is the capital of france", "capitals")) == 5
    assert pause_split(ex("how is night spelled", "spelling", "spell:night")) == 2
    assert pause_split(ex("hello there", "greeting")) == 1


def test_voices_are_never_reserved_engines() -> None:
    voices, source = heldout_voices()
    assert voices and source
    assert all(v.engine in ("espeak", "joe") for v in voices)
    with pytest.raises(ValueError):
        Voice("kal", "flite")


@needs_espeak
def test_cache_is_reused(tmp_path: Path) -> None:
    calls: list[str] = []
    first = load_or_build(3, 2, ("normal",), ESPEAK[:1], tmp_path, progress=lambda n, note: calls.append(note))
    assert len(calls) == 2 and (first.path / "audio.npz").is_file()
    second = load_or_build(3, 2, ("normal",), ESPEAK[:1], tmp_path, progress=lambda n, note: calls.append(note))
    assert len(calls) == 2  # nothing synthesized again
    assert second.key == first.key and second.cases == first.cases
    np.testing.assert_array_equal(second.audio(first.cases[0].id), first.audio(first.cases[0].id))


def test_training_voice_entries_map_to_espeak_voices_and_skip_flite() -> None:
    from clients.bench.testset import _voice_from

    class Entry:
        def __init__(self, engine: str, name: str) -> None:
            self.engine, self.name, self.group = engine, name, "held"

    v = _voice_from(Entry("espeak", "en-029+m3"))
    assert v is not None and v.voice == "en-029+m3" and v.engine == "espeak"
    assert v == _voice_from(Entry("espeak", "en-029+m3"))  # fixed speed and pitch
    assert _voice_from(Entry("flite", "rms")) is None
    assert _voice_from({"engine": "festival", "name": "kal"}) is None


def test_each_case_has_its_own_fixed_phase_on_the_server_grid() -> None:
    from clients.bench.runner import case_phase

    phases = [case_phase(f"c{i:04d}-normal", 512) for i in range(60)]
    assert phases == [case_phase(f"c{i:04d}-normal", 512) for i in range(60)]  # the same every run
    assert all(0 <= p < 512 for p in phases) and len(set(phases)) > 45  # spread, not one phase
    assert len({p % 160 for p in phases}) > 30  # and not on the 10 ms grid of the ground truth


def test_ground_truth_follows_the_lead_the_turn_really_sent() -> None:
    """The speech end is placed where the turn put the utterance, padding for the grid included."""
    from types import SimpleNamespace

    from clients.bench.runner import ground_truth_times

    case = SimpleNamespace(rate=16000, speech_start=8000, speech_end=24000)
    turn = SimpleNamespace(send=SimpleNamespace(t0=100.0), lead_samples=4800 + 300)
    start, end = ground_truth_times(case, turn, 16000)  # type: ignore[arg-type]
    assert start == pytest.approx(100.0 + (5100 + 8000) / 16000)
    assert end == pytest.approx(100.0 + (5100 + 24000) / 16000)
