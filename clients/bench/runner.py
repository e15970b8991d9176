"""The benchmark client: its own process, N real-time sessions at once, one record per turn.

LATENCY.md wants the client in its own process, reporting its own CPU use,
because it shares the cores with the server. :class:`ClientProcess` starts
that process (multiprocessing, spawn) and sends it one :class:`RoundJob` at a
time; the process runs the round's sessions concurrently on one event loop
(staggered starts, each session a full conversation of several turns through
:class:`clients.client.RejoinderClient` or the Realtime adapter) and answers
with a :class:`~clients.bench.metrics.TurnRecord` per turn plus its CPU time::

    with ClientProcess(testset.path) as client:
        result = client.run(job, on_turn=lambda case_id: bar.update(1))

Latency uses the case's ground truth, not the audio actually sent: for noisy
cases the client's own speech detection would see the noise.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from clients.bench.metrics import FAIL_MS, TurnRecord
from clients.bench.testset import Case, TestSet, stable_int
from clients.client import RejoinderClient, Turn, connect
from models.domain import key_word_hit, text_success
from streaming.vad import SAMPLE_RATE as VAD_RATE
from streaming.vad import WINDOW as VAD_WINDOW

TURN_TIMEOUT_S = 90.0
SETTLE_LIMIT_S = 30.0


@dataclass
class RoundJob:
    """``sessions[k]``: the case ids session k says, in order; it starts ``k * stagger_s`` late."""

    round: int
    pipeline: str
    concurrency: int
    base_url: str  # ws://host:port
    sessions: list[list[str]]
    protocol: str = "native"
    stagger_s: float = 0.0
    warmup: bool = False
    token: str | None = None


@dataclass
class RoundResult:
    records: list[TurnRecord]
    client_cpu_s: float
    wall_s: float
    t_start: float  # on the client process clock (seconds since it started)
    t_end: float
    errors: list[str] = field(default_factory=list)


def endpoint_url(base_url: str, protocol: str, pipeline: str) -> str:
    """``ws://host:port`` -> the native or Realtime websocket URL for ``pipeline``."""
    base = base_url.rstrip("/")
    if protocol == "realtime":
        return f"{base}/v1/realtime?model=rejoinder-{pipeline}"
    return f"{base}/v1/native"


def make_client(job: RoundJob) -> RejoinderClient:
    url = endpoint_url(job.base_url, job.protocol, job.pipeline)
    if job.protocol == "realtime":
        from clients.bench.realtime import RealtimeClient

        return RealtimeClient(url, pipeline=job.pipeline, token=job.token)
    return connect(url, token=job.token, session={"pipeline": job.pipeline})


def ground_truth_times(case: Case, turn: Turn, in_rate: int) -> tuple[float, float]:
    """(t_speech_start, t_speech_end) of the case's clean ground truth, on the client clock.

    The utterance started ``turn.lead_samples`` into the turn's sends (at least 300 ms
    before its detected start, more when aligned to the server's grid).
    """
    t = turn.send.t0 + turn.lead_samples / in_rate
    return t + case.speech_start / case.rate, t + case.speech_end / case.rate


