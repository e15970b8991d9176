"""Compare two benchmark runs case by case.

    python -m clients.bench.compare reports/bench-a reports/bench-b [--pipeline fused] [--n 1]

Both runs must use the same test set (same ``--cases``, ``--seed`` and kinds), so
each case is the same audio in both. For every case answered in both runs (a
takeover or a missing turn is left out; a failure counts as its 4000 ms), the
change is B's turn latency minus A's. The median change and its 95 % bootstrap
interval over the cases are printed, overall and per case kind. A paired
comparison sees far smaller changes than two p50s do, but two runs of the same
code still differ by some ms per case (timing), so compare against a rerun too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from clients.bench.metrics import bootstrap_interval


def load_turns(run: Path, pipeline: str, concurrency: int) -> dict[str, dict[str, Any]]:
    """The counted turns of one cell of ``run`` (a folder or its results.json), by case id."""
    path = run / "results.json" if run.is_dir() else run
    turns = json.loads(path.read_text())["turns"]
    return {
        t["case_id"]: t
        for t in turns
        if t["pipeline"] == pipeline and t["concurrency"] == concurrency and not t["warmup"]
    }


def paired_changes(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """B minus A latency per case answered in both, grouped by kind (and ``all``)."""
    out: dict[str, list[float]] = {"all": []}
    for case in sorted(a.keys() & b.keys()):
        va, vb = a[case]["percentile_ms"], b[case]["percentile_ms"]
        if va is None or vb is None:
            continue
        d = float(vb) - float(va)
        out["all"].append(d)
        out.setdefault(a[case]["kind"], []).append(d)
    return out


def summary_lines(changes: dict[str, list[float]]) -> list[str]:
    lines = []
    for kind, ds in changes.items():
        if not ds:
            lines.append(f"{kind:8s} no case answered in both runs")
            continue
        ci = bootstrap_interval(ds, 50)
        span = "-" if ci is None else f"{ci[0]:+.1f} .. {ci[1]:+.1f}"
        lines.append(f"{kind:8s} n {len(ds):3d}  median change {float(np.median(ds)):+.1f} ms  "
                     f"(95 % interval {span})")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="the first run (folder or results.json)")
    ap.add_argument("b", type=Path, help="the second run")
    ap.add_argument("--pipeline", default="fused")
    ap.add_argument("--n", type=int, default=1, help="concurrency level (default: 1)")
    args = ap.parse_args(argv)
    a = load_turns(args.a, args.pipeline, args.n)
    b = load_turns(args.b, args.pipeline, args.n)
    if not a or not b:
        print(f"no {args.pipeline} turns at N={args.n} in {'both runs' if not a and not b else 'one run'}")
        return 1
    print(f"{args.b} minus {args.a}: {args.pipeline}, N={args.n}, turn latency per case")
    print("\n".join(summary_lines(paired_changes(a, b))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
