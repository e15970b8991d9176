"""The arithmetic of ../shared/LATENCY.md on turn records: pure, clock-free, tested.

One :class:`TurnRecord` per measured turn (the runner fills it in, tests write
them by hand). :func:`summarize` turns a list of records (one pipeline at one
concurrency level) into the figures a report prints:

- turn latency p50/p90/p95/p99/max over every non-takeover turn, a failed
  turn entering as :data:`FAIL_MS` (p99 only with >= :data:`P99_MIN_TURNS` turns);
- failures counted apart, by reason; takeovers (reply audible before the
  user's speech ended) are failures and never enter the percentiles, and are
  reported apart on the pause cases;
- barge-in stop latency and the false barge-in rate;
- output underruns, task success, stage breakdown with a residual column,
  and the measured overlap between sessions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FAIL_MS = 4000.0  # LATENCY.md: no reply within 4 s counts as 4000 ms
P99_MIN_TURNS = 100
PERCENTILES = (50, 90, 95, 99)
# Timings that frame the pipeline's own stages (docs/protocol.md, response.done.timings).
STRUCTURAL = ("endpoint_ms", "pipeline_first_audio_ms", "first_send_ms")
# Known pipeline stages, in data-path order; unknown ones follow alphabetically.
STAGE_ORDER = (
    "asr_finalize_ms", "llm_first_token_ms", "tts_first_audio_ms",
    "first_audio_token_ms", "audio_token_step_ms", "codec_first_pcm_ms",
)  # fmt: skip


@dataclass
class TurnRecord:
    """One measured turn. Times ``t_*`` are seconds from the round's origin (client clock)."""

    pipeline: str
    case_id: str
    kind: str
    concurrency: int = 1
    protocol: str = "native"
    round: int = 0
    session: int = 0
    voice: str = ""
    skill: str = ""
    warmup: bool = False
    question: str = ""
    expected: str = ""
    key_word: str = ""
    user_text: str = ""
    reply_text: str = ""
    status: str | None = None  # response.done status of the answering reply
    error: str | None = None  # the client could not run the turn (connection lost, refused...)
    latency_ms: float | None = None  # t_first_reply_audio - t_user_speech_end (ground truth)
    first_audio_ms: float | None = None  # same, to the first reply audio of any level
    latency_strict_ms: float | None = None  # same, onset with every 10 ms window loud (rule before 2026-11-29)
    timings: dict[str, float | None] = field(default_factory=dict)
    speech_end_ms: float | None = None  # ground truth on the session's input timeline
    server_speech_end_ms: float | None = None  # what speech.stopped said
    t_speech_start: float = 0.0
    t_speech_end: float = 0.0
    t_turn_end: float = 0.0  # the loudspeaker fell silent, or the reply timed out
    underruns: int = 0
    underrun_ms: float = 0.0
    underrun_at_ms: list[float] = field(default_factory=list)  # when each began, after playout start
    send_late_mean_ms: float = 0.0
    send_late_max_ms: float = 0.0
    success: bool = False  # text success (for a speech barge-in: of the reply to the barge-in)
    key_word_hit: bool = False
    barge_kind: str | None = None
    barge_interrupted: bool | None = None
    barge_stop_latency_ms: float | None = None
    barge_played_ms: float | None = None
    barge_reply_latency_ms: float | None = None
    barge_reply_text: str | None = None

    @property
    def takeover(self) -> bool:
        """The reply was audible before the user finished (negative latency)."""
        return self.latency_ms is not None and self.latency_ms < 0

    @property
    def failure(self) -> str | None:
        """Why the turn failed, or None: error, no_reply, late (> 4 s), takeover, status_failed."""
        if self.error is not None:
            return "error"
        if self.latency_ms is None:
            return "no_reply"
        if self.takeover:
            return "takeover"
        if self.latency_ms > FAIL_MS:
            return "late"
        if self.status == "failed":
            return "status_failed"
        return None

    @property
    def percentile_ms(self) -> float | None:
        """What enters the percentiles: the latency, FAIL_MS for a failure, None for a takeover."""
        reason = self.failure
        if reason == "takeover":
            return None
        if reason is not None:
            return FAIL_MS
        return self.latency_ms

    @property
    def stages(self) -> dict[str, float] | None:
        return stage_breakdown(self.latency_ms, self.timings) if self.failure is None else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default); None for no values."""
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else None


def bootstrap_interval(values: Sequence[float], q: float, *, level: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> tuple[float, float] | None:  # fmt: skip
    """Percentile bootstrap interval of the ``q``-th percentile over these turns (seeded).

    It covers which cases happened to be drawn, not the run-to-run timing spread, which
    comes on top (two runs of the same code moved a p50 by 7-13 ms on this CPU)."""
    if len(values) < 2:
        return None
    x = np.asarray(values, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))
    stats = np.percentile(x[idx], q, axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def latency_percentiles(records: Sequence[TurnRecord]) -> dict[str, float | None]:
    """p50, p90, p95, p99 (None under 100 turns), max and mean of the percentile values,
    and the 95 % bootstrap intervals of the p50 and the p95 (``p50_lo`` .. ``p95_hi``)."""
    values = [v for v in (r.percentile_ms for r in records) if v is not None]
    out: dict[str, float | None] = {f"p{q}": percentile(values, q) for q in PERCENTILES}
    ci = bootstrap_interval(values, 50)
    out["p50_lo"], out["p50_hi"] = ci if ci is not None else (None, None)
    ci95 = bootstrap_interval(values, 95)
    out["p95_lo"], out["p95_hi"] = ci95 if ci95 is not None else (None, None)
    if len(records) < P99_MIN_TURNS:
        out["p99"] = None
    out["max"] = max(values) if values else None
    out["mean"] = float(np.mean(values)) if values else None
    return out


def strict_percentiles(records: Sequence[TurnRecord]) -> dict[str, float | None]:
    """p50 and p95 with the stricter onset rule used before 2026-11-29 (every 10 ms window loud).

    A turn failed by the main rule counts as it does there; an answered one enters with its
    strict latency (4000 ms when no stretch was loud enough)."""
    values: list[float] = []
    for r in records:
        v = r.percentile_ms
        if v is None:
            continue
        values.append(v if r.failure is not None else (FAIL_MS if r.latency_strict_ms is None else r.latency_strict_ms))
    return {"p50": percentile(values, 50), "p95": percentile(values, 95)}


def _stage_sort_key(name: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(name), name) if name in STAGE_ORDER else (len(STAGE_ORDER), name)


def stage_breakdown(latency_ms: float | None, timings: dict[str, Any]) -> dict[str, float] | None:
    """Split a turn's latency into server stages plus a residual (ms; sums to the latency).

    - ``endpoint``: the end-of-turn decision (``endpoint_ms``);
    - each pipeline stage the server reported (``asr_finalize`` ...), then
      ``pipeline_other``: ``pipeline_first_audio_ms`` minus those stages (the
      pipeline's time between them; negative when they overlap);
    - ``send``: ``first_send_ms`` minus endpoint and pipeline (pacing, output queue);
    - ``residual``: turn latency minus ``first_send_ms``: network, queueing,
      client time, and the server's speech end being off the ground truth.
    """
    t = {k: float(v) for k, v in timings.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if latency_ms is None or not t:
        return None  # no audible reply, or no server timings (e.g. the Realtime protocol)
    named = sorted((k for k in t if k.endswith("_ms") and k not in STRUCTURAL), key=_stage_sort_key)
    out: dict[str, float] = {}
    endpoint = t.get("endpoint_ms", 0.0)
    if "endpoint_ms" in t:
        out["endpoint"] = endpoint
    for k in named:
        out[k[:-3]] = t[k]
    pipeline_total = t.get("pipeline_first_audio_ms", sum(t[k] for k in named))
    if "pipeline_first_audio_ms" in t:
        out["pipeline_other" if named else "pipeline"] = pipeline_total - sum(t[k] for k in named)
    if "first_send_ms" in t:
        out["send"] = t["first_send_ms"] - endpoint - pipeline_total
        accounted = t["first_send_ms"]
    else:
        accounted = sum(out.values())
    out["residual"] = latency_ms - accounted
    return out


def mean_stages(records: Iterable[TurnRecord]) -> dict[str, float]:
    """Mean of each stage column over the answered turns (a missing stage counts as 0).

    Means, not medians, so that the columns add up to the mean latency of those turns.
    """
    rows = [s for s in (r.stages for r in records) if s is not None]
    cols: list[str] = []
    for s in rows:
        cols += [c for c in s if c not in cols]
    cols = [c for c in cols if c != "residual"] + ["residual"] if rows else []
    return {c: float(np.mean([s.get(c, 0.0) for s in rows])) for c in cols}


def overlap_share(intervals: Sequence[tuple[Any, float, float]]) -> float | None:
    """Share of turns during which another session was also in a turn.

    ``intervals``: (session key, start, end) of each turn, on one clock.
    """
    if not intervals:
        return None
    hits = 0
    for i, (sa, a0, a1) in enumerate(intervals):
        if any(sb != sa and b0 < a1 and a0 < b1 for j, (sb, b0, b1) in enumerate(intervals) if j != i):
            hits += 1
    return hits / len(intervals)


def _rate(n: int, d: int) -> float | None:
    return n / d if d else None


def summarize(records: Sequence[TurnRecord]) -> dict[str, Any]:
    """Every figure of one (pipeline, concurrency) cell; warm-up turns are left out here."""
    recs = [r for r in records if not r.warmup]
    fails = [r.failure for r in recs]
    pause = [r for r in recs if r.kind == "pause"]
    barge = [r for r in recs if r.barge_kind == "speech"]
    false_barge = [r for r in recs if r.barge_kind is not None and r.barge_kind != "speech"]
    stops = [r.barge_stop_latency_ms for r in barge if r.barge_stop_latency_ms is not None]
    late_max = [r.send_late_max_ms for r in recs]
    reasons = ("error", "no_reply", "late", "takeover", "status_failed")
    return {
        "turns": len(recs),
        "warmup_turns": len(records) - len(recs),
        "latency_ms": latency_percentiles(recs),
        "latency_strict_ms": strict_percentiles(recs),
        "failures": sum(f is not None for f in fails),
        "failure_rate": _rate(sum(f is not None for f in fails), len(recs)),
        "failures_by_reason": {k: fails.count(k) for k in reasons},
        "takeovers": sum(r.takeover for r in recs),
        "takeover_rate": _rate(sum(r.takeover for r in recs), len(recs)),
        "pause_cases": len(pause),
        "pause_takeovers": sum(r.takeover for r in pause),
        "pause_takeover_rate": _rate(sum(r.takeover for r in pause), len(pause)),
        "barge_ins": len(barge),
        "barge_in_stop_ms": {
            "p50": percentile(stops, 50),
            "p95": percentile(stops, 95),
            "max": max(stops) if stops else None,
        },
        "barge_ins_not_interrupted": sum(not r.barge_interrupted for r in barge),
        "false_barge_cases": len(false_barge),
        "false_barge_ins": sum(bool(r.barge_interrupted) for r in false_barge),
        "false_barge_in_rate": _rate(sum(bool(r.barge_interrupted) for r in false_barge), len(false_barge)),
        "underruns": sum(r.underruns for r in recs),
        "turns_with_underruns": sum(r.underruns > 0 for r in recs),
        "underrun_ms": sum(r.underrun_ms for r in recs),
        "success_rate": _rate(sum(r.success for r in recs), len(recs)),
        "key_word_rate": _rate(sum(r.key_word_hit for r in recs), len(recs)),
        "stages_ms": mean_stages(recs),
        "send_late_max_ms": max(late_max) if late_max else None,
        "send_late_p95_ms": percentile(late_max, 95),
        "overlap": overlap_share(
            [((r.round, r.session), r.t_speech_start, r.t_turn_end) for r in recs]
        ),
    }


def group_summary(records: Sequence[TurnRecord], key: str) -> dict[str, dict[str, Any]]:
    """Small per-``key`` table (e.g. ``voice`` or ``kind``): turns, p50, p95, failures, success."""
    out: dict[str, dict[str, Any]] = {}
    for value in sorted({str(getattr(r, key)) for r in records if not r.warmup}):
        rs = [r for r in records if not r.warmup and str(getattr(r, key)) == value]
        pct = latency_percentiles(rs)
        out[value] = {
            "turns": len(rs),
            "p50": pct["p50"],
            "p95": pct["p95"],
            "failures": sum(r.failure is not None for r in rs),
            "takeovers": sum(r.takeover for r in rs),
            "success_rate": _rate(sum(r.success for r in rs), len(rs)),
        }
    return out
