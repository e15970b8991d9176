"""``rejoinder bench``: run the latency benchmark of ../shared/LATENCY.md and write its report.

Examples::

    rejoinder bench --spawn --pipelines fused,cascade,echo              # full sweep 1,2,4,8,16
    rejoinder bench --url ws://127.0.0.1:8765 --concurrency 1 --cases 20
    rejoinder bench --spawn --pipelines echo --cases 2 --concurrency 1 --warmup 1 --kinds normal
    rejoinder bench --protocol realtime --url ws://127.0.0.1:8765

Steps: build or load the cached test set (data/bench/), start the server
(``--spawn``, the default) or reach it (``--url``), start the client process,
run ``--warmup`` turns per pipeline (left out, counted), then for each
concurrency level run every case on every available pipeline in interleaved
rounds; a pipeline's sweep stops at the first N whose p95 exceeds 1 s.
Writes results.json, report.md and PNG plots to ``--out`` (default
reports/bench-<timestamp>/) and prints the table.

:func:`main` takes the arguments after ``bench``; ``server/cli.py`` wires it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clients.bench import report as report_mod
from clients.bench.metrics import TurnRecord, group_summary, summarize
from clients.bench.progress import ProgressBar
from clients.bench.runner import TURN_TIMEOUT_S, ClientProcess, RoundJob, RoundResult, record_dict
from clients.bench.server_process import (
    PIPELINE_BUNDLES,
    ROOT,
    ExternalServer,
    SpawnedServer,
    Usage,
    bundle_info,
    git_commit,
    machine_info,
    offered_pipelines,
    server_providers,
    skipped_pipelines,
)
from clients.bench.testset import DEFAULT_CACHE, KINDS, TestSet, heldout_voices, load_or_build

P95_LIMIT_MS = 1000.0
REPLY_ALLOWANCE_S = 2.5  # a reply's typical length, to spread session starts over one turn


def _int_list(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be >= 1")
    return values


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser(prog: str = "rejoinder bench") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0] if __doc__ else None)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--url", help="an external server (ws://HOST:PORT or http://HOST:PORT)")
    where.add_argument("--spawn", action="store_true", help="start `rejoinder serve` on a free port (the default)")
    ap.add_argument("--pipelines", type=_name_list, default=_name_list("fused,cascade,echo"),
                    help="pipelines to measure, same cases on each (default: fused,cascade,echo)")
    ap.add_argument("--protocol", choices=("native", "realtime"), default="native",
                    help="native (/v1/native) or realtime (the OpenAI-compatible /v1/realtime)")
    ap.add_argument("--concurrency", type=_int_list, default=_int_list("1,2,4,8,16"),
                    help="levels of concurrent sessions (default: 1,2,4,8,16); stops at p95 > 1 s")
    ap.add_argument("--cases", type=int, default=40, help="test cases per concurrency level (default: 40)")
    ap.add_argument("--kinds", type=_name_list, default=list(KINDS),
                    help=f"case kinds (default: {','.join(KINDS)})")
    ap.add_argument("--seed", type=int, default=0, help="test set seed (default: 0)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up turns per pipeline, left out (default: 2)")
    ap.add_argument("--turns-per-session", type=int, default=4,
                    help="turns each session says in one round (default: 4)")
    ap.add_argument("--out", type=Path, help="output directory (default: reports/bench-<timestamp>/)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_CACHE, help=f"test set cache (default: {DEFAULT_CACHE})")
    ap.add_argument("--token", help="bearer token, when the server requires one")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra argument for the spawned `rejoinder serve` (repeatable), e.g. --server-arg=--ort-threads=2")
    ap.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for /readyz (default: 180)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap  # fmt: skip


def level_rounds(case_ids: Sequence[str], n: int, turns_per_session: int) -> list[list[str]]:
    """Case ids of each round at concurrency ``n``: every case once (cycled up to a multiple of ``n``)."""
    total = n * math.ceil(max(len(case_ids), n) / n)
    seq = [case_ids[i % len(case_ids)] for i in range(total)]
    size = n * max(1, turns_per_session)
    return [seq[i : i + size] for i in range(0, total, size)]


def split_sessions(chunk: Sequence[str], n: int) -> list[list[str]]:
    """Deal a round's cases to ``n`` sessions, round-robin (empty sessions dropped)."""
    return [s for s in (list(chunk[k::n]) for k in range(n)) if s]


