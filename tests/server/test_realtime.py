"""The OpenAI Realtime endpoint, driven by the official ``openai`` SDK over real loopback websockets."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
import pytest

from clients.groundtruth import espeak, speech_bounds, with_silence
from server import events as ev
from server.protocol.realtime import RealtimeProtocol
from streaming.audio import float32_to_pcm16, resample

openai = pytest.importorskip("openai")
from openai import AsyncOpenAI  # noqa: E402
from openai.types.realtime.realtime_server_event import RealtimeServerEvent  # noqa: E402

RATE = 24000
LEAD, TAIL = 0.5, 1.2

# the SDK's model class for each server event type, to validate raw events strictly
SERVER_MODELS: dict[str, Any] = {
    get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(get_args(RealtimeServerEvent)[0])
}


@dataclass
class Log:
    """Every server event received, each checked against the SDK's own models."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def of(self, etype: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == etype]

    def audio(self) -> np.ndarray:
        chunks = [base64.b64decode(e["delta"]) for e in self.of("response.output_audio.delta")]
        return np.frombuffer(b"".join(chunks), "<i2").astype(np.float32) / 32768

    async def until(self, conn: Any, done: Callable[[dict[str, Any]], bool], timeout: float = 8.0) -> dict[str, Any]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while True:
                raw = await conn.recv_bytes()
                parsed = conn.parse_event(raw)  # what SDK users get
                data = json.loads(raw)
                assert data["type"] in SERVER_MODELS, f"not a Realtime server event: {data['type']}"
                SERVER_MODELS[data["type"]].model_validate(data)
                assert parsed.type == data["type"]
                self.events.append(data)
                if done(data):
                    return data


