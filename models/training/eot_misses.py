"""Why the end-of-turn rule misses 200 ms: each complete question sorted by cause.

    python -m models.training.eot_misses [--bundle bundles/fused] [--speech CACHE]

Replays every held-out utterance as ``eot_tune`` does (the bundle's own rule from its
manifest: lookahead, level gate, head threshold, VAD silence; the late tier does not
matter within 200 ms) and puts each complete question in one class:

* ``within``: the rule fired 0-200 ms after the speech end;
* ``early``: it fired before the speech end (in a pause or a gap);
* ``slow_pause``: even a head at 1.0 after the speech end would not fire by 200 ms,
  because the VAD pause (with the level gate) is not confirmed by then;
* ``unsure``: the pause was in time, but the head stayed under the threshold for the
  first 200 ms after the end;
* ``other``: the head was sure and the pause confirmed, but not both in the same window.

The report gives the classes overall, by SNR (the speech's 90th-percentile 10 ms level
over the trailing background's median), skill and voice group, and the unsure items'
head values.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from models.fused import DEFAULT_BUNDLE, FusedModel
from models.training.eot_tune import (
    LowSnr,
    Trace,
    before_fillers,
    fire_window,
    load_items,
    manifest_rule,
    score,
    trace_item,
)
from models.training.eval_fused import write_report

CLASSES = ("within", "early", "slow_pause", "unsure", "other")


def classify(tr: Trace, threshold: float, min_silence: int, within_ms: float = 200.0,
             low_snr: LowSnr | None = None) -> str:
    """The class of one complete question's trace (see the module docstring)."""
    end = int(tr.item["end"])
    k = fire_window(tr, threshold, min_silence, None, low_snr)
    if k is not None and tr.ends[k] < end:
        return "early"
    if k is not None and (tr.ends[k] - end) / 16.0 <= within_ms:
        return "within"
    after = tr.ends >= end
    sure = dataclasses.replace(tr, head=after.astype(float))  # a head at 1 from the end on
    k1 = fire_window(sure, 0.5, min_silence, None, low_snr)
    if k1 is None or (sure.ends[k1] - end) / 16.0 > within_ms:
        return "slow_pause"
    span = after & (tr.ends <= end + within_ms * 16)
    if not span.any() or float(tr.head[span].max()) < threshold:
        return "unsure"
    return "other"


def early_where(tr: Trace, threshold: float, min_silence: int, low_snr: LowSnr | None = None
                ) -> tuple[float, str] | None:  # fmt: skip
    """For a fire before the speech end: how long before it (ms) and where: ``pause before
    fillers`` (the question was complete when it began), ``pause`` (more words to come) or
    ``gap`` (outside the labelled pause: a short gap, or a reverb tail); None otherwise."""
    k = fire_window(tr, threshold, min_silence, None, low_snr)
    end = int(tr.item["end"])
    if k is None or tr.ends[k] >= end:
        return None
    fire, pause = int(tr.ends[k]), tr.item.get("pause")
    where = "gap"
    if pause is not None and pause[0] <= fire < pause[1]:
        where = "pause before fillers" if before_fillers(tr.item) else "pause"
    return (end - fire) / 16.0, where


def snr_db(it: dict[str, Any]) -> float:
    """Speech level (90th percentile of 10 ms windows) over the trailing background's median."""
    pcm = it["pcm"].astype(np.float32) / 32767
    speech, back = pcm[it["start"] : it["end"]], pcm[it["end"] + 4000 :]
    if len(speech) < 160 or len(back) < 320:
        return float("nan")

    def levels(x: np.ndarray) -> np.ndarray:
        n = len(x) // 160 * 160
        return np.sqrt(np.mean(x[:n].reshape(-1, 160) ** 2, axis=1) + 1e-12)

    return float(20 * np.log10(np.percentile(levels(speech), 90) / (np.median(levels(back)) + 1e-9)))


