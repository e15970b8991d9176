"""Async Python client for the native Rejoinder protocol (docs/protocol.md).

It behaves like a microphone and a loudspeaker, as ../shared/LATENCY.md
defines them: audio leaves in 20 ms PCM16 frames at real-time pace (frame i
at ``t0 + (i + 1) * 20 ms``, each send's lateness recorded), and reply audio
goes into a simulated :class:`~clients.loudspeaker.Loudspeaker` that reports
``playback.position`` every ~100 ms and drops its buffer on ``interrupted``.
Pipeline-agnostic: the pipelines on offer come from ``session.created``.

One turn, measured::

    async with connect("ws://127.0.0.1:8765/v1/native", session={"pipeline": "echo"}) as c:
        turn = await c.turn(audio, rate=16000)   # >= 300 ms lead silence, trailing silence
        print(turn.user_text, turn.reply_text, turn.latency_ms, turn.timings)

Barge-in (start a second utterance once 300 ms of the reply has played)::

        turn = await c.turn(q1, rate=16000, barge_in=q2, barge_in_after_ms=300)
        turn.barge_in.stop_latency_ms, turn.barge_in.turn.latency_ms

Lower level: :meth:`RejoinderClient.stream` sends an array or any (async)
iterator of frames at real-time pace; :meth:`~RejoinderClient.wait_for` and
:meth:`~RejoinderClient.events` read server events; :attr:`~RejoinderClient.replies`
holds the reply audio of each response. All times are ``time.perf_counter()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clients.groundtruth import speech_bounds
from clients.loudspeaker import JITTER_S, Loudspeaker, Playout
from clients.reply import ReplyStream
from server.protocol.native import unpack_audio
from streaming.audio import float32_to_pcm16, pcm16_to_float32, resample

DEFAULT_URL = "ws://127.0.0.1:8765/v1/native"
FRAME_MS = 20
LEAD_SILENCE_S = 0.3  # LATENCY.md: at least 300 ms of silence first
REPLY_TIMEOUT_S = 4.0  # LATENCY.md: no reply within 4 s is a failed turn
POSITION_INTERVAL_S = 0.1

Frame = np.ndarray | bytes | bytearray | memoryview
FrameSource = np.ndarray | bytes | Iterable[Frame] | AsyncIterable[Frame]


class ConnectError(ConnectionError):
    """The websocket could not be opened. ``status`` is the HTTP status when the server refused it."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerError(RuntimeError):
    """The server answered a request with an ``error`` event."""

    def __init__(self, event: Event) -> None:
        super().__init__(f"{event.get('code')}: {event.get('message')}")
        self.code: str = event.get("code", "")
        self.event = event


@dataclass(frozen=True)
class Event:
    """One server event: its JSON fields in ``data``, received at ``t`` (perf_counter)."""

    type: str
    data: dict[str, Any] = field(repr=False)
    t: float

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


@dataclass
class SendReport:
    """How one stream of input audio went out.

    ``t0``: the stream's clock origin; sample ``k`` of the stream was captured
    at ``t0 + k / rate``. ``start_ms``: where the stream begins on the
    session's input timeline. ``lateness_s``: per frame, actual minus scheduled send.
    """

    rate: int
    t0: float = 0.0
    start_ms: float = 0.0
    samples: int = 0
    lateness_s: list[float] = field(default_factory=list)

    def time_of(self, sample: int) -> float:
        """Capture time of the stream's ``sample`` (what LATENCY.md calls t0 + sample / rate)."""
        return self.t0 + sample / self.rate

    def input_ms(self, sample: int) -> float:
        """Position of the stream's ``sample`` on the session's input timeline (ms)."""
        return self.start_ms + sample * 1000.0 / self.rate

    @property
    def frames(self) -> int:
        return len(self.lateness_s)

    @property
    def max_late_ms(self) -> float:
        return max(self.lateness_s, default=0.0) * 1000

    @property
    def mean_late_ms(self) -> float:
        return float(np.mean(self.lateness_s)) * 1000 if self.lateness_s else 0.0


