"""Train the built-in text LM on the domain corpus (CPU, ~10 minutes on 2 cores).

    python -m models.training.train_lm --seed 0          # resumes runs/textlm/last.pt
    python -m models.training.export_lm                  # -> bundles/textlm/

Deterministic for a seed (and thread count): the corpus, tokenizer, initial
weights and every batch are derived from ``--seed``, and the batch of step
``i`` depends only on ``(seed, i)``, so a resumed run equals an uninterrupted
one. Checkpoints go to ``--out`` (gitignored ``runs/``): ``last.pt`` every
``--ckpt-every`` steps, and ``final.pt`` (weights, config, tokenizer) at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.domain import Example, generate_corpus, split_of
from models.textlm import prompt_ids
from models.tokenizer import Tokenizer
from models.training.corpus import (
    IGNORE,
    build_tokenizer,
    encode_examples,
    make_batch,
    sampling_weights,
)
from models.training.lm import LM, LMConfig

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "runs" / "textlm"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="small", choices=sorted(LMConfig.PRESETS))
    ap.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary cap")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared 2-core CPU")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--fresh", action="store_true", help="ignore an existing last.pt")
    return ap.parse_args(argv)


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * frac))


def run_signature(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments a checkpoint must share with this run to be resumed."""
    keys = ("seed", "preset", "vocab_size", "steps", "batch", "lr", "min_lr", "warmup",
            "weight_decay")  # fmt: skip
    return {k: getattr(args, k) for k in keys}


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def greedy_replies(
    model: LM, tok: Tokenizer, questions: list[str], max_new: int = 48, batch: int = 256
) -> list[str]:
    """Greedy replies with the cached path, batching prompts of equal length."""
    model.eval()
    eot = tok.special("<eot>")
    prompts = [prompt_ids(tok, q) for q in questions]
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_len[len(p)].append(i)
    out = [""] * len(questions)
    for n, members in sorted(by_len.items()):
        for s in range(0, len(members), batch):
            rows = members[s : s + batch]
            ids = torch.tensor([prompts[i] for i in rows], dtype=torch.long)  # (B, n)
            cache = model.empty_cache(len(rows))
            pos = torch.zeros(len(rows), dtype=torch.long)
            logits, cache = model(ids, cache, pos)
            pos = pos + n
            nxt = logits[:, -1].argmax(-1)  # (B,)
            gen = [[] for _ in rows]
            done = torch.zeros(len(rows), dtype=torch.bool)
            for _ in range(min(max_new, model.cfg.max_seq_len - n)):
                done |= nxt == eot
                for b in range(len(rows)):
                    if not done[b]:
                        gen[b].append(int(nxt[b]))
                if bool(done.all()):
                    break
                logits, cache = model(nxt[:, None], cache, pos)
                pos = pos + 1
                nxt = logits[:, -1].argmax(-1)
            for b, i in enumerate(rows):
                out[i] = tok.decode(gen[b])
    model.train()
    return out


def accuracy_by_skill(examples: list[Example], replies: list[str]) -> dict[str, tuple[int, int]]:
    hits: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for e, r in zip(examples, replies, strict=True):
        total[e.skill] += 1
        hits[e.skill] += r == e.answer
    return {s: (hits[s], total[s]) for s in sorted(total)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    examples = generate_corpus(args.seed)
    train, heldout = split_of(examples, "train"), split_of(examples, "heldout")
    tok = build_tokenizer(examples, args.vocab_size)
    tok.save(args.out / "tokenizer.json")
    encoded = encode_examples(tok, train)
    weights = sampling_weights(encoded)
    cfg = LMConfig.from_name(args.preset, vocab_size=tok.vocab_size)
    longest = max(len(e.ids) for e in encoded)
    print(
        f"corpus: {len(train)} train / {len(heldout)} held-out examples, "
        f"vocab {tok.vocab_size}, longest sequence {longest} tokens "
        f"({time.perf_counter() - t0:.1f}s)",
        flush=True,
    )

    torch.manual_seed(args.seed)
    model = LM(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98),
    )  # fmt: skip
    print(f"model: preset {args.preset}, {model.num_parameters():,} parameters, {cfg}", flush=True)

    step = 0
    last = args.out / "last.pt"
    if last.exists() and not args.fresh:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        if ckpt["signature"] != run_signature(args):
            raise SystemExit(
                f"{last} was written by a run with other arguments "
                f"({ckpt['signature']}); pass --fresh to start over"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step = ckpt["step"]
        print(f"resumed from {last} at step {step}", flush=True)

    model.train()
    pad = tok.special("<pad>")
    loss_sum, loss_n, t_log = 0.0, 0, time.perf_counter()
    t_train = time.perf_counter()
    steps_at_start = step
    while step < args.steps:
        rng = np.random.default_rng([args.seed, step])
        index = rng.choice(len(encoded), size=args.batch, p=weights)
        inputs, targets = make_batch(encoded, index, pad)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        logits, _ = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        loss_sum += loss.item()
        loss_n += 1
        if step % args.log_every == 0 or step == args.steps:
            now = time.perf_counter()
            rate = (step - steps_at_start) / (now - t_train)
            print(
                f"step {step:5d}/{args.steps}  loss {loss_sum / loss_n:.4f}  "
                f"lr {lr_at(step - 1, args):.2e}  {args.log_every / (now - t_log):.1f} it/s  "
                f"elapsed {now - t0:5.0f}s  eta {(args.steps - step) / rate:4.0f}s",
                flush=True,
            )
            loss_sum, loss_n, t_log = 0.0, 0, now
        if step % args.ckpt_every == 0 or step == args.steps:
            save_atomic(
                {"step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                 "signature": run_signature(args)},
                last,
            )  # fmt: skip

    final = args.out / "final.pt"
    save_atomic(
        {"model": model.state_dict(), "config": cfg.to_dict(), "tokenizer": tok.to_dict(),
         "signature": run_signature(args)},
        final,
    )  # fmt: skip
    print(f"wrote {final} (train time {time.perf_counter() - t0:.0f}s)", flush=True)

    replies = greedy_replies(model, tok, [e.question for e in heldout])
    acc = accuracy_by_skill(heldout, replies)
    hits = sum(h for h, _ in acc.values())
    for skill, (h, n) in acc.items():
        print(f"  held-out {skill:15s} {h:4d}/{n:<4d} {100 * h / n:6.2f}%")
    print(f"held-out exact match (torch): {hits}/{len(heldout)} = {100 * hits / len(heldout):.2f}%")
    summary = {
        "heldout_exact": hits / len(heldout),
        "by_skill": acc,
        "seconds": time.perf_counter() - t0,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
