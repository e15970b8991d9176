"""``rejoinder talk question.wav --out reply.wav``: one measured turn from a WAV file.

Streams the file at real-time pace like a live microphone (at least 300 ms
of leading silence, then silence until the reply has played, or 4 s with no
reply), prints what the server heard, what it answered and the turn latency
(../shared/LATENCY.md), and writes the reply audio.

Call :func:`main` with the arguments after ``talk`` (``server/cli.py`` wires it
as a subcommand), or ``await talk(...)`` from async code.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
import soundfile as sf

from clients.client import DEFAULT_URL, ConnectError, ServerError, Turn, connect
from streaming.audio import SUPPORTED_RATES


def build_parser(prog: str = "rejoinder talk") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Say a WAV file to a Rejoinder server at real-time pace and save the spoken reply.",
    )
    ap.add_argument("question", type=Path, help="WAV (or any libsndfile format) with the user's question")
    ap.add_argument("--out", type=Path, required=True, help="where to write the reply WAV")
    ap.add_argument("--url", default=DEFAULT_URL, help=f"server websocket URL (default: {DEFAULT_URL})")
    ap.add_argument("--pipeline", help="pipeline to use (default: the server's; see session.created)")
    ap.add_argument("--token", help="bearer token, when the server requires one")
    return ap


def read_question(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 audio and its rate."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1).astype(np.float32), int(rate)


async def talk(
    audio: np.ndarray,
    rate: int,
    *,
    url: str = DEFAULT_URL,
    pipeline: str | None = None,
    token: str | None = None,
) -> Turn:
    """One turn: connect, pick the pipeline, send at ``rate`` if the server takes it, measure."""
    session: dict[str, object] = {}
    if pipeline:
        session["pipeline"] = pipeline
    if rate in SUPPORTED_RATES:
        session["input_sample_rate"] = rate  # no resampling on our side
    async with connect(url, token=token, session=session) as client:
        return await client.turn(audio, rate)


def report(turn: Turn, out: TextIO) -> None:
    """Print the transcript and the latency figures of one turn."""
    print(f"user:      {turn.user_text or '(no transcript)'}", file=out)
    print(f"assistant: {turn.reply_text or '(no transcript)'}", file=out)
    t = turn.timings
    stages = ", ".join(f"{k} {v:.0f} ms" for k, v in t.items() if v is not None)
    if turn.latency_ms is None:
        print("turn latency: no audible reply within 4 s (a failed turn)", file=out)
    elif turn.takeover:
        print(f"turn latency: {turn.latency_ms:.0f} ms: the reply began before you finished (takeover)", file=out)
    else:
        print(f"turn latency: {turn.latency_ms:.0f} ms  (pipeline {turn.pipeline}, status {turn.status})", file=out)
    if stages:
        print(f"server timings: {stages}", file=out)
    print(
        f"sent {turn.send.frames} frames, late by {turn.send.mean_late_ms:.1f} ms on average "
        f"({turn.send.max_late_ms:.1f} ms max); underruns: {len(turn.underruns)}",
        file=out,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``rejoinder talk``; returns the exit status (0: an audible reply)."""
    args = build_parser().parse_args(argv)
    try:
        audio, rate = read_question(args.question)
    except (OSError, RuntimeError) as e:
        print(f"rejoinder talk: cannot read {args.question}: {e}", file=sys.stderr)
        return 2
    try:
        turn = asyncio.run(talk(audio, rate, url=args.url, pipeline=args.pipeline, token=args.token))
    except ConnectError as e:
        print(f"rejoinder talk: {e}", file=sys.stderr)
        return 1
    except ServerError as e:
        print(f"rejoinder talk: the server refused: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # no speech in the file
        print(f"rejoinder talk: {args.question}: {e}", file=sys.stderr)
        return 2
    report(turn, sys.stdout)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(args.out, turn.reply_audio, turn.reply_rate, subtype="PCM_16")
    print(f"reply: {args.out} ({len(turn.reply_audio) / turn.reply_rate:.2f} s at {turn.reply_rate} Hz)")
    return 0 if turn.latency_ms is not None and not turn.takeover else 1


if __name__ == "__main__":
    raise SystemExit(main())
