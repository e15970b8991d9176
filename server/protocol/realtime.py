"""An OpenAI Realtime API (GA, WebSocket) compatible translator, served at ``/v1/realtime``.

Sans-I/O like :mod:`server.protocol.native`: ``parse_many`` turns one client
message into internal events, ``serialize_many`` turns one internal event into
zero or more Realtime server events. One instance per connection; it keeps the
conversation's ids and the little state the Realtime protocol has and our
Session does not (pending text items, the reply in flight, finished replies).
See ``docs/realtime.md`` for what is supported.

Create it with the websocket URL's query, ``RealtimeProtocol({"model":
"rejoinder-cascade"})``. Its first ``parse_many`` call prepends the
:class:`~server.events.ConfigChange` events that put the Session on 24 kHz
audio both ways and on the requested pipeline; the ``session.updated``
answers to those are not shown to the client.

Things the translator must say on its own (``conversation.item.added`` for a
text item, ``input_audio_buffer.cleared``...) travel as a :class:`Ping` whose
``Pong`` comes back in order with the Session's other events.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from server import events as ev
from server.events import ErrorCode
from streaming.audio import float32_to_pcm16

RATE = 24000  # the Realtime API's audio/pcm rate, both directions
PCM_FORMAT = {"type": "audio/pcm", "rate": RATE}
MODEL_PREFIX = "rejoinder-"
PREFERRED_PIPELINE = "fused"  # the default model when the client names none
# Turn mode a pipeline is expected to default to, shown in session.created before
# the Session has switched to it (the Session's own answer is forwarded if it differs).
EXPECTED_TURN_MODE = {"fused": "semantic"}
# semantic_vad eagerness -> silence (ms) that confirms the learned end of turn;
# "auto" keeps the server's tuned default.
EAGERNESS_MIN_SILENCE_MS = {"low": 400.0, "medium": 200.0, "high": 64.0}
MIN_COMMIT_MS = 100.0  # as OpenAI: a commit needs at least 100 ms of new audio
MAX_PENDING_TEXT = 32_000  # characters of text items waiting for response.create
MAX_FINISHED_REPLIES = 64  # finished assistant items remembered for truncate
INTERNAL_ID = "_rejoinder."  # prefix of event ids the translator makes up
INIT_ID = INTERNAL_ID + "init"
SERVER_ERRORS = {ErrorCode.PIPELINE_ERROR, ErrorCode.INTERNAL, ErrorCode.OVERLOADED}


class _Invalid(Exception):
    """A client event that cannot be honoured: becomes an ``error`` event."""

    def __init__(self, message: str, code: str = ErrorCode.INVALID_EVENT) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Reply:
    """The assistant item of the response in flight."""

    rid: int
    response_id: str
    item_id: str
    samples: int = 0  # reply audio sent, at 24 kHz
    reported_ms: float = 0.0  # playback position last reported to the Session
    transcript: list[str] = field(default_factory=list)
    user_transcript: list[str] = field(default_factory=list)
    user_item: str | None = None  # the item before this one (the turn it answers)
    user_seconds: float = 0.0  # length of that turn's audio
    kept_ms: float | None = None  # set by Interrupted: where the context now ends
    client_stopped: bool = False  # response.cancel / conversation.item.truncate
    truncate_requested: bool = False

    @property
    def sent_ms(self) -> float:
        return self.samples * 1000 / RATE


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"{what} must be an object")
    return value


def _opt(d: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``d[key]`` if present and not null, checked against ``kind`` (bool is not a number)."""
    value = d.get(key)
    if value is None:
        return None
    numeric = kind in (int, float, (int, float))
    if (numeric and isinstance(value, bool)) or not isinstance(value, kind):
        raise _Invalid(f"{what}.{key} has the wrong type")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not valid JSON")


