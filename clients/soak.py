"""Load and soak test on loopback: real sessions, hostile clients, churn.

``python -m clients.soak --duration 600 --sessions 2 --hostile 4`` starts a
server (``rejoinder serve`` on a free loopback port, or ``--url``), then:

1. **Baseline** (first third): ``--sessions`` real conversations, each a
   real-time paced question and its reply, turn after turn.
2. **Under attack** (the rest): the same sessions while ``--hostile`` clients
   send garbage, odd binary, audio floods, ping floods without reading,
   and open and drop sessions all the time (churn).

It reports the real sessions' turn latency (LATENCY.md) in both phases,
the server's RSS as a slope over time under churn and as growth from the
first to the last sample after warm-up, open file descriptors, error events
by code, and whether every sample each real client sent was accepted by the
server (``pong.input_samples``). Everything is bounded in count and time and
talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import connect as ws_connect

from clients.client import connect
from clients.groundtruth import espeak

QUESTIONS = ["what is seven plus five", "how do you spell house", "what is the capital of france"]


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"baseline": [], "attack": []})
    failures: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    hostile_actions: Counter[str] = field(default_factory=Counter)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (t, MB)
    fds: list[tuple[float, int]] = field(default_factory=list)
    phase: str = "baseline"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_stats(pid: int) -> tuple[float, int]:
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


async def real_session(url: str, audio: list[np.ndarray], stats: Stats, stop: float, pipeline: str | None) -> None:
    settings = {"pipeline": pipeline} if pipeline else None
    async with connect(url, session=settings) as c:
        sent = 0
        k = 0
        while time.monotonic() < stop:
            turn = await c.turn(audio[k % len(audio)], 16000)
            k += 1
            sent += turn.send.samples
            if turn.latency_ms is None or turn.takeover:
                stats.failures[stats.phase] += 1
            else:
                stats.latencies[stats.phase].append(turn.latency_ms)
            for e in turn.events:
                if e.type == "error":
                    stats.errors[str(e.get("code"))] += 1
        pong = await c.request("ping", "pong")
        accepted = int(pong.get("input_samples", -1))
        if accepted != sent:
            stats.lost.append(f"sent {sent} samples, server accepted {accepted}")


async def hostile(url: str, stats: Stats, stop: float, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < stop:
        action = rng.choice(["garbage", "binary", "flood", "pings", "churn"])
        stats.hostile_actions[action] += 1
        try:
            async with ws_connect(url, max_queue=4, open_timeout=5, close_timeout=1) as ws:
                await ws.recv()
                if action == "garbage":
                    for _ in range(50):
                        await ws.send(rng.choice(["{", "[]", '{"type":"x"}', "\x00" * 10, '{"type":"input.text"}']))
                elif action == "binary":
                    for _ in range(50):
                        await ws.send(os.urandom(rng.randrange(1, 4000) | 1))
                elif action == "flood":
                    for _ in range(40):  # ~80 s of audio as fast as possible
                        await ws.send(os.urandom(64000))
                elif action == "pings":
                    ws.transport.pause_reading()
                    for i in range(3000):
                        await ws.send(json.dumps({"type": "ping", "event_id": f"h{i}"}))
                # churn: open and drop at once
        except Exception:  # noqa: BLE001 - a hostile client is expected to be cut off
            stats.hostile_actions[action + "_cut"] += 1
        await asyncio.sleep(rng.uniform(0.05, 0.3))


async def monitor(pid: int, stats: Stats, stop: float, t0: float, every: float) -> None:
    while time.monotonic() < stop:
        rss, fds = _proc_stats(pid)
        stats.rss.append((time.monotonic() - t0, rss))
        stats.fds.append((time.monotonic() - t0, fds))
        await asyncio.sleep(every)


def pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    t = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    return float(np.polyfit(t, y, 1)[0] * 60)


def report(stats: Stats, args: argparse.Namespace, warmup_s: float) -> tuple[str, bool]:
    """Memory is judged from ``warmup_s`` on: by then the attack's connections are all in play."""
    lines = [f"# Soak report ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"machine: {os.uname().nodename} {os.cpu_count()} CPUs; duration {args.duration:g} s; "
             f"{args.sessions} real sessions, {args.hostile} hostile clients; pipeline {args.pipeline or 'default'}", "",
             "| phase | turns | failures | p50 ms | p95 ms | max ms |", "|---|---|---|---|---|---|"]
    for ph in ("baseline", "attack"):
        xs = stats.latencies[ph]
        f = stats.failures[ph]

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"

        lines.append(f"| {ph} | {len(xs) + f} | {f} | {fmt(pct(xs, 50))} | {fmt(pct(xs, 95))} | {fmt(max(xs) if xs else None)} |")
    after = [p for p in stats.rss if p[0] >= warmup_s]
    growth = 100 * (after[-1][1] - after[0][1]) / after[0][1] if len(after) >= 2 else 0.0
    slope = slope_mb_per_min(after)
    fd_first, fd_last = (stats.fds[0][1], stats.fds[-1][1]) if stats.fds else (0, 0)
    ok = growth <= 5.0 and not stats.lost
    lines += ["", f"RSS after {warmup_s:g} s warm-up: {after[0][1]:.1f} MB -> {after[-1][1]:.1f} MB "
              f"({growth:+.1f} %), slope {slope:+.2f} MB/min under churn" if after else "RSS: no samples",
              f"file descriptors: {fd_first} -> {fd_last}",
              f"hostile actions: {dict(stats.hostile_actions)}",
              f"error events seen by real sessions: {dict(stats.errors) or 'none'}",
              f"nothing lost: {'yes' if not stats.lost else stats.lost}",
              f"verdict: {'PASS' if ok else 'FAIL'} (memory growth <= 5 %, no lost samples)"]
    return "\n".join(lines) + "\n", ok