@dataclass
class BargeIn:
    """A second utterance started while the reply played (LATENCY.md "Barge-in stop latency")."""

    t_start: float  # capture time of the barge-in's first speech sample
    t_silent: float | None  # when the loudspeaker fell silent (flushed or ran dry)
    interrupted: Event | None  # the server's interrupted event, if it came
    played_ms: float  # reply audio played when the loudspeaker fell silent
    turn: Turn  # the reply to the barge-in utterance

    @property
    def stop_latency_ms(self) -> float | None:
        return None if self.t_silent is None else (self.t_silent - self.t_start) * 1000


@dataclass
class Turn:
    """One user turn and the reply to it, measured per LATENCY.md."""

    response_id: int | None  # the reply that answered (the last one of the turn)
    responses: list[int]  # every response the server started during the turn
    pipeline: str | None
    status: str | None  # response.done status of the answering reply
    user_text: str
    reply_text: str
    reply_audio: np.ndarray = field(repr=False)
    reply_rate: int
    events: list[Event] = field(repr=False)
    timings: dict[str, float | None]
    t_user_speech_end: float  # t0 + end_sample / rate
    speech_end_ms: float  # ground-truth speech end on the session's input timeline
    server_speech_end_ms: float | None  # what the server's speech.stopped said
    t_first_audio: float | None  # receive time of any reply audio
    t_first_reply_audio: float | None  # receive time of the first audible stretch (LATENCY.md)
    send: SendReport = field(repr=False)
    playout: Playout | None = field(repr=False)
    barge_in: BargeIn | None = None
    lead_samples: int = 0  # silence sent before the utterance (the audio starts there in ``send``)
    t_first_reply_audio_strict: float | None = None  # the same, every 10 ms window loud (the rule before 2026-11-29)

    @property
    def latency_ms(self) -> float | None:
        """Turn latency: t_first_reply_audio - t_user_speech_end (None: no audible reply)."""
        if self.t_first_reply_audio is None:
            return None
        return (self.t_first_reply_audio - self.t_user_speech_end) * 1000

    @property
    def first_audio_ms(self) -> float | None:
        """Like :attr:`latency_ms`, but to the first reply audio of any level."""
        if self.t_first_audio is None:
            return None
        return (self.t_first_audio - self.t_user_speech_end) * 1000

    @property
    def takeover(self) -> bool:
        """The reply was heard before the user finished: the assistant cut them off."""
        return self.latency_ms is not None and self.latency_ms < 0

    @property
    def failed(self) -> bool:
        """No audible reply, a takeover, or a failed response (LATENCY.md)."""
        return self.latency_ms is None or self.takeover or self.status == "failed"

    @property
    def percentile_ms(self) -> float | None:
        """The value this turn enters percentiles with: 4000 when no reply, None for a takeover."""
        if self.takeover:
            return None
        return REPLY_TIMEOUT_S * 1000 if self.latency_ms is None else self.latency_ms

    @property
    def underruns(self) -> list[tuple[float, float]]:
        return [] if self.playout is None else list(self.playout.underruns)


def to_pcm16(frame: Frame) -> bytes:
    """PCM16LE bytes from float samples in [-1, 1), int16 samples or bytes."""
    if isinstance(frame, bytes | bytearray | memoryview):
        data = bytes(frame)
        if len(data) % 2:
            raise ValueError("PCM16 bytes must have an even length")
        return data
    a = np.asarray(frame)
    if a.dtype == np.int16:
        return a.astype("<i2", copy=False).tobytes()
    return float32_to_pcm16(a.astype(np.float32, copy=False))


def as_float32(audio: np.ndarray) -> np.ndarray:
    """Float32 mono from float or int16 samples."""
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"expected mono samples, got shape {a.shape}")
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    return a.astype(np.float32, copy=False)


