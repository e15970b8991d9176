"""Train the fused model in stages on this CPU (resumable, logged to runs/fused/).

    python -m models.training.speech_data --n-train 4000 --n-eval 480   # user speech cache
    python -m models.training.train_fused encoder --steps 3000          # stage 1: CTC encoder
    python -m models.training.train_fused lm --steps 1500               # stage 3: adapter + LM + end of turn
    python -m models.training.train_fused audio --steps 3000            # stage 2: audio head
    python -m models.training.export_fused                              # -> bundles/fused/
    python -m models.training.eval_fused                                # gates

Each stage writes ``runs/fused/<stage>_last.pt`` every ``--ckpt-every`` steps
(resumed automatically) and ``<stage>_final.pt``. Batches of step ``i`` depend
only on ``(seed, i)``, so a resumed run equals an uninterrupted one (for a
given thread count). Stage 3 needs stage 1 and the text LM
(``runs/textlm/final.pt``); stage 2 needs the codec bundle (``bundles/codec``).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.domain import (
    answer_sentences,
    audio_heldout_answers,
    bare_social_forms,
    complete_question,
    core_length,
    generate_corpus,
    key_words_heard,
    normalize,
)
from models.features import N_MELS, LogMel
from models.fused import warm_audio
from models.tokenizer import Tokenizer
from models.training.fused import (
    BLANK,
    AudioFrames,
    AudioText,
    Encoder,
    FusedConfig,
    FusedLM,
    char_ids,
    emissions,
    regulate_indices,
    soft_piece,
    spec_augment,
)
from models.training.lm import LMConfig
from models.training.speech_data import DATA_DIR, before_fillers, load_cache

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "fused"
TEXTLM_CKPT = ROOT / "runs" / "textlm" / "final.pt"
TOKENIZER = ROOT / "runs" / "textlm" / "tokenizer.json"
SHIPPED_TOKENIZER = ROOT / "bundles" / "textlm" / "tokenizer.json"


def tokenizer_path() -> Path:
    """The text LM run's tokenizer, or the shipped text LM's when no run is here (the same
    file: stage 1 from a ``from_bundle`` encoder needs no text LM rebuild)."""
    return TOKENIZER if TOKENIZER.exists() else SHIPPED_TOKENIZER


def log(msg: str, stage: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(RUNS / f"{stage}.log", "a") as f:
        f.write(line + "\n")


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def autocast(args: argparse.Namespace) -> Any:
    """bfloat16 autocast of a training step's forward under ``--bf16`` (weights, optimizer
    state and the losses stay float32); a no-op context otherwise."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(getattr(args, "bf16", False)))


def lr_at(step: int, steps: int, lr: float, warmup: int = 150) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def edit_distance(a: list[Any], b: list[Any]) -> int:
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            cur = d[j]
            d[j] = min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
            prev = cur
    return d[len(b)]


def speech_paths(seed: int, n_train: int, n_eval: int) -> tuple[Path, Path]:
    return (DATA_DIR / f"speech_train_s{seed}_n{n_train}.npy",
            DATA_DIR / f"speech_eval_s{seed}_n{n_eval}.npy")  # fmt: skip


def data_seed(args: argparse.Namespace) -> int:
    """The seed of the run's data: `--data-seed`, or `--seed` when it is not given. It picks
    the speech caches and the corpus (whose held-out split the speech's eval set is drawn from)."""
    return args.seed if args.data_seed is None else args.data_seed


def run_speech_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The run's speech caches, those of its data seed."""
    return speech_paths(data_seed(args), args.n_train, args.n_eval)


