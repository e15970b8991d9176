"""One conversation: input audio -> VAD/endpoint -> pipeline -> paced output.

A :class:`Session` receives internal events (``server.events``) from a
protocol adapter and emits internal events back through ``emit``. It knows no
sockets and no JSON. It runs on the event loop; every model call goes through
the :class:`~server.worker.InferenceWorker`.

Rules it enforces (docs/protocol.md): one response at a time; user speech
during a reply interrupts it (barge-in); the reply context is truncated to
what the client reports as played; bad input gets an ``error`` event and the
session carries on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from server import events as ev
from server.config import ServerConfig, clamp_session_limits
from server.events import ErrorCode
from server.logs import log
from server.metrics import Metrics
from server.pipelines.base import (
    Pipeline,
    PipelineSession,
    ReplyAudio,
    ReplyText,
    StageTiming,
    Turn,
)
from server.worker import InferenceWorker
from streaming import turn as tt
from streaming.audio import StreamResampler, check_rate, pcm16_to_float32
from streaming.level import QuietGate, first_audible, refine_speech_end
from streaming.pacer import Pacer
from streaming.ring import RingBuffer
from streaming.vad import SAMPLE_RATE, WINDOW, VadStream

FRAME_S = WINDOW / SAMPLE_RATE  # one VAD frame: 32 ms
VAD_SLICE = 4  # VAD windows per worker job (128 ms of audio)


@dataclass
class Settings:
    """What a session may change with ``session.update``."""

    input_sample_rate: int
    output_sample_rate: int
    pipeline: str
    turn: dict[str, Any]
    limits: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "input_sample_rate": self.input_sample_rate,
            "output_sample_rate": self.output_sample_rate,
            "pipeline": self.pipeline,
            "turn_detection": dict(self.turn),
            "limits": dict(self.limits),
        }


def default_settings(cfg: ServerConfig, pipeline: Pipeline) -> Settings:
    return Settings(
        input_sample_rate=cfg.input_sample_rate,
        output_sample_rate=cfg.output_sample_rate,
        pipeline=pipeline.name,
        turn={
            "mode": pipeline.default_turn_mode,
            "threshold": cfg.vad_threshold,
            "start_ms": cfg.vad_start_ms,
            "stop_ms": cfg.vad_stop_ms,
            "min_silence_ms": cfg.min_silence_ms,
            "eot_threshold": 0.5,
            "level_gate": 0.0,
            "level_gate_depth_db": 30.0,
            "late_eot_threshold": 0.0,
            "late_silence_ms": 768.0,
            "low_snr_min_silence_ms": 0.0,
            "low_snr_headroom_db": 2.0,
            "low_snr_pause_prob": 0.0,
            "prefix_padding_ms": cfg.prefix_padding_ms,
            "barge_in_ms": cfg.barge_in_ms,
            "barge_in_loud_ms": cfg.barge_in_loud_ms,
            "interrupt_response": True,
            "create_response": True,
            **pipeline.turn_defaults,
        },
        limits=clamp_session_limits(cfg, {}),
    )


@dataclass
class _Response:
    rid: int
    pipeline: str
    task: asyncio.Task[None] | None = None
    pacer: Pacer | None = None
    sent: int = 0  # samples sent at the output rate
    played_ms: float = 0.0
    text: list[str] = field(default_factory=list)
    timings: dict[str, float | None] = field(default_factory=dict)
    final_status: str = "completed"
    barge_in_ms: float | None = None


@dataclass(frozen=True)
class _Held:
    """A user turn that ended without a reply (``create_response`` false)."""

    turn: Turn
    input_ms: float


class TokenBucket:
    """Audio rate limit in seconds of audio: ``rate`` s per wall second, ``burst`` s at once."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.t = clock()

    def take(self, seconds: float) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if seconds > self.tokens:
            return False
        self.tokens -= seconds
        return True