def split_frames(audio: np.ndarray, rate: int, frame_ms: int = FRAME_MS) -> list[np.ndarray]:
    """Cut ``audio`` into ``frame_ms`` frames (the last one may be shorter)."""
    n = max(1, rate * frame_ms // 1000)
    return [audio[i : i + n] for i in range(0, len(audio), n)]


async def _aiter(source: Iterable[Frame] | AsyncIterable[Frame]) -> AsyncIterator[Frame]:
    if isinstance(source, AsyncIterable):
        async for f in source:
            yield f
    else:
        for f in source:
            yield f


class RejoinderClient:
    """One conversation with a Rejoinder server. Use as ``async with connect(...) as client``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        session: dict[str, Any] | None = None,
        jitter_s: float = JITTER_S,
        position_interval_s: float = POSITION_INTERVAL_S,
        open_timeout: float = 10.0,
        request_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.token = token
        self.requested_session = dict(session or {})
        self.jitter_s = jitter_s
        self.position_interval_s = position_interval_s
        self.open_timeout = open_timeout
        self.request_timeout_s = request_timeout_s
        self.log: list[Event] = []  # every server event, in arrival order
        self.replies: dict[int, ReplyStream] = {}
        self.session: dict[str, Any] = {}
        self.session_id: str | None = None
        self.pipelines: list[str] = []
        self.loudspeaker = Loudspeaker(24000, jitter_s=jitter_s)
        self.current_response_id: int | None = None
        self.dropped_audio_messages = 0  # audio of a response that is not current
        self.positions_sent: list[tuple[float, int, float]] = []  # (t, response_id, played_ms)
        self.sent_ms = 0.0  # the session's input timeline, as sent
        self.sent_samples = 0  # samples sent, at the rates they were sent at
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._cond = asyncio.Condition()
        self._send_lock = asyncio.Lock()
        self._closed: BaseException | None = None
        self._ids = itertools.count(1)
        self._position_final: set[int] = set()

    # ---- connection ----------------------------------------------------------
    async def __aenter__(self) -> RejoinderClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect, wait for ``session.created`` and apply the requested session settings."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self._ws = await ws_connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.open_timeout,
                compression=None,
                max_size=None,
                proxy=None,
            )
        except InvalidStatus as e:
            status = e.response.status_code
            body = e.response.body.decode(errors="replace").strip() if e.response.body else ""
            why = {503: "server full or not ready", 401: "bad or missing token", 403: "origin not allowed"}
            raise ConnectError(f"{self.url}: HTTP {status} ({why.get(status, 'refused')}): {body}", status) from e
        except (OSError, TimeoutError) as e:
            raise ConnectError(f"cannot connect to {self.url}: {e}") from e
        self._tasks = [
            asyncio.create_task(self._reader(), name="rejoinder-reader"),
            asyncio.create_task(self._report_positions(), name="rejoinder-playback-position"),
        ]
        try:
            async with asyncio.timeout(self.open_timeout):
                created = await self.wait_for("session.created", since=0)
            self.session_id = created["session_id"]
            if self.requested_session:
                await self.update_session(self.requested_session)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self._ws is not None:
            await self._ws.close()

    @property
    def input_rate(self) -> int:
        return int(self.session.get("input_sample_rate", 16000))

    @property
    def output_rate(self) -> int:
        return int(self.session.get("output_sample_rate", 24000))

    # ---- sending events -------------------------------------------------------
    async def send_event(self, type: str, **fields: Any) -> str:
        """Send a client event; returns the ``event_id`` it was given."""
        eid = fields.pop("event_id", None) or f"c{next(self._ids)}"
        await self._send(json.dumps({"type": type, "event_id": eid, **fields}))
        return eid

    async def request(self, type: str, answer: str, **fields: Any) -> Event:
        """Send an event and wait for ``answer`` or an ``error`` with its event_id (raises ServerError).

        Gives up with TimeoutError after ``request_timeout_s``.
        """
        since = len(self.log)
        eid = await self.send_event(type, **fields)
        async with asyncio.timeout(self.request_timeout_s):
            ev = await self.wait_for(
                lambda e: e.type == answer or (e.type == "error" and e.get("event_id") == eid),
                since=since,
            )
        if ev.type == "error":
            raise ServerError(ev)
        return ev

    async def update_session(self, settings: dict[str, Any]) -> dict[str, Any]:
        """``session.update``; returns the settings now in force. Raises ServerError if refused."""
        ev = await self.request("session.update", "session.updated", session=settings)
        return dict(ev["session"])

    async def cancel(self) -> str:
        """``response.cancel``: the server answers ``interrupted`` and ``response.done`` (cancelled)."""
        return await self.send_event("response.cancel")

    async def respond(self) -> str:
        """``response.create``: answer the latest turn that ended without a reply (with
        ``turn_detection`` ``create_response: false``); ``no_response`` if there is none."""
        return await self.send_event("response.create")

    async def commit(self) -> str:
        return await self.send_event("input.commit")

    async def clear(self) -> str:
        return await self.send_event("input.clear")

    async def send_text(self, text: str) -> str:
        return await self.send_event("input.text", text=text)

    async def ping(self) -> float:
        """Round trip of a ``ping`` event, in ms."""
        t = time.perf_counter()
        await self.request("ping", "pong")
        return (time.perf_counter() - t) * 1000

    async def _send(self, message: str | bytes) -> None:
        if self._ws is None:
            raise RuntimeError("not connected: use `async with connect(...)` or `await open()`")
        await self._ws.send(message)

    # ---- receiving ------------------------------------------------------------
    async def wait_for(
        self,
        what: str | Callable[[Event], bool],
        *,
        since: int | None = None,
    ) -> Event:
        """The first event from log index ``since`` (default: from now on) matching ``what``.

        ``what`` is an event type or a predicate. Raises ConnectionError when
        the connection ends first; bound the wait with ``asyncio.timeout``.
        """
        match = (lambda e: e.type == what) if isinstance(what, str) else what
        i = len(self.log) if since is None else since
        async with self._cond:
            while True:
                while i < len(self.log):
                    if match(self.log[i]):
                        return self.log[i]
                    i += 1
                if self._closed is not None:
                    raise ConnectionError(f"connection closed: {self._closed}")
                await self._cond.wait()

    async def events(self, since: int | None = None) -> AsyncIterator[Event]:
        """Iterate over server events from log index ``since`` (default: from now on)."""
        i = len(self.log) if since is None else since
        while True:
            try:
                yield await self.wait_for(lambda e: True, since=i)
            except ConnectionError:
                return
            i += 1

    async def _reader(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                now = time.perf_counter()
                if isinstance(msg, bytes):
                    self._on_audio(msg, now)
                    continue
                data = json.loads(msg)
                ev = Event(str(data.get("type")), data, now)
                self._on_event(ev)
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

    def _on_audio(self, msg: bytes, now: float) -> None:
        rid, offset, pcm = unpack_audio(msg)
        if rid != self.current_response_id or rid not in self.replies:
            self.dropped_audio_messages += 1  # audio in flight of an interrupted reply
            return
        x = pcm16_to_float32(pcm)
        self.replies[rid].add(offset, x, now)
        self.loudspeaker.push(rid, len(x), now)

    def _on_event(self, ev: Event) -> None:
        match ev.type:
            case "session.created" | "session.updated":
                self.session = dict(ev["session"])
                if ev.type == "session.created":
                    self.pipelines = list(ev["pipelines"])
                if self.loudspeaker.rate != self.output_rate and self.loudspeaker.current is None:
                    self.loudspeaker = Loudspeaker(self.output_rate, jitter_s=self.jitter_s)
            case "response.started":
                rid = int(ev["response_id"])
                self.current_response_id = rid
                rate = int(ev["sample_rate"])
                self.replies[rid] = ReplyStream(rid, rate)
                if self.loudspeaker.rate != rate:
                    self.loudspeaker = Loudspeaker(rate, jitter_s=self.jitter_s)
            case "interrupted":
                rid = int(ev["response_id"])
                if rid == self.current_response_id:
                    self.current_response_id = None
                self.loudspeaker.flush(ev.t, rid)
            case "response.done":
                rid = int(ev["response_id"])
                if rid == self.current_response_id:
                    self.current_response_id = None
                self.loudspeaker.finish(rid, ev.t)

    async def _report_positions(self) -> None:
        """Every ~100 ms while a reply plays, tell the server how much of it was heard."""
        while True:
            await asyncio.sleep(self.position_interval_s)
            now = time.perf_counter()
            spk = self.loudspeaker
            spk.advance(now)
            p = spk.current
            if p is None or now < p.start_at or p.response_id in self._position_final:
                continue
            if p.end_reason == "flushed":  # the server already knows where it stopped
                self._position_final.add(p.response_id)
                continue
            if p.ended:
                self._position_final.add(p.response_id)
            played_ms = round(p.played * 1000 / spk.rate, 1)
            try:
                await self.send_event("playback.position", response_id=p.response_id, played_ms=played_ms)
            except ConnectionClosed:
                return
            self.positions_sent.append((now, p.response_id, played_ms))

    # ---- sending audio --------------------------------------------------------
    def _input_audio(self, audio: np.ndarray, rate: int | None) -> np.ndarray:
        x = as_float32(audio)
        if rate is not None and rate != self.input_rate:
            x = resample(x, rate, self.input_rate).astype(np.float32)
        return x

    async def stream(self, source: FrameSource, *, rate: int | None = None, realtime: bool = True) -> SendReport:
        """Send input audio at real-time pace; returns how the sends went.

        ``source``: a float32 or int16 array or PCM16 bytes (at ``rate``,
        resampled to the session's input rate if different), or any iterator or async iterator
        of frames (arrays or PCM16 bytes, already at the session's input rate).
        Arrays are cut into 20 ms frames. A frame leaves when its last sample
        would have been captured; ``realtime=False`` sends as fast as possible.
        """
        in_rate = self.input_rate
        if isinstance(source, bytes | bytearray | memoryview):
            source = np.frombuffer(to_pcm16(source), "<i2")
        if isinstance(source, np.ndarray):
            source = split_frames(self._input_audio(source, rate), in_rate)
        report = SendReport(rate=in_rate)
        await self._send_paced(_aiter(source), report, realtime=realtime)
        return report

    async def _send_paced(self, frames: AsyncIterator[Frame], report: SendReport, *, realtime: bool) -> None:
        async with self._send_lock:
            report.t0 = time.perf_counter()
            report.start_ms = self.sent_ms
            async for frame in frames:
                data = to_pcm16(frame)
                n = len(data) // 2
                due = report.t0 + (report.samples + n) / report.rate
                if realtime and (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                await self._send(data)
                report.lateness_s.append(time.perf_counter() - due)
                report.samples += n
                self.sent_samples += n
                self.sent_ms += n * 1000.0 / report.rate

    # ---- turns ----------------------------------------------------------------
    def _responses(self, start: int, stop: int | None = None) -> list[int]:
        return [int(e["response_id"]) for e in self.log[start:stop] if e.type == "response.started"]

    def _done(self, rid: int) -> Event | None:
        return next((e for e in self.log if e.type == "response.done" and e["response_id"] == rid), None)

    def _reply_over(self, rid: int) -> bool:
        """The server finished ``rid`` and the loudspeaker has stopped playing it."""
        if self._done(rid) is None:
            return False
        p = self.loudspeaker.playout(rid)
        return p is None or p.ended

    def _user_speaking(self, start: int) -> bool:
        """The server's last word since ``start`` was speech.started (a turn in progress)."""
        marks = [e.type for e in self.log[start:] if e.type in ("speech.started", "speech.stopped")]
        return bool(marks) and marks[-1] == "speech.started"

    def _turn_over(self, start: int, t_end: float, now: float, reply_timeout_s: float, max_reply_s: float) -> bool:
        if now - t_end >= max_reply_s:
            return True
        if self._user_speaking(start):
            return False
        rids = self._responses(start)
        if rids and self._reply_over(rids[-1]):
            return True
        return not rids and now - t_end >= reply_timeout_s

    async def turn(
        self,
        audio: np.ndarray,
        rate: int | None = None,
        *,
        lead_silence_s: float = LEAD_SILENCE_S,
        reply_timeout_s: float = REPLY_TIMEOUT_S,
        max_reply_s: float = 30.0,
        barge_in: np.ndarray | None = None,
        barge_in_after_ms: float = 300.0,
        align_to: int = 0,
        align_phase: int = 0,
    ) -> Turn:
        """Say ``audio`` like a live microphone and measure the reply.

        Sends at least ``lead_silence_s`` of silence, the utterance, then
        silence until the reply has been played to the end, or until
        ``reply_timeout_s`` passes with no reply (``max_reply_s`` at most).
        With ``align_to`` (samples at the input rate), the lead grows until ``audio``
        starts ``align_phase`` samples past a multiple of it on the session's input
        timeline, so the server frames the same audio the same way whatever was sent
        before it.
        With ``barge_in``, that second utterance starts once
        ``barge_in_after_ms`` of the reply has played; the result's
        ``barge_in`` then holds the stop latency and the reply to it.
        """
        in_rate = self.input_rate
        x = self._input_audio(audio, rate)
        start, end = speech_bounds(x, in_rate)
        lead = max(0, round(lead_silence_s * in_rate) - start)
        if align_to > 0:
            lead += (align_phase - self.sent_samples - lead) % align_to
        x = np.concatenate([np.zeros(lead, np.float32), x])
        end += lead
        b = None if barge_in is None else self._input_audio(barge_in, rate)
        b_bounds = None if b is None else speech_bounds(b, in_rate)
        since = len(self.log)
        report = SendReport(rate=in_rate)
        marks: dict[str, Any] = {}
        fs = max(1, in_rate * FRAME_MS // 1000)
        silence = np.zeros(fs, np.float32)

        async def frames() -> AsyncIterator[Frame]:
            for f in split_frames(x, in_rate):
                yield f
            pos = len(x)
            t_end = report.time_of(end)
            while True:
                now = time.perf_counter()
                self.loudspeaker.advance(now)
                if b is not None and b_bounds is not None and "barge_index" not in marks:
                    rids = self._responses(since)
                    p = self.loudspeaker.playout(rids[-1]) if rids else None
                    if p is not None and not p.ended and self.loudspeaker.played_ms(p.response_id) >= barge_in_after_ms:
                        marks.update(barge_index=len(self.log), barge_rid=p.response_id, barge_pos=pos)
                        for f in split_frames(b, in_rate):
                            yield f
                        pos += len(b)
                        t_end = report.time_of(marks["barge_pos"] + b_bounds[1])
                        continue
                    if (rids and self._reply_over(rids[-1])) or now - t_end >= max_reply_s:
                        return  # the reply ended before the barge-in was due
                    if not rids and now - t_end >= reply_timeout_s:
                        return  # no reply to barge in on
                elif self._turn_over(marks.get("barge_index", since), t_end, now, reply_timeout_s, max_reply_s):
                    return
                yield silence
                pos += fs

        await self._send_paced(frames(), report, realtime=True)
        if "barge_index" not in marks:
            only = self._collect(since, None, report, end)
            only.lead_samples = lead
            return only
        assert b_bounds is not None
        first = self._collect(since, marks["barge_index"], report, end)
        first.lead_samples = lead
        second = self._collect(marks["barge_index"], None, report, marks["barge_pos"] + b_bounds[1])
        rid = marks["barge_rid"]
        p = self.loudspeaker.playout(rid)
        interrupted = next(
            (e for e in self.log[since:] if e.type == "interrupted" and e["response_id"] == rid), None
        )
        first.barge_in = BargeIn(
            t_start=report.time_of(marks["barge_pos"] + b_bounds[0]),
            t_silent=None if p is None else p.silent_at,
            interrupted=interrupted,
            played_ms=self.loudspeaker.played_ms(rid),
            turn=second,
        )
        return first

    def _collect(self, start: int, stop: int | None, report: SendReport, end_sample: int) -> Turn:
        """Build the :class:`Turn` whose responses started in ``log[start:stop]``."""
        t_end = report.time_of(end_sample)
        rids = self._responses(start, stop)
        evs = list(self.log[start:stop])
        heard = [self.replies[r] for r in rids if r in self.replies]
        onsets = [o for o in (r.onset() for r in heard) if o is not None]
        strict = [o for o in (r.onset(min_loud=1.0) for r in heard) if o is not None]
        firsts = [t for t in (r.first_audio_at for r in heard) if t is not None]
        rid = rids[-1] if rids else None
        reply = self.replies.get(rid) if rid is not None else None
        done = self._done(rid) if rid is not None else None
        started = next((e for e in evs if e.type == "response.started" and e["response_id"] == rid), None)
        stopped = [e for e in evs if e.type == "speech.stopped" and (started is None or e.t <= started.t)]
        deltas = [e for e in self.log[start:] if e.type == "transcript.delta"]
        user = "".join(e["delta"] for e in deltas if e["role"] == "user" and e.get("response_id", rid) in rids)
        if done is not None and done.get("text") is not None:
            reply_text = str(done["text"])
        else:
            reply_text = "".join(e["delta"] for e in deltas if e["role"] == "assistant" and e.get("response_id") == rid)
        return Turn(
            response_id=rid,
            responses=rids,
            pipeline=None if started is None else started["pipeline"],
            status=None if done is None else done["status"],
            user_text=user.strip(),
            reply_text=reply_text.strip(),
            reply_audio=np.zeros(0, np.float32) if reply is None else reply.audio(),
            reply_rate=self.output_rate if reply is None else reply.sample_rate,
            events=evs,
            timings={} if done is None else dict(done["timings"]),
            t_user_speech_end=t_end,
            speech_end_ms=report.input_ms(end_sample),
            server_speech_end_ms=float(stopped[-1]["audio_ms"]) if stopped else None,
            t_first_audio=min(firsts) if firsts else None,
            t_first_reply_audio=min(o.received_at for o in onsets) if onsets else None,
            t_first_reply_audio_strict=min(o.received_at for o in strict) if strict else None,
            send=report,
            playout=None if rid is None else self.loudspeaker.playout(rid),
        )

    async def wait_played(self, ms: float) -> int:
        """Wait until the current reply has played ``ms``; returns its response_id (barge-in helper).

        Bound it with ``asyncio.timeout``.
        """
        while True:
            now = time.perf_counter()
            self.loudspeaker.advance(now)
            p = self.loudspeaker.current
            if p is not None and not p.ended and p.played * 1000 / self.loudspeaker.rate >= ms:
                return p.response_id
            await asyncio.sleep(0.01)


def connect(
    url: str = DEFAULT_URL,
    *,
    token: str | None = None,
    session: dict[str, Any] | None = None,
    **options: Any,
) -> RejoinderClient:
    """A client for ``url``, opened by ``async with``. ``session``: settings for ``session.update``."""
    return RejoinderClient(url, token=token, session=session, **options)
