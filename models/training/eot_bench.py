"""The bench's questions replayed offline through bundles' end-of-turn rules, case by case.

    python -m models.training.eot_bench [--bundle B ...] [--cases 160] [--thresholds 0.95,0.97]

``rejoinder bench`` times whole turns over a websocket: 160 cases take ~20 minutes, and
the machine's drift moves every case by 10-90 ms between runs. Nearly all of a fused
turn's latency is the end of turn (`response.done` stages: endpoint ~190 of ~203 ms), and
that part is deterministic. This replays the bench test set's audio (the first question of
every case, its noise and pauses included) as ``eot_tune`` replays speech: Silero VAD, the
session's level gate, the lookahead copy and the head, each case starting at the phase of
the server's VAD grid that the bench client aligns it to (``clients.bench.runner.case_phase``).
Per bundle and head threshold it reports the endpoint delay (the rule's fire minus the
speech end): within 200 ms, before the speech end (a takeover in the bench), late (over
600 ms: the late tier or the 1.5 s fallback), p50 and p95, by case kind; and the cases
where two bundles' delays differ. Rules come from each manifest unless ``--thresholds``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.fused import DEFAULT_BUNDLE, FusedModel
from models.training.eot_tune import (
    FALLBACK_MS,
    PREFIX,
    WIN,
    Trace,
    fire_window,
    manifest_rule,
    trace_item,
)
from models.training.eval_fused import write_report

if TYPE_CHECKING:
    from clients.bench.testset import Case

LATE_MS = 600.0  # a fire this long after the speech end came from the late tier or the fallback


def bench_item(case: Case, audio: np.ndarray, phase: int) -> dict[str, Any]:
    """A test-set case as a speech item: float audio at 16 kHz behind at least the session's
    300 ms prefix of silence, so that it starts ``phase`` samples past a VAD window boundary."""
    if case.rate != 16000:
        raise ValueError(f"case {case.id}: the test set is at {case.rate} Hz, not 16000")
    lead = PREFIX + (phase - PREFIX) % WIN
    pcm = np.concatenate([np.zeros(lead, np.float32), np.asarray(audio, np.float32)])
    pause = (case.pauses[0][0] + lead, case.pauses[0][1] + lead) if case.pauses else None
    return {"pcm": (np.clip(pcm, -1.0, 1.0) * 32767).astype(np.int16), "id": case.id,
            "kind": case.kind, "text": case.question, "skill": case.skill, "voice": case.voice,
            "start": case.speech_start + lead, "end": case.speech_end + lead, "pause": pause}  # fmt: skip


def delay_ms(tr: Trace, rule: tuple[float, int, Any, Any]) -> float:
    """The rule's fire minus the speech end (ms); FALLBACK_MS if it never fires in the trace."""
    k = fire_window(tr, *rule)
    return FALLBACK_MS if k is None else (float(tr.ends[k]) - tr.item["end"]) / 16.0


def summary(delays: np.ndarray) -> dict[str, float]:
    d = np.asarray(delays, float)
    return {"n": len(d), "within200": float(np.mean((d >= 0) & (d <= 200))),
            "early": float(np.mean(d < 0)), "late": float(np.sum(d > LATE_MS)),
            "p50": float(np.percentile(d, 50)), "p95": float(np.percentile(d, 95))}  # fmt: skip


def rows(name: str, kinds: list[str], d: np.ndarray) -> list[str]:
    out = []
    for kind in ["all", *sorted(set(kinds))]:
        sel = np.array([kind in ("all", k) for k in kinds])
        s = summary(d[sel])
        out.append(f"| {name} | {kind} | {s['n']} | {s['within200']:.3f} | {s['early']:.3f} | "
                   f"{s['late']:.0f} | {s['p50']:.0f} | {s['p95']:.0f} |")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundle", type=Path, action="append",
                    help=f"fused bundle directory (repeat to compare; default {DEFAULT_BUNDLE})")
    ap.add_argument("--cases", type=int, default=160, help="the bench test set's size (--cases of rejoinder bench)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--thresholds", default="", help="head thresholds to replay instead of each manifest's")
    ap.add_argument("--report", type=Path, default=Path("reports/eot_bench.md"))
    args = ap.parse_args(argv)
    from clients.bench.runner import case_phase
    from clients.bench.testset import load_or_build
    from streaming.vad import SileroVad

    made = [0]

    def progress(n: int, case_id: str) -> None:
        made[0] += n
        print(f"  test set: {made[0]}/{args.cases} cases synthesized ({case_id})", flush=True)

    ts = load_or_build(seed=args.seed, n_cases=args.cases, progress=progress)
    items = [bench_item(c, ts.audio(c.id), case_phase(c.id, WIN)) for c in ts.cases]
    kinds = [it["kind"] for it in items]
    vad = SileroVad()
    lines = [f"# End of turn on the bench's questions (test set `{ts.key}`, {len(items)} cases)", "",
             "Endpoint delay = the rule's fire minus the speech end, replayed offline "
             "(`python -m models.training.eot_bench`). Before the end: a takeover in the bench; "
             f"late: over {LATE_MS:.0f} ms (late tier or fallback).", "",
             "| bundle, rule | kind | n | within 200 ms | before the end | late | p50 ms | p95 ms |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    per_rule: dict[str, np.ndarray] = {}
    for bundle in args.bundle or [DEFAULT_BUNDLE]:
        fm = FusedModel(bundle)
        traces = []
        for i, it in enumerate(items):
            traces.append(trace_item(fm, vad, it, fm.lookahead_ms, gate_below=fm.level_gate,
                                     gate_depth_db=fm.level_gate_depth_db))  # fmt: skip
            if (i + 1) % 40 == 0:
                print(f"  {bundle}: {i + 1}/{len(items)} cases", flush=True)
        thr, sil, late, low = manifest_rule(fm)
        for t in [float(x) for x in args.thresholds.split(",") if x] or [thr]:
            name = f"{bundle} >= {t:g}"
            per_rule[name] = np.array([delay_ms(tr, (t, sil, late, low)) for tr in traces])
            lines += rows(name, kinds, per_rule[name])
    names = list(per_rule)
    if len(names) > 1:
        a, b = names[0], names[-1]
        lines += ["", f"Cases whose delay differs by more than 100 ms, `{a}` -> `{b}`:", ""]
        for it, x, y in zip(items, per_rule[a], per_rule[b], strict=True):
            if abs(x - y) > 100:
                lines.append(f"- {it['id']} ({it['voice']}) `{it['text']}`: {x:.0f} -> {y:.0f} ms")
    write_report(args.report, lines)


if __name__ == "__main__":
    main()
