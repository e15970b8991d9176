"""The Realtime <-> native translation the bench uses for ``--protocol realtime`` (sans-I/O)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from clients.bench.realtime import RealtimeTranslator
from server.protocol.native import unpack_audio


def only_events(out: list[dict[str, Any] | bytes]) -> list[dict[str, Any]]:
    assert all(isinstance(e, dict) for e in out)
    return [e for e in out if isinstance(e, dict)]


def b64(samples: int) -> str:
    return base64.b64encode(np.full(samples, 1000, "<i2").tobytes()).decode()


def test_a_turn_translates_to_native_events_and_audio() -> None:
    tr = RealtimeTranslator("cascade")
    created = only_events(tr.server({"type": "session.created", "session": {"id": "s1", "model": "rejoinder-cascade"}}))
    assert created[0]["type"] == "session.created"
    assert created[0]["pipelines"] == ["cascade"] and created[0]["session"]["input_sample_rate"] == 24000
    assert tr.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 300}) == [
        {"type": "speech.started", "audio_ms": 300}
    ]
    stopped = only_events(tr.server({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1200}))
    assert stopped[0]["type"] == "speech.stopped"
    (started,) = only_events(tr.server({"type": "response.created", "response": {"id": "resp_a"}}))
    assert started["type"] == "response.started" and started["response_id"] == 1 and started["sample_rate"] == 24000
    tr.server({"type": "response.output_item.added", "response_id": "resp_a", "item": {"id": "item_1"}})
    (a1,) = tr.server({"type": "response.output_audio.delta", "response_id": "resp_a", "delta": b64(480)})
    (a2,) = tr.server({"type": "response.audio.delta", "response_id": "resp_a", "delta": b64(240)})  # beta name
    assert isinstance(a1, bytes) and isinstance(a2, bytes)
    assert unpack_audio(a1)[:2] == (1, 0) and unpack_audio(a2)[:2] == (1, 480)
    tr.server({"type": "response.output_audio_transcript.delta", "response_id": "resp_a", "delta": "Hello"})
    (done,) = only_events(tr.server({
        "type": "response.done",
        "response": {"id": "resp_a", "status": "completed", "metadata": {"timings": {"endpoint_ms": 90.0}}},
    }))  # fmt: skip
    assert done["type"] == "response.done" and done["status"] == "completed"
    assert done["text"] == "Hello" and done["timings"] == {"endpoint_ms": 90.0}
    assert done["audio_ms"] == 30.0


def test_a_cut_reply_is_an_interruption_and_is_truncated_where_it_was_heard() -> None:
    tr = RealtimeTranslator("fused")
    tr.server({"type": "response.created", "response": {"id": "r"}})
    tr.server({"type": "response.output_item.added", "response_id": "r", "item": {"id": "it"}})
    tr.server({"type": "response.output_audio.delta", "response_id": "r", "delta": b64(2400)})
    assert tr.client(json.dumps({"type": "playback.position", "response_id": 1, "played_ms": 60.0})) == []
    out = only_events(tr.server({"type": "response.done", "response": {"id": "r", "status": "cancelled"}}))
    assert [e["type"] for e in out] == ["interrupted", "response.done"]
    assert out[0]["truncated_ms"] == 60.0 and out[0]["sent_ms"] == 100.0
    assert out[1]["status"] == "interrupted"
    trunc = tr.truncate(1, 75.0)
    assert trunc is not None
    assert json.loads(trunc) == {"type": "conversation.item.truncate", "item_id": "it", "content_index": 0, "audio_end_ms": 75}


def test_speech_started_during_a_reply_stops_playback_once() -> None:
    tr = RealtimeTranslator("cascade")
    tr.server({"type": "response.created", "response": {"id": "r"}})
    tr.server({"type": "response.output_audio.delta", "response_id": "r", "delta": b64(480)})
    out = only_events(tr.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 5000}))
    assert [e["type"] for e in out] == ["speech.started", "interrupted"]
    done = only_events(tr.server({"type": "response.done", "response": {"id": "r", "status": "cancelled"}}))
    assert [e["type"] for e in done] == ["response.done"] and done[0]["status"] == "interrupted"
    # After the reply, speech is just speech.
    after = only_events(tr.server({"type": "input_audio_buffer.speech_started", "audio_start_ms": 9000}))
    assert [e["type"] for e in after] == ["speech.started"]


def test_client_messages() -> None:
    tr = RealtimeTranslator()
    (append,) = tr.client(np.zeros(480, "<i2").tobytes())
    msg = json.loads(append)
    assert msg["type"] == "input_audio_buffer.append" and len(base64.b64decode(msg["audio"])) == 960
    assert json.loads(tr.client(json.dumps({"type": "input.commit"}))[0])["type"] == "input_audio_buffer.commit"
    assert json.loads(tr.client(json.dumps({"type": "response.cancel"}))[0])["type"] == "response.cancel"
    assert tr.client(json.dumps({"type": "session.update", "session": {"pipeline": "echo"}})) == []
    err = only_events(tr.server({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}))
    assert err[0]["type"] == "error" and err[0]["code"] == "invalid_request_error"
