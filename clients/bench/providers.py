"""The fused model on each ONNX Runtime provider: same answers, and where the time goes.

``python -m clients.bench.providers --specs cpu,cuda`` feeds the benchmark's
normal and pause cases through :class:`models.fused.FusedModel` and the codec
decoder in-process, once per spec, and reports per-stage compute time and how
far each spec's results are from the first one's (reply text, end-of-turn head,
codec tokens). A spec is ``cpu`` or ``cuda``, optionally with the CUDA
provider's convolution search: ``cuda:EXHAUSTIVE``, ``cuda:HEURISTIC`` (our
default) or ``cuda:DEFAULT``. It needs no server; turn latency lives in
``python -m clients.bench``.

Stages (ms per call): ``push`` 80 ms of user audio plus the head, ``look`` a
lookahead copy with 96-288 ms of silence, ``start`` closing the turn and the
first reply piece, ``latent`` the audio head for the whole reply, ``tokens``
that plus the codebook lookup, ``codec`` one 2-token codec chunk.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clients.bench.testset import DEFAULT_CACHE, TestSet, load_or_build
from models.codec import CodecDecoder
from models.fused import FusedModel, FusedOptions
from models.runtime import RuntimeOptions

STAGES = ("push", "look", "start", "latent", "tokens", "codec")
CHUNK = 1280  # 80 ms at 16 kHz


@dataclass
class SpecRun:
    spec: str
    providers: list[str]
    times: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    replies: dict[str, str] = field(default_factory=dict)
    heads: dict[str, np.ndarray] = field(default_factory=dict)
    tokens: dict[str, np.ndarray] = field(default_factory=dict)


def runtime_for(spec: str, threads: int = 1) -> RuntimeOptions:
    device, _, search = spec.partition(":")
    ro = RuntimeOptions(device=device, intra_op_threads=threads)
    return dataclasses.replace(ro, cudnn_conv_algo_search=search) if search else ro


def run_spec(spec: str, testset: TestSet, case_ids: list[str], bundles: Path, threads: int = 1) -> SpecRun:
    ro = runtime_for(spec, threads)
    model = FusedModel(bundles / "fused", options=FusedOptions(runtime=ro))
    codec = CodecDecoder(bundles / "codec", options=ro)
    run = SpecRun(spec, list(model.lm.get_providers()))

    @contextmanager
    def timed(stage: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        run.times[stage].append((time.perf_counter() - t) * 1e3)

    for cid in case_ids:
        pcm = testset.audio(cid).astype(np.float32)
        st = model.new_state()
        heads = []
        for n, i in enumerate(range(0, len(pcm), CHUNK)):
            with timed("push"):
                model.push_audio(st, pcm[i:i + CHUNK])
            heads.append(model.end_of_turn_probability(st))
            if n % 5 == 4:
                with timed("look"):
                    model.lookahead(st, np.zeros(16 * (96 + 32 * (n % 7)), np.float32))
        with timed("start"):
            model.start_reply(st)
            model.next_text_piece(st)
        while model.next_text_piece(st) is not None:
            pass
        reply = model.reply_text(st)
        with timed("latent"):
            model.latent_for(reply)
        with timed("tokens"):
            tokens = model.audio_tokens_for(reply)
        stream = codec.new_stream()
        for j in range(0, tokens.shape[1], 2):
            with timed("codec"):
                codec.decode(stream, tokens[:, j:j + 2])
        run.replies[cid], run.heads[cid], run.tokens[cid] = reply, np.array(heads), tokens
    return run


def compare(a: SpecRun, b: SpecRun) -> dict[str, float]:
    """How far ``b`` is from ``a`` on the cases both ran."""
    ids = [c for c in a.replies if c in b.replies]
    same = sum(a.replies[c] == b.replies[c] for c in ids)
    head = max((float(np.abs(a.heads[c] - b.heads[c]).max()) for c in ids
                if a.heads[c].shape == b.heads[c].shape and a.heads[c].size), default=float("nan"))  # fmt: skip
    agree = [float(np.mean(a.tokens[c] == b.tokens[c])) for c in ids
             if a.tokens[c].shape == b.tokens[c].shape and a.tokens[c].size]  # fmt: skip
    return {"cases": len(ids), "same_reply": same, "max_head_diff": head,
            "token_agreement": float(np.mean(agree)) if agree else float("nan")}  # fmt: skip


def _pct(v: list[float], q: float) -> float:
    v = v[1:] if len(v) > 1 else v  # the first call of a stage pays one-time setup
    return float(np.percentile(v, q)) if v else float("nan")


def report(runs: list[SpecRun], meta: str) -> str:
    lines = ["# Fused model by provider", "", meta, "",
             "| spec | providers | " + " | ".join(f"{s} p50 / p95" for s in STAGES) + " |",
             "|---|---|" + "---|" * len(STAGES)]  # fmt: skip
    for r in runs:
        cells = [f"{_pct(r.times[s], 50):.2f} / {_pct(r.times[s], 95):.2f}" for s in STAGES]
        lines.append(f"| {r.spec} | {', '.join(p.replace('ExecutionProvider', '') for p in r.providers)} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", f"Against `{runs[0].spec}`:", ""]
    for r in runs[1:]:
        c = compare(runs[0], r)
        lines.append(f"- `{r.spec}`: same reply text {c['same_reply']}/{c['cases']}, "
                     f"max end-of-turn head difference {c['max_head_diff']:.2e}, "
                     f"codec tokens equal {c['token_agreement']:.4f}")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clients.bench.providers", description=__doc__.split("\n")[0])
    ap.add_argument("--specs", default="cpu,cuda", help="comma-separated specs (default: cpu,cuda)")
    ap.add_argument("--cases", type=int, default=16, help="test set size, as in `rejoinder bench` (default 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--bundles", type=Path, default=Path(__file__).resolve().parents[2] / "bundles")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    ap.add_argument("--out", type=Path, help="write the report here too")
    args = ap.parse_args(argv)
    testset = load_or_build(args.seed, args.cases, cache_dir=args.data_dir)
    ids = [c.id for c in testset.cases if c.kind in ("normal", "pause")]
    runs = []
    for spec in args.specs.split(","):
        print(f"{spec}: {len(ids)} cases", file=sys.stderr, flush=True)
        runs.append(run_spec(spec, testset, ids, args.bundles, args.threads))
    text = report(runs, f"test set `{testset.key}` ({len(ids)} normal and pause cases), "
                        f"{args.threads} intra-op thread(s)")  # fmt: skip
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
