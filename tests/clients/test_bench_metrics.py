"""The benchmark's arithmetic on synthetic turns with known answers (no server, no clock)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clients.bench.cli import level_rounds, split_sessions
from clients.bench.metrics import (
    FAIL_MS,
    TurnRecord,
    latency_percentiles,
    mean_stages,
    overlap_share,
    stage_breakdown,
    summarize,
)


def turn(latency: float | None, kind: str = "normal", **kw: object) -> TurnRecord:
    return TurnRecord(pipeline="echo", case_id=f"c-{latency}", kind=kind, latency_ms=latency, **kw)  # type: ignore[arg-type]


def test_percentiles_interpolate_linearly() -> None:
    recs = [turn(float(v)) for v in range(100, 1100, 100)]  # 100 .. 1000
    p = latency_percentiles(recs)
    assert p["p50"] == pytest.approx(550.0)
    assert p["p90"] == pytest.approx(910.0)
    assert p["p95"] == pytest.approx(955.0)
    assert p["max"] == 1000.0
    assert p["p99"] is None  # fewer than 100 turns


def test_p50_interval_is_seeded_holds_the_p50_and_narrows_with_more_turns() -> None:
    few = [turn(float(v)) for v in range(100, 1100, 100)]  # 10 turns, 100 .. 1000
    many = [turn(float(v)) for v in np.linspace(100, 1000, 200)]  # the same spread, 200 turns
    p, q = latency_percentiles(few), latency_percentiles(many)
    assert p["p50_lo"] < p["p50"] < p["p50_hi"]  # type: ignore[operator]
    assert q["p50_lo"] < q["p50"] < q["p50_hi"]  # type: ignore[operator]
    assert q["p50_hi"] - q["p50_lo"] < (p["p50_hi"] - p["p50_lo"]) / 2  # type: ignore[operator]
    assert latency_percentiles(few) == p  # the same turns give the same interval
    assert p["p95_lo"] <= p["p95"] <= p["p95_hi"] and p["p95_hi"] <= 1000.0  # type: ignore[operator]
    assert q["p95_lo"] < q["p95"] <= q["p95_hi"]  # type: ignore[operator]
    one = latency_percentiles([turn(300.0)])
    assert one["p50"] == 300.0 and one["p50_lo"] is None and one["p50_hi"] is None
    assert one["p95_lo"] is None and one["p95_hi"] is None


def test_p99_needs_100_turns() -> None:
    assert latency_percentiles([turn(100.0)] * 99)["p99"] is None
    recs = [turn(float(v)) for v in range(1, 101)]  # 1 .. 100
    assert latency_percentiles(recs)["p99"] == pytest.approx(99.01)


def test_failures_enter_as_4000_and_are_counted_apart() -> None:
    recs = [turn(200.0), turn(300.0), turn(None), turn(5000.0), turn(250.0, status="failed"), turn(100.0, error="boom")]
    s = summarize(recs)
    assert [r.percentile_ms for r in recs] == [200.0, 300.0, FAIL_MS, FAIL_MS, FAIL_MS, FAIL_MS]
    assert s["failures"] == 4
    assert s["failures_by_reason"] == {"error": 1, "no_reply": 1, "late": 1, "takeover": 0, "status_failed": 1}
    assert s["latency_ms"]["max"] == FAIL_MS
    assert s["latency_ms"]["p50"] == pytest.approx(FAIL_MS)  # 4 of 6 values are 4000


def test_takeovers_are_failures_out_of_the_percentiles_and_apart_on_pause_cases() -> None:
    recs = [turn(-300.0, "pause"), turn(400.0, "pause"), turn(-50.0), turn(200.0), turn(600.0, "pause")]
    s = summarize(recs)
    assert s["takeovers"] == 2 and s["failures"] == 2
    assert s["failures_by_reason"]["takeover"] == 2
    assert s["pause_cases"] == 3 and s["pause_takeovers"] == 1
    assert s["pause_takeover_rate"] == pytest.approx(1 / 3)
    assert s["latency_ms"]["p50"] == pytest.approx(400.0)  # median of 200, 400, 600 only
    assert s["latency_ms"]["max"] == 600.0
    assert all(r.stages is None for r in recs if r.takeover)


def test_warmup_turns_are_left_out_and_counted() -> None:
    s = summarize([turn(9000.0, warmup=True), turn(100.0)])
    assert s["turns"] == 1 and s["warmup_turns"] == 1
    assert s["latency_ms"]["max"] == 100.0


def test_stage_breakdown_has_a_residual_and_sums_to_the_latency() -> None:
    timings = {
        "endpoint_ms": 200.0, "asr_finalize_ms": 50.0, "llm_first_token_ms": 30.0, "tts_first_audio_ms": 40.0,
        "pipeline_first_audio_ms": 150.0, "first_send_ms": 400.0, "missing_ms": None,
    }  # fmt: skip
    s = stage_breakdown(500.0, timings)
    assert s == {
        "endpoint": 200.0, "asr_finalize": 50.0, "llm_first_token": 30.0, "tts_first_audio": 40.0,
        "pipeline_other": 30.0, "send": 50.0, "residual": 100.0,
    }  # fmt: skip
    assert math.isclose(sum(s.values()), 500.0)
    assert list(s) == ["endpoint", "asr_finalize", "llm_first_token", "tts_first_audio", "pipeline_other", "send", "residual"]


def test_stage_breakdown_without_named_stages_and_without_timings() -> None:
    s = stage_breakdown(700.0, {"endpoint_ms": 600.0, "pipeline_first_audio_ms": 1.0, "first_send_ms": 610.0})
    assert s == {"endpoint": 600.0, "pipeline": 1.0, "send": 9.0, "residual": 90.0}
    assert stage_breakdown(300.0, {"first_send_ms": 250.0}) == {"send": 250.0, "residual": 50.0}
    assert stage_breakdown(300.0, {}) is None  # no server timings: no breakdown
    assert stage_breakdown(None, {"endpoint_ms": 1.0}) is None


def test_mean_stages_add_up_to_the_mean_answered_latency() -> None:
    a = turn(500.0, timings={"endpoint_ms": 200.0, "pipeline_first_audio_ms": 100.0, "first_send_ms": 320.0})
    b = turn(300.0, timings={"endpoint_ms": 100.0, "pipeline_first_audio_ms": 50.0, "first_send_ms": 160.0})
    m = mean_stages([a, b, turn(None), turn(-10.0)])
    assert m == {"endpoint": 150.0, "pipeline": 75.0, "send": 15.0, "residual": 160.0}
    assert sum(m.values()) == pytest.approx(400.0)


def test_overlap_share() -> None:
    # session 0: [0, 5], [6, 10]; session 1: [4, 7]; session 2: [20, 25]
    iv = [(0, 0.0, 5.0), (0, 6.0, 10.0), (1, 4.0, 7.0), (2, 20.0, 25.0)]
    assert overlap_share(iv) == pytest.approx(3 / 4)
    assert overlap_share([(0, 0.0, 5.0), (0, 1.0, 2.0)]) == 0.0  # the same session never overlaps itself
    assert overlap_share([]) is None


def test_barge_in_stop_latency_and_false_barge_in_rate() -> None:
    recs = [
        turn(300.0, "bargein", barge_kind="speech", barge_interrupted=True, barge_stop_latency_ms=150.0),
        turn(300.0, "bargein", barge_kind="speech", barge_interrupted=True, barge_stop_latency_ms=250.0),
        turn(300.0, "bargein", barge_kind="speech", barge_interrupted=False, barge_stop_latency_ms=900.0),
        turn(300.0, "bargein", barge_kind="cough", barge_interrupted=True),
        turn(300.0, "bargein", barge_kind="mm-hmm", barge_interrupted=False),
    ]
    s = summarize(recs)
    assert s["barge_ins"] == 3
    assert s["barge_in_stop_ms"]["p50"] == pytest.approx(250.0)
    assert s["barge_in_stop_ms"]["max"] == 900.0
    assert s["barge_ins_not_interrupted"] == 1
    assert s["false_barge_cases"] == 2 and s["false_barge_ins"] == 1
    assert s["false_barge_in_rate"] == pytest.approx(0.5)


def test_underruns_and_success() -> None:
    recs = [turn(100.0, underruns=2, underrun_ms=80.0, success=True, key_word_hit=True), turn(200.0)]
    s = summarize(recs)
    assert (s["underruns"], s["turns_with_underruns"], s["underrun_ms"]) == (2, 1, 80.0)
    assert s["success_rate"] == 0.5 and s["key_word_rate"] == 0.5


def test_rounds_cover_every_case_and_keep_sessions_full() -> None:
    ids = [f"c{i}" for i in range(10)]
    rounds = level_rounds(ids, 4, 2)
    flat = [c for r in rounds for c in r]
    assert set(flat) == set(ids) and len(flat) == 12  # cycled up to a multiple of 4
    assert [len(r) for r in rounds] == [8, 4]
    assert split_sessions(rounds[0], 4) == [["c0", "c4"], ["c1", "c5"], ["c2", "c6"], ["c3", "c7"]]
    assert level_rounds(["a"], 3, 4) == [["a", "a", "a"]]  # more sessions than cases


def test_bundle_info_reads_the_folder_a_spawned_server_loads(tmp_path, monkeypatch) -> None:
    import json as _json

    from clients.bench.server_process import bundle_info

    (tmp_path / "fused").mkdir()
    (tmp_path / "fused" / "manifest.json").write_text(_json.dumps(
        {"name": "candidate", "kind": "fused", "graphs": {"encoder": {"sha256": "ab" * 32}}}))
    monkeypatch.setenv("REJOINDER_BUNDLES_DIR", str(tmp_path))
    assert bundle_info() == [{"dir": "fused", "name": "candidate", "kind": "fused",
                              "graphs": {"encoder": "ab" * 6}}]
    monkeypatch.delenv("REJOINDER_BUNDLES_DIR")
    assert all(b.get("name") != "candidate" for b in bundle_info())


def test_the_stricter_onset_rule_is_reported_on_the_same_turns() -> None:
    recs = [
        turn(100.0, latency_strict_ms=300.0),
        turn(150.0, latency_strict_ms=None),  # no stretch loud in every window: counts as 4000
        turn(None),  # failed by the main rule: 4000 in both
        turn(-20.0, latency_strict_ms=80.0),  # a takeover by the main rule stays out of both
    ]
    s = summarize(recs)
    assert s["latency_ms"]["p50"] == pytest.approx(150.0)  # 100, 150, 4000
    assert s["latency_strict_ms"]["p50"] == pytest.approx(FAIL_MS)  # 300, 4000, 4000
    assert s["latency_strict_ms"]["p95"] == pytest.approx(FAIL_MS)
    assert summarize(recs[:1])["latency_strict_ms"] == {"p50": 300.0, "p95": 300.0}
