"""Latency of a text LM bundle on this machine (a benchmark, not a test).

    python -m models.training.bench_lm                     # bundles/textlm, 1 thread, CPU

Warms up, then times with ``time.perf_counter`` over held-out questions:
prefill (the prompt, one graph run), time to first token (prefill plus the
first piece), per-token decode steps and whole replies. Prints percentiles in
milliseconds with the machine and runtime settings.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.domain import generate_corpus, split_of
from models.runtime import RuntimeOptions
from models.textlm import DEFAULT_BUNDLE, TextLM, prompt_ids


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _pcts(xs: list[float]) -> str:
    a = np.asarray(xs) * 1000.0
    return (
        f"p50 {np.percentile(a, 50):6.3f}  p90 {np.percentile(a, 90):6.3f}  "
        f"p99 {np.percentile(a, 99):6.3f} ms  (n={len(a)})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)

    options = RuntimeOptions(device=args.device, intra_op_threads=args.threads)
    lm = TextLM(args.bundle, options=options)
    questions = [e.question for e in split_of(generate_corpus(0), "heldout")][: args.questions]
    state = lm.new_state()
    for q in questions[:10]:  # warm-up
        lm.generate(q, state=state)

    prefill, first, decode, reply, prompt_lens, reply_lens = [], [], [], [], [], []
    for q in questions:
        prompt_lens.append(len(prompt_ids(lm.tokenizer, q)))
        state.reset()
        t = time.perf_counter()
        lm.prefill(state, prompt_ids(lm.tokenizer, q))
        prefill.append(time.perf_counter() - t)

        t = time.perf_counter()
        lm.start_reply(state, q)
        lm.next_piece(state)
        first.append(time.perf_counter() - t)
        while True:
            ts = time.perf_counter()
            piece = lm.next_piece(state)
            decode.append(time.perf_counter() - ts)  # includes the final step that finds <eot>
            if piece is None:
                break
        reply.append(time.perf_counter() - t)
        reply_lens.append(len(state.reply_ids))

    print(
        f"machine: {_cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
    )
    print(
        f"runtime: onnxruntime {ort.__version__}, providers {lm.providers}, "
        f"intra-op threads {args.threads}"
    )
    print(
        f"bundle: {args.bundle} ({lm.bundle.name}), {len(questions)} held-out questions, "
        f"prompt {np.mean(prompt_lens):.1f} tokens, reply {np.mean(reply_lens):.1f} tokens (mean)"
    )
    print(f"prefill             {_pcts(prefill)}")
    print(f"time to first token {_pcts(first)}")
    print(f"decode per token    {_pcts(decode)}")
    print(f"whole reply         {_pcts(reply)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
