"""Offline quality of the cascade's front half on held-out speech.

``python -m clients.bench.asr_eval --cases 200`` takes the benchmark's
held-out test set (normal cases: held-out voices x held-out questions),
transcribes each question with the cascade's recognizer (pocketsphinx with
the domain LM), and answers the transcript with the built-in text LM. It
prints WER and task success (text success of the answer) per voice group,
so ASR errors and answer errors can be told apart from turn latency.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

from clients.bench.testset import load_or_build
from models.asr import Recognizer
from models.domain import normalize, text_success
from models.textlm import TextLM


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    r, h = ref.split(), hyp.split()
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[:], i
        for j in range(1, len(h) + 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r[i - 1] != h[j - 1]))
    return d[len(h)], len(r)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clients.bench.asr_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    ts = load_or_build(args.seed, args.cases, ("normal",),
                       progress=lambda i, what: print(f"\rsynthesizing {i}/{args.cases} {what[:40]:40}", end="", file=sys.stderr))
    print(file=sys.stderr)
    rec, lm = Recognizer(), TextLM()
    per: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])  # errors, words, successes, cases
    t0 = time.perf_counter()
    for k, case in enumerate(ts.cases):
        heard = rec.transcribe(ts.audio(case.id))
        e, n = word_errors(normalize(case.question), normalize(heard))
        ok = text_success(lm.generate(normalize(heard) or "um"), case.answer)
        for key in (case.voice.split(":")[0], "all"):
            row = per[key]
            row[0] += e
            row[1] += n
            row[2] += ok
            row[3] += 1
        print(f"\r{k + 1}/{len(ts.cases)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    print(f"cascade ASR + text LM on {len(ts.cases)} held-out cases ({time.perf_counter() - t0:.0f} s)")
    print("| voice | cases | WER | task success |\n|---|---|---|---|")
    for key in sorted(per, key=lambda k: (k == "all", k)):
        errs, words, succ, c = per[key]
        print(f"| {key} | {c:.0f} | {errs / max(words, 1):.3f} | {succ / max(c, 1):.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