class Cell:
    """What one (pipeline, concurrency) accumulates over its rounds."""

    def __init__(self) -> None:
        self.records: list[TurnRecord] = []
        self.client_cpu_s = self.client_wall_s = 0.0
        self.server_cpu_s: float | None = 0.0
        self.server_wall_s = 0.0
        self.server_rss: int | None = None

    def add(self, result: RoundResult, usage: Usage) -> None:
        self.records += result.records
        self.client_cpu_s += result.client_cpu_s
        self.client_wall_s += result.wall_s
        self.server_wall_s += usage.wall_s
        self.server_cpu_s = None if usage.cpu_s is None or self.server_cpu_s is None else self.server_cpu_s + usage.cpu_s
        if usage.rss_max is not None:
            self.server_rss = max(self.server_rss or 0, usage.rss_max)


def run_bench(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Everything but printing: returns the results dict (also written by the caller)."""
    show = not args.no_progress
    voices, source = heldout_voices()
    bars: list[ProgressBar] = []

    def synth_progress(n: int, note: str) -> None:  # a bar only when synthesis actually runs
        if not bars:
            bars.append(ProgressBar(args.cases, "test set", enabled=show))
        bars[0].update(n, note)

    ts: TestSet = load_or_build(args.seed, args.cases, args.kinds, voices, args.data_dir,
                                progress=synth_progress, voice_source=source)  # fmt: skip
    for b in bars:
        b.close()
    mean_case_s = sum(len(ts.audio(c.id)) / c.rate for c in ts.cases) / max(1, len(ts.cases))
    server: ExternalServer | SpawnedServer
    missing: dict[str, str] = {}
    if args.url:
        server = ExternalServer(args.url)
        server.wait_ready(args.ready_timeout)
        server_meta = {"mode": "external", "url": args.url}
    else:
        log = out / "server.log"
        server, missing = SpawnedServer.start(args.pipelines, log, extra_args=args.server_arg,
                                              ready_timeout_s=args.ready_timeout)  # fmt: skip
        server_meta = {"mode": "spawned", "url": server.ws_base, "cmd": " ".join(server.cmd), "log": str(log)}
    server_meta["providers"] = server_providers(server.http_base)
    cells: dict[tuple[str, int], Cell] = {}
    warm: list[TurnRecord] = []
    stopped: dict[str, int | None] = {}
    t_run = time.perf_counter()
    client_cpu = 0.0
    try:
        offered = offered_pipelines(server.ws_base, args.token)
        available = [p for p in args.pipelines if p in offered]
        reasons = skipped_pipelines(Path(server_meta["log"])) if "log" in server_meta else {}
        reasons.update(missing)
        unavailable = {p: reasons.get(p) or f"not offered by the server (it offers {', '.join(offered) or 'none'})"
                       for p in args.pipelines if p not in offered}  # fmt: skip
        stopped = {p: None for p in available}
        run_bar = ProgressBar(args.warmup * len(available), "bench", enabled=show)
        with ClientProcess(ts.path) as client:

            def run(job: RoundJob) -> tuple[RoundResult, Usage]:
                longest = max(len(s) for s in job.sessions)
                server.begin()
                res = client.run(job, on_turn=lambda cid: run_bar.update(1, f"{job.pipeline} N={job.concurrency}"),
                                 timeout_s=longest * TURN_TIMEOUT_S + len(job.sessions) * job.stagger_s + 60)  # fmt: skip
                return res, server.end()

            round_no = 0
            ids = [c.id for c in ts.cases]
            for p in available:
                if args.warmup > 0:
                    job = RoundJob(round_no, p, 1, server.ws_base, [[ids[i % len(ids)] for i in range(args.warmup)]],
                                   args.protocol, warmup=True, token=args.token)  # fmt: skip
                    res, _ = run(job)
                    warm += res.records
                    client_cpu += res.client_cpu_s
                    round_no += 1
            for n in args.concurrency:
                active = [p for p in available if stopped[p] is None]
                if not active:
                    break
                rounds = level_rounds(ids, n, args.turns_per_session)
                run_bar.add_total(sum(len(r) for r in rounds) * len(active))
                stagger = (mean_case_s + REPLY_ALLOWANCE_S) / n
                for r, chunk in enumerate(rounds):
                    order = active[r % len(active):] + active[: r % len(active)]
                    for p in order:
                        job = RoundJob(round_no, p, n, server.ws_base, split_sessions(chunk, n), args.protocol,
                                       stagger_s=stagger, token=args.token)  # fmt: skip
                        res, usage = run(job)
                        cells.setdefault((p, n), Cell()).add(res, usage)
                        client_cpu += res.client_cpu_s
                        round_no += 1
                for p in active:
                    p95 = summarize(cells[(p, n)].records)["latency_ms"]["p95"]
                    if p95 is not None and p95 > P95_LIMIT_MS:
                        stopped[p] = n
        run_bar.close()
        note = getattr(server, "metrics_note", "")
        if note:
            server_meta["note"] = note
    finally:
        server.close()
    wall = time.perf_counter() - t_run
    records = warm + [r for c in cells.values() for r in c.records]
    bundles = bundle_info()
    results: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "commit": git_commit(),
            "machine": machine_info(),
            "protocol": args.protocol,
            "pipelines": available,
            "unavailable": unavailable,
            "server": server_meta,
            "bundles": bundles,
            "pipeline_bundles": {
                p: [str(b.get("name") or b["dir"]) for b in bundles if b.get("kind") in PIPELINE_BUNDLES.get(p, ())]
                for p in available
            },
            "testset": ts.meta,
            "concurrency": args.concurrency,
            "turns_per_session": args.turns_per_session,
            "warmup_turns": len(warm),
            "warmup_per_pipeline": args.warmup,
            "stopped_at": stopped,
            "client_cpu": client_cpu / wall if wall > 0 else None,
            "wall_s": wall,
            "argv": sys.argv,
        },
        "cells": [
            {
                "pipeline": p,
                "concurrency": n,
                "summary": summarize(c.records),
                "server_cpu": None if c.server_cpu_s is None or c.server_wall_s <= 0 else c.server_cpu_s / c.server_wall_s,
                "server_rss": c.server_rss,
                "client_cpu": c.client_cpu_s / c.client_wall_s if c.client_wall_s > 0 else None,
            }
            for (p, n), c in sorted(cells.items(), key=lambda kv: (available.index(kv[0][0]), kv[0][1]))
        ],
        "per_voice": {p: group_summary([r for r in records if r.pipeline == p], "voice") for p in available},
        "per_kind": {p: group_summary([r for r in records if r.pipeline == p], "kind") for p in available},
        "turns": [record_dict(r) for r in records],
    }
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``rejoinder bench``; returns the exit status."""
    ap = build_parser()
    args = ap.parse_args(argv)
    unknown = set(args.kinds) - set(KINDS)
    if unknown or not args.kinds:
        ap.error(f"--kinds must be among {','.join(KINDS)}")
    if args.cases < 1 or args.warmup < 0 or args.turns_per_session < 1:
        ap.error("--cases and --turns-per-session must be >= 1, --warmup >= 0")
    out: Path = args.out or ROOT / "reports" / time.strftime("bench-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    try:
        results = run_bench(args, out)
    except (RuntimeError, TimeoutError, OSError) as e:
        print(f"rejoinder bench: {e}", file=sys.stderr)
        return 1
    paths = report_mod.write_all(results, out, plots=not args.no_plots)
    print(report_mod.table(results))
    print(f"report: {paths['markdown']}\nturns:  {paths['json']}")
    if not results["meta"]["pipelines"]:
        print("rejoinder bench: none of the requested pipelines is available", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