def is_type(etype: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == etype


def b64(x: np.ndarray) -> str:
    return base64.b64encode(float32_to_pcm16(x)).decode()


def connect(rs: Any, model: str = "rejoinder-echo", key: str = "x") -> Any:
    return AsyncOpenAI(base_url=f"{rs.http}/v1", api_key=key).realtime.connect(model=model)


def utterance(text: str, lead: float = LEAD, tail: float = TAIL) -> tuple[np.ndarray, float, float]:
    """24 kHz speech with silence around it, and where the speech starts and ends (ms)."""
    a = espeak(text)
    s, e = speech_bounds(a, 16000)
    x = resample(with_silence(a, 16000, lead, tail), 16000, RATE)
    return x, (s / 16000 + LEAD) * 1000, (e / 16000 + LEAD) * 1000


async def stream_realtime(conn: Any, audio: np.ndarray, frame_ms: int = 20) -> None:
    """Append 20 ms base64 frames at real-time pace, as a microphone would."""
    n = RATE * frame_ms // 1000
    t0 = time.monotonic()
    for i, start in enumerate(range(0, len(audio), n)):
        await asyncio.sleep(max(0.0, t0 + (i + 1) * frame_ms / 1000 - time.monotonic()))
        await conn.input_audio_buffer.append(audio=b64(audio[start : start + n]))


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.05 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


# ---- sans-I/O ------------------------------------------------------------------


def test_translator_first_parse_sets_24k_and_hides_its_session_updated() -> None:
    p = RealtimeProtocol({"model": "rejoinder-echo"})
    turn = {"mode": "vad", "threshold": 0.5, "start_ms": 64.0, "stop_ms": 500.0, "min_silence_ms": 96.0,
            "prefix_padding_ms": 300.0, "barge_in_ms": 96.0, "interrupt_response": True, "create_response": True}
    settings = {"input_sample_rate": 16000, "output_sample_rate": 24000, "pipeline": "echo",
                "turn_detection": turn, "limits": {}}
    [created] = [json.loads(m) for m in p.serialize_many(ev.SessionCreated("abc", settings, ["echo"]))]
    assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    first = p.parse_many(json.dumps({"type": "input_audio_buffer.append", "audio": b64(tone(0.02))}))
    assert isinstance(first[0], ev.ConfigChange) and first[0].session["input_sample_rate"] == RATE
    assert isinstance(first[-1], ev.AudioIn) and len(first[-1].pcm) == 960
    assert p.serialize_many(ev.SessionUpdated({**settings, "input_sample_rate": RATE})) == []
    assert len(p.parse_many('{"type": "input_audio_buffer.clear"}')) == 2  # no second ConfigChange


def test_translator_model_query_switches_pipeline_and_maps_semantic_vad() -> None:
    turn = {"mode": "vad", "threshold": 0.5, "start_ms": 64.0, "stop_ms": 500.0, "min_silence_ms": 96.0,
            "prefix_padding_ms": 300.0, "barge_in_ms": 96.0, "interrupt_response": True, "create_response": True}
    settings = {"input_sample_rate": 16000, "output_sample_rate": 24000, "pipeline": "echo",
                "turn_detection": turn, "limits": {}}
    p = RealtimeProtocol({})  # no model: fused when present
    [created] = [json.loads(m) for m in p.serialize_many(ev.SessionCreated("abc", settings, ["echo", "fused"]))]
    assert created["session"]["model"] == "rejoinder-fused"
    assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
    update = {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": {"type": "semantic_vad", "eagerness": "high", "create_response": False}}}}}
    parsed = p.parse_many(json.dumps(update))
    changes = [e.session for e in parsed if isinstance(e, ev.ConfigChange)]
    assert changes[:3] == [{"input_sample_rate": RATE, "output_sample_rate": RATE},
                           {"turn_detection": {"mode": "vad"}}, {"pipeline": "fused"}]
    wanted = changes[3]["turn_detection"]
    assert wanted["mode"] == "semantic" and wanted["min_silence_ms"] == 64.0 and wanted["create_response"] is False
    # the start-up changes are answered silently when the Session agrees with what was shown
    fused = {**settings, "input_sample_rate": RATE, "pipeline": "fused", "turn_detection": {**turn, "mode": "semantic"}}
    assert [p.serialize_many(ev.SessionUpdated(fused)) for _ in range(3)] == [[], [], []]
    [shown] = [json.loads(m) for m in p.serialize_many(ev.SessionUpdated(
        {**fused, "turn_detection": {**turn, **wanted}}))]
    td = shown["session"]["audio"]["input"]["turn_detection"]
    assert td == {"type": "semantic_vad", "eagerness": "high", "create_response": False, "interrupt_response": True}


def test_translator_reports_sent_audio_as_heard_before_a_possible_barge_in() -> None:
    p = RealtimeProtocol({"model": "rejoinder-echo"})
    turn = {"mode": "vad", "threshold": 0.5, "start_ms": 64.0, "stop_ms": 500.0, "min_silence_ms": 96.0,
            "prefix_padding_ms": 300.0, "barge_in_ms": 96.0, "interrupt_response": True, "create_response": True}
    settings = {"input_sample_rate": RATE, "output_sample_rate": RATE, "pipeline": "echo",
                "turn_detection": turn, "limits": {}}
    p.serialize_many(ev.SessionCreated("abc", settings, ["echo"]))
    p.parse_many('{"type": "input_audio_buffer.clear"}')
    p.serialize_many(ev.ResponseStarted(1, "echo", RATE))
    p.serialize_many(ev.AudioOut(1, 0, np.zeros(4800, np.float32)))
    append = json.dumps({"type": "input_audio_buffer.append", "audio": b64(tone(0.02))})
    first = p.parse_many(append)
    assert first[0] == ev.PlaybackPosition(1, 200.0) and isinstance(first[1], ev.AudioIn)
    assert len(p.parse_many(append)) == 1  # reported once until more audio is sent


def test_translator_absorbs_response_create_only_for_a_reply_a_commit_started() -> None:
    p = RealtimeProtocol({"model": "rejoinder-echo"})
    turn = {"mode": "vad", "threshold": 0.5, "start_ms": 64.0, "stop_ms": 500.0, "min_silence_ms": 96.0,
            "prefix_padding_ms": 300.0, "barge_in_ms": 96.0, "interrupt_response": True, "create_response": False}
    settings = {"input_sample_rate": RATE, "output_sample_rate": RATE, "pipeline": "echo",
                "turn_detection": turn, "limits": {}}
    p.serialize_many(ev.SessionCreated("abc", settings, ["echo"]))
    p.parse_many(json.dumps({"type": "input_audio_buffer.append", "audio": b64(tone(0.2))}))
    assert isinstance(p.parse_many('{"type": "input_audio_buffer.commit"}')[0], ev.Commit)
    p.serialize_many(ev.SpeechStopped(200.0, "commit"))  # create_response false: no reply follows
    # the session answers the turn it kept, or says there is none
    assert p.parse_many('{"type": "response.create", "event_id": "e1"}') == [ev.Respond("e1")]
    p.parse_many(json.dumps({"type": "input_audio_buffer.append", "audio": b64(tone(0.2))}))
    p.parse_many('{"type": "input_audio_buffer.commit"}')
    p.serialize_many(ev.SpeechStopped(400.0, "commit"))
    p.serialize_many(ev.ResponseStarted(1, "echo", RATE))  # this one answered at once
    assert p.parse_many('{"type": "response.create"}') == []


# ---- over the wire ---------------------------------------------------------------


async def test_session_created_shows_defaults_and_update_maps_turn_detection(echo_server) -> None:
    log = Log()
    async with connect(echo_server) as conn:
        created = await log.until(conn, is_type("session.created"))
        s = created["session"]
        assert s["model"] == "rejoinder-echo"
        assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": RATE}
        assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": RATE}
        td = s["audio"]["input"]["turn_detection"]
        assert td["type"] == "server_vad" and td["silence_duration_ms"] == 500 and td["prefix_padding_ms"] == 300

        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        updated = await log.until(conn, lambda e: e["type"] in ("session.updated", "error"))
        assert updated["type"] == "session.updated", updated
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        [session] = echo_server.app.sessions.values()
        assert session.settings.input_sample_rate == RATE and session.settings.output_sample_rate == RATE
        assert session.settings.turn["mode"] == "manual"

        # the beta shape that older clients still send
        beta = {"modalities": ["text", "audio"], "input_audio_format": "pcm16", "instructions": "be brief",
                "turn_detection": {"type": "server_vad", "threshold": 0.6, "silence_duration_ms": 700}}
        await conn.send_raw(json.dumps({"type": "session.update", "session": beta}))
        td = (await log.until(conn, is_type("session.updated")))["session"]["audio"]["input"]["turn_detection"]
        assert td["type"] == "server_vad" and td["silence_duration_ms"] == 700 and td["threshold"] == 0.6
        assert session.settings.turn["stop_ms"] == 700

        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}})
        err = await log.until(conn, lambda e: e["type"] in ("session.updated", "error"))
        assert err["type"] == "error" and err["error"]["code"] == "invalid_config"  # echo has no learned end of turn


