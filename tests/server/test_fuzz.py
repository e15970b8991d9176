"""Hostile input against the protocol core and a live Session, without sockets.

Every message either translates to an internal event or to an ``error`` with
a stable code; feeding any sequence to a Session never raises, and the
session still answers afterwards.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server import events as ev
from server.app import build_app
from server.config import ServerConfig
from server.events import ErrorCode
from server.protocol.native import NativeProtocol
from server.protocol.schema import event_types, first_error
from server.session import Session

STABLE_CODES = {v for k, v in vars(ErrorCode).items() if k.isupper()}
P = NativeProtocol()

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
known_types = st.sampled_from(event_types("client") + ["response.create", "session.created", ""])


@st.composite
def typed_event(draw: st.DrawFn) -> str:
    body: dict[str, Any] = draw(st.dictionaries(
        st.sampled_from(["session", "text", "response_id", "played_ms", "event_id", "extra"]), json_value, max_size=3,
    ))
    body["type"] = draw(known_types)
    return json.dumps(body)


@st.composite
def session_update(draw: st.DrawFn) -> str:
    session: dict[str, Any] = {}
    if draw(st.booleans()):
        session["input_sample_rate"] = draw(st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000, 0, 12345]))
    if draw(st.booleans()):
        session["pipeline"] = draw(st.sampled_from(["echo", "nope", "fused"]))
    if draw(st.booleans()):
        session["turn_detection"] = draw(st.dictionaries(
            st.sampled_from(["mode", "threshold", "stop_ms", "min_silence_ms", "barge_in_ms"]),
            st.one_of(st.sampled_from(["vad", "semantic", "manual", "x"]), st.floats(-10, 10**4, allow_nan=False)),
            max_size=3,
        ))
    if draw(st.booleans()):
        session["limits"] = {"max_turn_ms": draw(st.floats(0, 10**9, allow_nan=False))}
    return json.dumps({"type": "session.update", "session": session})


messages = st.one_of(
    st.text(max_size=60),
    json_value.map(json.dumps),
    typed_event(),
    session_update(),
    st.binary(max_size=700),
    st.sampled_from(['{"type": "input.commit"}', '{"type": "response.cancel"}', '{"type": "input.clear"}',
                     '{"type": "input.text", "text": "hello"}', '[' * 5000, '{"type": "ping"}']),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), json_value.map(json.dumps), typed_event()))
def test_parse_never_raises_and_errors_are_stable(message: str | bytes) -> None:
    out = P.parse(message)
    if isinstance(out, ev.Error):
        assert out.code in STABLE_CODES
        assert out.message


@pytest.fixture(scope="module")
def app():  # type: ignore[no-untyped-def]
    a = build_app(ServerConfig(pipelines="echo", audio_burst_s=2.0))
    a.worker.start()
    yield a
    a.worker.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(messages, min_size=1, max_size=25))
def test_session_survives_any_message_sequence(app, sequence: list[str | bytes]) -> None:  # type: ignore[no-untyped-def]
    out: list[ev.OutEvent] = []

    async def run() -> None:
        s = Session(session_id="fuzz", cfg=app.cfg, pipelines=app.pipelines, default_pipeline="echo",
                    worker=app.worker, emit=out.append, metrics=app.metrics)
        await s.start()
        for m in sequence:
            await s.handle(P.parse(m))
        await s.handle(ev.Ping("still-there"))
        await s.close()

    asyncio.run(run())
    errors = [e for e in out if isinstance(e, ev.Error)]
    assert all(e.code in STABLE_CODES for e in errors)
    assert not any(e.code == ErrorCode.INTERNAL for e in errors)
    assert isinstance(out[0], ev.SessionCreated)
    assert any(isinstance(e, ev.Pong) and e.event_id == "still-there" for e in out)
    for e in out:  # everything the session emits is serializable and schema-valid
        wire = P.serialize(e)
        if isinstance(wire, str):
            assert first_error("server", json.loads(wire)) is None, wire