def _trim4(mel: np.ndarray, stack: int) -> np.ndarray:
    return mel[: len(mel) // stack * stack]


#: the run-time warm-up written to the manifest (``encoder.warmup``) by an encoder
#: trained with ``--prefix-s`` > 0; see :func:`models.fused.warm_audio`
WARMUP = {"seconds": 1.2, "dbfs": -65.0, "seed": 0}


def warm_mel(spec: dict[str, Any] | None, stack: int) -> np.ndarray | None:
    """The log-mel frames of the run-time warm-up audio (None: start from zeros)."""
    if not spec:
        return None
    pcm = warm_audio(float(spec["seconds"]), float(spec["dbfs"]), int(spec["seed"]))
    return _trim4(LogMel().compute(pcm), stack)


def quiet_bank() -> list[np.ndarray]:
    """Log-mel of 4 s of quiet noise at -80..-50 dBFS: the random prefixes of stage 1.
    The -65 dBFS one begins with the run-time warm-up itself."""
    fe = LogMel()
    return [fe.compute(warm_audio(4.0, float(db), 0)) for db in range(-80, -49, 5)]


def encoder_run(enc: Encoder, mel: np.ndarray, warm: np.ndarray | None,
                augment: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Logits and hidden states (T, ...) of one item as the runtime sees it: from the
    warm-up's state when ``warm`` is given (its frames are dropped), else from zeros."""
    m = torch.from_numpy(_trim4(mel.astype(np.float32), enc.cfg.stack))[None]
    if augment is not None:
        m = spec_augment(m, augment, 1, 1)
    k = 0
    if warm is not None:
        m = torch.cat([torch.from_numpy(warm)[None], m], 1)
        k = len(warm) // enc.cfg.stack
    logits, h, _ = enc(m, enc.empty_state(1))
    return logits[0, k:], h[0, k:]


# --------------------------------------------------------------------------- stage 1


def ctc_eval(enc: Encoder, items: list[dict[str, Any]], tok: Tokenizer,
             warm: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """Greedy CTC decoding: token and word error rates per voice group."""
    enc.eval()
    per: dict[str, list[int]] = {}
    with torch.no_grad():
        for it in items:
            logits, _ = encoder_run(enc, it["mel"], warm)
            top = logits.argmax(-1)
            keep = emissions(logits)
            hyp = top[keep].tolist()
            ref = tok.encode(it["text"])
            heard = tok.decode(hyp)
            hw, rw = normalize(heard).split(), it["text"].split()
            g = per.setdefault(it["group"], [0, 0, 0, 0, 0, 0])
            g[0] += edit_distance(hyp, ref)
            g[1] += len(ref)
            g[2] += edit_distance(hw, rw)
            g[3] += len(rw)
            g[4] += 1
            g[5] += "answer" not in it or key_words_heard(heard, it["text"], it["answer"])
    out = {k: {"ter": v[0] / v[1], "wer": v[2] / v[3], "n": v[4], "kw": v[5] / v[4]}
           for k, v in sorted(per.items())}  # fmt: skip
    tot = [sum(v[i] for v in per.values()) for i in range(6)]
    out["all"] = {"ter": tot[0] / tot[1], "wer": tot[2] / tot[3], "n": tot[4], "kw": tot[5] / tot[4]}
    enc.train()
    return out


def encoder_logits(enc: Encoder, x: torch.Tensor, mid_layer: int | None = None,
                   prefix: torch.Tensor | None = None,
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """CTC logits of a batch from zero state, or (``prefix``, log-mel (T, F)) from the state
    the encoder reaches after hearing ``prefix``: computed once with the current weights and
    gradients, and shared by the batch (``--shared-prefix``). With ``mid_layer`` k, also those read after the
    first k blocks through the same norm and CTC layer: intermediate CTC (Lee and Watanabe,
    2021), a training-only loss; the exported graph keeps the last layer's alone."""
    got: list[torch.Tensor] = []
    hook = None
    if mid_layer is not None:
        hook = enc.blocks[mid_layer - 1].register_forward_hook(lambda m, i, o: got.append(o[0]))
    try:
        state = enc.empty_state(x.shape[0])
        if prefix is not None:
            _, _, st = enc(prefix[None], enc.empty_state(1))
            state = st.expand(-1, x.shape[0], -1, -1)
            got.clear()  # the hook's output for the prefix is not the batch's
        logits, _, _ = enc(x, state)
    finally:
        if hook is not None:
            hook.remove()
    return logits, enc.ctc(enc.norm(got[0])) if got else None


def batch_ctc(logits: torch.Tensor, skip: list[int], tg: torch.Tensor, il: torch.Tensor,
              tl: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """CTC loss of a batch's logits (B, T, V) on each item's own frames: ``il[j]`` frames
    from ``skip[j]`` (after its quiet prefix)."""
    n, lg = int(il.max()), logits.float()
    lp = torch.stack([
        F.pad(lg[j, s : s + int(k)], (0, 0, 0, n - int(k)))
        for j, (s, k) in enumerate(zip(skip, il, strict=True))
    ]).log_softmax(-1).transpose(0, 1)  # (T, B, V)  # fmt: skip
    return F.ctc_loss(lp, tg, il, tl, blank=BLANK, zero_infinity=True)


def train_encoder(args: argparse.Namespace) -> None:
    stage = "encoder"
    torch.manual_seed(args.seed)
    tok = Tokenizer.load(tokenizer_path())
    cfg = FusedConfig.from_name(args.preset, vocab_size=tok.vocab_size)
    if not 0 <= args.inter_ctc < 1 or (args.inter_ctc and not 0 < args.inter_ctc_layer < len(cfg.enc_dilations)):
        raise SystemExit(f"--inter-ctc needs a weight in [0, 1) and --inter-ctc-layer in "
                         f"1..{len(cfg.enc_dilations) - 1} (blocks of preset {args.preset!r})")  # fmt: skip
    if args.shared_prefix and args.prefix_s <= 0:
        raise SystemExit("--shared-prefix needs --prefix-s > 0")
    train_p, eval_p = run_speech_paths(args)
    t0 = time.time()
    train = load_cache(train_p)
    evals = load_cache(eval_p)
    # dev: a slice of training voices' speech, but never used to fit (the last 200 items)
    dev, train = train[-200:], train[:-200]
    for extra in args.extra:
        train += load_cache(extra)
    log(
        f"speech: {len(train)} train, {len(dev)} dev, {len(evals)} eval ({time.time() - t0:.0f}s)",
        stage,
    )
    mels = [_trim4(it["mel"], cfg.stack) for it in train]
    targets = [tok.encode(it["text"]) for it in train]
    allm = np.concatenate(mels[:1000]).astype(np.float32)
    enc = Encoder(cfg)
    enc.mel_mean.copy_(torch.from_numpy(allm.mean(0)))
    enc.mel_std.copy_(torch.from_numpy(allm.std(0) + 1e-3))
    n_params = sum(p.numel() for p in enc.parameters())
    log(f"encoder: {n_params:,} parameters, {cfg}", stage)
    if args.init is not None:  # warm start: weights and mel statistics of a finished encoder
        ck = torch.load(args.init, weights_only=False)
        if FusedConfig.from_dict(ck["cfg"]) != cfg:
            raise SystemExit(f"--init {args.init}: its config differs from preset {args.preset!r}")
        enc.load_state_dict(ck["model"])
        log(f"initialized from {args.init}", stage)
    opt = torch.optim.AdamW(enc.parameters(), lr=args.lr, weight_decay=0.01)
    start = 0
    last = RUNS / f"{stage}_last.pt"
    if last.exists() and not args.fresh:
        ck = torch.load(last, weights_only=False)
        enc.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start = ck["step"]
        log(f"resumed at step {start}", stage)
    lengths = np.array([len(m) for m in mels])
    order = np.argsort(lengths, kind="stable")
    warmup = WARMUP if args.prefix_s > 0 else None
    warm = warm_mel(warmup, cfg.stack)
    bank = quiet_bank()
    max_pre = round(args.prefix_s * 1000 / (10 * cfg.stack))  # encoder frames
    min_pre = max_pre // 3
    n_batches = len(order) // args.batch
    t_start = time.time()
    for step in range(start, args.steps):
        rng = np.random.default_rng([args.seed, step])
        b = int(rng.integers(n_batches))
        idx = order[b * args.batch : (b + 1) * args.batch]
        # a random stretch of quiet noise before each item (none without --prefix-s); the
        # loss sees only the item's frames: a piece emitted in the prefix (at the zero
        # state, where the earlier encoders put their guess of the first word) is no use
        # (drawn only with a prefix, so runs without one keep their batches bit for bit)
        pre, src = [0] * len(idx), [0] * len(idx)
        shared = None  # --shared-prefix: one drawn prefix, heard once, whose state the batch shares
        if max_pre > 0 and args.shared_prefix:
            n_pre = int(rng.integers(min_pre, max_pre + 1)) * cfg.stack
            shared = torch.from_numpy(bank[int(rng.integers(len(bank)))][:n_pre].astype(np.float32))
        elif max_pre > 0:
            pre = [int(rng.integers(min_pre, max_pre + 1)) * cfg.stack for _ in idx]
            src = [int(rng.integers(len(bank))) for _ in idx]
        tmax = max(p + lengths[i] for p, i in zip(pre, idx, strict=True))
        x = torch.zeros(len(idx), tmax, cfg.n_mels)
        for j, i in enumerate(idx):
            x[j, : pre[j]] = torch.from_numpy(bank[src[j]][: pre[j]])
            x[j, pre[j] : pre[j] + lengths[i]] = torch.from_numpy(mels[i].astype(np.float32))
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        x = spec_augment(x, gen)
        if shared is not None:
            shared = spec_augment(shared[None], gen)[0]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        with autocast(args):
            logits, mid = encoder_logits(enc, x, args.inter_ctc_layer if args.inter_ctc > 0 else None,
                                         shared)  # fmt: skip
        skip = [p // cfg.stack for p in pre]  # the items' own frames start after their prefix
        il = torch.tensor([lengths[i] // cfg.stack for i in idx])
        tg = torch.cat([torch.tensor(targets[i]) for i in idx])
        tl = torch.tensor([len(targets[i]) for i in idx])
        loss = batch_ctc(logits, skip, tg, il, tl)
        if mid is not None:
            loss = (1 - args.inter_ctc) * loss + args.inter_ctc * batch_ctc(mid, skip, tg, il, tl)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        if (step + 1) % args.log_every == 0:
            el = time.time() - t_start
            rate = (step + 1 - start) / el
            log(f"step {step + 1}/{args.steps} ctc {loss.item():.3f} lr {lr_at(step, args.steps, args.lr):.2e} "
                f"{rate:.2f} it/s eta {(args.steps - step - 1) / rate:.0f}s", stage)  # fmt: skip
        if (step + 1) % args.ckpt_every == 0 or step + 1 == args.steps:
            save_atomic({"model": enc.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                         "cfg": cfg.to_dict()}, last)  # fmt: skip
        if (step + 1) % args.eval_every == 0:
            r = ctc_eval(enc, dev[:100], tok, warm)["all"]
            log(f"dev (train voices) ter {r['ter']:.3f} wer {r['wer']:.3f} key words {r['kw']:.3f}", stage)
    res = ctc_eval(enc, evals, tok, warm)
    resd = ctc_eval(enc, dev, tok, warm)
    for k, v in resd.items():
        log(
            f"GATE1 dev[train voices] {k:24s} ter {v['ter']:.3f} wer {v['wer']:.3f} key words {v['kw']:.3f} n {v['n']}",
            stage,
        )
    for k, v in res.items():
        log(f"GATE1 heldout {k:24s} ter {v['ter']:.3f} wer {v['wer']:.3f} key words {v['kw']:.3f} n {v['n']}",
            stage)
    save_atomic({"model": enc.state_dict(), "cfg": cfg.to_dict(), "eval": res, "dev": resd,
                 "tokenizer": tok.to_dict(), "warmup": warmup},
                RUNS / f"{stage}_final.pt")  # fmt: skip


# --------------------------------------------------------------------------- stage 3


def load_encoder(path: Path = RUNS / "encoder_final.pt") -> tuple[Encoder, FusedConfig]:
    ck = torch.load(path, weights_only=False)
    cfg = FusedConfig.from_dict(ck["cfg"])
    enc = Encoder(cfg)
    enc.load_state_dict(ck["model"])
    enc.eval()
    enc.warmup = ck.get("warmup")  # the run-time warm-up it was trained for (None: zeros)
    return enc, cfg


def extract_steps(enc: Encoder, items: list[dict[str, Any]], augment: bool, seed: int,
                  warm: np.ndarray | None = None,
                  ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """Per item: (soft pieces (n, V) f16, encoder states (n, C) f16, emission frames (n,))."""
    out = []
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, it in enumerate(items):
            logits, h = encoder_run(enc, it["mel"], warm, gen if augment else None)
            keep = emissions(logits)
            frames = torch.nonzero(keep).flatten()
            out.append((soft_piece(logits[frames]).half().numpy(), h[frames].half().numpy(),
                        frames.numpy()))  # fmt: skip
            if (i + 1) % 1000 == 0:
                print(f"  extracted {i + 1}/{len(items)}", flush=True)
    return out


def probe_states(enc: Encoder, items: list[dict[str, Any]], warm: np.ndarray | None,
                 look_ms: float, seed: int) -> list[tuple[np.ndarray, np.ndarray | None]]:  # fmt: skip
    """Per item, what a ``<pause>`` probe that hears the encoder (``--pause-hears``) gets at
    run time: the last encoder state of a lookahead copy (:meth:`FusedModel.lookahead`) that
    heard the speech up to ``s`` of real silence (drawn from 32-400 ms), then ``look_ms``
    of its quietest recent background. One at the speech end (for the full row), and one in
    the mid-question pause, if any (for the truncated row; never past the pause's end).
    The caches hold log-mel frames (10 ms), so the background is the quietest of the last
    6 frames, repeated; ends and pauses get the same construction, so it tells them apart
    by nothing but the speech before it."""
    rng, hop, stack = np.random.default_rng(seed), 160, enc.cfg.stack
    n_tail = int(round(look_ms / 10))
    head = np.zeros((0, N_MELS), np.float32) if warm is None else warm.astype(np.float32)

    def probe_mel(mel: np.ndarray, cut: int) -> np.ndarray:
        m = mel[: max(1, cut // hop)].astype(np.float32)
        quiet = m[-6:][int(m[-6:].mean(1).argmin())]
        return _trim4(np.concatenate([head, m, np.tile(quiet, (n_tail, 1))]), stack)

    jobs: list[tuple[int, int, int, int]] = []  # (length, item, 0 end / 1 pause, cut sample)
    for i, it in enumerate(items):
        s = int(rng.uniform(32, 400) * 16)
        cuts = [it["end"] + s]
        if it.get("pause") is not None:
            cuts.append(min(it["pause"][0] + s, it["pause"][1]))
        for kind, cut in enumerate(cuts):
            n = min(len(it["mel"]), max(1, cut // hop))
            jobs.append(((len(head) + n + n_tail) // stack * stack, i, kind, cut))
    jobs.sort(reverse=True)  # longest first: later batches fit in memory already freed
    got: dict[tuple[int, int], np.ndarray] = {}
    with torch.no_grad():  # causal: zeros after an item's end change none of its states
        for b in range(0, len(jobs), 128):
            batch = jobs[b : b + 128]
            x = np.zeros((len(batch), batch[0][0], N_MELS), np.float32)
            for k, (n, i, _, cut) in enumerate(batch):
                x[k, :n] = probe_mel(items[i]["mel"], cut)
            _, h, _ = enc(torch.from_numpy(x), enc.empty_state(len(batch)))
            for k, (n, i, kind, _) in enumerate(batch):
                got[i, kind] = h[k, n // stack - 1].half().numpy()
            if (b // 128 + 1) % 100 == 0:
                print(f"  probe states {b + len(batch)}/{len(jobs)}", flush=True)
    return [(got[i, 0], got.get((i, 1))) for i in range(len(items))]


def heard_as(args: argparse.Namespace) -> dict[str, str]:
    """``--heard-as a=b,c=d`` as a dict (empty when the option is absent)."""
    spec = getattr(args, "heard_as", "") or ""
    pairs = [p.split("=") for p in spec.split(",") if p]
    if any(len(p) != 2 or not all(p) for p in pairs):
        raise SystemExit(f"--heard-as wants word=word[,word=word]: {spec!r}")
    return dict((a, b) for a, b in pairs)


def eot_labels(tok: Tokenizer, ids: Any, text: str, complete: bool, mode: str = "complete",
               heard_as: dict[str, str] | None = None) -> np.ndarray:  # fmt: skip
    """End-of-turn label per heard piece ``ids`` of the question ``text``.

    ``last``: 1 at the last piece of a complete question, else 0. ``complete`` also marks
    every piece after which the words heard so far are exactly the question's words up to
    where only fillers (please, um, uh) remain: "what is one times zero" is labelled complete
    whether or not "please" follows, because no text can tell those apart (the corpus adds
    fillers to about half of the questions, so a ``last`` head learns template statistics
    and was under 0.95 at the true end of 27 % of held-out questions). A misheard question
    keeps only the ``last`` label. ``prefix`` also marks, with :data:`SURE` (so that no
    ``--eot-teacher`` overrides it), every piece after which the words heard so far ask a
    whole question of the domain though the question goes on (``domain.complete_question``:
    "hey thanks" of "hey thanks a lot", "how are you" of "how are you doing"): no text tells
    those apart either, and real users stop there. ``heard_as`` goes to ``complete_question``
    (``--heard-as thank=thanks``: a sure end after the "thank" of "thank you" too)."""
    n = len(ids)
    lab = np.zeros(n, np.float32)
    if not complete or n == 0:
        return lab
    lab[-1] = 1.0
    if mode == "last":
        return lab
    words = text.split()
    core = core_length(words)
    heard = ""
    for i, t in enumerate(ids):
        heard += tok.decode([int(t)])
        got = heard.split()
        if got != words[: len(got)]:
            continue
        if len(got) >= max(core, 1):
            lab[i] = 1.0
        elif mode == "prefix" and complete_question(got, heard_as=heard_as):
            lab[i] = SURE
    return lab


#: the end-of-turn label "no end, whatever a teacher says" (:func:`break_pause_labels`):
#: a 0 label for :func:`eot_loss`, kept even under ``--eot-teacher``
HOLD = -0.5
#: the end-of-turn label "the end, whatever a teacher says" (``--sure-end``): the last
#: piece of a complete question that ends the utterance (fillers included)
SURE = 2.0


def break_pause_labels(lab: np.ndarray, frames: Any, pause_end: int,
                       frame_samples: int = 640) -> np.ndarray:  # fmt: skip
    """End-of-turn labels of an item whose pause is an SSML break inside one synthesis
    (``pause_break``): :data:`HOLD` (no end) at every piece emitted before the speech after
    the pause starts.

    Its first half keeps the pitch of a sentence that goes on, so the user is not done even
    where the words so far are a complete question ("what is one times zero <pause> please").
    A pause made of two syntheses keeps the text labels: its first half sounds like an end."""
    out = np.asarray(lab, np.float32).copy()
    heard_to = (np.asarray(frames, np.int64) + 1) * frame_samples  # samples heard at each piece
    out[: len(heard_to)][heard_to[: len(out)] <= pause_end] = HOLD
    return out


def holds_break_pause(it: dict[str, Any], mode: str) -> bool:
    """Whether ``--break-pauses mode`` labels the item's break-style pause HOLD
    (:func:`break_pause_labels`): always (``continue``), only where more than fillers follow
    it (``inside``: "what is seven <pause> plus five", not "what is one times zero <pause>
    please", whose question was complete when the pause began), or never (``text``)."""
    if not it.get("pause_break") or mode == "text":
        return False
    return mode == "continue" or not before_fillers(it)


def lm_sequence(tok: Tokenizer, steps: tuple[np.ndarray, np.ndarray, np.ndarray], answer: str,
                complete: bool, max_q: int = 48) -> dict[str, Any]:  # fmt: skip
    """One training row: per-position probs/enc inputs and text targets; the end-of-turn
    labels (``"eot"``, :func:`eot_labels`) are added by the caller."""
    probs, hid, _ = steps
    probs, hid = probs[:max_q], hid[:max_q]
    head = [tok.special("<bos>"), tok.special("<user>")]
    tail = (
        [tok.special("<eot>"), tok.special("<assistant>")]
        + tok.encode(answer)
        + [tok.special("<eot>")]
    )
    n_q = len(probs)
    return {
        "head": head,
        "probs": probs,
        "hid": hid,
        "tail": tail,
        "n_q": n_q,
        "complete": complete,
        "frames": steps[2][:max_q],
    }


def piece_confusions(rows: list[dict[str, Any]], vocab: int) -> np.ndarray:
    """(V, V): row i is where the encoder's posterior mass goes, off piece i, on the steps
    whose top piece is i (summed over the rows' soft steps, normalized; zero where none).
    On its own training voices the encoder already splits " thanks" with " thank" (3.6 % of
    the mass) and " bye" with " hi"; on unseen voices such splits reach 50/50."""
    c = np.zeros((vocab, vocab))
    for r in rows:
        p = np.asarray(r["probs"][: r["n_q"]], np.float64)
        if len(p):
            np.add.at(c, p.argmax(-1), p)
    np.fill_diagonal(c, 0.0)
    tot = c.sum(1, keepdims=True)
    return (c / np.where(tot > 0, tot, 1.0)).astype(np.float32)


def confuse_steps(probs: np.ndarray, confusion: np.ndarray, rate: float,
                  rng: np.random.Generator, last: float = 0.0) -> np.ndarray:  # fmt: skip
    """Move part of some steps' mass to a piece the encoder confuses with their top piece
    (``rate`` of the steps, and the last step with probability ``last``; a weight of
    0.2-0.7, so the neighbour may win): the mixtures it gives on unseen voices, where the
    label still says what was said. The last heard step is where the head is read: on
    unseen voices a final " thanks" is often heard as " thank" 0.5-0.8."""
    sel = rng.random(len(probs)) < rate
    if len(probs) and last > 0 and rng.random() < last:
        sel[-1] = True
    pick = np.flatnonzero(sel)
    if not len(pick):
        return probs
    probs = probs.copy()
    for k in pick:
        row = confusion[int(probs[k].argmax())]
        if row.sum() <= 0:
            continue
        j = int(rng.choice(len(row), p=row / row.sum()))
        w = rng.uniform(0.2, 0.7)
        probs[k] *= 1.0 - w
        probs[k, j] += w
    return probs


def confuse_row(r: dict[str, Any], confusion: np.ndarray, rate: float,
                rng: np.random.Generator, last: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """A speech row with :func:`confuse_steps` on its heard steps (text rows as they are)."""
    if "ids" in r or not r["n_q"]:
        return r
    return dict(r, probs=confuse_steps(np.asarray(r["probs"], np.float32), confusion, rate, rng, last))


def augment_row(r: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Make the heard pieces noisier than the encoder's output on its own training audio:
    drop steps (8 %), flatten the piece distributions (temperature 1-2.5), and drop (50 %)
    or jitter the encoder states, so the LM does not memorize training utterances."""
    n = r["n_q"]
    keep = rng.random(n) > 0.08
    if n and not keep.any():
        keep[-1] = True
    probs = r["probs"][keep].astype(np.float32)
    temp = rng.uniform(1.0, 2.5)
    probs = np.maximum(probs, 1e-12) ** (1.0 / temp)
    probs /= probs.sum(-1, keepdims=True)
    hid = r["hid"][keep].astype(np.float32)
    if rng.random() < 0.5:
        hid = np.zeros_like(hid)
    else:
        hid = hid + rng.normal(0.0, 0.5, hid.shape).astype(np.float32)
    eot = r["eot"][keep].copy()
    if r["complete"] and len(eot):
        eot[-1] = 1.0  # what is left of a complete question still ends it
    return dict(r, probs=probs, hid=hid, n_q=int(keep.sum()), frames=r["frames"][keep], eot=eot)


def _cut_row(r: dict[str, Any], k: int, pause_id: int, label: float) -> dict[str, Any]:
    """The first ``k`` heard pieces of a speech row, then a pause step labelled ``label``: no
    answer, and its pieces are not labelled again."""
    return dict(r, probs=r["probs"][:k], hid=r["hid"][:k], n_q=k, frames=r["frames"][:k],
                eot=np.full(k, -1.0, np.float32), tail=[], complete=False, pause=pause_id,
                pause_eot=label)  # fmt: skip


def pause_rows(r: dict[str, Any], it: dict[str, Any], pause_id: int, look_ms: float,
               frame_samples: int = 640,
               probe: tuple[np.ndarray, np.ndarray | None] | None = None,
               prefixes: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """The pause steps of one labelled speech row (its ``"eot"`` set), as the run time reads them.

    The server reads the end-of-turn head on a ``<pause>`` step after the pieces heard so
    far whenever the user is silent (:meth:`models.fused.FusedModel.head_probability`).
    So the row itself gains a pause step after its last piece (labelled 1 for a complete
    question, else 0), and an item with a pause inside gives a second, truncated row: the
    pieces emitted up to ``look_ms`` into the pause (what the server's lookahead copy has
    heard; never past the pause's end), then the pause step, labelled as the last of them
    ("what is seven plus" 0, "what is one times zero" before "please" 1). The truncated row
    has no answer and its pieces are not labelled again. With ``probe`` (:func:`probe_states`)
    each pause step also gets the encoder state the run time's probe hears there.

    With ``prefixes`` every sure end before the last piece (:data:`SURE`, the prefix labels:
    "hey thanks" of "hey thanks a lot") also gives a truncated row, its pause step sure: what
    the run time reads when a user stops there. Without them that pause step is only trained
    where the corpus happens to pause, so a final "thanks" heard as " thank" stayed unsure."""
    out = [dict(r, pause=pause_id, pause_eot=1.0 if r["complete"] else 0.0)]
    if probe is not None:
        out[0]["pause_hid"] = probe[0]
    if it.get("pause") is not None and r["n_q"]:
        p0, p1 = it["pause"]
        cut = min(p0 + look_ms * 16, p1)  # samples at 16 kHz
        k = int(((np.asarray(r["frames"]) + 1) * frame_samples <= cut).sum())
        if k:
            out.append(_cut_row(r, k, pause_id, max(0.0, float(r["eot"][k - 1]))))
            if probe is not None and probe[1] is not None:
                out[-1]["pause_hid"] = probe[1]
    if prefixes and r["complete"] and r["n_q"] > 1:
        for k in np.flatnonzero(np.asarray(r["eot"][: r["n_q"] - 1]) == SURE) + 1:
            out.append(_cut_row(r, int(k), pause_id, SURE))
    return out


def make_lm_batch(rows: list[dict[str, Any]], vocab: int, enc_dim: int,
                  rng: np.random.Generator | None = None) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """-> probs (B, T, V), enc (B, T, C), text targets (B, T), eot targets (B, T) (-1 = ignore).

    A row with ``"pause"`` (a token id) has that step between its question and its tail,
    labelled ``"pause_eot"``; its tail may be empty (a truncated row, no text targets)."""
    if rng is not None:
        rows = [augment_row(r, rng) if "ids" not in r else r for r in rows]
    lens = [len(r["head"]) + r["n_q"] + ("pause" in r) + max(len(r["tail"]) - 1, 0) for r in rows]
    t = max(lens)
    b = len(rows)
    probs = torch.zeros(b, t, vocab)
    enc = torch.zeros(b, t, enc_dim)
    tgt = torch.full((b, t), -100, dtype=torch.long)
    eot = torch.full((b, t), -1.0)
    for i, r in enumerate(rows):
        nh, nq = len(r["head"]), r["n_q"]
        for j, tid in enumerate(r["head"]):
            probs[i, j, tid] = 1.0
        if "ids" in r:  # a text row: the true question pieces, one-hot, no encoder state
            for j, tid in enumerate(r["ids"]):
                probs[i, nh + j, tid] = 1.0
        else:
            probs[i, nh : nh + nq] = torch.from_numpy(r["probs"].astype(np.float32))
            enc[i, nh : nh + nq] = torch.from_numpy(r["hid"].astype(np.float32))
        t0 = nh + nq
        if "pause" in r:
            probs[i, t0, r["pause"]] = 1.0
            eot[i, t0] = r["pause_eot"]
            if "pause_hid" in r:  # --pause-hears: the probe's own encoder state
                enc[i, t0] = torch.from_numpy(r["pause_hid"].astype(np.float32))
            t0 += 1
        tail = r["tail"]
        for j, tid in enumerate(tail[:-1]):
            probs[i, t0 + j, tid] = 1.0
        # position p predicts the next id; the answer starts after <eot> <assistant>
        a0 = t0 + 1  # position of <assistant>
        for j, tid in enumerate(tail[2:]):
            tgt[i, a0 + j] = tid
        if "eot" in r:  # rows only read (tune_eot on cached dev rows) may have no labels
            eot[i, nh - 1] = 0.0  # <user>; then the label of every soft step
            eot[i, nh : nh + nq] = torch.from_numpy(np.asarray(r["eot"], np.float32)[:nq])
    return probs, enc, tgt, eot


def build_lm_rows(args: argparse.Namespace, tok: Tokenizer, enc: Encoder, items: list[dict[str, Any]],
                  tag: str, augment_copies: int, truncated: bool = True) -> list[dict[str, Any]]:  # fmt: skip
    warm = warm_mel(enc.warmup, enc.cfg.stack)
    cache = RUNS / f"lm_rows_{tag}_c{augment_copies}{'_warm' if warm is not None else ''}.pt"
    if cache.exists():
        rows = torch.load(cache, weights_only=False)
    else:
        rows = []
        for c in range(augment_copies + 1):
            steps = extract_steps(enc, items, augment=c > 0, seed=args.seed + c, warm=warm)
            for it, st in zip(items, steps, strict=True):
                rows.append(lm_sequence(tok, st, it["answer"], it["skill"] != "incomplete"))
        save_atomic(rows, cache)
    # labels are computed here, not cached: rows are copy-major over ``items``
    read_as = heard_as(args)
    for k, r in enumerate(rows):
        it = items[k % len(items)]
        r["eot"] = eot_labels(tok, r["probs"].argmax(-1) if r["n_q"] else [], it["text"],
                              r["complete"], args.eot_label, read_as)  # fmt: skip
        if holds_break_pause(it, args.break_pauses):
            r["eot"] = break_pause_labels(r["eot"], r["frames"], it["pause"][1])
        if getattr(args, "sure_end", False) and r["complete"] and len(r["eot"]) and r["eot"][-1] == 1.0:
            r["eot"] = np.asarray(r["eot"], np.float32).copy()
            r["eot"][-1] = SURE
    if args.pause_token:
        pid = tok.special(args.pause_token)
        probes: list[Any] = [None] * len(items)
        if getattr(args, "pause_hears", False):
            pcache = RUNS / f"probe_{tag}_{args.pause_lookahead_ms:g}{'_warm' if warm is not None else ''}.pt"
            if pcache.exists():
                probes = torch.load(pcache, weights_only=False)
            else:
                probes = probe_states(enc, items, warm, args.pause_lookahead_ms, args.seed)
                save_atomic(probes, pcache)
        prefixes = getattr(args, "prefix_pauses", False)
        rows = [p for k, r in enumerate(rows)
                for p in pause_rows(r, items[k % len(items)], pid, args.pause_lookahead_ms,
                                    probe=probes[k % len(items)], prefixes=prefixes)
                if truncated or p["tail"]]  # fmt: skip
    return rows


def eot_loss(logit: torch.Tensor, eot: torch.Tensor, teacher_logit: torch.Tensor | None = None,
             hold_weight: float = 1.0) -> torch.Tensor:  # fmt: skip
    """Weighted BCE of the end-of-turn head on the labelled steps (``eot`` >= 0 or
    :data:`HOLD`, which means 0 and weighs ``hold_weight``; a label of 1 or :data:`SURE`
    weighs 3). With ``teacher_logit`` the targets are that head's probabilities instead of
    the labels, except at :data:`HOLD` steps (0) and :data:`SURE` steps (1): fine-tuning
    then keeps the teacher's end of turn while the text learns."""
    m = (eot >= 0) | (eot == HOLD)
    lab = eot[m].clamp(min=0.0, max=1.0)
    w = torch.where(lab > 0, 3.0, torch.where(eot[m] == HOLD, hold_weight, 1.0))
    target = lab
    if teacher_logit is not None:
        target = torch.where(eot[m] == HOLD, 0.0, torch.sigmoid(teacher_logit[m]))
        target = torch.where(eot[m] == SURE, 1.0, target)
    return F.binary_cross_entropy_with_logits(logit[m], target, weight=w)


def load_stage3(path: Path, cfg: FusedConfig, eot_hidden: int | None = None) -> tuple[FusedLM, LMConfig]:
    """A stage-3 checkpoint (``lm_final.pt``, or from_bundle's ``lm_init.pt``) as a FusedLM,
    with its own end-of-turn head, or with a new one of ``eot_hidden`` (freshly initialized
    when its shape differs from the checkpoint's)."""
    ck = torch.load(path, weights_only=False)
    lm_cfg = LMConfig.from_dict(ck["lm_cfg"])
    own = FusedConfig.from_dict(ck.get("cfg", {})).eot_hidden
    model = FusedLM(lm_cfg, replace(cfg, eot_hidden=own if eot_hidden is None else eot_hidden))
    state = ck["model"]
    if eot_hidden is not None and eot_hidden != own:
        state = {k: v for k, v in state.items() if not k.startswith("eot.")}
        model.load_state_dict(state, strict=False)
    else:
        model.load_state_dict(state)
    return model, lm_cfg


def trainable(model: FusedLM, head_only: bool = False) -> list[nn.Parameter]:
    """The parameters stage 3 trains: all, or with ``head_only`` the end-of-turn head alone
    (the rest frozen, so the text answers stay exactly the starting model's)."""
    for p in model.parameters():
        p.requires_grad_(not head_only)
    model.eot.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def param_groups(model: FusedLM, params: list[nn.Parameter], backbone: float) -> list[dict]:
    """Optimizer groups for stage 3: the LM backbone's parameters at ``backbone`` times the
    learning rate (key ``scale``), the adapter and the end-of-turn head at the full rate.
    At 1 one group, as before the option (so older ``lm_last.pt`` files still resume)."""
    if backbone == 1.0:
        return [{"params": params}]
    lm = {id(p) for p in model.lm.parameters()}
    groups = [{"params": [p for p in params if id(p) in lm], "scale": backbone},
              {"params": [p for p in params if id(p) not in lm], "scale": 1.0}]  # fmt: skip
    return [g for g in groups if g["params"]]


def stage3_forward(model: FusedLM, probs: torch.Tensor, enc: torch.Tensor, tgt: torch.Tensor,
                   head_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(text loss, end-of-turn logits) of one stage-3 batch. With ``head_only`` the LM runs
    without gradients and the text loss is 0."""
    if head_only:
        with torch.no_grad():
            h = model.lm.backbone(model.embed(probs, enc))[0]
        return torch.zeros(()), model.eot(h).squeeze(-1)
    logits, eot_logit, _ = model(probs, enc)
    l_text = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100)
    return l_text, eot_logit


def check_lm_options(args: argparse.Namespace) -> None:
    """Refuse stage-3 options that another option must enable, rather than ignore them."""
    if getattr(args, "prefix_pauses", False) and not (args.pause_token and args.eot_label == "prefix"):
        raise SystemExit("--prefix-pauses needs --pause-token and --eot-label prefix")
    if heard_as(args) and args.eot_label != "prefix":
        raise SystemExit("--heard-as needs --eot-label prefix")


def text_mix_rows(args: argparse.Namespace, tok: Tokenizer) -> list[dict[str, Any]]:
    """Stage 3's text rows (``--text-mix``): the training split of the data seed's corpus as
    one-hot questions, never a question of its held-out split (which the eval speech says)."""
    read_as = heard_as(args)
    pid = tok.special(args.pause_token) if args.pause_token else None
    corpus = generate_corpus(data_seed(args))
    rows = []
    for e in corpus + bare_social_forms(corpus):
        if e.split == "train":
            q = tok.encode(normalize(e.question))[:48]
            r = lm_sequence(tok, (np.zeros((0, 1)), np.zeros((0, 1)), np.zeros(0)), e.answer,
                            e.skill != "incomplete")  # fmt: skip
            lab = eot_labels(tok, q, normalize(e.question), r["complete"], args.eot_label, read_as)
            r = dict(r, ids=q, n_q=len(q), eot=lab)
            rows.append(r if pid is None else pause_rows(r, {}, pid, args.pause_lookahead_ms)[0])
    return rows


def train_lm(args: argparse.Namespace) -> None:
    stage = "lm"
    check_lm_options(args)
    torch.manual_seed(args.seed)
    enc, cfg = load_encoder()
    enc_tok = torch.load(RUNS / "encoder_final.pt", weights_only=False)["tokenizer"]
    tok = Tokenizer([tuple(m) for m in enc_tok["merges"]])
    if args.init_lm:  # a trained stage 3 (models.training.from_bundle), fine-tuned further
        model, lm_cfg = load_stage3(args.init_lm, cfg, args.eot_hidden)
        cfg = replace(cfg, eot_hidden=model.eot_hidden)
    else:
        cfg = replace(cfg, eot_hidden=args.eot_hidden or 0)
        ck = torch.load(TEXTLM_CKPT, weights_only=False)
        if ck.get("tokenizer", enc_tok)["merges"] != enc_tok["merges"]:
            raise SystemExit("the text LM's tokenizer differs from the encoder's: retrain stage 1")
        lm_cfg = LMConfig.from_dict(ck["config"]) if "config" in ck else LMConfig.from_dict(ck["cfg"])
        model = FusedLM(lm_cfg, cfg)
        model.lm.load_state_dict(ck.get("model", ck.get("state_dict")))
    train_p, _ = run_speech_paths(args)
    items = load_cache(train_p)
    dev_items, items = items[-200:], items[:-200]
    for extra in args.extra:
        items += load_cache(extra)
    t0 = time.time()
    # the row cache is valid only for these speech caches
    extras = hashlib.sha1("|".join(p.name for p in args.extra).encode()).hexdigest()[:8]
    rows = build_lm_rows(args, tok, enc, items, f"train_{len(items)}_{extras}", args.copies)
    dev_rows = build_lm_rows(args, tok, enc, dev_items, "dev", 0, truncated=False)
    text_rows = text_mix_rows(args, tok) if args.text_mix > 0 else []
    log(f"lm rows: {len(rows)} speech + {len(text_rows)} text (mix {args.text_mix}), "
        f"{len(dev_rows)} dev ({time.time() - t0:.0f}s); {lm_cfg}", stage)  # fmt: skip
    confusion = None
    confuse_last = getattr(args, "confuse_last", 0.0)
    if getattr(args, "confuse", 0.0) > 0 or confuse_last > 0:
        confusion = (piece_confusions(rows, lm_cfg.vocab_size), float(args.confuse), confuse_last)
        log(f"confusable pieces from the rows' posteriors, mixed into {args.confuse:.0%} of the steps "
            f"and {confuse_last:.0%} of the last ones", stage)  # fmt: skip
    teacher = load_stage3(args.eot_teacher, cfg)[0].eval() if args.eot_teacher else None
    head_only = getattr(args, "head_only", False)
    params = trainable(model, head_only)
    opt = torch.optim.AdamW(param_groups(model, params, getattr(args, "backbone_lr", 1.0)),
                            lr=args.lr, weight_decay=0.01)  # fmt: skip
    start = 0
    last = RUNS / f"{stage}_last.pt"
    if last.exists() and not args.fresh:
        c2 = torch.load(last, weights_only=False)
        model.load_state_dict(c2["model"])
        opt.load_state_dict(c2["opt"])
        start = c2["step"]
        log(f"resumed at step {start}", stage)
    t_start = time.time()
    for step in range(start, args.steps):
        rng = np.random.default_rng([args.seed, 7, step])
        n_text = int(round(args.batch * args.text_mix)) if text_rows else 0
        idx = rng.choice(len(rows), args.batch - n_text, replace=False)
        tidx = rng.choice(len(text_rows), n_text, replace=False) if n_text else []
        batch_rows = [rows[i] for i in idx] + [text_rows[i] for i in tidx]
        if confusion is not None:
            crng = np.random.default_rng([args.seed, 8, step])
            cm, rate, last_rate = confusion
            batch_rows = [confuse_row(r, cm, rate, crng, last_rate) for r in batch_rows]
        probs, encx, tgt, eot = make_lm_batch(batch_rows, lm_cfg.vocab_size, cfg.enc_dim,
                                              rng if args.augment else None)  # fmt: skip
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup=50) * g.get("scale", 1.0)
        with autocast(args):
            l_text, eot_logit = stage3_forward(model, probs, encx, tgt, head_only)
            t_logit = None
            if teacher is not None:
                with torch.no_grad():
                    t_logit = teacher(probs, encx)[1].float()
        l_text, eot_logit = l_text.float(), eot_logit.float()
        l_eot = eot_loss(eot_logit, eot, t_logit, getattr(args, "hold_weight", 1.0))
        loss = l_text + args.eot_weight * l_eot
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % args.log_every == 0:
            el = time.time() - t_start
            rate = (step + 1 - start) / el
            log(f"step {step + 1}/{args.steps} text {l_text.item():.3f} eot {l_eot.item():.3f} "
                f"{rate:.2f} it/s eta {(args.steps - step - 1) / rate:.0f}s", stage)  # fmt: skip
        if (step + 1) % args.ckpt_every == 0 or step + 1 == args.steps:
            save_atomic(
                {"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1}, last
            )
    acc = lm_dev_accuracy(model, dev_rows, tok)
    log(f"GATE3 dev[train voices] answer exact {acc:.3f}", stage)
    log(f"held-out questions as text (no encoder input) answer exact "
        f"{text_probe_accuracy(model, tok, data_seed(args)):.3f}", stage)  # fmt: skip
    tuning = tune_eot(model, dev_rows, dev_items, lm_cfg.vocab_size, cfg.enc_dim, stage)
    save_atomic({"model": model.state_dict(), "cfg": cfg.to_dict(), "lm_cfg": lm_cfg.to_dict(),
                 "eot_tuning": tuning, "dev_accuracy": acc, "pause_token": args.pause_token,
                 "pause_hears": bool(args.pause_token and args.pause_hears)},
                RUNS / f"{stage}_final.pt")  # fmt: skip


def retune_eot(args: argparse.Namespace) -> None:
    """Re-run the end-of-turn tuning of a finished stage 3 (rewrites lm_final.pt's tuning)."""
    ck = torch.load(RUNS / "lm_final.pt", weights_only=False)
    cfg, lm_cfg = FusedConfig.from_dict(ck["cfg"]), LMConfig.from_dict(ck["lm_cfg"])
    model = FusedLM(lm_cfg, cfg)
    model.load_state_dict(ck["model"])
    train_p, _ = run_speech_paths(args)
    dev_items = load_cache(train_p)[-200:]
    warm = torch.load(RUNS / "encoder_final.pt", weights_only=False).get("warmup")
    dev_rows = torch.load(RUNS / f"lm_rows_dev_c0{'_warm' if warm else ''}.pt", weights_only=False)
    ck["eot_tuning"] = tune_eot(model, dev_rows, dev_items, lm_cfg.vocab_size, cfg.enc_dim, "lm")
    save_atomic(ck, RUNS / "lm_final.pt")


def fire_sample(
    frames: np.ndarray, eot_p: np.ndarray, thr: float, gap: int, n_frames: int
) -> int | None:
    """Sample count heard when the runtime rule fires (see models.fused), or None."""
    for k in range(len(frames)):
        f = int(frames[k]) + gap
        nxt = int(frames[k + 1]) if k + 1 < len(frames) else 1 << 30
        if eot_p[k] > thr and nxt > f and f < n_frames:
            return 640 * f + 880
    return None


def tune_eot(model: FusedLM, rows: list[dict[str, Any]], items: list[dict[str, Any]], vocab: int,
             enc_dim: int, stage: str) -> dict[str, float]:  # fmt: skip
    """Pick (threshold, min gap) on dev speech (training voices): the most complete questions
    fired within 200 ms of speech end while <= 3 % fire during mid-question pauses."""
    model.eval()
    per = []
    with torch.no_grad():
        for r, it in zip(rows, items, strict=True):
            probs, encx, _, _ = make_lm_batch([r], vocab, enc_dim)
            _, eot_logit, _ = model(probs, encx)
            nh, nq = len(r["head"]), r["n_q"]
            p = torch.sigmoid(eot_logit[0, nh : nh + nq]).numpy()
            per.append((r["frames"], p, len(it["mel"]) // 4, it))
    model.train()
    best: dict[str, float] = {"threshold": 0.5, "min_gap_ms": 80.0, "score": -9.0}
    for thr in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        for gap in (1, 2, 3, 4):
            ok = n = early = pause_bad = n_pause = 0
            for frames, p, nf, it in per:
                fire = fire_sample(frames, p, thr, gap, nf)
                if it["skill"] != "incomplete":
                    n += 1
                    ok += fire is not None and it["end"] <= fire <= it["end"] + 3200
                    early += fire is not None and fire < it["end"]
                if it["pause"] is not None:
                    n_pause += 1
                    pause_bad += fire is not None and it["pause"][0] <= fire < it["pause"][1]
            rate, bad = ok / max(1, n), pause_bad / max(1, n_pause)
            log(f"eot dev thr {thr} gap {gap * 40} ms: within200 {rate:.3f} early {early / max(1, n):.3f} "
                f"fire-in-pause {bad:.3f}", stage)  # fmt: skip
            # Prefer configs with <= 3 % fires in pauses; else the best rate - early - pause.
            score = rate if bad <= 0.03 else rate - early / max(1, n) - bad - 1.0
            if score > best["score"]:
                best = {"threshold": thr, "min_gap_ms": gap * 40.0, "score": score}
    log(f"eot tuning (dev, training voices): {best}", stage)
    return best


def lm_dev_accuracy(model: FusedLM, rows: list[dict[str, Any]], tok: Tokenizer) -> float:
    """Greedy answers (full recompute per token; slow but simple) vs the expected answer."""
    model.eval()
    ok = 0
    eot_id = tok.special("<eot>")
    with torch.no_grad():
        for r in rows:
            r2 = dict(r, tail=r["tail"][:2] + [eot_id])
            probs, encx, _, _ = make_lm_batch([r2], model.lm.cfg.vocab_size, model.proj.in_features)
            n = len(r["head"]) + r["n_q"] + ("pause" in r) + 2
            probs, encx = probs[:, :n], encx[:, :n]
            out: list[int] = []
            for _ in range(40):
                logits, _, _ = model(probs, encx)
                nxt = int(logits[0, -1].argmax())
                if nxt == eot_id:
                    break
                out.append(nxt)
                oh = torch.zeros(1, 1, probs.shape[2])
                oh[0, 0, nxt] = 1.0
                probs = torch.cat([probs, oh], 1)
                encx = torch.cat([encx, torch.zeros(1, 1, encx.shape[2])], 1)
            want = tok.decode(r["tail"][2:-1])
            ok += normalize(tok.decode(out)) == normalize(want)
    model.train()
    return ok / max(1, len(rows))


def text_probe_accuracy(model: FusedLM, tok: Tokenizer, seed: int, per_skill: int = 30) -> float:
    """Greedy answers to held-out corpus questions given as one-hot text with no encoder
    input: what the LM backbone still knows. The text LM alone scores 1.000 on these (a
    diagnostic on held-out phrasings, logged, never used to stop or select)."""
    by: dict[str, list[Any]] = {}
    for e in generate_corpus(seed):
        if e.split == "heldout":
            by.setdefault(e.skill, []).append(e)
    rng = np.random.default_rng([seed, 11])
    vocab, enc_dim = model.lm.cfg.vocab_size, model.proj.in_features
    rows = []
    for skill in sorted(by):
        for k in rng.permutation(len(by[skill]))[:per_skill]:
            e = by[skill][int(k)]
            ids = tok.encode(normalize(e.question))[:48]
            probs = np.eye(vocab, dtype=np.float32)[ids]
            steps = (probs, np.zeros((len(ids), enc_dim), np.float32), np.zeros(len(ids)))
            rows.append(lm_sequence(tok, steps, e.answer, e.skill != "incomplete"))
    return lm_dev_accuracy(model, rows, tok)


# --------------------------------------------------------------------------- stage 2


def audio_targets(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Noise-free joe z and per-char durations for every reply sentence (cached)."""
    path = DATA_DIR / "audio_targets.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    from models.training.piper_z import PiperTextToZ

    tz = PiperTextToZ.load()
    out = []
    sents = answer_sentences()
    t0 = time.time()
    for i, s in enumerate(sents):
        r = tz.synthesize(s, noise_scale=0.0, length_scale=1.0, noise_w=0.0, seed=0)
        out.append({"text": s, "z": r.z.astype(np.float16), "char_dur": char_durations(s, r)})
        if (i + 1) % 100 == 0:
            print(f"  audio targets {i + 1}/{len(sents)} {time.time() - t0:.0f}s", flush=True)
    save_atomic(out, path)
    return out


def char_durations(text: str, r: Any) -> np.ndarray:
    """Per-character z-frame counts from piper's per-phoneme-id durations.

    Phoneme ids are ``^ _ p1 _ p2 _ ... $`` per sentence; words are split on the
    space phoneme. When the phoneme words and the text words line up (same
    count), each word's frames are spread over its characters (and the gap
    frames go to the separator); otherwise frames are spread over the whole
    sentence in proportion to character count.
    """
    dur = r.durations.astype(np.float64)
    total = int(dur.sum())
    words = text.split(" ")
    # text units: each word (with its punctuation) followed by one space char
    phon = "".join(r.phonemes)
    # durations per phoneme char (skip ^ _ and pair each phoneme with its pad)
    per_char: list[float] = []
    k = 2
    for _ in phon:
        if k + 1 < len(dur):
            per_char.append(dur[k] + dur[k + 1])
        k += 2
    head = float(dur[:2].sum())
    pwords_d: list[float] = []
    acc = 0.0
    for c, d in zip(phon, per_char, strict=False):
        if c == " ":
            pwords_d.append(acc)
            acc = d
        else:
            acc += d
    pwords_d.append(acc)
    out = np.zeros(len(text), dtype=np.float64)
    if len(pwords_d) == len(words) and len(r.phonemes) == 1:
        pos = 0
        for wi, (w, d) in enumerate(zip(words, pwords_d, strict=True)):
            if wi == 0:
                d += head
            n = len(w) + (1 if wi + 1 < len(words) else 0)
            out[pos : pos + n] = d / n
            pos += n
    else:
        out[:] = total / len(text)
    # integer frames that sum to the total (largest remainder)
    fl = np.floor(out)
    rem = total - int(fl.sum())
    if rem > 0:
        fl[np.argsort(-(out - fl), kind="stable")[:rem]] += 1
    elif rem < 0:
        fl[np.argsort(-fl, kind="stable")[:-rem]] -= 1
    return fl.astype(np.int64)


def train_audio(args: argparse.Namespace) -> None:
    stage = "audio"
    torch.manual_seed(args.seed)
    cfg = FusedConfig.from_name(args.preset)
    data = audio_targets(args)
    held = audio_heldout_answers()
    train = [d for d in data if d["text"] not in held]
    log(f"audio targets: {len(train)} train sentences, {len(data) - len(train)} held out", stage)
    text_m, frame_m = AudioText(cfg), AudioFrames(cfg)
    params = list(text_m.parameters()) + list(frame_m.parameters())
    log(f"audio head: {sum(p.numel() for p in params):,} parameters", stage)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    z_all = np.concatenate([d["z"].astype(np.float32) for d in train[:200]], axis=1)
    z_mean = torch.from_numpy(z_all.mean(1))
    z_std = torch.from_numpy(z_all.std(1) + 1e-3)
    start = 0
    last = RUNS / f"{stage}_last.pt"
    if last.exists() and not args.fresh:
        ck = torch.load(last, weights_only=False)
        text_m.load_state_dict(ck["text"])
        frame_m.load_state_dict(ck["frames"])
        opt.load_state_dict(ck["opt"])
        start = ck["step"]
        log(f"resumed at step {start}", stage)
    t_start = time.time()
    for step in range(start, args.steps):
        rng = np.random.default_rng([args.seed, 11, step])
        idx = rng.choice(len(train), args.batch, replace=False)
        rows = [train[i] for i in idx]
        n = max(len(r["text"]) for r in rows)
        zt = max(r["z"].shape[1] for r in rows)
        chars = torch.zeros(len(rows), n, dtype=torch.long)
        ldur = torch.zeros(len(rows), n)
        cmask = torch.zeros(len(rows), n)
        gidx = torch.zeros(len(rows), zt, dtype=torch.long)
        pos = torch.zeros(len(rows), zt, 2)
        ztar = torch.zeros(len(rows), zt, cfg.latent_dim)
        zmask = torch.zeros(len(rows), zt)
        for b, r in enumerate(rows):
            ids = char_ids(r["text"])
            chars[b, : len(ids)] = torch.tensor(ids)
            ldur[b, : len(ids)] = torch.log1p(torch.from_numpy(r["char_dur"].astype(np.float32)))
            cmask[b, : len(ids)] = 1
            gi, gp = regulate_indices([int(x) for x in r["char_dur"]])
            T = len(gi)
            gidx[b, :T] = torch.tensor(gi)
            pos[b, :T] = torch.tensor(gp)
            ztar[b, :T] = (torch.from_numpy(r["z"].astype(np.float32)).T[:T] - z_mean) / z_std
            zmask[b, :T] = 1
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup=100)
        hid, pdur = text_m(chars)
        l_dur = ((pdur - ldur) ** 2 * cmask).sum() / cmask.sum()
        up = torch.gather(hid, 1, gidx[:, :, None].expand(-1, -1, hid.shape[2]))
        up = up + 0.1 * torch.randn(up.shape, generator=torch.Generator().manual_seed(step))
        zp = frame_m(up, pos)
        l_z = ((zp - ztar).abs().mean(-1) * zmask).sum() / zmask.sum()
        loss = l_z + l_dur
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % args.log_every == 0:
            el = time.time() - t_start
            rate = (step + 1 - start) / el
            log(f"step {step + 1}/{args.steps} z_l1 {l_z.item():.3f} dur {l_dur.item():.3f} "
                f"{rate:.2f} it/s eta {(args.steps - step - 1) / rate:.0f}s", stage)  # fmt: skip
        if (step + 1) % args.ckpt_every == 0 or step + 1 == args.steps:
            save_atomic({"text": text_m.state_dict(), "frames": frame_m.state_dict(),
                         "opt": opt.state_dict(), "step": step + 1}, last)  # fmt: skip
    save_atomic({"text": text_m.state_dict(), "frames": frame_m.state_dict(), "cfg": cfg.to_dict(),
                 "z_mean": z_mean, "z_std": z_std}, RUNS / f"{stage}_final.pt")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("stage", choices=("encoder", "lm", "audio", "retune"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-seed", type=int, default=None,
                    help="seed of the speech caches and of the corpus (stage 3's text rows; default: "
                    "--seed); so that --seed alone varies the initialization and batch order on "
                    "the same data")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-eval", type=int, default=480)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--init-lm", type=Path, default=None,
                    help="lm: start from this stage-3 checkpoint (from_bundle's lm_init.pt) "
                         "instead of the text LM")  # fmt: skip
    ap.add_argument("--eot-weight", type=float, default=1.0)
    ap.add_argument("--eot-label", choices=("last", "complete", "prefix"), default="last",
                    help="stage 3: end-of-turn positives at the last piece only, also "
                         "wherever only fillers are left, or also wherever the words so far "
                         "ask a whole question (eot_labels)")  # fmt: skip
    ap.add_argument("--heard-as", default="",
                    help="stage 3, --eot-label prefix: read a last heard word as another for "
                         "the sure ends, e.g. thank=thanks (domain.complete_question)")
    ap.add_argument("--prefix-pauses", action="store_true",
                    help="stage 3, with --pause-token and --eot-label prefix: a sure pause step "
                         "after every sure end before the last piece (pause_rows)")
    ap.add_argument("--pause-token", default=None,
                    help="stage 3: read the end-of-turn head on this special token, a step the "
                         "run time adds when the user is silent (pause_rows; e.g. <reserved_0>)")
    ap.add_argument("--pause-hears", action="store_true",
                    help="stage 3: the pause step also gets the encoder state the run time's probe "
                         "hears (probe_states), so the head can use how the speech stopped")
    ap.add_argument("--sure-end", action="store_true",
                    help="target 1 at the last piece of a complete question (the utterance's end), "
                         "also under --eot-teacher")
    ap.add_argument("--hold-weight", type=float, default=1.0,
                    help="stage 3: weight of the HOLD steps (no end in a break-style pause) in the "
                         "end-of-turn loss; a sure end weighs 3, other steps 1")
    ap.add_argument("--confuse", type=float, default=0.0,
                    help="stage 3: mix this share of the heard steps with a piece the encoder "
                         "confuses with theirs (piece_confusions; 0: off)")
    ap.add_argument("--confuse-last", type=float, default=0.0,
                    help="stage 3: also mix the last heard step of this share of the speech rows "
                         "(where the head is read), labels kept")
    ap.add_argument("--head-only", action="store_true",
                    help="stage 3: train the end-of-turn head alone on the frozen LM (text "
                         "answers stay exactly those of --init-lm)")
    ap.add_argument("--backbone-lr", type=float, default=1.0,
                    help="stage 3: the LM backbone's learning rate as a share of --lr (the adapter "
                         "and end-of-turn head keep --lr); below 1 it forgets less of the text LM")
    ap.add_argument("--eot-hidden", type=int, default=None,
                    help="stage 3: an end-of-turn head with one hidden layer this wide (0: linear; "
                         "default: --init-lm's own head)")
    ap.add_argument("--eot-teacher", type=Path, default=None,
                    help="stage 3: end-of-turn targets are this stage-3 checkpoint's head "
                         "probabilities (e.g. lm_init.pt: fine-tune the text, keep the end of turn)")
    ap.add_argument("--break-pauses", choices=("continue", "inside", "text"), default="continue",
                    help="stage 3: labels of an item whose pause is an SSML break (pause_break): "
                         "no end until the speech resumes (break_pause_labels); that only where "
                         "more than fillers follow the pause (inside a question), else the text's; "
                         "or the text labels, as for a pause made of two syntheses")  # fmt: skip
    ap.add_argument("--pause-lookahead-ms", type=float, default=400.0,
                    help="stage 3: how far into a mid-question pause the pause step hears")
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared 2-core CPU")
    ap.add_argument("--bf16", action="store_true",
                    help="encoder, lm: bfloat16 autocast of the forward (float32 weights and "
                         "losses; 1.3x on this 2-core AVX512-BF16 CPU, docs/fused.md)")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--inter-ctc", type=float, default=0.0,
                    help="encoder: weight of an intermediate CTC loss after --inter-ctc-layer "
                         "blocks (same norm and CTC layer; training only; 0: none, as before)")
    ap.add_argument("--inter-ctc-layer", type=int, default=4)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument(
        "--augment",
        action="store_true",
        help="stage 3: drop/flatten heard pieces (tried: dev 0.645 vs 0.675 without)",
    )
    ap.add_argument(
        "--text-mix", type=float, default=0.0, help="stage 3: share of text-corpus rows per batch"
    )
    ap.add_argument(
        "--copies", type=int, default=1, help="stage 3: extra SpecAugment'd encoder passes"
    )
    ap.add_argument(
        "--extra", type=Path, nargs="*", default=[], help="more training speech caches"
    )
    ap.add_argument(
        "--prefix-s", type=float, default=0.0,
        help="stage 1: a third of this to this much quiet noise before each item (out of the "
             "loss), and the bundle's turns start from a warm-up (0: from zeros, as before)",
    )  # fmt: skip
    ap.add_argument(
        "--shared-prefix", action="store_true",
        help="stage 1, with --prefix-s: one quiet prefix per batch, heard once, its state "
             "shared by the items (not padded into every item; faster)",
    )  # fmt: skip
    ap.add_argument(
        "--init", type=Path, default=None, help="encoder: start from this encoder_final.pt"
    )
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--runs", type=Path, default=None, help="checkpoint/log folder (runs/fused)")
    args = ap.parse_args(argv)
    defaults = {"encoder": (24, 2e-3), "lm": (48, 1e-3), "audio": (16, 2e-3), "retune": (1, 0.0)}
    defaults = defaults[args.stage]
    args.batch = args.batch or defaults[0]
    args.lr = args.lr or defaults[1]
    return args


def main(argv: list[str] | None = None) -> None:
    global RUNS
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.runs is not None:
        RUNS = args.runs
        load_encoder.__defaults__ = (RUNS / "encoder_final.pt",)
    RUNS.mkdir(parents=True, exist_ok=True)
    stages = {"encoder": train_encoder, "lm": train_lm, "audio": train_audio, "retune": retune_eot}
    stages[args.stage](args)


if __name__ == "__main__":
    main()