async def test_spoken_turn_at_real_time_pace_is_echoed(echo_server) -> None:
    x, start_ms, end_ms = utterance("what is seven plus five")
    log = Log()
    async with connect(echo_server) as conn:
        await log.until(conn, is_type("session.created"))
        sender = asyncio.create_task(stream_realtime(conn, x))
        try:
            done = await log.until(conn, is_type("response.done"), timeout=15)
        finally:
            sender.cancel()
    types = log.types()
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
             "input_audio_buffer.committed", "conversation.item.added", "response.created",
             "response.output_item.added", "response.output_audio.delta", "response.output_audio.done",
             "response.output_audio_transcript.done", "response.output_item.done", "response.done"]
    positions = [types.index(t) for t in order]
    assert positions == sorted(positions), types
    started, stopped = log.of("input_audio_buffer.speech_started")[0], log.of("input_audio_buffer.speech_stopped")[0]
    user_item = started["item_id"]
    assert stopped["item_id"] == user_item == log.of("input_audio_buffer.committed")[0]["item_id"]
    assert abs(started["audio_start_ms"] + 300 - start_ms) <= 80, (started, start_ms)  # includes prefix padding
    assert abs(stopped["audio_end_ms"] - end_ms) <= 80, (stopped, end_ms)
    assert done["response"]["status"] == "completed"
    reply_item = done["response"]["output"][0]
    assert reply_item["role"] == "assistant" and reply_item["status"] == "completed"
    assert {e["item_id"] for e in log.of("response.output_audio.delta")} == {reply_item["id"]}
    reply = log.audio()
    expected_ms = end_ms - start_ms + 10  # echo: the utterance (its silent prefix padding is not sent)
    assert abs(len(reply) / RATE * 1000 - expected_ms) < 150, (len(reply) / RATE, expected_ms)
    assert np.sqrt(np.mean(reply**2)) > 0.01