async def run(args: argparse.Namespace) -> tuple[str, bool]:
    proc = None
    if args.url:
        url, pid = args.url, args.pid
    else:
        port = _free_port()
        cmd = [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--max-sessions", "64"]
        if args.pipelines:
            cmd += ["--pipelines", args.pipelines]
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
        pid, url = proc.pid, f"ws://127.0.0.1:{port}/v1/native"
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):  # noqa: ASYNC210
                    break
            except OSError:
                await asyncio.sleep(0.2)
    if pid is None:
        raise SystemExit("--pid is needed with --url to watch the server's memory")
    audio = [espeak(q) for q in QUESTIONS]
    stats = Stats()
    t0 = time.monotonic()
    stop = t0 + args.duration
    attack_at = t0 + args.duration / 3
    try:
        mon = asyncio.create_task(monitor(pid, stats, stop, t0, args.sample_every))
        reals = [asyncio.create_task(real_session(url, audio, stats, stop, args.pipeline)) for _ in range(args.sessions)]
        await asyncio.sleep(max(0.0, attack_at - time.monotonic()))
        stats.phase = "attack"
        hostiles = [asyncio.create_task(hostile(url, stats, stop, i)) for i in range(args.hostile)]
        done = await asyncio.gather(*reals, *hostiles, return_exceptions=True)
        for d in done:
            if isinstance(d, BaseException):
                stats.lost.append(f"a session crashed: {d!r}")
        await mon
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
    attack_s = args.duration / 3
    text, ok = report(stats, args, warmup_s=attack_s + min(60.0, args.duration / 6))
    return text, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clients.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds in all (default 600)")
    ap.add_argument("--sessions", type=int, default=2, help="real sessions")
    ap.add_argument("--hostile", type=int, default=4, help="hostile clients during the attack phase")
    ap.add_argument("--pipelines", default="echo", help="--pipelines for the spawned server")
    ap.add_argument("--pipeline", default=None, help="pipeline the real sessions ask for")
    ap.add_argument("--url", default=None, help="use a running server instead of spawning one")
    ap.add_argument("--pid", type=int, default=None, help="that server's pid (for RSS and fds)")
    ap.add_argument("--sample-every", type=float, default=5.0)
    ap.add_argument("--out", default="reports/soak.md")
    args = ap.parse_args(argv)
    if args.duration > 3600 or args.sessions > 32 or args.hostile > 32:
        ap.error("bounded: duration <= 3600 s, sessions and hostile <= 32")
    text, ok = asyncio.run(run(args))
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
