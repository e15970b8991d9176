"""The Python client against an in-process echo server: turns, positions, interruptions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from clients.client import ConnectError, ServerError, Turn, connect
from clients.groundtruth import speech_bounds
from tests.clients.conftest import needs_espeak, say

QUESTION = "hello there, how are you"


def independent_latency_ms(turn: Turn, chunks: list[Any]) -> float:
    """LATENCY.md, recomputed here from the raw reply messages without clients.reply."""
    rate = turn.reply_rate
    audio = turn.reply_audio.astype(np.float64)
    hop = rate // 100
    levels = 10 * np.log10(np.mean(audio[: len(audio) // hop * hop].reshape(-1, hop) ** 2, axis=1) + 1e-20)
    k = next(i for i in range(len(levels) - 9) if np.all(levels[i : i + 10] > -35.0))
    chunk = next(c for c in chunks if c.offset <= k * hop < c.offset + len(c.pcm))
    return (chunk.received_at - turn.t_user_speech_end) * 1000


@needs_espeak
async def test_turn_latency_and_playback_positions(echo_server: Any) -> None:
    q = say(QUESTION)
    async with connect(echo_server.url, session={"pipeline": "echo"}) as c:
        assert c.pipelines == ["echo"] and c.session["pipeline"] == "echo"
        turn = await c.turn(q, 16000)
        chunks = c.replies[turn.response_id].chunks if turn.response_id else []

    assert turn.status == "completed" and turn.pipeline == "echo"
    assert [e.type for e in turn.events][:3] == ["speech.started", "speech.stopped", "response.started"]
    # the turn latency is LATENCY.md's, measured from the ground-truth speech end
    lead = round(0.3 * 16000) - speech_bounds(q, 16000)[0]
    end = lead + speech_bounds(q, 16000)[1]
    assert turn.t_user_speech_end == pytest.approx(turn.send.t0 + end / 16000)
    assert turn.latency_ms is not None and not turn.failed
    assert turn.latency_ms == pytest.approx(independent_latency_ms(turn, chunks), abs=1e-6)
    # echo plays back the prefix padding first: the audible reply comes after the first audio
    assert turn.first_audio_ms is not None and turn.first_audio_ms <= turn.latency_ms
    # the server measures from the arrival of the last speech sample, which the client's
    # interval (capture of that sample -> arrival of the reply) contains
    first_send = turn.timings["first_send_ms"]
    assert first_send is not None and turn.first_audio_ms >= first_send - 1.0
    assert turn.server_speech_end_ms == pytest.approx(turn.speech_end_ms, abs=100)
    # every frame was sent, each on schedule or late (never early), and lateness recorded
    assert turn.send.frames == len(turn.send.lateness_s) > 0
    assert min(turn.send.lateness_s) > -0.002
    # the reply is the utterance played back, played to the end by the loudspeaker
    assert turn.reply_rate == 24000 and len(turn.reply_audio) / 24000 > 0.8 * len(q) / 16000
    assert turn.playout is not None and turn.playout.end_reason == "drained"
    # playback.position went out every ~100 ms while the reply played, growing
    positions = [(t, ms) for t, rid, ms in c.positions_sent if rid == turn.response_id]
    played_s = turn.playout.played / 24000
    assert len(positions) >= played_s / 0.1 * 0.5
    assert [ms for _, ms in positions] == sorted(ms for _, ms in positions)
    assert 0 < positions[-1][1] <= played_s * 1000
    assert float(np.median(np.diff([t for t, _ in positions]))) >= 0.09


@needs_espeak
async def test_cancel_interrupts_and_drops_the_buffer(echo_server: Any) -> None:
    async with connect(echo_server.url) as c:
        task = asyncio.create_task(c.turn(say(QUESTION), 16000))
        async with asyncio.timeout(10):
            rid = await c.wait_played(300)
        await c.cancel()
        async with asyncio.timeout(5):
            ev = await c.wait_for(lambda e: e.type == "interrupted", since=0)
        turn = await task
    assert ev["response_id"] == rid and turn.response_id == rid and turn.status == "cancelled"
    p = c.loudspeaker.playout(rid)
    assert p is not None and p.end_reason == "flushed" and p.silent_at == ev.t
    assert p.buffered == 0 and p.received == int(p.played)  # nothing left to play after the flush
    # the server truncated its context to a position the client had reported
    reported = [ms for _, r, ms in c.positions_sent if r == rid]
    assert ev["truncated_ms"] > 0 and ev["truncated_ms"] in reported
    # no audio of the interrupted reply was accepted after the interruption
    assert all(ch.received_at <= ev.t for ch in c.replies[rid].chunks)


@needs_espeak
async def test_barge_in_stops_the_reply_and_gets_its_own(echo_server: Any) -> None:
    async with connect(echo_server.url) as c:
        turn = await c.turn(say(QUESTION), 16000, barge_in=say("wait"), barge_in_after_ms=300)
    b = turn.barge_in
    assert b is not None and b.interrupted is not None
    assert turn.status == "interrupted" and turn.playout is not None and turn.playout.end_reason == "flushed"
    assert b.played_ms >= 300 and b.stop_latency_ms is not None and b.stop_latency_ms > 0
    assert b.turn.response_id not in (None, turn.response_id)
    assert b.turn.status == "completed" and b.turn.latency_ms is not None and b.turn.latency_ms > 0


async def test_stream_paces_any_async_iterator_of_frames(echo_server: Any) -> None:
    async def frames() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield np.zeros(320, "<i2").tobytes()

    async with connect(echo_server.url) as c:
        t = time.perf_counter()
        report = await c.stream(frames())
        took = time.perf_counter() - t
        assert report.frames == 10 and report.samples == 3200 and c.sent_ms == pytest.approx(200)
        assert took >= 0.2 - 0.002  # frame i leaves at t0 + (i + 1) * 20 ms, never before
        report = await c.stream(np.zeros(4410, np.float32), rate=44100)  # resampled to the session rate
        assert report.samples == 1600 and report.start_ms == pytest.approx(200)
        with pytest.raises(ServerError) as err:
            await c.update_session({"pipeline": "no-such-pipeline"})
        assert err.value.code == "unknown_pipeline"


@needs_espeak
async def test_turn_can_start_its_audio_on_a_grid(echo_server: Any) -> None:
    """``align_to``: the utterance starts at a multiple of it on the session's input
    timeline (at least the usual lead first), whatever was sent before."""
    q = say("yes")
    s0, s1 = speech_bounds(q, 16000)
    async with connect(echo_server.url, session={"pipeline": "echo"}) as c:
        await c.stream(np.zeros(1001, np.float32))
        assert c.sent_samples == 1001
        plain = await c.turn(q, 16000)
        before = c.sent_samples
        aligned = await c.turn(q, 16000, align_to=512)

    def audio_start(turn: Turn) -> int:  # where ``q`` began on the session's timeline
        return round(turn.speech_end_ms * 16) - s1

    assert audio_start(plain) == 1001 + round(0.3 * 16000) - s0  # no grid: right after the lead
    assert audio_start(aligned) % 512 == 0 and audio_start(aligned) % 512 != audio_start(plain) % 512
    assert audio_start(aligned) - before >= round(0.3 * 16000) - s0  # the lead is never shorter
    assert aligned.lead_samples == audio_start(aligned) - before  # the ground truth knows it
    assert plain.lead_samples == round(0.3 * 16000) - s0
    assert aligned.status == "completed"
    async with connect(echo_server.url, session={"pipeline": "echo"}) as c:
        await c.stream(np.zeros(333, np.float32))
        shifted = await c.turn(q, 16000, align_to=512, align_phase=100)
    assert audio_start(shifted) % 512 == 100


async def test_full_server_is_a_clear_connect_error(start_server_with: Callable[..., Any]) -> None:
    rs, stop = await start_server_with(max_sessions=1)
    try:
        async with connect(rs.url):
            with pytest.raises(ConnectError) as err:
                async with connect(rs.url):
                    pass
        assert err.value.status == 503 and "full" in str(err.value)
    finally:
        await stop()