def record_of(case: Case, audio: np.ndarray, turn: Turn, job: RoundJob, session: int, in_rate: int, origin: float) -> TurnRecord:
    """The :class:`TurnRecord` of one finished turn (times relative to ``origin``)."""
    t_start, t_end = ground_truth_times(case, turn, in_rate)
    latency = None if turn.t_first_reply_audio is None else (turn.t_first_reply_audio - t_end) * 1000
    first = None if turn.t_first_audio is None else (turn.t_first_audio - t_end) * 1000
    strict = None if turn.t_first_reply_audio_strict is None else (turn.t_first_reply_audio_strict - t_end) * 1000
    p = turn.playout
    t_over = p.silent_at if p is not None and p.silent_at is not None else t_end + FAIL_MS / 1000
    rec = TurnRecord(
        pipeline=job.pipeline, case_id=case.id, kind=case.kind, concurrency=job.concurrency,
        protocol=job.protocol, round=job.round, session=session, voice=case.voice, skill=case.skill,
        warmup=job.warmup, question=case.question, expected=case.answer, key_word=case.key_word,
        user_text=turn.user_text, reply_text=turn.reply_text, status=turn.status,
        latency_ms=latency, first_audio_ms=first, latency_strict_ms=strict, timings=dict(turn.timings),
        speech_end_ms=turn.send.start_ms + (t_end - turn.send.t0) * 1000,
        server_speech_end_ms=turn.server_speech_end_ms,
        t_speech_start=t_start - origin, t_speech_end=t_end - origin, t_turn_end=t_over - origin,
        underruns=len(turn.underruns), underrun_ms=sum(d for _, d in turn.underruns) * 1000,
        underrun_at_ms=[] if p is None else [round((s - p.start_at) * 1000, 1) for s, _ in turn.underruns],
        send_late_mean_ms=turn.send.mean_late_ms, send_late_max_ms=turn.send.max_late_ms,
        success=text_success(turn.reply_text, case.answer), key_word_hit=key_word_hit(turn.reply_text, case.key_word),
    )  # fmt: skip
    bi = turn.barge_in
    if case.barge_kind is not None and bi is not None:
        rec.barge_kind = case.barge_kind
        rec.barge_interrupted = bi.interrupted is not None or turn.status == "interrupted"
        rec.barge_stop_latency_ms = bi.stop_latency_ms
        rec.barge_played_ms = bi.played_ms
        rec.barge_reply_latency_ms = bi.turn.latency_ms
        rec.barge_reply_text = bi.turn.reply_text
        if case.barge_kind == "speech" and case.barge_answer and case.barge_key_word:
            # The first reply was cut on purpose: judge the reply to the barge-in.
            rec.success = text_success(bi.turn.reply_text, case.barge_answer)
            rec.key_word_hit = key_word_hit(bi.turn.reply_text, case.barge_key_word)
    return rec


def _error_record(case: Case, job: RoundJob, session: int, error: str, t: float) -> TurnRecord:
    return TurnRecord(
        pipeline=job.pipeline, case_id=case.id, kind=case.kind, concurrency=job.concurrency,
        protocol=job.protocol, round=job.round, session=session, voice=case.voice, skill=case.skill,
        warmup=job.warmup, question=case.question, expected=case.answer, key_word=case.key_word,
        error=error, t_speech_start=t, t_speech_end=t, t_turn_end=t,
    )  # fmt: skip


def case_phase(case_id: str, grid: int) -> int:
    """A case's fixed offset on the server's frame grid, spread over the cases."""
    return stable_int(case_id, 0, grid - 1)