class RealtimeProtocol:
    """Translate OpenAI Realtime events to internal events and back (one per connection)."""

    name = "realtime"

    def __init__(self, query: dict[str, str]) -> None:
        self._query_model = query.get("model")
        self._event_ids = itertools.count(1)
        self._serial = itertools.count(1)
        self._sid = "0"
        self._init: list[ev.InEvent] = []
        self._swallow_updates = 0
        self._settings: dict[str, Any] = {}
        self._defaults: dict[str, Any] = {}  # the server's turn_detection defaults
        self._pipelines: list[str] = []
        self._shown: dict[str, Any] = {}  # session object the client last saw
        self._notices: dict[str, list[dict[str, Any]]] = {}
        self._pending_text: list[str] = []
        self._text_requests: dict[str, list[str]] = {}  # response.create id -> texts it took
        self._last_item: str | None = None
        self._user_item: str | None = None  # user audio item being spoken (speech_started sent)
        self._user_start_ms: float | None = None
        self._user_seconds = 0.0  # length of the last committed audio turn
        self._input_ms = 0.0  # audio appended, on the input timeline
        self._buffer_from_ms = 0.0  # where the uncommitted input buffer starts
        self._committed = False  # the turn that just ended was ended by a commit
        self._claimable = False  # a commit started a reply that response.create may claim
        self._reply: _Reply | None = None
        self._finished: OrderedDict[str, float] = OrderedDict()  # assistant item -> kept ms

    # ---- ids ---------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._sid}{next(self._serial):04d}"

    def _internal_id(self) -> str:
        return f"{INTERNAL_ID}{next(self._serial)}"

    @property
    def _turn(self) -> dict[str, Any]:
        turn: dict[str, Any] = self._settings.get("turn_detection", {})
        return turn

    # ---- client -> internal ------------------------------------------------
    def parse_many(self, message: str | bytes) -> list[ev.InEvent | ev.Error]:
        out: list[ev.InEvent | ev.Error] = []
        self._committed = False  # a commit's reply starts while its message is handled, or never
        if self._init:
            out.extend(self._init)
            self._init = []
        out.extend(self._parse(message))
        return out

    def _parse(self, message: str | bytes) -> list[ev.InEvent | ev.Error]:
        if isinstance(message, bytes):
            return [ev.Error(ErrorCode.INVALID_EVENT, "binary messages are not part of the Realtime protocol; send JSON events")]
        try:
            data = json.loads(message, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:
            return [ev.Error(ErrorCode.INVALID_JSON, f"message is not valid JSON: {e}")]
        if not isinstance(data, dict):
            return [ev.Error(ErrorCode.INVALID_EVENT, "an event must be a JSON object")]
        raw_id = data.get("event_id")
        eid = raw_id if isinstance(raw_id, str) else None
        etype = data.get("type")
        if not isinstance(etype, str):
            return [ev.Error(ErrorCode.INVALID_EVENT, "an event needs a string 'type'", eid)]
        handler = self._handlers.get(etype)
        if handler is None:
            return [ev.Error(ErrorCode.UNKNOWN_EVENT, f"unsupported event type {etype[:64]!r}", eid)]
        try:
            return handler(self, data, eid)
        except _Invalid as e:
            return [ev.Error(e.code, f"{etype}: {e}", eid)]

    def _on_session_update(self, d: dict[str, Any], eid: str | None) -> list[ev.InEvent | ev.Error]:
        s = _obj(d.get("session"), "session")
        if _opt(s, "type", str, "session") not in (None, "realtime"):
            raise _Invalid("only session type 'realtime' is supported", ErrorCode.INVALID_CONFIG)
        change: dict[str, Any] = {}
        model = _opt(s, "model", str, "session")
        if model is not None:
            change["pipeline"] = self._pipeline_of(model)
        modalities = _opt(s, "output_modalities", list, "session") or _opt(s, "modalities", list, "session")
        if modalities is not None and "audio" not in modalities:
            raise _Invalid("only audio output (with its transcript) is supported", ErrorCode.INVALID_CONFIG)
        audio = _obj(s.get("audio") or {}, "session.audio")
        a_in = _obj(audio.get("input") or {}, "session.audio.input")
        a_out = _obj(audio.get("output") or {}, "session.audio.output")
        for fmt, what in ((a_in.get("format"), "input"), (a_out.get("format"), "output")):
            if fmt is not None:
                f = _obj(fmt, f"session.audio.{what}.format")
                if f.get("type", "audio/pcm") != "audio/pcm" or f.get("rate", RATE) != RATE:
                    raise _Invalid("only audio/pcm at 24000 Hz is supported", ErrorCode.INVALID_CONFIG)
        for key in ("input_audio_format", "output_audio_format"):  # beta
            if _opt(s, key, str, "session") not in (None, "pcm16"):
                raise _Invalid("only pcm16 (audio/pcm at 24000 Hz) is supported", ErrorCode.INVALID_CONFIG)
        if "turn_detection" in a_in:
            change["turn_detection"] = self._turn_from_realtime(a_in["turn_detection"])
        elif "turn_detection" in s:  # beta: at the top of the session
            change["turn_detection"] = self._turn_from_realtime(s["turn_detection"])
        return [ev.ConfigChange(change, eid)]

    def _turn_from_realtime(self, td: Any) -> dict[str, Any]:
        """A Realtime ``turn_detection`` object -> our full turn settings (missing fields: defaults)."""
        base: dict[str, Any] = {k: self._defaults[k] for k in ("threshold", "start_ms", "stop_ms", "min_silence_ms",
                                               "prefix_padding_ms", "barge_in_ms", "barge_in_loud_ms") if k in self._defaults}
        if td is None:  # push-to-talk: commit answers at once, nothing interrupts automatically
            return {**base, "mode": "manual", "create_response": True, "interrupt_response": False}
        td = _obj(td, "turn_detection")
        what = "turn_detection"
        create = _opt(td, "create_response", bool, what)
        interrupt = _opt(td, "interrupt_response", bool, what)
        turn = {**base, "create_response": create is not False, "interrupt_response": interrupt is not False}
        kind = td.get("type")
        if kind == "server_vad":
            if _opt(td, "idle_timeout_ms", int, what) is not None:
                raise _Invalid("turn_detection.idle_timeout_ms is not supported", ErrorCode.INVALID_CONFIG)
            threshold = _opt(td, "threshold", (int, float), what)
            padding = _opt(td, "prefix_padding_ms", (int, float), what)
            silence = _opt(td, "silence_duration_ms", (int, float), what)
            turn["mode"] = "vad"
            if threshold is not None:
                turn["threshold"] = float(threshold)
            if padding is not None:
                turn["prefix_padding_ms"] = float(padding)
            if silence is not None:
                turn["stop_ms"] = float(silence)
        elif kind == "semantic_vad":
            eagerness = _opt(td, "eagerness", str, what) or "auto"
            if eagerness not in ("low", "medium", "high", "auto"):
                raise _Invalid("turn_detection.eagerness must be low, medium, high or auto")
            turn["mode"] = "semantic"
            if eagerness in EAGERNESS_MIN_SILENCE_MS:
                turn["min_silence_ms"] = EAGERNESS_MIN_SILENCE_MS[eagerness]
        else:
            raise _Invalid("turn_detection.type must be server_vad or semantic_vad (or send null)")
        return turn

    def _on_append(self, d: dict[str, Any], eid: str | None) -> list[ev.InEvent | ev.Error]:
        audio = d.get("audio")
        if not isinstance(audio, str):
            raise _Invalid("audio must be a base64 string")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as e:
            raise _Invalid(f"audio is not valid base64: {e}", ErrorCode.INVALID_AUDIO) from e
        if len(pcm) % 2:
            raise _Invalid("audio must be whole PCM16 samples (even byte count)", ErrorCode.INVALID_AUDIO)
        if not pcm:
            return []
        self._input_ms += len(pcm) / 2 * 1000 / RATE
        out: list[ev.InEvent | ev.Error] = []
        r = self._reply
        auto_barge_in = self._turn.get("mode") != "manual" and self._turn.get("interrupt_response")
        if r is not None and auto_barge_in and r.sent_ms > r.reported_ms:
            # Realtime semantics: what was sent counts as heard unless truncated, so a
            # barge-in keeps the reply's context up to the audio already sent.
            r.reported_ms = r.sent_ms
            out.append(ev.PlaybackPosition(r.rid, r.sent_ms))
        out.append(ev.AudioIn(pcm))
        return out

    def _on_commit(self, d: dict[str, Any], eid: str | None) -> list[ev.InEvent | ev.Error]:
        buffered = self._input_ms - self._buffer_from_ms
        if buffered < MIN_COMMIT_MS:
            raise _Invalid(f"buffer too small: {buffered:.0f} ms of audio, need at least {MIN_COMMIT_MS:.0f} ms")
        return [ev.Commit(eid)]

    def _on_clear(self, d: dict[str, Any], eid: str | None) -> list[ev.InEvent | ev.Error]:
        self._buffer_from_ms = self._input_ms
        self._user_item = self._user_start_ms = None
        return [ev.ClearInput(eid), self._notice([{"type": "input_audio_buffer.cleared"}])]

    def _on_item_create(self, d: dict[str, Any], eid: str | None) -> list[ev.InEvent | ev.Error]:
        item = _obj(d.get("item"), "item")
        if item.get("type", "message") != "message" or item.get("role") != "user":
            raise _Invalid("only user messages with input_text content are supported")
        content = item.get("content")
        if not isinstance(content, list) or not content:
            raise _Invalid("item.content must be a non-empty list")
        texts = []
        for part in content:
            p = _obj(part, "item.content[]")
            if p.get("type") not in ("input_text", "text") or not isinstance(p.get("text"), str):
                raise _Invalid("only input_text content parts are supported")
            texts.append(p["text"])
        text = " ".join(t.strip() for t in texts if t.strip())
        if not text:
            raise _Invalid("the text item is empty")
        if sum(map(len, self._pending_text)) + len(text) > MAX_PENDING_TEXT:
            raise _Invalid(f"more than {MAX_PENDING_TEXT} characters of text wait for response.create")
        given = _opt(item, "id", str, "item")
        item_id = given or self._new_id("item")
        self._pending_text.append(text)
        done = {
            "id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": t} for t in texts],
        }
        previous, self._last_item = self._last_item, item_id
        return [self._notice([
            {"type": "conversation.item.added", "previous_item_id": previous, "item": done},
            {"type": "conversation.item.done", "previous_item_id": previous, "item": done},
        ])]

    def _on_response_create(self, d: dict[str, Any], eid: str | None) -> list[ev.InEvent | ev.Error]:
        params = _obj(d.get("response") or {}, "response")
        if _opt(params, "conversation", str, "response") not in (None, "auto") or params.get("input") is not None:
            raise _Invalid("out-of-band responses (conversation/input) are not supported")
        modalities = _opt(params, "output_modalities", list, "response") or _opt(params, "modalities", list, "response")
        if modalities is not None and "audio" not in modalities:
            raise _Invalid("only audio output (with its transcript) is supported", ErrorCode.INVALID_CONFIG)
        if self._claimable and not self._pending_text:  # the commit already started this reply
            self._claimable = False
            return []
        if self._pending_text:
            rid = eid or self._internal_id()
            self._text_requests[rid] = self._pending_text
            text, self._pending_text = "\n".join(self._pending_text), []
            return [ev.TextIn(text, rid)]
        # the latest audio turn that ended without a reply (create_response false), if any:
        # the session answers it or says there is none
        return [ev.Respond(eid)]

    def _on_response_cancel(self, d: dict[str, Any], eid: str | None) -> list[ev.InEvent | ev.Error]:
        wanted = _opt(d, "response_id", str, "event")
        r = self._reply
        if r is not None:
            if wanted is not None and wanted != r.response_id:
                raise _Invalid(f"response {wanted} is not in progress", ErrorCode.NO_RESPONSE)
            r.client_stopped = True
        return [ev.Cancel(eid)]

    def _on_truncate(self, d: dict[str, Any], eid: str | None) -> list[ev.InEvent | ev.Error]:
        item_id = d.get("item_id")
        end_ms = d.get("audio_end_ms")
        index = d.get("content_index", 0)
        if not isinstance(item_id, str):
            raise _Invalid("item_id must be a string")
        if not isinstance(end_ms, int) or isinstance(end_ms, bool) or end_ms < 0:
            raise _Invalid("audio_end_ms must be a non-negative integer")
        if index != 0:
            raise _Invalid("content_index must be 0")
        r = self._reply
        if r is not None and r.item_id == item_id:
            r.client_stopped = r.truncate_requested = True
            return [ev.PlaybackPosition(r.rid, float(end_ms)), ev.Cancel(eid)]
        kept = self._finished.get(item_id)
        if kept is None:
            raise _Invalid(f"no assistant audio item {item_id!r}")
        if end_ms < kept:
            raise _Invalid(
                f"item {item_id} has finished and its context already ends at {kept:.0f} ms; "
                "a finished reply cannot be shortened (truncate while it is still playing)"
            )
        return [self._notice([{"type": "conversation.item.truncated", "item_id": item_id,
                               "content_index": 0, "audio_end_ms": round(kept)}])]

    _handlers = {
        "session.update": _on_session_update,
        "input_audio_buffer.append": _on_append,
        "input_audio_buffer.commit": _on_commit,
        "input_audio_buffer.clear": _on_clear,
        "conversation.item.create": _on_item_create,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
        "conversation.item.truncate": _on_truncate,
    }

    def _notice(self, events: list[dict[str, Any]]) -> ev.Ping:
        """Events to send in order with the Session's: they ride on a Ping's Pong."""
        marker = self._internal_id()
        self._notices[marker] = events
        return ev.Ping(marker)

    def _pipeline_of(self, model: str) -> str:
        name = model.removeprefix(MODEL_PREFIX)
        if not model.startswith(MODEL_PREFIX) or name not in self._pipelines:
            models = ", ".join(MODEL_PREFIX + p for p in self._pipelines)
            raise _Invalid(f"model {model[:64]!r} is not available here (have: {models})", ErrorCode.UNKNOWN_PIPELINE)
        return name

    # ---- internal -> client ------------------------------------------------
    def serialize_many(self, event: ev.OutEvent) -> list[str | bytes]:
        return [self._dump(e) for e in self.to_json_many(event)]

    def _dump(self, e: dict[str, Any]) -> str:
        return json.dumps({"event_id": f"event_{next(self._event_ids)}", **e}, separators=(",", ":"))

    def to_json_many(self, event: ev.OutEvent) -> list[dict[str, Any]]:
        """The Realtime events for one internal event, without their ``event_id``."""
        match event:
            case ev.SessionCreated():
                return self._session_created(event)
            case ev.SessionUpdated():
                return self._session_updated(event)
            case ev.SpeechStarted():
                return self._speech_started(event)
            case ev.SpeechStopped():
                return self._speech_stopped(event)
            case ev.ResponseStarted():
                return self._response_started(event)
            case ev.TranscriptDelta():
                return self._transcript(event)
            case ev.AudioOut():
                return self._audio(event)
            case ev.Interrupted():
                return self._interrupted(event)
            case ev.ResponseDone():
                return self._response_done(event)
            case ev.Error():
                return self._error(event)
            case ev.Pong():
                return self._notices.pop(event.event_id or "", [])
        raise TypeError(f"cannot serialize {type(event).__name__}")

    def _render_session(self, settings: dict[str, Any]) -> dict[str, Any]:
        turn = settings.get("turn_detection", {})
        td: dict[str, Any] | None
        match turn.get("mode"):
            case "vad":
                td = {
                    "type": "server_vad",
                    "threshold": turn["threshold"],
                    "prefix_padding_ms": round(turn["prefix_padding_ms"]),
                    "silence_duration_ms": round(turn["stop_ms"]),
                    "create_response": turn["create_response"],
                    "interrupt_response": turn["interrupt_response"],
                    "idle_timeout_ms": None,
                }
            case "semantic":
                eagerness = next((k for k, v in EAGERNESS_MIN_SILENCE_MS.items()
                                  if v == turn.get("min_silence_ms")), "auto")
                td = {
                    "type": "semantic_vad",
                    "eagerness": eagerness,
                    "create_response": turn["create_response"],
                    "interrupt_response": turn["interrupt_response"],
                }
            case _:
                td = None
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": f"sess_{self._sid}",
            "model": MODEL_PREFIX + str(settings.get("pipeline", "")),
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": dict(PCM_FORMAT), "transcription": None, "noise_reduction": None,
                          "turn_detection": td},
                "output": {"format": dict(PCM_FORMAT)},
            },
        }

    def _session_created(self, event: ev.SessionCreated) -> list[dict[str, Any]]:
        self._sid = event.session_id
        self._pipelines = list(event.pipelines)
        self._defaults = dict(event.session.get("turn_detection", {}))
        settings = dict(event.session)
        current = settings.get("pipeline", "")
        out: list[dict[str, Any]] = []
        want = current
        if self._query_model is None:
            if PREFERRED_PIPELINE in self._pipelines:
                want = PREFERRED_PIPELINE
        else:
            try:
                want = self._pipeline_of(self._query_model)
            except _Invalid as e:
                out.append(self._error_json(e.code, str(e), None))
        init: list[ev.InEvent] = [ev.ConfigChange({"input_sample_rate": RATE, "output_sample_rate": RATE}, INIT_ID)]
        if want != current:
            # Through vad first: the Session refuses to leave a semantic turn mode for a
            # pipeline without one in a single step. Without turn_detection, switching
            # the pipeline puts its own default turn mode in force.
            init.append(ev.ConfigChange({"turn_detection": {"mode": "vad"}}, INIT_ID))
            init.append(ev.ConfigChange({"pipeline": want}, INIT_ID))
            mode = EXPECTED_TURN_MODE.get(want, "vad")
            settings = {**settings, "pipeline": want, "turn_detection": {**self._defaults, "mode": mode}}
        self._init = init
        self._swallow_updates = len(init)
        self._settings = settings
        self._shown = self._render_session(settings)
        return [{"type": "session.created", "session": self._shown}, *out]

    def _session_updated(self, event: ev.SessionUpdated) -> list[dict[str, Any]]:
        self._settings = dict(event.session)
        session = self._render_session(self._settings)
        if self._swallow_updates:
            self._swallow_updates -= 1
            if self._swallow_updates or session == self._shown:
                return []
        self._shown = session
        return [{"type": "session.updated", "session": session}]

    def _speech_started(self, event: ev.SpeechStarted) -> list[dict[str, Any]]:
        if self._turn.get("mode") == "manual":
            return []  # no server VAD events with turn_detection null
        self._user_item = self._new_id("item")
        self._user_start_ms = event.audio_ms
        padding = float(self._turn.get("prefix_padding_ms", 0.0))
        start = max(self._buffer_from_ms, event.audio_ms - padding)
        return [{"type": "input_audio_buffer.speech_started", "audio_start_ms": round(start),
                 "item_id": self._user_item}]

    def _speech_stopped(self, event: ev.SpeechStopped) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        item_id = self._user_item or self._new_id("item")
        if self._user_item is not None and event.reason != "commit":
            out.append({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": round(event.audio_ms),
                        "item_id": item_id})
        start = self._buffer_from_ms
        if self._user_start_ms is not None:
            start = max(start, self._user_start_ms - float(self._turn.get("prefix_padding_ms", 0.0)))
        self._user_seconds = max(0.0, event.audio_ms - start) / 1000
        self._user_item = self._user_start_ms = None
        self._buffer_from_ms = self._input_ms
        self._committed = event.reason == "commit"
        self._claimable = False
        previous, self._last_item = self._last_item, item_id
        item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}]}
        out += [
            {"type": "input_audio_buffer.committed", "previous_item_id": previous, "item_id": item_id},
            {"type": "conversation.item.added", "previous_item_id": previous, "item": item},
            {"type": "conversation.item.done", "previous_item_id": previous, "item": item},
        ]
        return out

    def _assistant_item(self, r: _Reply, status: str, transcript: str | None) -> dict[str, Any]:
        content = [] if transcript is None else [{"type": "output_audio", "transcript": transcript}]
        return {"id": r.item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": status, "content": content}

    def _response(self, r: _Reply, status: str, output: list[dict[str, Any]],
                  details: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "object": "realtime.response", "id": r.response_id, "status": status, "status_details": details,
            "output": output, "conversation_id": f"conv_{self._sid}", "output_modalities": ["audio"],
            "audio": {"output": {"format": dict(PCM_FORMAT)}}, "usage": None, "metadata": None,
        }

    def _response_started(self, event: ev.ResponseStarted) -> list[dict[str, Any]]:
        self._claimable, self._committed = self._committed, False
        r = self._reply = _Reply(event.response_id, self._new_id("resp"), self._new_id("item"),
                                 user_item=self._last_item, user_seconds=self._user_seconds)
        self._text_requests.clear()  # any text response.create before this one is settled
        ids = {"response_id": r.response_id, "item_id": r.item_id, "output_index": 0, "content_index": 0}
        item = self._assistant_item(r, "in_progress", None)
        previous, self._last_item = self._last_item, r.item_id
        return [
            {"type": "response.created", "response": self._response(r, "in_progress", [])},
            {"type": "response.output_item.added", "response_id": r.response_id, "output_index": 0, "item": item},
            {"type": "conversation.item.added", "previous_item_id": previous, "item": item},
            {"type": "response.content_part.added", **ids, "part": {"type": "audio", "transcript": ""}},
        ]

    def _ids(self, r: _Reply) -> dict[str, Any]:
        return {"response_id": r.response_id, "item_id": r.item_id, "output_index": 0, "content_index": 0}

    def _transcript(self, event: ev.TranscriptDelta) -> list[dict[str, Any]]:
        r = self._reply
        if r is None or event.response_id not in (None, r.rid):
            return []
        if event.role == "user":
            if r.user_item is None:
                return []
            r.user_transcript.append(event.delta)
            return [{"type": "conversation.item.input_audio_transcription.delta", "item_id": r.user_item,
                     "content_index": 0, "delta": event.delta}]
        r.transcript.append(event.delta)
        return [{"type": "response.output_audio_transcript.delta", **self._ids(r), "delta": event.delta}]

    def _audio(self, event: ev.AudioOut) -> list[dict[str, Any]]:
        r = self._reply
        if r is None or event.response_id != r.rid:
            return []
        r.samples += len(event.pcm)
        delta = base64.b64encode(float32_to_pcm16(event.pcm)).decode("ascii")
        return [{"type": "response.output_audio.delta", **self._ids(r), "delta": delta}]

    def _interrupted(self, event: ev.Interrupted) -> list[dict[str, Any]]:
        r = self._reply
        if r is None or event.response_id != r.rid:
            return []
        r.kept_ms = event.truncated_ms
        if not r.truncate_requested:
            return []
        return [{"type": "conversation.item.truncated", "item_id": r.item_id, "content_index": 0,
                 "audio_end_ms": round(event.truncated_ms)}]

    def _response_done(self, event: ev.ResponseDone) -> list[dict[str, Any]]:
        r = self._reply
        if r is None or event.response_id != r.rid:
            return []
        self._reply = None
        transcript = "".join(r.transcript)
        ids = self._ids(r)
        details: dict[str, Any] | None = None
        match event.status:
            case "completed":
                status = "completed"
            case "failed":
                status = "failed"
                details = {"type": "failed", "error": {"type": "server_error", "code": ErrorCode.PIPELINE_ERROR}}
            case _:  # cancelled by the client, or interrupted by the user's speech
                status = "cancelled"
                reason = "client_cancelled" if r.client_stopped or event.status == "cancelled" else "turn_detected"
                details = {"type": "cancelled", "reason": reason}
        item = self._assistant_item(r, "completed" if status == "completed" else "incomplete", transcript)
        self._finished[r.item_id] = r.kept_ms if r.kept_ms is not None else event.audio_ms
        while len(self._finished) > MAX_FINISHED_REPLIES:
            self._finished.popitem(last=False)
        out: list[dict[str, Any]] = []
        if r.user_transcript and r.user_item is not None:
            out.append({
                "type": "conversation.item.input_audio_transcription.completed", "item_id": r.user_item,
                "content_index": 0, "transcript": "".join(r.user_transcript),
                "usage": {"type": "duration", "seconds": round(r.user_seconds, 3)},
            })
        out += [
            {"type": "response.output_audio.done", **ids},
            {"type": "response.output_audio_transcript.done", **ids, "transcript": transcript},
            {"type": "response.content_part.done", **ids, "part": {"type": "audio", "transcript": transcript}},
            {"type": "response.output_item.done", "response_id": r.response_id, "output_index": 0, "item": item},
            {"type": "conversation.item.done", "previous_item_id": r.user_item, "item": item},
            {"type": "response.done", "response": self._response(r, status, [item], details)},
        ]
        return out

    def _error(self, event: ev.Error) -> list[dict[str, Any]]:
        eid = event.event_id
        if eid == INIT_ID:
            # a start-up change failed: the session.updated it owed will not come
            self._swallow_updates = max(0, self._swallow_updates - 1)
        if eid is not None and eid in self._text_requests:
            if event.code == ErrorCode.RESPONSE_IN_PROGRESS:  # not answered: the text waits again
                self._pending_text = self._text_requests[eid] + self._pending_text
            del self._text_requests[eid]
        if eid is not None and eid.startswith(INTERNAL_ID):
            eid = None
        return [self._error_json(event.code, event.message, eid)]

    @staticmethod
    def _error_json(code: str, message: str, event_id: str | None) -> dict[str, Any]:
        kind = "server_error" if code in SERVER_ERRORS else "invalid_request_error"
        return {"type": "error",
                "error": {"type": kind, "code": code, "message": message, "param": None, "event_id": event_id}}