async def test_user_speech_during_the_reply_interrupts_it(echo_server) -> None:
    x, _, _ = utterance("what is seven plus five", tail=0.8)  # the reply starts about 0.5 s in
    y, _, _ = utterance("stop", lead=0.0)
    log = Log()
    async with connect(echo_server) as conn:
        await log.until(conn, is_type("session.created"))
        sender = asyncio.create_task(stream_realtime(conn, np.concatenate([x, y])))
        try:
            done = await log.until(conn, is_type("response.done"), timeout=15)
            await log.until(conn, lambda e: len(log.of("input_audio_buffer.speech_started")) == 2)
        finally:
            sender.cancel()
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    # as OpenAI orders them: the new speech first, then the reply it cancelled
    types = log.types()
    second = [k for k, t in enumerate(types) if t == "input_audio_buffer.speech_started"][1]
    assert second < types.index("response.done")
    assert types.count("input_audio_buffer.speech_started") == 2
    assert len(log.audio()) / RATE < 1.0  # the full echo would be about 2 s


async def test_text_item_and_response_create_give_a_transcript_reply(echo_server) -> None:
    log = Log()
    async with connect(echo_server) as conn:
        await log.until(conn, is_type("session.created"))
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}
        )
        added = await log.until(conn, is_type("conversation.item.done"))
        assert added["item"]["content"][0]["text"] == "hello there"
        await conn.response.create()
        done = await log.until(conn, is_type("response.done"))
        assert "".join(e["delta"] for e in log.of("response.output_audio_transcript.delta")) == "hello there"
        assert log.of("response.output_audio_transcript.done")[0]["transcript"] == "hello there"
        assert done["response"]["status"] == "completed"
        assert not log.of("response.output_audio.delta")  # echo answers text with text only
        await conn.response.create(event_id="again")  # nothing left to answer
        err = await log.until(conn, is_type("error"))
        assert err["error"]["code"] == "no_response" and err["error"]["event_id"] == "again"


async def test_with_create_response_false_response_create_answers_the_spoken_turn(echo_server) -> None:
    x, start_ms, end_ms = utterance("what is seven plus five")
    log = Log()
    async with connect(echo_server) as conn:
        await log.until(conn, is_type("session.created"))
        turn = {"type": "server_vad", "create_response": False}
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": turn}}})
        await log.until(conn, is_type("session.updated"))
        await stream_realtime(conn, x)  # VAD ends the turn; no reply follows
        await log.until(conn, is_type("conversation.item.done"))
        assert "response.created" not in log.types()
        await conn.response.create()
        done = await log.until(conn, is_type("response.done"), timeout=15)
    assert done["response"]["status"] == "completed"
    user_item = log.of("input_audio_buffer.committed")[0]["item_id"]
    reply_item = done["response"]["output"][0]["id"]
    [added] = [e for e in log.of("conversation.item.added") if e["item"]["id"] == reply_item]
    assert added["previous_item_id"] == user_item  # the reply follows the turn it answers
    reply = log.audio()
    expected_ms = end_ms - start_ms + 10  # echo: the utterance (its silent prefix padding is not sent)
    assert abs(len(reply) / RATE * 1000 - expected_ms) < 150, (len(reply) / RATE, expected_ms)


@pytest.mark.parametrize("how", ["response.cancel", "conversation.item.truncate"])
async def test_interrupting_truncates_the_reply(echo_server, how) -> None:
    log = Log()
    async with connect(echo_server) as conn:
        await log.until(conn, is_type("session.created"))
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await log.until(conn, is_type("session.updated"))
        audio = tone(2.0)  # push-to-talk: 2 s at once, then commit and ask for the reply
        for i in range(0, len(audio), 4800):
            await conn.input_audio_buffer.append(audio=b64(audio[i : i + 4800]))
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        await log.until(conn, lambda e: len(log.audio()) >= 0.4 * RATE)
        item_id = log.of("response.output_item.added")[0]["item"]["id"]
        if how == "response.cancel":
            await conn.response.cancel()
        else:
            await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=200)
        done = await log.until(conn, is_type("response.done"))
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        assert done["response"]["output"][0]["status"] == "incomplete"
        assert len(log.audio()) / RATE < 1.0  # far less than the 2 s reply
        assert not log.of("error"), log.of("error")
        if how == "conversation.item.truncate":
            truncated = log.of("conversation.item.truncated")
            assert truncated and truncated[0]["item_id"] == item_id and truncated[0]["audio_end_ms"] == 200
            assert log.types().index("conversation.item.truncated") < log.types().index("response.done")
            # a finished reply can be confirmed where it ends, not shortened further
            await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=100)
            assert (await log.until(conn, is_type("error")))["error"]["code"] == "invalid_event"
            await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=200)
            assert (await log.until(conn, is_type("conversation.item.truncated")))["audio_end_ms"] == 200