async def settle(client: RejoinderClient, limit_s: float = SETTLE_LIMIT_S) -> float | None:
    """Keep the microphone open (silence) until the loudspeaker is quiet; returns when it fell silent.

    A reply that a false barge-in did not stop may still be playing when
    :meth:`RejoinderClient.turn` returns; the next question must not barge in on it.
    """
    spk = client.loudspeaker
    deadline = time.perf_counter() + limit_s
    block = np.zeros(client.input_rate // 10, np.float32)
    while time.perf_counter() < deadline:
        spk.advance(time.perf_counter())
        p = spk.current
        if p is None or p.ended:
            return None if p is None else p.silent_at
        await client.stream(block, rate=client.input_rate)
    return None


async def run_session(
    job: RoundJob,
    k: int,
    ts: TestSet,
    origin: float,
    on_turn: Callable[[TurnRecord], None],
) -> list[TurnRecord]:
    """Session ``k`` of the round: wait its stagger, then say its cases one after another."""
    await asyncio.sleep(k * job.stagger_s)
    cases = {c.id: c for c in ts.cases}
    records: list[TurnRecord] = []
    client: RejoinderClient | None = None
    try:
        for cid in job.sessions[k]:
            case = cases[cid]
            try:
                if client is None:
                    client = make_client(job)
                    await client.open()
                audio = ts.audio(cid)
                barge = ts.barge_audio(cid)
                async with asyncio.timeout(TURN_TIMEOUT_S):
                    # Each case starts at its own fixed phase of the server's VAD window grid:
                    # the model then frames it the same way at every concurrency and in any
                    # case order (how long the last reply played no longer shifts it), and
                    # the phases stay spread over the cases as a live microphone's would
                    # (NOTES.md, "bench alignment").
                    grid = VAD_WINDOW * client.input_rate // VAD_RATE
                    turn = await client.turn(
                        audio, case.rate, barge_in=barge, barge_in_after_ms=case.barge_after_ms or 300.0,
                        align_to=grid, align_phase=case_phase(case.id, grid),
                    )
                rec = record_of(case, audio, turn, job, k, client.input_rate, origin)
                silent_at = await settle(client)
                if silent_at is not None and rec.t_turn_end > silent_at - origin:
                    rec.t_turn_end = silent_at - origin
            except Exception as e:  # noqa: BLE001 - a failed turn is a record, never a crash
                rec = _error_record(case, job, k, f"{type(e).__name__}: {e}", time.perf_counter() - origin)
                if client is not None:
                    await client.close()
                client = None  # reconnect for the next case
            records.append(rec)
            on_turn(rec)
    finally:
        if client is not None:
            await client.close()
    return records


async def run_round(job: RoundJob, ts: TestSet, origin: float, on_turn: Callable[[TurnRecord], None]) -> RoundResult:
    """All sessions of one round, concurrently; CPU time of this process over the round."""
    cpu0, w0 = time.process_time(), time.perf_counter()
    parts = await asyncio.gather(*(run_session(job, k, ts, origin, on_turn) for k in range(len(job.sessions))))
    cpu1, w1 = time.process_time(), time.perf_counter()
    records = [r for part in parts for r in part]
    return RoundResult(records, cpu1 - cpu0, w1 - w0, w0 - origin, w1 - origin)


def load_testset(path: Path) -> TestSet:
    data = json.loads((path / "cases.json").read_text())
    return TestSet([Case.from_dict(c) for c in data["cases"]], path, data["meta"]["key"], data["meta"])


def worker_main(conn: Connection, testset_path: str) -> None:
    """The client process: answer each RoundJob with ("turn", case_id)* then ("done", result)."""
    origin = time.perf_counter()
    ts = load_testset(Path(testset_path))
    if ts.cases:
        ts.audio(ts.cases[0].id)  # load the audio before the clock matters
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            result = asyncio.run(run_round(job, ts, origin, lambda r: conn.send(("turn", r.case_id))))
            conn.send(("done", result))
        except Exception:  # noqa: BLE001 - report, keep serving
            conn.send(("crash", traceback.format_exc()))


class ClientProcess:
    """The benchmark client in its own process (see the module docstring)."""

    def __init__(self, testset_path: Path) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, str(testset_path)), name="rejoinder-bench-client", daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def run(self, job: RoundJob, on_turn: Callable[[str], None] | None = None, timeout_s: float | None = None) -> RoundResult:
        """Run one round and wait for it; ``on_turn(case_id)`` as each turn ends."""
        self.conn.send(job)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.conn.poll(wait):
                raise TimeoutError(f"round {job.round} did not finish in {timeout_s} s")
            kind, payload = self.conn.recv()
            if kind == "turn":
                if on_turn is not None:
                    on_turn(payload)
            elif kind == "done":
                result: RoundResult = payload
                return result
            else:
                raise RuntimeError(f"client process failed:\n{payload}")

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()

    def __enter__(self) -> ClientProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_dict(r: TurnRecord) -> dict[str, Any]:
    """JSON form of a record, with the derived fields a reader wants."""
    d = asdict(r)
    d.update(takeover=r.takeover, failure=r.failure, percentile_ms=r.percentile_ms, stages=r.stages)
    return d