def table(title: str, groups: dict[str, Counter[str]]) -> list[str]:
    out = [f"| {title} | n | " + " | ".join(CLASSES) + " |", "|---|---|" + "---|" * len(CLASSES)]
    for name, c in groups.items():
        n = sum(c.values())
        out.append(f"| {name} | {n} | " + " | ".join(f"{c[k] / n:.3f}" for k in CLASSES) + " |")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--speech", type=Path, default=Path("data/fused/speech_eval_s0_n480.npy"))
    ap.add_argument("--report", type=Path, default=Path("reports/eot_misses.md"))
    ap.add_argument("--gate-low-snr-db", type=float, default=None,
                    help="try the level gate with this low_snr_margin_db (streaming.level.QuietGate)")
    args = ap.parse_args(argv)
    from streaming.vad import SileroVad

    fm, vad = FusedModel(args.bundle), SileroVad()
    thr, sil, late, low = manifest_rule(fm)
    items = load_items((args.speech,))
    rows, traces = [], []
    for i, it in enumerate(items):
        tr = trace_item(fm, vad, it, fm.lookahead_ms, gate_below=fm.level_gate,
                        gate_depth_db=fm.level_gate_depth_db,
                        gate_low_snr_db=args.gate_low_snr_db)  # fmt: skip
        traces.append(tr)
        if it["skill"] == "incomplete":
            continue
        span = (tr.ends >= it["end"]) & (tr.ends <= it["end"] + 3200)
        head = float(tr.head[span].max()) if span.any() else 0.0
        rows.append((classify(tr, thr, sil, low_snr=low), snr_db(it), it, head))
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(items)} items", flush=True)
    sc = score(traces, thr, sil, late, low)
    by_all: dict[str, Counter[str]] = {"all": Counter(r[0] for r in rows)}
    bands = [(-99, 20), (20, 25), (25, 30), (30, 99)]
    by_snr = {f"{lo}-{hi} dB" if lo > -99 and hi < 99 else (f"under {hi} dB" if lo == -99 else f"{lo} dB and up"):
              Counter(r[0] for r in rows if lo <= r[1] < hi) for lo, hi in bands}  # fmt: skip
    by_skill = {s: Counter(r[0] for r in rows if r[2]["skill"] == s)
                for s in sorted({r[2]["skill"] for r in rows})}  # fmt: skip
    by_group = {g: Counter(r[0] for r in rows if r[2]["group"] == g)
                for g in sorted({r[2]["group"] for r in rows})}  # fmt: skip
    unsure = sorted((r for r in rows if r[0] == "unsure"), key=lambda r: r[3])
    lines = [f"# End-of-turn misses ({args.bundle}, {args.speech.name})", "",
             f"Rule from the manifest: head >= {thr:g}, {sil} VAD windows of silence, lookahead "
             f"{fm.lookahead_ms:g} ms, level gate {fm.level_gate:g} at {fm.level_gate_depth_db:g} dB"
             f"{'' if args.gate_low_snr_db is None else f' (low-SNR margin {args.gate_low_snr_db:g} dB)'}. "
             f"{len(rows)} complete questions.", "",
             f"Rule with its late tier: within 200 ms {sc['within200']:.3f}, before the end {sc['early']:.3f}, "
             f"fires in pauses {sc['pause_fire']:.3f}, incomplete questions answered before the fallback "
             f"{sc['incomplete_fire']:.3f}, delay p50 {sc['p50']:.0f} p90 {sc['p90']:.0f} p95 {sc['p95']:.0f} ms.",
             ""]  # fmt: skip
    for title, groups in (("", by_all), ("SNR", by_snr), ("skill", by_skill), ("voice group", by_group)):
        lines += table(title, {k: v for k, v in groups.items() if v}) + [""]
    if unsure:
        heads = np.array([r[3] for r in unsure])
        lines += [f"Unsure items' highest head in the first 200 ms after the end: p10 "
                  f"{np.percentile(heads, 10):.2f}, p50 {np.percentile(heads, 50):.2f}, p90 "
                  f"{np.percentile(heads, 90):.2f}.", ""]  # fmt: skip
        lines += [f"- {r[3]:.2f} `{r[2]['text']}` ({r[2]['group']})" for r in unsure[:30]]
    early = sorted((w, tr.item) for tr in traces if tr.item["skill"] != "incomplete"
                   and (w := early_where(tr, thr, sil, low)) is not None)  # fmt: skip
    if early:
        where = Counter(w[1] for w, _ in early)
        lines += ["", f"Early fires ({len(early)}), by where: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(where.items())) + "; how long before the end:", ""]
        lines += [f"- {w[0]:.0f} ms, {w[1]}: `{it['text']}` ({it['group']})" for w, it in early]
    write_report(args.report, lines)


if __name__ == "__main__":
    main()
