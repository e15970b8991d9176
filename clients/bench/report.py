"""Benchmark output: the stdout table, ``results.json`` (every turn), ``report.md`` and PNG plots.

Everything here reads a results dict (the JSON written to disk), so a report
can be redrawn from an old ``results.json``::

    write_all(results, out_dir)      # results.json, report.md, *.png
    print(table(results))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MARKDOWN = "report.md"
JSON = "results.json"
PLOTS = {"cdf": "latency_cdf.png", "sweep": "latency_vs_concurrency.png", "stages": "stage_breakdown.png"}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:.0f}"


def _ci(lo: float | None, hi: float | None) -> str:
    return "-" if lo is None or hi is None else f"{lo:.0f}-{hi:.0f}"


def _cores(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


COLUMNS = ("pipeline", "N", "turns", "fail", "takeover", "p50", "p50 95% CI", "p90", "p95", "p95 95% CI", "p99", "max",
           "success", "underruns", "overlap", "srv CPU", "srv RSS MB", "client CPU")  # fmt: skip


def _row(cell: dict[str, Any]) -> list[str]:
    s = cell["summary"]
    lat = s["latency_ms"]
    return [
        cell["pipeline"], str(cell["concurrency"]), str(s["turns"]), str(s["failures"]), str(s["takeovers"]),
        _ms(lat["p50"]), _ci(lat.get("p50_lo"), lat.get("p50_hi")),
        _ms(lat["p90"]), _ms(lat["p95"]), _ci(lat.get("p95_lo"), lat.get("p95_hi")), _ms(lat["p99"]), _ms(lat["max"]),
        _pct(s["success_rate"]), str(s["underruns"]), _pct(s["overlap"]),
        _cores(cell.get("server_cpu")), _mb(cell.get("server_rss")), _cores(cell.get("client_cpu")),
    ]  # fmt: skip


def table(results: dict[str, Any]) -> str:
    """The plain-text table for stdout (latencies in ms; CPU in cores busy)."""
    rows = [list(COLUMNS)] + [_row(c) for c in results["cells"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    meta = results["meta"]
    foot = [
        f"machine: {meta['machine'].get('cpu')} x{meta['machine'].get('cpu_count')}, commit {meta.get('commit') or '?'}, "
        f"protocol {meta['protocol']}, warm-up turns run and left out: {meta['warmup_turns']}",
    ]
    for name, why in meta.get("unavailable", {}).items():
        foot.append(f"pipeline {name}: unavailable ({why})")
    for name, n in meta.get("stopped_at", {}).items():
        if n is not None:
            foot.append(f"pipeline {name}: sweep stopped at N={n} (p95 > 1 s)")
    return "\n".join(lines + foot)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def markdown(results: dict[str, Any]) -> str:
    """The Markdown report: provenance, latency table, takeovers, barge-in, stages, voices, plots."""
    meta = results["meta"]
    m = meta["machine"]
    ts = meta["testset"]
    lines = [
        f"# Rejoinder latency benchmark, {meta['date']}",
        "",
        f"- machine: {m.get('cpu')}, {m.get('cpu_count')} CPUs ({m.get('affinity')} usable), "
        f"{m.get('memory_gb', '?')} GB, {m.get('os')}; load at start {m.get('load_avg')}",
        f"- commit: `{meta.get('commit') or 'unknown'}`; Python {m.get('python')}, onnxruntime {m.get('onnxruntime', '-')}",
        f"- server: {meta['server']['mode']} `{meta['server']['url']}`; protocol: {meta['protocol']}"
        + "".join(f"; {p} on {v}" for p, v in sorted(meta["server"].get("providers", {}).items())),
        "- pipelines: " + (", ".join(
            f"{p} (bundles: {', '.join(meta.get('pipeline_bundles', {}).get(p, [])) or 'none'})"
            for p in meta["pipelines"]) or "none")  # fmt: skip
        + "".join(f"; {k} unavailable ({v})" for k, v in meta.get("unavailable", {}).items()),
        "- bundles: " + ("; ".join(
            f"{b.get('name') or b['dir']} ({b.get('kind')}: "
            + ", ".join(f"{g} {sha}" for g, sha in (b.get("graphs") or {}).items()) + ")"
            for b in meta["bundles"]) or "none found"),  # fmt: skip
        f"- test set `{ts['key']}`: {ts['n_cases']} cases ({', '.join(ts['kinds'])}), seed {ts['seed']}, "
        f"held-out corpus split (corpus seed {ts['corpus_seed']}); voices: "
        + ", ".join(v["name"] for v in ts["voices"]) + f" (from {ts['voice_source']})",
        f"- concurrency levels: {', '.join(map(str, meta['concurrency']))}; "
        f"warm-up turns run and left out: {meta['warmup_turns']}",
        f"- client process CPU over the run: {_cores(meta.get('client_cpu'))} cores busy; "
        "server CPU and client CPU in cores busy (1.00 = one core)",
    ]
    if meta["server"].get("note"):
        lines.append(f"- note: {meta['server']['note']}")
    for name, n in meta.get("stopped_at", {}).items():
        if n is not None:
            lines.append(f"- {name}: the sweep stopped at N={n}, whose p95 exceeds 1 s")
    lines += ["", "## Turn latency (ms)", ""]
    lines += _md_table(list(COLUMNS), [_row(c) for c in results["cells"]])
    lines += [
        "Latency: first audible reply audio (a stretch of 100 ms whose RMS is above -35 dBFS, starting "
        "on a loud 10 ms window, with at least half of its 10 ms windows loud) minus the capture time "
        "of the last speech sample. A failed turn (no reply within 4 s, an error, a failed response) "
        "enters the percentiles as 4000 ms; a takeover (reply before the user finished) is a failure "
        "and stays out of them. p99 needs at least 100 turns. p50 and p95 95% CI: bootstrap over this "
        "run's turns; they cover which cases were drawn, not the run-to-run timing spread on top of it.",
        "",
        "The stricter onset rule used before 2026-11-29 (every 10 ms window of the 100 ms loud; it "
        "times a reply such as \"Two times six\" from \"six\", after the stop closures), same turns: "
        + "; ".join(
            f"{c['pipeline']} N={c['concurrency']} p50 {_ms(c['summary']['latency_strict_ms']['p50'])}, "
            f"p95 {_ms(c['summary']['latency_strict_ms']['p95'])}"
            for c in results["cells"] if "latency_strict_ms" in c["summary"]
        ) + ".",
        "",
        "## Failures, takeovers, barge-in",
        "",
    ]
    rows = []
    for c in results["cells"]:
        s = c["summary"]
        by = s["failures_by_reason"]
        b = s["barge_in_stop_ms"]
        rows.append([
            c["pipeline"], str(c["concurrency"]),
            f"{by['no_reply']}/{by['late']}/{by['status_failed']}/{by['error']}",
            f"{s['takeovers']} ({_pct(s['takeover_rate'])})",
            f"{s['pause_takeovers']}/{s['pause_cases']} ({_pct(s['pause_takeover_rate'])})",
            f"{_ms(b['p50'])} / {_ms(b['p95'])} / {_ms(b['max'])} (n={s['barge_ins']})",
            str(s["barge_ins_not_interrupted"]),
            f"{s['false_barge_ins']}/{s['false_barge_cases']} ({_pct(s['false_barge_in_rate'])})",
            f"{s['underruns']} in {s['turns_with_underruns']} turns, {s['underrun_ms']:.0f} ms",
            _pct(s["key_word_rate"]),
            f"{_ms(s['send_late_p95_ms'])} / {_ms(s['send_late_max_ms'])}",
        ])  # fmt: skip
    lines += _md_table(
        ["pipeline", "N", "fail: no reply/late/failed/error", "takeovers", "pause takeovers",
         "barge-in stop p50/p95/max", "barge-ins not stopped", "false barge-ins", "underruns", "key word",
         "send late p95/max"],
        rows,
    )  # fmt: skip
    lines += [
        "Goal: at most 5% takeovers on pause cases (300-700 ms of silence inside the question), fewer "
        "elsewhere. Barge-in stop latency: capture time of the barge-in's first speech sample to the "
        "moment the simulated loudspeaker fell silent (buffer dropped on `interrupted`, or ran dry). "
        "False barge-ins: replies stopped by \"mm hmm\", a cough or a noise burst. Send late: how "
        "late the client's frames left against their capture schedule (per turn, worst frame).",
        "",
    ]
    lines += ["## Server stage breakdown (mean ms over answered turns)", ""]
    cols: list[str] = []
    for c in results["cells"]:
        cols += [k for k in c["summary"]["stages_ms"] if k not in cols]
    cols = [k for k in cols if k != "residual"] + (["residual"] if cols else [])
    srows = [
        [c["pipeline"], str(c["concurrency"]), _ms(c["summary"]["latency_ms"]["mean"])]
        + [_ms(c["summary"]["stages_ms"].get(k)) for k in cols]
        for c in results["cells"]
    ]
    if not cols:
        lines += ["No server stage timings in this run (the Realtime protocol carries none).", ""]
    lines += _md_table(["pipeline", "N", "mean latency"] + cols, srows)
    lines += [
        "Stages come from `response.done.timings` (server clock). `pipeline_other`: pipeline time "
        "outside the named stages; `send`: pacing and output queue; `residual`: turn latency minus "
        "`first_send_ms` (network, queueing, client time, and the server's speech end being off the "
        "ground truth). The mean latency here is over answered turns only.",
        "",
    ]
    for title, key in (("Per voice", "per_voice"), ("Per case kind", "per_kind")):
        lines += [f"## {title} (all concurrency levels)", ""]
        vrows = []
        for pipe, groups in results.get(key, {}).items():
            for name, g in groups.items():
                vrows.append([pipe, name, str(g["turns"]), _ms(g["p50"]), _ms(g["p95"]), str(g["failures"]),
                              str(g["takeovers"]), _pct(g["success_rate"])])  # fmt: skip
        lines += _md_table(["pipeline", key.split("_")[1], "turns", "p50", "p95", "failures", "takeovers", "success"], vrows)
    lines += ["## Plots", ""]
    for name in results.get("plots", []):
        lines.append(f"![{name}]({name})")
    lines += [
        "",
        "## Method",
        "",
        "Per ../shared/LATENCY.md. The client runs in its own process: 20 ms PCM16 frames, frame i "
        "sent at t0 + (i+1) x 20 ms, >= 300 ms of leading silence, silence after the speech until the "
        "reply has played or 4 s pass; a simulated loudspeaker starts 40 ms after the first reply "
        "audio, plays in real time, and drops its buffer on `interrupted`. Ground truth (speech start "
        "and end: first/last 10 ms window above -40 dBFS) comes from the clean source, before noise. "
        "Pipelines run the same cases in interleaved rounds (the order rotates each round), so drift "
        "hits all alike. Sessions of a round start staggered; overlap is the share of turns during "
        "which another session was also in a turn (speech start to the end of the reply's playout). "
        "Task success: the reply transcript contains the expected answer after normalization "
        "(for a barge-in by speech: the reply to the barge-in).",
        "",
    ]
    return "\n".join(lines)


def plot_all(results: dict[str, Any], out_dir: Path) -> list[str]:
    """Latency CDF per pipeline, p50/p95 against N, stage breakdown; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    turns = [t for t in results["turns"] if not t["warmup"]]
    pipes = list(dict.fromkeys(c["pipeline"] for c in results["cells"]))
    levels = sorted({c["concurrency"] for c in results["cells"]})
    styles = ["-", "--", "-.", ":"]
    written = []
    title = f"{results['meta']['machine'].get('cpu_count')} CPUs, commit {str(results['meta'].get('commit'))[:10]}"

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, p in enumerate(pipes):
        for j, n in enumerate(levels):
            cdf = np.sort([t["percentile_ms"] for t in turns if t["pipeline"] == p and t["concurrency"] == n
                            and t["percentile_ms"] is not None])  # fmt: skip
            if len(cdf):
                ax.step(cdf, np.arange(1, len(cdf) + 1) / len(cdf), where="post", color=f"C{i}",
                        linestyle=styles[j % len(styles)], label=f"{p}, N={n}")  # fmt: skip
    ax.set_xlabel("turn latency (ms; failures at 4000)")
    ax.set_ylabel("share of turns")
    ax.set_title(f"Turn latency CDF ({title})")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS["cdf"], dpi=110)
    plt.close(fig)
    written.append(PLOTS["cdf"])

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, p in enumerate(pipes):
        cells = [c for c in results["cells"] if c["pipeline"] == p]
        ns = [c["concurrency"] for c in cells]
        for q, style in (("p50", "-o"), ("p95", "--s")):
            ys = [c["summary"]["latency_ms"][q] for c in cells]
            ax.plot(ns, [np.nan if y is None else y for y in ys], style, color=f"C{i}", label=f"{p} {q}")
    ax.axhline(1000, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.set_xlabel("concurrent sessions N")
    ax.set_ylabel("turn latency (ms)")
    ax.set_title(f"Latency against concurrency ({title})")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS["sweep"], dpi=110)
    plt.close(fig)
    written.append(PLOTS["sweep"])

    low = [c for c in results["cells"] if c["concurrency"] == min(levels)] if levels else []
    cols: list[str] = []
    for c in low:
        cols += [k for k in c["summary"]["stages_ms"] if k not in cols]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / max(1, len(low))
    for i, c in enumerate(low):
        vals = [c["summary"]["stages_ms"].get(k, 0.0) for k in cols]
        ax.bar(np.arange(len(cols)) + i * width, vals, width, color=f"C{i}", label=c["pipeline"])
    ax.set_xticks(np.arange(len(cols)) + width * (len(low) - 1) / 2, cols, rotation=30, ha="right")
    ax.set_ylabel("mean ms over answered turns")
    ax.set_title(f"Stage breakdown at N={min(levels) if levels else '-'} ({title})")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.grid(alpha=0.3, axis="y")
    if low:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS["stages"], dpi=110)
    plt.close(fig)
    written.append(PLOTS["stages"])
    return written


def write_all(results: dict[str, Any], out_dir: Path, *, plots: bool = True) -> dict[str, Path]:
    """Write results.json, the PNG plots and report.md into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if plots:
        try:
            results["plots"] = plot_all(results, out_dir)
        except ImportError as e:  # matplotlib is in the `bench` and `test` extras
            results["plots"] = []
            results["meta"]["plots_skipped"] = f"no plots: {e}"
        paths.update({name: out_dir / name for name in results["plots"]})
    (out_dir / JSON).write_text(json.dumps(results, indent=1, default=str))
    (out_dir / MARKDOWN).write_text(markdown(results))
    paths.update(json=out_dir / JSON, markdown=out_dir / MARKDOWN)
    return paths
