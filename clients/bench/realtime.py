"""Measure the OpenAI Realtime endpoint (``/v1/realtime``) exactly like the native one.

:class:`RealtimeTranslator` is sans-I/O: it turns Realtime server events
(GA names, and the beta names) into the native events and audio messages of
docs/protocol.md, and native client messages into Realtime ones.
:class:`RealtimeClient` plugs it under :class:`clients.client.RejoinderClient`,
so the same paced sending, simulated loudspeaker, onset detection and
:class:`~clients.client.Turn` records apply to both protocols::

    async with RealtimeClient("ws://127.0.0.1:8765/v1/realtime?model=rejoinder-cascade") as c:
        turn = await c.turn(audio, rate=16000)

Mapping (audio is ``audio/pcm`` at 24 kHz both ways):

- ``input_audio_buffer.speech_started/stopped`` -> ``speech.started/stopped``;
- ``response.created`` -> ``response.started`` (ids become 1, 2, ...);
- ``response.output_audio.delta`` -> a reply-audio message at its running offset;
- ``response.output_audio_transcript.delta`` -> ``transcript.delta`` (assistant),
  ``conversation.item.input_audio_transcription.completed`` -> (user);
- ``response.done`` -> ``response.done`` (``timings`` from ``response.metadata.timings``,
  ``response.timings`` or ``timings``, when the server adds them); a done
  response whose status is ``cancelled`` or ``incomplete`` is first reported
  as ``interrupted``: that is the Realtime server telling the client the reply
  was cut, and the loudspeaker drops its buffer then, as on native ``interrupted``.
  ``input_audio_buffer.speech_started`` while a response is in flight counts
  the same (docs/realtime.md: the cancel may come just before or after it,
  "stop playback on either"), and so does ``output_audio_buffer.cleared``.
  Realtime carries no stage timings, so realtime runs have no stage breakdown.
- Client side: audio -> ``input_audio_buffer.append``; ``playback.position``
  is kept, and sent as ``conversation.item.truncate`` when a reply is cut;
  ``input.commit``/``input.clear``/``response.cancel`` map one to one.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from clients.client import RejoinderClient
from server.protocol.native import pack_audio

RATE = 24000
CUT = ("cancelled", "incomplete")


class RealtimeTranslator:
    """Realtime <-> native translation for one connection (keeps ids and offsets)."""

    def __init__(self, pipeline: str = "") -> None:
        self.pipeline = pipeline
        self.ids: dict[str, int] = {}  # realtime response id -> native int id
        self.items: dict[int, str] = {}  # native id -> output item id (for truncate)
        self.offsets: dict[int, int] = {}  # native id -> reply samples so far
        self.text: dict[int, list[str]] = {}
        self.played_ms: dict[int, float] = {}
        self.cut: set[int] = set()
        self.current: int | None = None

    # ---- server -> client ---------------------------------------------------
    def _rid(self, realtime_id: str | None) -> int:
        if realtime_id is None:
            return self.current if self.current is not None else 0
        if realtime_id not in self.ids:
            self.ids[realtime_id] = len(self.ids) + 1
        return self.ids[realtime_id]

    def session(self, data: dict[str, Any]) -> dict[str, Any]:
        s = data.get("session") or {}
        model = str(s.get("model") or "")
        if model.startswith("rejoinder-") and not self.pipeline:
            self.pipeline = model.removeprefix("rejoinder-")
        return {"input_sample_rate": RATE, "output_sample_rate": RATE, "pipeline": self.pipeline, "realtime": s}

    def server(self, data: dict[str, Any]) -> list[dict[str, Any] | bytes]:
        """Native events (dicts) and audio messages (bytes) for one Realtime server event."""
        t = str(data.get("type", ""))
        if t in ("session.created", "session.updated"):
            ev: dict[str, Any] = {"type": t, "session": self.session(data)}
            if t == "session.created":
                ev.update(session_id=str((data.get("session") or {}).get("id", "")), pipelines=[self.pipeline])
            return [ev]
        if t == "input_audio_buffer.speech_started":
            out: list[dict[str, Any] | bytes] = [{"type": "speech.started", "audio_ms": data.get("audio_start_ms", 0)}]
            if self.current is not None:  # docs/realtime.md: stop playback on speech_started
                out += self._interrupted(self.current)
            return out
        if t == "input_audio_buffer.speech_stopped":
            return [{"type": "speech.stopped", "audio_ms": data.get("audio_end_ms", 0), "reason": "silence"}]
        if t == "response.created":
            rid = self._rid((data.get("response") or {}).get("id"))
            self.current = rid
            self.offsets[rid] = 0
            self.text[rid] = []
            return [{"type": "response.started", "response_id": rid, "pipeline": self.pipeline,
                     "sample_rate": RATE, "input_audio_ms": None}]  # fmt: skip
        if t == "response.output_item.added":
            rid = self._rid(data.get("response_id"))
            item = data.get("item") or {}
            if item.get("id"):
                self.items[rid] = str(item["id"])
            return []
        if t in ("response.output_audio.delta", "response.audio.delta"):
            rid = self._rid(data.get("response_id"))
            if data.get("item_id"):
                self.items.setdefault(rid, str(data["item_id"]))
            pcm = base64.b64decode(data.get("delta", ""))
            off = self.offsets.get(rid, 0)
            self.offsets[rid] = off + len(pcm) // 2
            return [pack_audio(rid, off, pcm)]
        if t in ("response.output_audio_transcript.delta", "response.audio_transcript.delta"):
            rid = self._rid(data.get("response_id"))
            self.text.setdefault(rid, []).append(str(data.get("delta", "")))
            return [{"type": "transcript.delta", "response_id": rid, "role": "assistant", "delta": data.get("delta", "")}]
        if t == "conversation.item.input_audio_transcription.completed":
            return [{"type": "transcript.delta", "role": "user", "delta": data.get("transcript", "")}]
        if t == "output_audio_buffer.cleared":
            rid = self._rid(data.get("response_id"))
            return self._interrupted(rid)
        if t == "response.done":
            resp = data.get("response") or {}
            rid = self._rid(resp.get("id"))
            status = str(resp.get("status", "completed"))
            out = []
            if status in CUT or rid in self.cut:
                out += self._interrupted(rid)
                status = "interrupted"
            meta = resp.get("metadata") or {}
            timings = meta.get("timings") if isinstance(meta, dict) else None
            timings = timings or resp.get("timings") or data.get("timings") or {}
            if isinstance(timings, str):
                try:
                    timings = json.loads(timings)
                except ValueError:
                    timings = {}
            if self.current == rid:
                self.current = None
            out.append({
                "type": "response.done", "response_id": rid, "status": status,
                "audio_ms": self.offsets.get(rid, 0) * 1000 / RATE,
                "text": "".join(self.text.get(rid, [])), "timings": dict(timings),
            })  # fmt: skip
            return out
        if t == "error":
            err = data.get("error") or {}
            return [{"type": "error", "code": err.get("code") or err.get("type") or "error",
                     "message": err.get("message", ""), "event_id": err.get("event_id"), "fatal": False}]  # fmt: skip
        return []

    def _interrupted(self, rid: int) -> list[dict[str, Any] | bytes]:
        if rid in self.cut:
            return []
        self.cut.add(rid)
        sent_ms = self.offsets.get(rid, 0) * 1000 / RATE
        played = self.played_ms.get(rid, 0.0)
        return [{"type": "interrupted", "response_id": rid, "sent_ms": sent_ms, "truncated_ms": played, "audio_ms": 0}]

    # ---- client -> server ---------------------------------------------------
    def client(self, message: str | bytes) -> list[str]:
        """Realtime messages for one native client message (audio bytes or a JSON event)."""
        if isinstance(message, bytes | bytearray | memoryview):
            audio = base64.b64encode(bytes(message)).decode()
            return [json.dumps({"type": "input_audio_buffer.append", "audio": audio})]
        ev = json.loads(message)
        t = ev.get("type")
        eid = ev.get("event_id")
        simple = {"input.commit": "input_audio_buffer.commit", "input.clear": "input_audio_buffer.clear",
                  "response.cancel": "response.cancel"}  # fmt: skip
        if t in simple:
            return [json.dumps({"type": simple[t], "event_id": eid})]
        if t == "playback.position":
            rid = int(ev["response_id"])
            self.played_ms[rid] = float(ev["played_ms"])
            return []
        if t == "input.text":
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": ev["text"]}]}
            return [json.dumps({"type": "conversation.item.create", "item": item, "event_id": eid}),
                    json.dumps({"type": "response.create"})]  # fmt: skip
        return []  # session.update, ping: the pipeline is chosen by the URL's model parameter

    def truncate(self, rid: int, played_ms: float) -> str | None:
        """``conversation.item.truncate`` for a cut reply (None when its item id is unknown)."""
        item = self.items.get(rid)
        if item is None:
            return None
        return json.dumps({"type": "conversation.item.truncate", "item_id": item, "content_index": 0,
                           "audio_end_ms": int(played_ms)})  # fmt: skip


class RealtimeClient(RejoinderClient):
    """A :class:`RejoinderClient` speaking ``/v1/realtime`` (see the module docstring)."""

    def __init__(self, url: str, *, pipeline: str = "", **options: Any) -> None:
        options.pop("session", None)  # the URL's model parameter picks the pipeline
        super().__init__(url, **options)
        self.translator = RealtimeTranslator(pipeline)

    async def _send(self, message: str | bytes) -> None:
        for m in self.translator.client(message):
            await super()._send(m)

    async def _reader(self) -> None:
        import time

        from websockets.exceptions import ConnectionClosed

        from clients.client import Event

        assert self._ws is not None
        try:
            async for msg in self._ws:
                now = time.perf_counter()
                if isinstance(msg, bytes):
                    continue
                for item in self.translator.server(json.loads(msg)):
                    if isinstance(item, bytes):
                        self._on_audio(item, now)
                        continue
                    ev = Event(str(item["type"]), item, now)
                    self._on_event(ev)
                    if ev.type == "interrupted" and self.translator.current == int(ev["response_id"]):
                        # Cut while still in flight: tell the server what was heard. (A reply the
                        # server already finished cannot be shortened: docs/realtime.md.)
                        rid = int(ev["response_id"])
                        trunc = self.translator.truncate(rid, self.loudspeaker.played_ms(rid))
                        if trunc is not None:
                            await super()._send(trunc)
                    async with self._cond:
                        self.log.append(ev)
                        self._cond.notify_all()
        except ConnectionClosed as e:
            self._closed = e
        finally:
            if self._closed is None:
                self._closed = ConnectionError("reader stopped")
            async with self._cond:
                self._cond.notify_all()
