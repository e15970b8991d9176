"""Held-out accuracy of a text LM bundle, run through ONNX Runtime with :class:`TextLM`.

    python -m models.training.eval_lm                      # bundles/textlm, held-out split

Prints, per skill, exact-match accuracy (reply string equals the domain's
answer), text success and key-word hits (the judging rules of
BUILTIN_ASSISTANT.md), then the first few errors. Exits 1 when exact-match
accuracy is below ``--min-accuracy``.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from models.domain import generate_corpus, key_word_hit, split_of, text_success
from models.runtime import RuntimeOptions
from models.textlm import DEFAULT_BUNDLE, TextLM


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (the training seed)")
    ap.add_argument("--split", default="heldout", choices=["heldout", "train"])
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N examples")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--min-accuracy", type=float, default=0.99)
    ap.add_argument("--show-errors", type=int, default=10)
    args = ap.parse_args(argv)

    lm = TextLM(args.bundle, options=RuntimeOptions(device=args.device))
    examples = split_of(generate_corpus(args.seed), args.split)
    if args.limit:
        examples = examples[: args.limit]
    state = lm.new_state()
    exact: Counter[str] = Counter()
    success: Counter[str] = Counter()
    key: Counter[str] = Counter()
    total: Counter[str] = Counter()
    errors = []
    t0 = time.perf_counter()
    for e in examples:
        reply = lm.generate(e.question, state=state)
        total[e.skill] += 1
        exact[e.skill] += reply == e.answer
        success[e.skill] += text_success(reply, e.answer)
        key[e.skill] += key_word_hit(reply, e.key_word)
        if reply != e.answer:
            errors.append((e, reply))
    seconds = time.perf_counter() - t0

    print(f"bundle {args.bundle} ({lm.bundle.name}), split {args.split}, providers {lm.providers}")
    print(f"{'skill':15s} {'n':>5s} {'exact':>8s} {'success':>8s} {'keyword':>8s}")
    for skill in sorted(total):
        n = total[skill]
        print(
            f"{skill:15s} {n:5d} {100 * exact[skill] / n:7.2f}% {100 * success[skill] / n:7.2f}% "
            f"{100 * key[skill] / n:7.2f}%"
        )
    n = sum(total.values())
    acc = sum(exact.values()) / n
    print(
        f"{'all':15s} {n:5d} {100 * acc:7.2f}% {100 * sum(success.values()) / n:7.2f}% "
        f"{100 * sum(key.values()) / n:7.2f}%   ({seconds:.1f}s, {1000 * seconds / n:.1f} ms/question)"
    )
    for e, reply in errors[: args.show_errors]:
        print(f"  ERROR [{e.skill}] {e.question!r}: got {reply!r}, want {e.answer!r}")
    return 0 if acc >= args.min_accuracy else 1


if __name__ == "__main__":
    raise SystemExit(main())
