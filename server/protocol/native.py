"""The native Rejoinder protocol (v1): JSON text events plus binary PCM16.

Sans-I/O: :meth:`NativeProtocol.parse` turns one websocket message into one
inbound event (or an :class:`~server.events.Error`), :meth:`serialize` turns
one outbound event into one message. No sockets, no asyncio. See
``docs/protocol.md``; the schema in ``schema.json`` is authoritative.

Server audio messages carry a 16-byte little-endian header before the PCM:
``kind: u8 (1 = reply audio) | reserved: 3 bytes | response_id: u32 |
sample_offset: u64`` so that audio still in flight after an interruption is
never mistaken for the next reply.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from server import events as ev
from server.events import ErrorCode
from server.protocol.schema import PROTOCOL_VERSION, first_error
from streaming.audio import float32_to_pcm16

AUDIO_HEADER = struct.Struct("<B3xIQ")
KIND_REPLY_AUDIO = 1


def pack_audio(response_id: int, offset: int, pcm16: bytes) -> bytes:
    return AUDIO_HEADER.pack(KIND_REPLY_AUDIO, response_id, offset) + pcm16


def unpack_audio(message: bytes) -> tuple[int, int, bytes]:
    """Client helper: split a server audio message into (response_id, offset, pcm16)."""
    if len(message) < AUDIO_HEADER.size:
        raise ValueError("audio message shorter than its header")
    kind, rid, offset = AUDIO_HEADER.unpack_from(message)
    if kind != KIND_REPLY_AUDIO:
        raise ValueError(f"unknown audio message kind {kind}")
    return rid, offset, message[AUDIO_HEADER.size :]


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not valid JSON")


class NativeProtocol:
    """Translate native-protocol messages to internal events and back."""

    name = "native"

    def parse(self, message: str | bytes) -> ev.InEvent | ev.Error:
        if isinstance(message, bytes):
            if len(message) % 2:
                return ev.Error(ErrorCode.INVALID_AUDIO, "binary audio must be whole PCM16 samples (even length)")
            return ev.AudioIn(message)
        try:
            data = json.loads(message, parse_float=_finite_float, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:
            return ev.Error(ErrorCode.INVALID_JSON, f"message is not valid JSON: {e}")
        if not isinstance(data, dict):
            return ev.Error(ErrorCode.INVALID_EVENT, "an event must be a JSON object")
        etype = data.get("type")
        raw_id = data.get("event_id")
        event_id = raw_id if isinstance(raw_id, str) else None
        if not isinstance(etype, str):
            return ev.Error(ErrorCode.INVALID_EVENT, "an event needs a string 'type'", event_id)
        problem = first_error("client", data)
        if problem is not None:
            code = ErrorCode.UNKNOWN_EVENT if problem.startswith("unknown") else ErrorCode.INVALID_EVENT
            return ev.Error(code, f"{etype}: {problem}", event_id)
        return self._build(etype, data, event_id)

    @staticmethod
    def _build(etype: str, d: dict[str, Any], eid: str | None) -> ev.InEvent:
        match etype:
            case "session.update":
                return ev.ConfigChange(d["session"], eid)
            case "input.commit":
                return ev.Commit(eid)
            case "input.clear":
                return ev.ClearInput(eid)
            case "input.text":
                return ev.TextIn(d["text"], eid)
            case "response.cancel":
                return ev.Cancel(eid)
            case "response.create":
                return ev.Respond(eid)
            case "playback.position":
                return ev.PlaybackPosition(int(d["response_id"]), float(d["played_ms"]), eid)
            case "ping":
                return ev.Ping(eid)
        raise AssertionError(f"schema admits {etype} but no translation exists")

    def parse_many(self, message: str | bytes) -> list[ev.InEvent | ev.Error]:
        return [self.parse(message)]

    def serialize_many(self, event: ev.OutEvent) -> list[str | bytes]:
        return [self.serialize(event)]

    def serialize(self, event: ev.OutEvent) -> str | bytes:
        if isinstance(event, ev.AudioOut):
            return pack_audio(event.response_id, event.offset, float32_to_pcm16(event.pcm))
        return json.dumps(self.to_json(event), separators=(",", ":"))

    @staticmethod
    def to_json(event: ev.OutEvent) -> dict[str, Any]:
        match event:
            case ev.SessionCreated():
                return {
                    "type": "session.created",
                    "protocol_version": PROTOCOL_VERSION,
                    "session_id": event.session_id,
                    "session": event.session,
                    "pipelines": event.pipelines,
                }
            case ev.SessionUpdated():
                return {"type": "session.updated", "session": event.session}
            case ev.SpeechStarted():
                return {"type": "speech.started", "audio_ms": round(event.audio_ms, 1)}
            case ev.SpeechStopped():
                return {"type": "speech.stopped", "audio_ms": round(event.audio_ms, 1), "reason": event.reason}
            case ev.ResponseStarted():
                out: dict[str, Any] = {
                    "type": "response.started",
                    "response_id": event.response_id,
                    "pipeline": event.pipeline,
                    "sample_rate": event.sample_rate,
                }
                if event.input_audio_ms is not None:
                    out["input_audio_ms"] = round(event.input_audio_ms, 1)
                return out
            case ev.TranscriptDelta():
                out = {"type": "transcript.delta", "role": event.role, "delta": event.delta}
                if event.response_id is not None:
                    out["response_id"] = event.response_id
                return out
            case ev.ResponseDone():
                return {
                    "type": "response.done",
                    "response_id": event.response_id,
                    "status": event.status,
                    "audio_ms": round(event.audio_ms, 1),
                    "text": event.text,
                    "timings": {k: (None if v is None else round(v, 2)) for k, v in event.timings.items()},
                }
            case ev.Interrupted():
                return {
                    "type": "interrupted",
                    "response_id": event.response_id,
                    "sent_ms": round(event.sent_ms, 1),
                    "truncated_ms": round(event.truncated_ms, 1),
                    "audio_ms": round(event.audio_ms, 1),
                }
            case ev.Error():
                return {
                    "type": "error",
                    "code": event.code,
                    "message": event.message,
                    "event_id": event.event_id,
                    "fatal": event.fatal,
                }
            case ev.Pong():
                return {"type": "pong", "event_id": event.event_id, "input_samples": event.input_samples}
        raise TypeError(f"cannot serialize {type(event).__name__}")
