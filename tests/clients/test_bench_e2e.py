"""One tiny benchmark run end to end: spawned echo server, client process, every output file.

Asserts on what was written and on its consistency, never on speed.
"""

from __future__ import annotations

import json
from pathlib import Path

from clients.bench.cli import main
from clients.bench.report import MARKDOWN, PLOTS
from tests.clients.conftest import needs_espeak


@needs_espeak
def test_tiny_run_writes_json_markdown_and_plots(tmp_path: Path, capsys: object) -> None:
    out = tmp_path / "report"
    rc = main([
        "--spawn", "--pipelines", "echo,nosuchpipeline", "--cases", "2", "--kinds", "normal,pause",
        "--concurrency", "1", "--warmup", "1", "--out", str(out), "--data-dir", str(tmp_path / "data"),
        "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    meta = results["meta"]
    assert meta["pipelines"] == ["echo"]
    assert "nosuchpipeline" in meta["unavailable"]
    assert meta["warmup_turns"] == 1 and meta["machine"]["cpu_count"]
    assert meta["server"]["providers"] == {}  # echo runs no ONNX model
    turns = results["turns"]
    assert [t["warmup"] for t in turns] == [True, False, False]
    measured = [t for t in turns if not t["warmup"]]
    assert {t["kind"] for t in measured} == {"normal", "pause"}
    for t in measured:
        assert t["error"] is None, t["error"]
        assert t["pipeline"] == "echo" and t["concurrency"] == 1
        assert t["latency_ms"] is not None  # echo plays the question back
        if t["failure"] is None:
            assert abs(sum(t["stages"].values()) - t["latency_ms"]) < 1e-6
        assert t["t_speech_start"] < t["t_speech_end"] <= t["t_turn_end"]
    (cell,) = results["cells"]
    assert cell["pipeline"] == "echo" and cell["summary"]["turns"] == 2
    assert cell["summary"]["overlap"] == 0.0  # one session: nothing overlaps
    assert cell["server_rss"] and cell["server_rss"] > 0
    md = (out / MARKDOWN).read_text()
    for needle in ("Turn latency", "commit", "CPUs", "warm-up turns run and left out: 1", "nosuchpipeline", "residual"):
        assert needle in md
    for name in PLOTS.values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "p95" in printed and "echo" in printed