class Session:
    """One client's conversation. Create, ``await start()``, feed ``handle()``, ``await close()``."""

    _ids = itertools.count(1)

    def __init__(
        self,
        *,
        session_id: str,
        cfg: ServerConfig,
        pipelines: dict[str, Pipeline],
        default_pipeline: str,
        worker: InferenceWorker,
        emit: Callable[[ev.OutEvent], None],
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = session_id
        self.cfg = cfg
        self.pipelines = pipelines
        self.worker = worker
        self._emit_raw = emit
        self.metrics = metrics
        self.clock = clock
        self.settings = default_settings(cfg, pipelines[default_pipeline])
        self.bucket = TokenBucket(cfg.audio_rate_factor, cfg.audio_burst_s, clock)
        self._rids = itertools.count(1)
        self.response: _Response | None = None
        self.samples_in = 0  # 16 kHz samples accepted on the input timeline
        self.accepted_samples = 0  # samples accepted as sent, at the client's input rate
        self._pipe: PipelineSession | None = None
        self._configure_audio()
        self._open_pipeline()

    # ---- setup ---------------------------------------------------------
    def _configure_audio(self) -> None:
        s = self.settings
        self._in_rs = StreamResampler(s.input_sample_rate, SAMPLE_RATE)
        cap = int((s.limits["max_turn_ms"] / 1000 + s.turn["prefix_padding_ms"] / 1000 + 2) * SAMPLE_RATE)
        self._capture = RingBuffer(cap, overflow="drop_oldest")
        self._capture_base = self.samples_in  # absolute position of capture's first sample ever
        self._capture_skipped = 0
        assert self.worker.vad_model is not None, "sessions need the VAD model"
        self._vad = VadStream(self.worker.vad_model)
        self._vad_frames = 0  # VAD frames processed on the input timeline
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=4096)
        self._configure_turn()
        self._turn_start: int | None = None  # absolute 16k sample of speech start
        self._started_sent: int | None = None  # speech start already announced (barge-in)
        self._turn_from = self.samples_in  # where the next manual (commit) turn starts

    def _configure_turn(self) -> None:
        self._ep_base = self._vad_frames  # the endpointer counts frames from its creation
        self._echo_tail_end: int | None = None  # VAD frame where the last reply's echo tail ends
        t = self.settings.turn
        self._endpointer = tt.Endpointer(
            tt.EndpointConfig(
                threshold=float(t["threshold"]),
                start_s=float(t["start_ms"]) / 1000,
                stop_s=float(t["stop_ms"]) / 1000,
                min_silence_s=float(t["min_silence_ms"]) / 1000,
                eot_threshold=float(t["eot_threshold"]),
                late_eot_threshold=float(t["late_eot_threshold"]) or None,
                late_silence_s=float(t["late_silence_ms"]) / 1000,
                low_snr_min_silence_s=float(t["low_snr_min_silence_ms"]) / 1000 or None,
                low_snr_neg_threshold=float(t["low_snr_pause_prob"]) or None,
                barge_in_s=float(t["barge_in_ms"]) / 1000,
                loud_barge_in_s=float(t["barge_in_loud_ms"]) / 1000 or None,
                max_turn_s=float(self.settings.limits["max_turn_ms"]) / 1000,
                prefix_padding_s=float(t["prefix_padding_ms"]) / 1000,
            ),
            frame_s=FRAME_S,
        )
        # level_gate 0 never gates; the gate still tracks the user's speech level for
        # loud barge-ins
        self._gate = QuietGate(float(t["level_gate"]), depth_db=float(t["level_gate_depth_db"]))
        # the low-SNR confirm reads the gate's headroom each window; None: off, not read
        self._low_snr_headroom_db = float(t["low_snr_headroom_db"]) if float(t["low_snr_min_silence_ms"]) else None

    def _open_pipeline(self) -> None:
        self._held: _Held | None = None  # the latest turn that ended without a reply
        if self._pipe is not None:
            self._pipe.close()
        self._pipe = self.pipelines[self.settings.pipeline].open_session(self.worker)

    # ---- helpers ---------------------------------------------------------
    def emit(self, event: ev.OutEvent) -> None:
        if isinstance(event, ev.Error):
            self.metrics.errors.labels(event.code).inc()
            log(logging.INFO, "error event", session=self.id, code=event.code, detail=event.message)
        elif isinstance(event, ev.AudioOut):
            self.metrics.frames_out.inc()
        self._emit_raw(event)

    def error(self, code: str, message: str, event_id: str | None = None) -> None:
        self.emit(ev.Error(code, message, event_id))

    @property
    def input_ms(self) -> float:
        return self.samples_in * 1000 / SAMPLE_RATE

    def _arrival_of(self, sample: int) -> float | None:
        """Wall-clock arrival time of the input chunk holding absolute 16k ``sample``."""
        for end, t in self._arrivals:
            if end > sample:
                return t
        return self._arrivals[-1][1] if self._arrivals else None

    # ---- public ----------------------------------------------------------
    async def start(self) -> None:
        self.emit(ev.SessionCreated(self.id, self.settings.to_json(), sorted(self.pipelines)))

    async def handle(self, event: ev.InEvent | ev.Error) -> None:
        """Process one inbound event. Never raises for bad input: it emits ``error``."""
        match event:
            case ev.Error():
                self.emit(event)
            case ev.AudioIn():
                await self._on_audio(event.pcm)
            case ev.ConfigChange():
                await self._on_config(event)
            case ev.Commit():
                await self._on_commit()
            case ev.ClearInput():
                self._on_clear()
            case ev.TextIn():
                self._on_text(event)
            case ev.Cancel():
                await self._on_cancel(event)
            case ev.Respond():
                self._on_respond(event)
            case ev.PlaybackPosition():
                r = self.response
                if r is not None and r.rid == event.response_id:
                    r.played_ms = max(r.played_ms, event.played_ms)
            case ev.Ping():
                self.emit(ev.Pong(event.event_id, self.accepted_samples))

    async def close(self) -> None:
        await self._stop_response("cancelled", notify=False)
        if self._pipe is not None:
            self._pipe.close()

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109
        """Let a response in flight finish (SIGTERM), up to ``timeout`` seconds."""
        r = self.response
        if r is not None and r.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(r.task), timeout)
            except (TimeoutError, asyncio.CancelledError):
                pass

    # ---- config ----------------------------------------------------------
    async def _on_config(self, event: ev.ConfigChange) -> None:
        req = event.session
        s = self.settings
        new_pipeline = req.get("pipeline", s.pipeline)
        if new_pipeline not in self.pipelines:
            self.error(
                ErrorCode.UNKNOWN_PIPELINE,
                f"pipeline {new_pipeline!r} is not available here (have: {', '.join(sorted(self.pipelines))})",
                event.event_id,
            )
            return
        turn = dict(s.turn)
        if new_pipeline != s.pipeline:  # a new pipeline starts from its own best defaults
            turn = default_settings(self.cfg, self.pipelines[new_pipeline]).turn
        turn.update(req.get("turn_detection", {}))
        if turn["mode"] == "semantic" and self.pipelines[new_pipeline].default_turn_mode != "semantic":
            self.error(ErrorCode.INVALID_CONFIG, f"pipeline {new_pipeline} has no learned end of turn", event.event_id)
            return
        try:
            check_rate(int(req.get("input_sample_rate", s.input_sample_rate)))
            check_rate(int(req.get("output_sample_rate", s.output_sample_rate)))
        except ValueError as e:
            self.error(ErrorCode.INVALID_CONFIG, str(e), event.event_id)
            return
        rates_changed = (
            req.get("input_sample_rate", s.input_sample_rate) != s.input_sample_rate
        )
        limits = clamp_session_limits(self.cfg, {**s.limits, **req.get("limits", {})})
        old_turn, old_limits = s.turn, s.limits
        s.turn, s.limits = turn, limits
        try:
            self._configure_turn()
        except ValueError as e:
            s.turn, s.limits = old_turn, old_limits
            self._configure_turn()
            self.error(ErrorCode.INVALID_CONFIG, f"turn_detection: {e}", event.event_id)
            return
        s.input_sample_rate = int(req.get("input_sample_rate", s.input_sample_rate))
        s.output_sample_rate = int(req.get("output_sample_rate", s.output_sample_rate))
        if rates_changed:
            self._in_rs = StreamResampler(s.input_sample_rate, SAMPLE_RATE)
        if new_pipeline != s.pipeline:
            await self._stop_response("cancelled")
            s.pipeline = new_pipeline
            self._open_pipeline()
        self.emit(ev.SessionUpdated(s.to_json()))

    # ---- input audio -----------------------------------------------------
    async def _on_audio(self, pcm: bytes) -> None:
        seconds = len(pcm) / 2 / self.settings.input_sample_rate
        if not self.bucket.take(seconds):
            self.error(
                ErrorCode.RATE_LIMITED,
                f"audio is arriving faster than {self.cfg.audio_rate_factor:g}x real time; message dropped",
            )
            return
        self.metrics.frames_in.inc()
        self.accepted_samples += len(pcm) // 2
        x16 = self._in_rs.process(pcm16_to_float32(pcm))
        if len(x16) == 0:
            return
        self.samples_in += len(x16)
        self.metrics.samples_in.inc(len(x16))
        self._arrivals.append((self.samples_in, self.clock()))
        self._capture.write(x16)
        assert self._pipe is not None
        await self._pipe.on_audio(x16)
        windows = []
        for i in range(0, len(x16), SAMPLE_RATE):  # VadStream holds at most 2 s
            self._vad.push(x16[i : i + SAMPLE_RATE])
            while (w := self._vad.take_window()) is not None:
                windows.append(w)
        semantic = self.settings.turn["mode"] == "semantic"
        # Slices keep the single worker fair: a client that sends a minute of
        # audio at once waits behind other sessions' frames, not ahead of them.
        for i in range(0, len(windows), VAD_SLICE):
            probs = await self.worker.vad(self._vad.state, np.stack(windows[i : i + VAD_SLICE]))
            for w, p in zip(windows[i : i + VAD_SLICE], probs, strict=True):
                # in a turn, a window back at the background is silence
                in_turn = self._endpointer.phase is tt.TurnPhase.USER_SPEAKING
                p = self._gate.gate(float(p), w, in_turn)
                responding = self._endpointer.phase is tt.TurnPhase.RESPONDING
                loud = responding and self._gate.near_speech(self.cfg.barge_in_loud_db)
                if self._echo_tail_end is not None and self._vad_frames >= self._echo_tail_end:
                    self._end_echo_tail()
                self._vad_frames += 1
                if semantic and (silence_ms := self._endpointer.pause_ms_if(float(p))) is not None:
                    await self._pipe.on_pause(silence_ms)
                eot = self._pipe.end_of_turn_probability() if semantic else None
                low_snr = False
                if self._low_snr_headroom_db is not None:
                    headroom = self._gate.headroom_db()
                    low_snr = headroom is not None and headroom < self._low_snr_headroom_db
                for tev in self._endpointer.step(float(p), eot_prob=eot, loud=loud, low_snr=low_snr):
                    await self._on_turn_event(tev)

    def _reset_endpointer(self) -> None:
        self._endpointer.reset()
        self._ep_base = self._vad_frames
        self._echo_tail_end = None

    def _end_echo_tail(self) -> None:
        """The finished reply's echo can no longer arrive: back to the listening rules."""
        self._echo_tail_end = None
        if self.response is None:
            self._endpointer.response_finished()  # no-op if speech already started a turn

    def _sample_of(self, ep_frame: int) -> int:
        """Absolute 16 kHz input position of an endpointer frame boundary."""
        return (self._ep_base + ep_frame) * WINDOW

    async def _on_turn_event(self, tev: tt.TurnEvent) -> None:
        mode = self.settings.turn["mode"]
        match tev:
            case tt.SpeechStarted():
                self._turn_start = self._sample_of(tev.frame)
                if self._started_sent != self._turn_start:
                    self.emit(ev.SpeechStarted(self._turn_start * 1000 / SAMPLE_RATE))
                self._started_sent = None
                pad = int(self.settings.turn["prefix_padding_ms"] * SAMPLE_RATE / 1000)
                assert self._pipe is not None
                await self._pipe.on_speech_start(self._slice_capture(self._turn_start - pad, self.samples_in))
            case tt.BargeIn():
                r = self.response
                if r is not None and self.settings.turn["interrupt_response"]:
                    # The Endpointer's SpeechStarted for this speech comes next; clients hear
                    # of the speech first, then of the reply it stops (OpenAI Realtime's order).
                    self._started_sent = self._sample_of(tev.frame)
                    r.barge_in_ms = self._started_sent * 1000 / SAMPLE_RATE
                    self.emit(ev.SpeechStarted(r.barge_in_ms))
                    await self._stop_response("interrupted")
            case tt.EndOfTurn():
                if mode == "manual" and tev.reason != "max_turn":
                    return
                end = self._refined_end(self._sample_of(tev.speech_end))
                await self._end_turn(end, "semantic" if tev.reason == "external" else tev.reason)

    async def _end_turn(self, end_sample: int, reason: str) -> None:
        decided = self.clock()
        start = self._turn_start if self._turn_start is not None else self._turn_from
        start = max(0, start - int(self.settings.turn["prefix_padding_ms"] * SAMPLE_RATE / 1000))
        audio = self._slice_capture(start, end_sample)
        self._turn_start = None
        self._turn_from = self.samples_in
        self.emit(ev.SpeechStopped(end_sample * 1000 / SAMPLE_RATE, reason))
        self._held = None  # a newer turn has ended: an older unanswered one is not answered
        if not self.settings.turn["create_response"]:
            assert self._pipe is not None
            kept = await self._pipe.hold_turn(audio)
            self._held = _Held(Turn(response_id=0, audio=audio, reason=reason, held=kept), end_sample * 1000 / SAMPLE_RATE)
            return
        arrival = self._arrival_of(max(0, end_sample - 1))
        endpoint_ms = None if arrival is None else (decided - arrival) * 1000
        if self.response is not None:
            if not self.settings.turn["interrupt_response"]:
                self.error(ErrorCode.RESPONSE_IN_PROGRESS, "a response is in progress; this turn was not answered")
                return
            await self._stop_response("interrupted")
        self._begin_response(
            Turn(response_id=0, audio=audio, reason=reason),
            input_ms=end_sample * 1000 / SAMPLE_RATE,
            t0=arrival if arrival is not None else decided,
            timings={"endpoint_ms": endpoint_ms},
        )

    def _refined_end(self, coarse: int) -> int:
        """Move the VAD's (late) speech end back to where the signal level drops."""
        lo = max(0, coarse - SAMPLE_RATE // 2)
        held = self._slice_capture(lo, self.samples_in)
        if len(held) == 0:
            return coarse
        first = self.samples_in - len(held)
        return first + refine_speech_end(held, coarse - first, SAMPLE_RATE)

    def _slice_capture(self, start: int, end: int) -> np.ndarray:
        """Input audio between absolute 16k positions ``start`` and ``end`` (what is still held)."""
        oldest = self.samples_in - len(self._capture)
        start = max(start, oldest)
        end = min(end, self.samples_in)
        if end <= start:
            return np.zeros(0, np.float32)
        return self._capture.peek(end - oldest)[start - oldest :].copy()

    async def _on_commit(self) -> None:
        end = self.samples_in
        self._reset_endpointer()
        await self._end_turn(end, "commit")

    def _on_clear(self) -> None:
        self._reset_endpointer()
        self._turn_start = None
        self._turn_from = self.samples_in
        if self._pipe is not None:
            self._pipe.reset_turn()

    def _on_text(self, event: ev.TextIn) -> None:
        if self.response is not None:
            self.error(ErrorCode.RESPONSE_IN_PROGRESS, "one response at a time: cancel it first", event.event_id)
            return
        now = self.clock()
        self._held = None  # a newer turn: an audio turn that ended unanswered is not answered
        self._begin_response(
            Turn(response_id=0, audio=np.zeros(0, np.float32), text=event.text, reason="text"),
            input_ms=None,
            t0=now,
            timings={"endpoint_ms": None},
        )

    def _on_respond(self, event: ev.Respond) -> None:
        if self.response is not None:
            self.error(ErrorCode.RESPONSE_IN_PROGRESS, "one response at a time: cancel it first", event.event_id)
            return
        held, self._held = self._held, None
        if held is None:
            self.error(
                ErrorCode.NO_RESPONSE,
                "no user turn waits for a reply (with turn_detection create_response false, the "
                "latest turn that ended is kept until it is answered or a newer one ends)",
                event.event_id,
            )
            return
        self._begin_response(held.turn, input_ms=held.input_ms, t0=self.clock(), timings={"endpoint_ms": None})

    async def _on_cancel(self, event: ev.Cancel) -> None:
        if self.response is None:
            self.error(ErrorCode.NO_RESPONSE, "no response in progress", event.event_id)
            return
        await self._stop_response("cancelled")

    # ---- responses -------------------------------------------------------
    def _begin_response(
        self, turn: Turn, *, input_ms: float | None, t0: float, timings: dict[str, float | None]
    ) -> None:
        rid = next(self._rids)
        r = _Response(rid=rid, pipeline=self.settings.pipeline, timings=dict(timings))
        self.response = r
        self._echo_tail_end = None  # the endpointer stays RESPONDING for this reply
        turn = replace(turn, response_id=rid)
        self.emit(ev.ResponseStarted(rid, r.pipeline, self.settings.output_sample_rate, input_ms))
        if self._endpointer.phase is tt.TurnPhase.LISTENING:
            self._endpointer.response_started()
        r.task = asyncio.create_task(self._run_response(r, turn, t0), name=f"response-{self.id}-{rid}")

    async def _run_response(self, r: _Response, turn: Turn, t0: float) -> None:
        assert self._pipe is not None
        out_rate = self.settings.output_sample_rate
        pacer = r.pacer = Pacer(out_rate, lead_s=self.cfg.output_lead_ms / 1000)
        wake = asyncio.Event()
        resamplers: dict[int, StreamResampler] = {}
        t_decided = self.clock()
        audible = False
        pump = asyncio.create_task(self._pump(r, pacer, wake, t0))
        try:
            async for item in self._pipe.respond(turn):
                if isinstance(item, ReplyText):
                    if item.role == "assistant":
                        r.text.append(item.delta)
                    self.emit(ev.TranscriptDelta(item.role, item.delta, r.rid))
                elif isinstance(item, ReplyAudio):
                    rs = resamplers.get(item.sample_rate)
                    if rs is None:
                        rs = resamplers[item.sample_rate] = StreamResampler(item.sample_rate, out_rate)
                    y = rs.process(item.pcm)
                    if not audible and len(y):  # never send the reply's silent padding first
                        start = first_audible(y, out_rate)
                        y = y[start:] if start is not None else y[:0]
                        audible = start is not None
                    if len(y):
                        if "pipeline_first_audio_ms" not in r.timings:
                            r.timings["pipeline_first_audio_ms"] = (self.clock() - t_decided) * 1000
                        pacer.push(y)
                        wake.set()
                elif isinstance(item, StageTiming):
                    r.timings[item.name] = item.ms
            for rs in resamplers.values():
                tail = rs.flush()
                if len(tail):
                    pacer.push(tail)
            pacer.finish()
            wake.set()
            await pump
        except asyncio.CancelledError:
            pump.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - a failing stage must not kill the session
            pump.cancel()
            log(logging.ERROR, "pipeline failed", session=self.id, response=r.rid, exc=repr(e))
            self.error(ErrorCode.PIPELINE_ERROR, f"{r.pipeline} pipeline failed: {type(e).__name__}: {e}")
            r.final_status = "failed"
            pacer.flush()
        self._finish(r)

    async def _pump(self, r: _Response, pacer: Pacer, wake: asyncio.Event, t0: float) -> None:
        """Send reply audio no further than the pacer's lead ahead of real time."""
        started = False
        while True:
            now = self.clock()
            if not started and pacer.queued_samples > 0:
                pacer.start(now)
                started = True
            for chunk in pacer.due(now) if started else []:
                if r.sent == 0:
                    latency = self.clock() - t0
                    r.timings["first_send_ms"] = latency * 1000
                    self.metrics.turn_latency.labels(r.pipeline).observe(latency)
                self.emit(ev.AudioOut(r.rid, r.sent, chunk))
                r.sent += len(chunk)
            if pacer.done:
                return
            nxt = pacer.next_due_time(now) if started else None
            wake.clear()
            timeout = None if nxt is None else max(0.0, nxt - now)
            try:
                await asyncio.wait_for(wake.wait(), timeout)
            except TimeoutError:
                pass

    def _finish(self, r: _Response) -> None:
        if self.response is not r:
            return
        self.response = None
        if r.final_status == "completed" and self.cfg.echo_tail_ms > 0:
            # The client still plays up to output_lead_ms of this reply (plus its
            # jitter buffer), and the echo of that comes later still. Keep the
            # stricter barge-in rule for echo_tail_ms more of input audio, so a faint
            # echo of the reply's end does not start a turn (see _end_echo_tail).
            self._echo_tail_end = self._vad_frames + math.ceil(self.cfg.echo_tail_ms / 1000 / FRAME_S)
        else:
            self._endpointer.response_finished()
        audio_ms = r.sent * 1000 / self.settings.output_sample_rate
        self.metrics.responses.labels(r.pipeline, r.final_status).inc()
        log(logging.INFO, "response done", session=self.id, response=r.rid, status=r.final_status,
            audio_ms=round(audio_ms), content="".join(r.text))
        self.emit(ev.ResponseDone(r.rid, r.final_status, audio_ms, r.timings, "".join(r.text)))

    async def _stop_response(self, status: str, *, notify: bool = True) -> None:
        """Interrupt or cancel the response in flight: flush, tell the client, truncate."""
        r = self.response
        if r is None:
            return
        if r.task is not None and not r.task.done():
            r.task.cancel()
            try:
                await r.task
            except asyncio.CancelledError:
                pass
        if self.response is not r:  # it finished on its own meanwhile
            return
        if r.pacer is not None:
            r.pacer.flush()
        r.final_status = status
        sent_ms = r.sent * 1000 / self.settings.output_sample_rate
        truncated = min(r.played_ms, sent_ms)
        if self._pipe is not None:
            self._pipe.truncate(truncated, barge_in=status == "interrupted")
        if notify:
            at = r.barge_in_ms if r.barge_in_ms is not None else self.input_ms
            self.emit(ev.Interrupted(r.rid, sent_ms, truncated, at))
            self._finish(r)
        else:
            self.response = None
