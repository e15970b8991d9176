"""Real loopback websockets, a real client, real audio and the real VAD."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clients.groundtruth import espeak, speech_bounds, with_silence
from streaming.audio import float32_to_pcm16, resample
from tests.conftest import Received, collect_until, stream_realtime

LEAD, TAIL = 0.5, 1.2
pytestmark = pytest.mark.asyncio


def utterance(text: str, voice: str = "en-us", rate: int = 16000) -> tuple[np.ndarray, float, float]:
    a = espeak(text, voice=voice)
    s, e = speech_bounds(a, 16000)
    x = with_silence(a, 16000, LEAD, TAIL)
    if rate != 16000:
        x = resample(x, 16000, rate)
    return x, (s / 16000 + LEAD) * 1000, (e / 16000 + LEAD) * 1000


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize(
    ("text", "voice", "rate"),
    [("what is seven plus five", "en-us", 16000), ("count from three to eight", "en-gb+f3", 48000)],
)
async def test_speech_positions_match_ground_truth_and_echo_returns_audio(echo_server, text, voice, rate) -> None:
    x, start_ms, end_ms = utterance(text, voice, rate)
    rec = Received()
    async with connect(echo_server.url) as ws:
        rec.add(await ws.recv())
        assert rec.events[0]["type"] == "session.created"
        if rate != 16000:
            await ws.send(json.dumps({"type": "session.update", "session": {"input_sample_rate": rate}}))
            await collect_until(ws, rec, lambda e: e["type"] == "session.updated")
        sender = asyncio.create_task(stream_realtime(ws, x, rate))
        await collect_until(ws, rec, lambda e: e["type"] == "response.done")
        await sender
    started, stopped = rec.of("speech.started"), rec.of("speech.stopped")
    assert len(started) == 1 and len(stopped) == 1, rec.types()
    assert abs(started[0]["audio_ms"] - start_ms) <= 60, (started, start_ms)
    assert abs(stopped[0]["audio_ms"] - end_ms) <= 60, (stopped, end_ms)
    done = rec.of("response.done")[0]
    assert done["status"] == "completed"
    assert done["timings"]["endpoint_ms"] > 0
    reply = np.concatenate(rec.audio[done["response_id"]])
    # echo = the utterance at 24 kHz (its silent prefix padding is not sent)
    assert abs(len(reply) / 24000 * 1000 - done["audio_ms"]) < 1
    expected_ms = end_ms - start_ms + 10
    assert abs(done["audio_ms"] - expected_ms) < 150, (done["audio_ms"], expected_ms)
    assert np.sqrt(np.mean(reply**2)) > 0.01


async def test_bad_input_gets_errors_and_session_survives(echo_server) -> None:
    rec = Received()
    async with connect(echo_server.url) as ws:
        rec.add(await ws.recv())
        for bad in ["{oops", '{"type": "nope"}', '{"type": "input.text", "text": 1}', b"\x01\x02\x03"]:
            await ws.send(bad)
        await ws.send(json.dumps({"type": "session.update", "session": {"pipeline": "missing"}}))
        await ws.send(json.dumps({"type": "response.cancel"}))
        await ws.send(json.dumps({"type": "ping", "event_id": "alive"}))
        await collect_until(ws, rec, lambda e: e["type"] == "pong")
        codes = [e["code"] for e in rec.of("error")]
        assert codes == [
            "invalid_json", "unknown_event", "invalid_event", "invalid_audio", "unknown_pipeline", "no_response",
        ]
        assert rec.of("pong")[0]["event_id"] == "alive"
        # still works: a text turn round-trips through the echo pipeline
        await ws.send(json.dumps({"type": "input.text", "text": "hello there"}))
        await collect_until(ws, rec, lambda e: e["type"] == "response.done")
        assert rec.of("transcript.delta")[0]["delta"] == "hello there"


async def test_http_endpoints(echo_server) -> None:
    code, body = await asyncio.to_thread(http_get, echo_server.http + "/healthz")
    assert code == 200
    code, body = await asyncio.to_thread(http_get, echo_server.http + "/readyz")
    assert code == 200 and "ready" in body
    async with connect(echo_server.url) as ws:
        await ws.recv()
        await ws.send(float32_to_pcm16(np.zeros(320, np.float32)))
        await ws.send(json.dumps({"type": "ping"}))
        await ws.recv()
        code, body = await asyncio.to_thread(http_get, echo_server.http + "/metrics")
    assert code == 200
    assert "rejoinder_open_sessions 1.0" in body
    assert "rejoinder_audio_frames_in_total 1.0" in body
    assert "rejoinder_turn_latency_seconds_bucket" in body or "rejoinder_turn_latency_seconds" in body
    assert "rejoinder_event_loop_lag_seconds" in body
    code, body = await asyncio.to_thread(http_get, echo_server.http + "/")
    assert code == 200 and "<html" in body.lower()
    code, _ = await asyncio.to_thread(http_get, echo_server.http + "/../../etc/passwd")
    assert code == 404


async def test_full_server_answers_503_and_readyz_reason(start_server_with) -> None:
    rs, stop = await start_server_with(max_sessions=1)
    try:
        async with connect(rs.url) as ws:
            await ws.recv()
            with pytest.raises(InvalidStatus) as info:
                async with connect(rs.url):
                    pass
            assert info.value.response.status_code == 503
        rs.app.ready, rs.app.not_ready_reason = False, "model failed to load: test"
        code, body = await asyncio.to_thread(http_get, f"{rs.http}/readyz")
        assert code == 503 and "model failed to load" in body
    finally:
        await stop()


async def test_bearer_token_and_origin_allow_list(start_server_with) -> None:
    rs, stop = await start_server_with(auth_token="s3cret", allowed_origins="http://good.example")
    try:
        with pytest.raises(InvalidStatus) as info:
            async with connect(rs.url, origin="http://good.example", additional_headers={"Authorization": "Bearer no"}):
                pass
        assert info.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as info:
            async with connect(rs.url, origin="http://evil.example", additional_headers={"Authorization": "Bearer s3cret"}):
                pass
        assert info.value.response.status_code == 403
        async with connect(rs.url, origin="http://good.example", additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
    finally:
        await stop()


async def test_barge_in_interrupts_and_truncates_to_played(echo_server) -> None:
    long_x, _, _ = utterance("the quick brown fox jumps over the lazy dog and keeps on running far away")
    barge, _, _ = utterance("stop")
    rec = Received()
    async with connect(echo_server.url) as ws:
        rec.add(await ws.recv())
        await ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": {"stop_ms": 300}}}))
        sender = asyncio.create_task(stream_realtime(ws, long_x[: -int(0.6 * 16000)]))
        await collect_until(ws, rec, lambda e: e["type"] == "response.started")
        await sender
        rid = rec.of("response.started")[0]["response_id"]
        # let ~0.6 s of reply play, reporting playback, then talk over it
        async def play_and_report() -> None:
            for k in range(1, 7):
                await asyncio.sleep(0.1)
                await ws.send(json.dumps({"type": "playback.position", "response_id": rid, "played_ms": 100.0 * k}))
        reporter = asyncio.create_task(play_and_report())
        sender = asyncio.create_task(stream_realtime(ws, np.concatenate([np.zeros(9600, np.float32), barge[8000:]])))
        await collect_until(ws, rec, lambda e: e["type"] == "interrupted")
        await reporter
        await sender
        await collect_until(ws, rec, lambda e: e["type"] == "response.done" and e["response_id"] == 2, timeout=10)
    intr = rec.of("interrupted")[0]
    assert intr["response_id"] == rid
    # the interrupting speech is announced once, before the reply it stops (OpenAI's order)
    types = rec.types()
    started = [k for k, t in enumerate(types) if t == "speech.started"]
    assert len(started) == 2 and started[1] < types.index("interrupted")
    assert rec.of("speech.started")[1]["audio_ms"] == intr["audio_ms"]
    assert 0 < intr["truncated_ms"] <= intr["sent_ms"]
    assert intr["truncated_ms"] <= 600
    assert intr["sent_ms"] < 1800  # paced: far less than the whole 4 s reply was sent
    first_done = [e for e in rec.of("response.done") if e["response_id"] == rid][0]
    assert first_done["status"] == "interrupted"
    # audio of the interrupted reply stops at the interruption
    sent_samples = sum(len(c) for c in rec.audio[rid])
    assert abs(sent_samples / 24 - intr["sent_ms"]) < 1


async def test_manual_commit_clear_cancel_and_text(echo_server) -> None:
    x, _, _ = utterance("hello")
    rec = Received()
    async with connect(echo_server.url) as ws:
        rec.add(await ws.recv())
        await ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": {"mode": "manual"}}}))
        await collect_until(ws, rec, lambda e: e["type"] == "session.updated")
        assert rec.of("session.updated")[0]["session"]["turn_detection"]["mode"] == "manual"
        await stream_realtime(ws, x)
        await asyncio.sleep(0.3)
        assert "response.started" not in rec.types()  # silence does not end a manual turn
        await ws.send(json.dumps({"type": "input.clear"}))
        await stream_realtime(ws, x)
        await ws.send(json.dumps({"type": "input.commit"}))
        await collect_until(ws, rec, lambda e: e["type"] == "response.started")
        assert rec.of("speech.stopped")[-1]["reason"] == "commit"
        await ws.send(json.dumps({"type": "response.cancel"}))
        await collect_until(ws, rec, lambda e: e["type"] == "response.done")
        assert rec.of("interrupted")
        assert rec.of("response.done")[0]["status"] == "cancelled"
        await ws.send(json.dumps({"type": "input.text", "text": "one"}))
        await ws.send(json.dumps({"type": "input.text", "text": "two"}))
        await collect_until(ws, rec, lambda e: e["type"] == "response.done" and e["status"] == "completed")
    # the clear dropped the first utterance: the committed turn holds only the second one
    stopped = rec.of("speech.stopped")[-1]
    assert stopped["audio_ms"] > len(x) / 16


async def test_limits_are_clamped_rate_limit_and_idle_timeout(start_server_with) -> None:
    rs, stop = await start_server_with(idle_timeout_s=1.0, audio_burst_s=1.0, audio_rate_factor=1.0)
    try:
        rec = Received()
        async with connect(rs.url) as ws:
            rec.add(await ws.recv())
            await ws.send(json.dumps({"type": "session.update", "session": {"limits": {"idle_timeout_s": 100}}}))
            await collect_until(ws, rec, lambda e: e["type"] == "session.updated")
            assert rec.of("session.updated")[0]["session"]["limits"]["idle_timeout_s"] == 1.0
            await ws.send(float32_to_pcm16(np.zeros(16000 * 3, np.float32)))  # 3 s at once > 1 s burst
            await collect_until(ws, rec, lambda e: e["type"] == "error")
            assert rec.of("error")[0]["code"] == "rate_limited"
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    rec.add(await asyncio.wait_for(ws.recv(), 5))
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
            assert rec.of("error")[-1]["code"] == "idle_timeout" and rec.of("error")[-1]["fatal"]
    finally:
        await stop()


async def test_sessions_run_concurrently_with_batched_vad(echo_server) -> None:
    x, _, end_ms = utterance("good morning")

    async def one() -> Received:
        rec = Received()
        async with connect(echo_server.url) as ws:
            rec.add(await ws.recv())
            sender = asyncio.create_task(stream_realtime(ws, x))
            await collect_until(ws, rec, lambda e: e["type"] == "response.done")
            await sender
        return rec

    recs = await asyncio.gather(*(one() for _ in range(4)))
    for rec in recs:
        assert abs(rec.of("speech.stopped")[0]["audio_ms"] - end_ms) <= 60
    assert echo_server.app.worker.max_batch >= 2  # windows from several sessions ran in one call


async def test_a_turn_without_a_reply_is_answered_by_response_create(echo_server) -> None:
    """``create_response: false``: the turn ends without a reply; ``response.create``
    answers the latest such turn once; a newer ended turn replaces it."""
    short, _, _ = utterance("hi")
    long, _, _ = utterance("what is seven plus five")
    rec = Received()
    async with connect(echo_server.url) as ws:
        rec.add(await ws.recv())
        await ws.send(json.dumps({"type": "response.create", "event_id": "early"}))
        await collect_until(ws, rec, lambda e: e["type"] == "error")
        assert rec.of("error")[0]["code"] == "no_response" and rec.of("error")[0]["event_id"] == "early"
        turn = {"mode": "manual", "create_response": False}
        await ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": turn}}))
        await collect_until(ws, rec, lambda e: e["type"] == "session.updated")
        for x in (short, long):  # the second turn replaces the first
            await stream_realtime(ws, x)
            await ws.send(json.dumps({"type": "input.commit"}))
            await collect_until(ws, rec, lambda e: e["type"] == "speech.stopped")
        await asyncio.sleep(0.3)
        assert "response.started" not in rec.types()
        await ws.send(json.dumps({"type": "response.create"}))
        await collect_until(ws, rec, lambda e: e["type"] == "response.done")
        await ws.send(json.dumps({"type": "response.create", "event_id": "again"}))  # answered once
        await collect_until(ws, rec, lambda e: e["type"] == "error" and e["event_id"] == "again")
    started, done = rec.of("response.started")[0], rec.of("response.done")[0]
    assert done["status"] == "completed"
    assert started["input_audio_ms"] == rec.of("speech.stopped")[-1]["audio_ms"]
    echoed_ms = sum(len(a) for a in rec.audio[started["response_id"]]) / started["sample_rate"] * 1000
    # the newer turn's audio (the echo drops its leading silence)
    assert abs(echoed_ms - (len(long) / 16 - LEAD * 1000)) < 150, (echoed_ms, len(long) / 16)
    assert rec.of("error")[-1]["code"] == "no_response"


async def test_the_pipeline_gets_back_what_it_kept_of_the_held_turn(start_server_with) -> None:
    """The session hands ``hold_turn``'s result to ``respond`` as ``Turn.held``; a newer
    ended turn, audio or text, replaces the held one."""
    from server.pipelines.base import Pipeline, PipelineSession, ReplyText

    class Keeper(PipelineSession):
        kept = 0

        async def hold_turn(self, audio16k):  # type: ignore[no-untyped-def]
            Keeper.kept += 1
            return f"turn {Keeper.kept} ({len(audio16k) // 1600} tenths)"

        async def respond(self, turn):  # type: ignore[no-untyped-def]
            yield ReplyText(f"answer to {turn.text if turn.held is None else turn.held}")

    class KeeperPipeline(Pipeline):
        name = "keeper"

        def open_session(self, worker):  # type: ignore[no-untyped-def]
            return Keeper()

    rs, stop = await start_server_with()
    rs.app.pipelines["keeper"] = KeeperPipeline()
    rec = Received()
    try:
        async with connect(rs.url) as ws:
            rec.add(await ws.recv())
            turn = {"mode": "manual", "create_response": False}
            await ws.send(json.dumps({"type": "session.update", "session": {"pipeline": "keeper", "turn_detection": turn}}))
            await collect_until(ws, rec, lambda e: e["type"] == "session.updated")
            for seconds in (0.5, 1.2):
                await stream_realtime(ws, np.zeros(int(seconds * 16000), np.float32))
                await ws.send(json.dumps({"type": "input.commit"}))
            await ws.send(json.dumps({"type": "response.create"}))
            await collect_until(ws, rec, lambda e: e["type"] == "response.done")
            await stream_realtime(ws, np.zeros(3200, np.float32))
            await ws.send(json.dumps({"type": "input.commit"}))  # held: turn 3
            await ws.send(json.dumps({"type": "input.text", "text": "a text turn"}))  # replaces it
            await collect_until(ws, rec, lambda e: e["type"] == "response.done" and e["response_id"] == 2)
            await ws.send(json.dumps({"type": "response.create", "event_id": "late"}))
            await collect_until(ws, rec, lambda e: e["type"] == "error")
    finally:
        await stop()
    first, second = rec.of("response.done")
    # the newer turn (1.2 s and the 300 ms prefix padding), as the pipeline kept it
    assert first["text"] == "answer to turn 2 (15 tenths)"
    assert second["text"] == "answer to a text turn"
    assert rec.of("error")[0]["code"] == "no_response" and rec.of("error")[0]["event_id"] == "late"
