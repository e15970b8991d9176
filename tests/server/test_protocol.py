"""The native protocol core, fed bytes and events: no sockets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from server import events as ev
from server.protocol.native import AUDIO_HEADER, NativeProtocol, unpack_audio
from server.protocol.schema import event_types, first_error

P = NativeProtocol()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"type": "session.update", "session": {"input_sample_rate": 48000}}, ev.ConfigChange),
        ({"type": "input.commit"}, ev.Commit),
        ({"type": "input.clear", "event_id": "c1"}, ev.ClearInput),
        ({"type": "input.text", "text": "what is two plus two"}, ev.TextIn),
        ({"type": "response.cancel"}, ev.Cancel),
        ({"type": "playback.position", "response_id": 3, "played_ms": 250.5}, ev.PlaybackPosition),
        ({"type": "ping", "event_id": "p"}, ev.Ping),
    ],
)
def test_valid_client_events_translate(message: dict, expected: type) -> None:
    out = P.parse(json.dumps(message))
    assert isinstance(out, expected), out


def test_binary_audio_and_odd_length() -> None:
    assert P.parse(b"\x00\x01" * 10) == ev.AudioIn(b"\x00\x01" * 10)
    err = P.parse(b"\x00\x01\x02")
    assert isinstance(err, ev.Error) and err.code == "invalid_audio"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_event"),
        ('{"no_type": 1}', "invalid_event"),
        ('{"type": 7}', "invalid_event"),
        ('{"type": "launch.rockets"}', "unknown_event"),
        ('{"type": "input.text"}', "invalid_event"),
        ('{"type": "input.text", "text": 5}', "invalid_event"),
        ('{"type": "session.update", "session": {"input_sample_rate": 12345}}', "invalid_event"),
        ('{"type": "session.update", "session": {"bogus": 1}}', "invalid_event"),
        ('{"type": "playback.position", "response_id": -1, "played_ms": 3}', "invalid_event"),
        ('{"type": "playback.position", "response_id": 1, "played_ms": 1e400}', "invalid_json"),
        ("[" * 100000, "invalid_json"),
    ],
)
def test_bad_client_events_give_stable_codes(raw: str, code: str) -> None:
    out = P.parse(raw)
    assert isinstance(out, ev.Error), out
    assert out.code == code, out


def test_event_id_is_echoed_in_errors() -> None:
    out = P.parse('{"type": "input.text", "event_id": "abc"}')
    assert isinstance(out, ev.Error) and out.event_id == "abc"


SAMPLE_OUT: list[ev.OutEvent] = [
    ev.SessionCreated("s1", {"input_sample_rate": 16000, "pipeline": "echo"}, ["echo"]),
    ev.SessionUpdated({"output_sample_rate": 48000}),
    ev.SpeechStarted(512.0),
    ev.SpeechStopped(2100.0, "silence"),
    ev.ResponseStarted(1, "echo", 24000, 2100.0),
    ev.TranscriptDelta("assistant", "hello", 1),
    ev.ResponseDone(1, "completed", 1500.0, {"endpoint_ms": 500.0, "x": None}, "hello"),
    ev.Interrupted(1, 800.0, 640.0, 3000.0),
    ev.Error("invalid_json", "bad", None),
    ev.Pong("p1"),
]


@pytest.mark.parametrize("event", SAMPLE_OUT, ids=lambda e: type(e).__name__)
def test_server_events_validate_against_schema(event: ev.OutEvent) -> None:
    data = json.loads(P.serialize(event))
    assert first_error("server", data) is None


def test_every_server_event_type_is_serializable() -> None:
    produced = {json.loads(P.serialize(e))["type"] for e in SAMPLE_OUT}
    assert produced == set(event_types("server"))


def test_audio_header_round_trip() -> None:
    pcm = np.array([0.0, 0.5, -0.5, 0.999], np.float32)
    msg = P.serialize(ev.AudioOut(7, 4800, pcm))
    assert isinstance(msg, bytes) and len(msg) == AUDIO_HEADER.size + 8
    rid, offset, body = unpack_audio(msg)
    assert (rid, offset) == (7, 4800)
    back = np.frombuffer(body, "<i2") / 32768
    assert np.allclose(back, pcm, atol=1e-4)


def test_docs_list_exactly_the_schema_event_types() -> None:
    text = DOCS.read_text()
    client = text.split("## Client events", 1)[1].split("## Server events", 1)[0]
    server = text.split("## Server events", 1)[1].split("## Rules", 1)[0]
    row = re.compile(r"^\| `([a-z.]+)` \|", re.M)
    assert sorted(row.findall(client)) == event_types("client")
    assert sorted(row.findall(server)) == event_types("server")
