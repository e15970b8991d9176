"""Where a reply becomes audible (LATENCY.md t_first_reply_audio), on synthetic replies."""

from __future__ import annotations

import numpy as np

from clients.reply import ReplyStream

RATE = 16000


def tone(seconds: float, dbfs: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sqrt(2) * 10 ** (dbfs / 20) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def stream_of(audio: np.ndarray, chunk: int = 320, t0: float = 100.0) -> ReplyStream:
    r = ReplyStream(1, RATE)
    for i in range(0, len(audio), chunk):
        r.add(i, audio[i : i + chunk], t0 + i / RATE)  # one message per 20 ms
    return r


def test_silent_padding_and_a_click_do_not_count() -> None:
    click = np.zeros(RATE // 10, np.float32)
    click[:40] = 0.9  # loud but 2.5 ms long
    audio = np.concatenate([np.zeros(RATE // 5, np.float32), click, tone(0.5, -20)])
    onset = stream_of(audio).onset()
    assert onset is not None
    assert abs(onset.sample - int(0.3 * RATE)) <= RATE // 100  # where the tone begins (10 ms steps)
    assert onset.received_at == 100.0 + (onset.sample // 320) * 0.02


def test_quiet_or_short_replies_never_become_audible() -> None:
    assert stream_of(tone(1.0, -45)).onset() is None  # below -35 dBFS
    assert stream_of(tone(0.08, -10)).onset() is None  # loud, but under 100 ms
    blip = np.concatenate([tone(0.04, -10), np.zeros(RATE // 2, np.float32)])
    assert stream_of(blip).onset() is None  # 40 ms of sound: under half of any 100 ms stretch


def test_a_stop_closure_does_not_move_the_onset_to_the_next_word() -> None:
    # "two | t-imes": an 80 ms syllable, a 40 ms quiet closure, then the rest of the reply
    gap = np.zeros(int(0.04 * RATE), np.float32)
    audio = np.concatenate([np.zeros(RATE // 10, np.float32), tone(0.08, -20), gap, tone(0.5, -20)])
    assert abs(stream_of(audio).onset().sample - RATE // 10) <= RATE // 100  # type: ignore[union-attr]
    strict = stream_of(audio).onset(min_loud=1.0)  # the rule before 2026-11-29: every window loud
    assert strict is not None and abs(strict.sample - int(0.22 * RATE)) <= RATE // 100


def test_audio_is_placed_by_offset() -> None:
    r = ReplyStream(1, RATE)
    r.add(320, np.ones(320, np.float32), 2.0)
    r.add(0, np.full(320, 0.5, np.float32), 1.0)
    a = r.audio()
    assert len(a) == 640 and a[0] == 0.5 and a[-1] == 1.0
    assert r.first_audio_at == 2.0  # the first message received, whatever its offset
