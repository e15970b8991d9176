"""Comparing two benchmark runs case by case (synthetic results.json files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients.bench.compare import load_turns, main, paired_changes


def run(tmp: Path, name: str, latencies: dict[str, float | None], warm: float = 50.0) -> Path:
    turns = [{"pipeline": "fused", "concurrency": 1, "warmup": True, "case_id": "c0000-normal",
              "kind": "normal", "percentile_ms": warm}]  # fmt: skip
    for case, ms in latencies.items():
        turns.append({"pipeline": "fused", "concurrency": 1, "warmup": False, "case_id": case,
                      "kind": case.split("-")[1], "percentile_ms": ms})  # fmt: skip
        turns.append({"pipeline": "cascade", "concurrency": 1, "warmup": False, "case_id": case,
                      "kind": case.split("-")[1], "percentile_ms": 5000.0})  # fmt: skip
    d = tmp / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps({"turns": turns}))
    return d


def test_changes_pair_cases_and_leave_out_takeovers_and_warmups(tmp_path: Path) -> None:
    a = run(tmp_path, "a", {"c0001-normal": 200.0, "c0002-pause": 300.0, "c0003-noisy": None,
                            "c0004-normal": 250.0}, warm=10.0)  # fmt: skip
    b = run(tmp_path, "b", {"c0001-normal": 210.0, "c0002-pause": 280.0, "c0003-noisy": 400.0,
                            "c0005-normal": 100.0}, warm=900.0)  # fmt: skip
    ta, tb = load_turns(a, "fused", 1), load_turns(b, "fused", 1)
    assert "c0000-normal" not in ta  # warm-up turns are not counted
    ch = paired_changes(ta, tb)
    # c0003 was a takeover in A (no latency), c0004/c0005 ran in one run only
    assert ch["all"] == [10.0, -20.0]
    assert ch["normal"] == [10.0] and ch["pause"] == [-20.0]
    assert "noisy" not in ch


def test_cli_prints_the_median_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = run(tmp_path, "a", {f"c{i:04d}-normal": 200.0 + i for i in range(20)})
    b = run(tmp_path, "b", {f"c{i:04d}-normal": 215.0 + i for i in range(20)})
    assert main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "median change +15.0 ms" in out and "n  20" in out
    assert main([str(a), str(b), "--n", "4"]) == 1  # no such cell
