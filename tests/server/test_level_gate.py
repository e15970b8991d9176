"""The session's level gate: inside a turn, a window back at the background is silence.

Silero's probability stays up for a while after speech stops (longer in a
reverberant room), so a pause is counted late. With ``level_gate`` the pause
starts where the level falls, so a short pause is long enough to end a turn.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from clients.groundtruth import espeak, speech_bounds
from streaming.audio import float32_to_pcm16
from tests.conftest import Received, collect_until

pytestmark = pytest.mark.asyncio
RATE = 16000


def room(x: np.ndarray) -> np.ndarray:
    """A fixed 250 ms reverberant tail (seeded noise with an exponential decay)."""
    t = np.arange(RATE // 4) / RATE
    ir = np.random.default_rng(0).normal(0.0, 1.0, len(t)) * np.exp(-6.9 * t / 0.25)
    ir[0] = 8.0
    ir *= 3.0 / np.abs(ir).sum()
    return np.convolve(x, ir).astype(np.float32)


def two_phrases(pause_s: float) -> np.ndarray:
    def said(text: str) -> np.ndarray:
        a = espeak(text)
        s, e = speech_bounds(a, RATE)
        return room(a[s:e])

    gap, lead, tail = (np.zeros(int(n * RATE), np.float32) for n in (pause_s, 0.5, 1.2))
    return np.concatenate([lead, said("what is seven plus five"), gap, said("thank you"), tail])


async def turns(url: str, level_gate: float, audio: np.ndarray) -> int:
    rec = Received()
    async with connect(url) as ws:
        rec.add(await ws.recv())
        turn = {"mode": "vad", "stop_ms": 300, "level_gate": level_gate, "create_response": False}
        await ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": turn}}))
        await collect_until(ws, rec, lambda e: e["type"] == "session.updated")
        assert rec.of("session.updated")[0]["session"]["turn_detection"]["level_gate"] == level_gate
        for i in range(0, len(audio), 1600):  # faster than real time: the timeline is what counts
            await ws.send(float32_to_pcm16(audio[i : i + 1600]))
        await ws.send(json.dumps({"type": "ping", "event_id": "done"}))
        await collect_until(ws, rec, lambda e: e["type"] == "pong")
    return len(rec.of("speech.stopped"))


async def test_a_short_pause_ends_the_turn_only_with_the_level_gate(echo_server) -> None:
    # 140 ms of silence after the reverberant tail: under stop_ms by Silero's lag
    # alone (one turn), over it once the pause starts where the level falls (two).
    audio = two_phrases(0.14)
    assert await turns(echo_server.url, 0.0, audio) == 1
    assert await turns(echo_server.url, 0.9, audio) == 2


@pytest.mark.parametrize("bad_turn", [{"level_gate": 1.5}, {"level_gate_depth_db": -3}, {"low_snr_min_silence_ms": -5},
                                     {"low_snr_pause_prob": 0.9}])
async def test_a_bad_level_gate_is_refused_and_the_session_goes_on(echo_server, bad_turn) -> None:
    rec = Received()
    async with connect(echo_server.url) as ws:
        rec.add(await ws.recv())
        assert rec.of("session.created")[0]["session"]["turn_detection"]["level_gate_depth_db"] == 30
        bad = {"type": "session.update", "session": {"turn_detection": bad_turn}}
        await ws.send(json.dumps(bad))
        await collect_until(ws, rec, lambda e: e["type"] == "error")
        await ws.send(json.dumps({"type": "ping", "event_id": "after"}))
        await collect_until(ws, rec, lambda e: e["type"] == "pong")
        assert rec.of("session.updated") == []
