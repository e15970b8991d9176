"""The echo tail: right after a reply completes, speech needs the barge-in length to start a turn.

The client still plays the end of the reply after the server sent it, and a
faint residual of that (browser echo cancellation is not perfect) would
otherwise start a turn under the laxer listening rule (``vad_start_ms``).
docs/benchmarks/browser-aec.md measures it with a real browser.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from websockets.asyncio.client import connect

from clients.groundtruth import espeak, speech_bounds, with_silence
from streaming.vad import WINDOW
from tests.conftest import Received, collect_until, stream_realtime

pytestmark = pytest.mark.asyncio
RATE = 16000


def question() -> tuple[np.ndarray, float]:
    """A question with 0.5 s of silence before it; returns audio and its speech start (ms)."""
    a = espeak("what is seven plus five")
    s, _ = speech_bounds(a, RATE)
    return with_silence(a, RATE, 0.5, 1.2), (s / RATE + 0.5) * 1000


def burst(after: int, gain: float) -> np.ndarray:
    """60 ms of "ah", which the VAD hears as exactly two speech frames (64 ms: enough to
    start a turn, short of the 96 ms barge-in), then 1 s of silence. It starts 64 samples
    into a VAD frame when sent after ``after`` samples (where the VAD's frames fall
    decides how many of them count as speech). At ``gain`` 0.2 (-14 dB) it is a faint
    echo; at 1 it is as loud as the user's question, which the loud barge-in rule
    (64 ms) takes as the user."""
    a = espeak("ah")
    s, _ = speech_bounds(a, RATE)
    lead = np.zeros((-after) % WINDOW + 64, np.float32)
    return np.concatenate([lead, gain * a[s : s + int(0.06 * RATE)], np.zeros(RATE, np.float32)])


async def reply_then(url: str, gain: float = 0.2) -> Received:
    """Ask a question, wait for the echo reply to complete, then send a burst at once."""
    x, _ = question()
    rec = Received()
    async with connect(url) as ws:
        rec.add(await ws.recv())
        await stream_realtime(ws, x)
        await collect_until(ws, rec, lambda e: e["type"] == "response.done")
        assert rec.of("response.done")[0]["status"] == "completed"
        n = len(rec.events)
        await stream_realtime(ws, burst(len(x), gain))
        try:  # the turn after it, if one started, ends and is answered
            await collect_until(ws, rec, lambda e: e["type"] == "response.started", timeout=1.0)
        except TimeoutError:
            pass
        rec.events[:] = rec.events[n:]  # keep only what came after the first reply
    return rec


async def test_echo_tail_ignores_a_short_burst_right_after_the_reply(start_server_with) -> None:
    # Without the tail (0) the same faint burst starts a turn: the listening rule needs
    # only 64 ms. A burst as loud as the user's speech is the user: it starts a turn.
    for tail_ms, gain, turns in ((300.0, 0.2, 0), (0.0, 0.2, 1), (300.0, 1.0, 1)):
        rs, stop = await start_server_with(echo_tail_ms=tail_ms)
        try:
            rec = await reply_then(rs.url, gain)
        finally:
            await stop()
        assert len(rec.of("speech.started")) == turns, (tail_ms, gain, rec.types())


async def test_speech_right_after_the_reply_still_starts_a_turn(echo_server) -> None:
    x, start_ms = question()
    rec = Received()
    async with connect(echo_server.url) as ws:
        rec.add(await ws.recv())
        await stream_realtime(ws, x)
        await collect_until(ws, rec, lambda e: e["type"] == "response.done")
        n = len(rec.events)
        sender = asyncio.create_task(stream_realtime(ws, x[int(0.45 * RATE) :]))  # the question again, at once
        await collect_until(ws, rec, lambda e: e["type"] == "response.done" and e["response_id"] == 2)
        await sender
    after = rec.events[n:]
    started = [e for e in after if e["type"] == "speech.started"]
    assert len(started) == 1, [e["type"] for e in after]
    assert abs(started[0]["audio_ms"] - (len(x) * 1000 / RATE + start_ms - 450)) <= 60
    assert [e["status"] for e in after if e["type"] == "response.done"] == ["completed"]