async def test_bad_input_gets_errors_and_the_session_continues(echo_server) -> None:
    bad: list[str | bytes] = [
        "{oops",
        '{"type": "nope", "event_id": "e1"}',
        '{"type": "input_audio_buffer.append", "audio": 123}',
        '{"type": "input_audio_buffer.append", "audio": "@@not base64@@", "event_id": "e3"}',
        json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}),
        '{"type": "input_audio_buffer.commit"}',  # empty buffer
        '{"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0, "audio_end_ms": 5}',
        '{"type": "conversation.item.truncate", "item_id": "x", "content_index": 0, "audio_end_ms": "5"}',
        '{"type": "response.cancel"}',  # nothing to cancel
        '{"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}}',
        '{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "x"}}}}}',
        '{"type": "session.update", "session": "x"}',
        '{"type": "session.update", "session": {"model": "gpt-realtime"}}',
        '{"type": "conversation.item.create", "item": {"type": "message", "role": "assistant", "content": []}}',
        b"\x00\x01",
    ]
    log = Log()
    async with connect(echo_server) as conn:
        await log.until(conn, is_type("session.created"))
        for message in bad:
            await conn.send_raw(message)
        await conn.session.update(session={"type": "realtime"}, event_id="alive")
        await log.until(conn, is_type("session.updated"))
    errors = [e["error"] for e in log.of("error")]
    assert len(errors) == len(bad), [e["message"] for e in errors]
    codes = [e["code"] for e in errors]
    assert codes[:5] == ["invalid_json", "unknown_event", "invalid_event", "invalid_audio", "invalid_audio"], codes
    assert "no_response" in codes and "invalid_config" in codes and "unknown_pipeline" in codes
    assert errors[1]["event_id"] == "e1" and errors[3]["event_id"] == "e3"
    assert all(e["type"] == "invalid_request_error" for e in errors)


async def test_unknown_model_gets_an_error_and_the_default(echo_server) -> None:
    log = Log()
    async with connect(echo_server, model="gpt-realtime") as conn:
        created = await log.until(conn, is_type("session.created"))
        err = await log.until(conn, is_type("error"))
    assert created["session"]["model"] == "rejoinder-echo"
    assert err["error"]["code"] == "unknown_pipeline" and "rejoinder-echo" in err["error"]["message"]


async def test_bearer_token_is_honoured(start_server_with) -> None:
    rs, stop = await start_server_with(auth_token="s3cret")
    try:
        with pytest.raises(Exception, match="401"):
            async with connect(rs, key="wrong") as conn:
                await conn.recv()
        log = Log()
        async with connect(rs, key="s3cret") as conn:
            await log.until(conn, is_type("session.created"))
    finally:
        await stop()


@pytest.mark.parametrize(("pipeline", "turn_type"), [("cascade", "server_vad"), ("fused", "semantic_vad")])
async def test_pipeline_answers_a_spoken_question(start_server_with, pipeline, turn_type) -> None:
    rs, stop = await start_server_with(pipelines=f"{pipeline},echo")
    try:
        if pipeline not in rs.app.pipelines:
            why = rs.app.skipped.get(pipeline, "not loaded")
            pytest.skip(f"the {pipeline} pipeline is not loaded here: {why}")
        x, _, _ = utterance("what is seven plus five")
        log = Log()
        async with connect(rs, model=f"rejoinder-{pipeline}") as conn:
            created = await log.until(conn, is_type("session.created"))
            assert created["session"]["audio"]["input"]["turn_detection"]["type"] == turn_type
            sender = asyncio.create_task(stream_realtime(conn, x))
            try:
                done = await log.until(conn, is_type("response.done"), timeout=30)
            finally:
                sender.cancel()
        assert done["response"]["status"] == "completed"
        assert log.of("response.output_audio_transcript.delta"), log.types()
        assert len(log.audio()) > RATE // 4
    finally:
        await stop()
