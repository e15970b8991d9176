"""Evaluate the exported fused bundle through its numpy/ORT runtime (models.fused).

    python -m models.training.eval_fused [--bundle bundles/fused] [--limit N] [--audio-limit N]

On the project's held-out speech (data/fused/speech_eval_*: held-out voices
and variants x held-out phrasings; see models.training.speech_data):

- text answer exact match (normalized reply == normalized answer), per voice
  group, after the whole utterance (incl. trailing silence) was pushed in 20 ms
  chunks;
- end of turn (threshold ``--threshold``): on complete questions, the share
  that fires within [speech end, speech end + 200 ms], fires early (takeover) or
  late/never; on questions with a 300-700 ms pause, the share that does not fire
  during the pause; on incomplete questions, the share that never fires; both for
  the runtime's own gap rule and for the rule the server runs (Silero VAD plus
  the head on a lookahead copy, the manifest's ``end_of_turn``);
- reply audio: pocketsphinx (general English) key-word hit rate of
  audio-head tokens decoded by the codec, against joe itself (piper) and the
  oracle codec tokens, on held-out reply sentences (never audio targets) and on
  trained ones, reported apart;
- per-call latencies of the runtime on this CPU (one ORT thread).

Writes ``--report`` (reports/fused_eval.md) and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.domain import (
    answer_sentences,
    audio_heldout_answers,
    generate_corpus,
    key_word_hit,
    key_words_heard,
    normalize,
)
from models.fused import DEFAULT_BUNDLE, FusedModel, FusedOptions

CHUNK = 320  # 20 ms at 16 kHz


def run_item(fm: FusedModel, it: dict[str, Any], threshold: float,
             times: dict[str, list[float]]) -> dict[str, Any]:  # fmt: skip
    """Push the utterance in 20 ms chunks; record when the runtime's own rule fires (the
    head at the last piece, after ``min_gap_ms`` without a new piece), then reply."""
    pcm = it["pcm"].astype(np.float32) / 32767
    st = fm.new_state()
    fire = None
    for i in range(0, len(pcm), CHUNK):
        chunk = pcm[i : i + CHUNK]
        t0 = time.perf_counter()
        fm.push_audio(st, chunk)
        times["push_audio(20ms)"].append(time.perf_counter() - t0)
        if fire is None and fm.end_of_turn_probability(st) > threshold:
            fire = i + len(chunk)  # samples heard when it fired
    head = fm.head_probability(st)  # after everything, trailing silence included
    t0 = time.perf_counter()
    fm.start_reply(st)
    times["start_reply"].append(time.perf_counter() - t0)
    pieces = []
    while True:
        t0 = time.perf_counter()
        p = fm.next_text_piece(st)
        times["next_text_piece"].append(time.perf_counter() - t0)
        if p is None:
            break
        pieces.append(p)
    reply = "".join(pieces)
    return {"reply": reply, "heard": fm.heard_text(st), "fire": fire, "ids": list(st.user_ids),
            "ok": normalize(reply) == normalize(it["answer"]), "head": head}  # fmt: skip


def answers_by_hearing_line(heard: list[tuple[str, str, str, bool]]) -> str:
    """Answers apart by hearing, from (heard, said, answer, answered right) per item: for items
    whose greedy transcript is the utterance word for word (after normalization) and the rest,
    then for items whose transcript holds the question's key words (the words its answer
    repeats, :func:`models.domain.key_words_heard`) and the rest. The first of each pair is
    what the LM makes of a right hearing, the second how often it recovers from a wrong one."""
    right = {True: [0, 0], False: [0, 0]}
    key = {True: [0, 0], False: [0, 0]}
    for h, said, answer, ok in heard:
        for tally, hit in ((right, normalize(h) == normalize(said)),
                           (key, key_words_heard(h, said, answer))):  # fmt: skip
            tally[hit][0] += ok
            tally[hit][1] += 1

    def rate(c: list[int]) -> str:
        return f"{c[0] / max(1, c[1]):.3f} (n={c[1]})"

    n = len(heard)
    return (f"Answers exact by hearing: heard word for word {rate(right[True])}, misheard "
            f"{rate(right[False])}; key words heard in {key[True][1] / max(1, n):.3f} of the items, "
            f"answers with them {rate(key[True])}, without {rate(key[False])}")


def write_report(path: Path, lines: list[str]) -> None:
    """Write a markdown report (one line per item) and print it."""
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)


def shift_item(it: dict[str, Any], k: int) -> dict[str, Any]:
    """``it`` with its first ``k`` samples dropped (inside the leading silence: speech,
    pause and label positions move with the audio); the log-mel cache is dropped too."""
    if k == 0:
        return it
    if not 0 < k < min(2400, int(it["start"])):
        raise ValueError(f"shift {k} must be in (0, min(2400, speech start {it['start']}))")
    out = dict(it, pcm=it["pcm"][k:], start=it["start"] - k, end=it["end"] - k)
    out.pop("mel", None)
    for key in ("pause", "pause_dbfs"):
        if it.get(key) is not None:
            out[key] = (it[key][0] - k, it[key][1] - k)
    if it.get("end_dbfs") is not None:
        out["end_dbfs"] = it["end_dbfs"] - k
    return out


def server_rule(fm: FusedModel, items: list[dict[str, Any]]) -> list[str]:
    """The end-of-turn rule the server runs (Silero VAD + lookahead head, the manifest's
    ``end_of_turn``), traced as in ``models.training.eot_tune``."""
    from models.training.eot_tune import fmt, manifest_rule, score, trace_item
    from streaming.vad import SileroVad

    vad = SileroVad()
    thr, sil, late, low = manifest_rule(fm)
    traces = [trace_item(fm, vad, it, fm.lookahead_ms, gate_below=fm.level_gate,
                         gate_depth_db=fm.level_gate_depth_db) for it in items]  # fmt: skip
    s = score(traces, thr, sil, late, low)
    n_inc = sum(t.item["skill"] == "incomplete" for t in traces)
    low_txt = "" if low is None else f"; {low[1] * 32} ms of silence where the gate's headroom is under {low[0]:g} dB"
    return ["", f"## End of turn, server rule: head >= {thr} on a {fm.lookahead_ms:.0f} ms "
            f"lookahead copy, Silero VAD silence >= {sil * 32} ms (level gate {fm.level_gate:g}, "
            f"{fm.level_gate_depth_db:g} dB under the speech; "
            f"late tier: head >= {fm.late_threshold:g} after {fm.late_silence_ms:.0f} ms{low_txt})", "",
            f"- complete questions (n={s['n']}): {fmt(s)}", pause_gate_line(s),
            f"- questions that end on their last content word: within 200 ms "
            f"{s['within200_bare']:.3f}; pauses before fillers only (the same audio up to the "
            f"pause on the split set): fired in {s['pause_fire_before_fillers']:.3f}",
            f"- incomplete questions (n={n_inc}): left to the 1.5 s fallback "
            f"{1 - s['incomplete_fire']:.3f}"] + dbfs_lines(traces, (thr, sil, late, low))  # fmt: skip


def pause_gate_line(s: dict[str, float]) -> str:
    """The mid-question pause gate (no fire in >= 95 % of 300-700 ms pauses) by the server
    rule, read both ways: all pauses, and only those with more than fillers to come."""
    return (f"- no fire during a 300-700 ms pause (gate >= 0.95): all pauses (n={s['n_pause']:.0f}) "
            f"{1 - s['pause_fire']:.3f}; pauses with more than fillers to come "
            f"(n={s['n_pause_inside']:.0f}) {1 - s['pause_fire_inside']:.3f}")


def dbfs_lines(traces: list[Any], rule: tuple[Any, ...]) -> list[str]:
    """The same rule scored against ../LATENCY.md's ground truth (``eot_tune.by_dbfs``), all
    items and by level; nothing for a cache built before it carried that ground truth."""
    from models.training.eot_tune import by_dbfs, score

    if any(t.item.get("end_dbfs") is None for t in traces):
        return ["- (no -40 dBFS ground truth in this speech cache: rebuild it to score by LATENCY.md)"]
    out = ["- by LATENCY.md's ground truth (the last 10 ms window above -40 dBFS of the clean "
           "source; the figures above use the synthesized segments' ends, reverb tails included):"]
    bands = (("all", -99.0, 99.0), ("loudest 10 ms of the speech under -25 dBFS", -99.0, -25.0),
             ("-25 to -18 dBFS", -25.0, -18.0), ("-18 dBFS and up", -18.0, 99.0))
    for name, lo, hi in bands:
        sub = [t for t in traces if lo <= t.item.get("peak_dbfs", 0.0) < hi]
        if sub:
            s = score(by_dbfs(sub), *rule)
            out.append(f"  - {name} (n={s['n']}): within 200 ms {s['within200']:.3f} (of the "
                       f"question {s['within200_question']:.3f}), before the end {s['early']:.3f}, "
                       f"delay p50 {s['p50']:.0f} p95 {s['p95']:.0f} ms")  # fmt: skip
    return out


def eval_text(
    fm: FusedModel, items: list[dict[str, Any]], threshold: float
) -> tuple[list[str], dict]:
    times: dict[str, list[float]] = {
        "push_audio(20ms)": [],
        "start_reply": [],
        "next_text_piece": [],
    }
    per: dict[str, list[int]] = {}
    skill: dict[str, list[int]] = {}
    eot = {r: {"complete": [0, 0, 0, 0], "pause_ok": [0, 0], "incomplete_silent": [0, 0]}
           for r in ("fire",)}  # fmt: skip
    examples = []
    sure: dict[bool, list[int]] = {True: [0, 0], False: [0, 0]}  # heard word for word -> [sure, n]
    heard: list[tuple[str, str, str, bool]] = []  # (heard, said, answer, answered right)
    t_all = time.time()
    from models.training.train_fused import edit_distance

    for n, it in enumerate(items):
        r = run_item(fm, it, threshold, times)
        g = per.setdefault(it["group"], [0, 0, 0, 0])
        g[0] += r["ok"]
        g[1] += 1
        ref = fm.tok.encode(it["text"])  # the runtime's own hearing: greedy pieces vs the text's
        g[2] += edit_distance(r["ids"], ref)
        g[3] += len(ref)
        s = skill.setdefault(it["skill"], [0, 0])
        s[0] += r["ok"]
        s[1] += 1
        if not r["ok"] and len(examples) < 12:
            examples.append(
                f"- [{it['group']}] heard `{r['heard']}` for `{it['text']}` -> `{r['reply']}`"
            )
        heard.append((r["heard"], it["text"], it["answer"], r["ok"]))
        if it["skill"] != "incomplete":
            exact = normalize(r["heard"]) == normalize(it["text"])
            sure[exact][0] += r["head"] >= fm.eot_threshold
            sure[exact][1] += 1
        for rule in ("fire",):
            e = eot[rule]
            end, fire = it["end"], r[rule]
            if it["skill"] == "incomplete":
                e["incomplete_silent"][0] += fire is None
                e["incomplete_silent"][1] += 1
            else:
                c = e["complete"]
                c[3] += 1
                if fire is not None and fire >= end:
                    e.setdefault("delays", []).append((fire - end) / 16.0)
                if fire is None or fire > end + 3200:
                    c[2] += 1  # late or never
                elif fire < end:
                    c[1] += 1  # before the speech ended
                else:
                    c[0] += 1
            if it["pause"] is not None:
                p0, p1 = it["pause"]
                e["pause_ok"][0] += not (fire is not None and p0 <= fire - CHUNK < p1)
                e["pause_ok"][1] += 1
        if (n + 1) % 50 == 0:
            print(f"  {n + 1}/{len(items)} items, {time.time() - t_all:.0f}s", flush=True)
    tot = [sum(v[i] for v in per.values()) for i in range(4)]
    lines = ["## Text answer from held-out speech (exact match after normalization)", "",
             "Token error: the runtime's heard pieces against the question's (stage 1's gate).", "",
             "| voice group | n | exact | token error |", "|---|---|---|---|"]  # fmt: skip
    for k, v in sorted(per.items()):
        lines.append(f"| {k} | {v[1]} | {v[0] / v[1]:.3f} | {v[2] / max(1, v[3]):.3f} |")
    lines.append(f"| **all** | {tot[1]} | **{tot[0] / max(1, tot[1]):.3f}** | "
                 f"**{tot[2] / max(1, tot[3]):.3f}** |")  # fmt: skip
    lines += ["", answers_by_hearing_line(heard)]
    lines += ["", "| skill | n | exact |", "|---|---|---|"]
    for k, v in sorted(skill.items()):
        lines.append(f"| {k} | {v[1]} | {v[0] / v[1]:.3f} |")
    for rule, title in (("fire", f"runtime rule: head > {threshold} after {fm.min_gap_ms:.0f} ms "
                                  "without a new piece"),):  # fmt: skip
        e = eot[rule]
        c = e["complete"]
        lines += ["", f"## End of turn, {title}", "",
                  f"- complete questions (n={c[3]}): fired within 200 ms after speech end "
                  f"{c[0] / max(1, c[3]):.3f}; before speech end {c[1] / max(1, c[3]):.3f}; "
                  f"later or never {c[2] / max(1, c[3]):.3f}",
                  f"- delay after speech end when it fired after the end (ms): p50 "
                  f"{np.percentile(e.get('delays', [0]), 50):.0f}, p90 {np.percentile(e.get('delays', [0]), 90):.0f}",
                  f"- questions with a 300-700 ms pause (n={e['pause_ok'][1]}): no fire during the "
                  f"pause {e['pause_ok'][0] / max(1, e['pause_ok'][1]):.3f}",
                  f"- incomplete questions (n={e['incomplete_silent'][1]}): never fired "
                  f"{e['incomplete_silent'][0] / max(1, e['incomplete_silent'][1]):.3f}"]  # fmt: skip
    n_sure, n_all = sure[True][0] + sure[False][0], sure[True][1] + sure[False][1]
    lines += ["", "## End-of-turn head once everything is heard (trailing silence included)", "",
              f"- complete questions with the head >= {fm.eot_threshold}: "
              f"{n_sure / max(1, n_all):.3f} (head sure on those heard word for word {sure[True][0] / max(1, sure[True][1]):.3f}, "
              f"n={sure[True][1]}; on the rest {sure[False][0] / max(1, sure[False][1]):.3f}, n={sure[False][1]})"]  # fmt: skip
    lines += server_rule(fm, items)
    lines += ["", "Some failures:", *examples]
    return lines, times


def eval_audio(fm: FusedModel, limit: int, times: dict[str, list[float]]) -> list[str]:
    from models.codec import CodecDecoder, encode_latent, load_codebooks
    from models.training.codec_eval import Transcriber
    from models.training.piper_z import PiperTextToZ
    from models.tts import PiperTTS

    codec_dir = fm.bundle.root.parent / "codec"
    dec = CodecDecoder(codec_dir)
    cbs = load_codebooks(codec_dir)
    tz = PiperTextToZ.load()
    tts = PiperTTS()
    asr = Transcriber()
    held = sorted(audio_heldout_answers())
    key = {e.answer: e.key_word for e in generate_corpus(0)}
    trained = [s for s in answer_sentences() if s not in set(held) and s in key]
    rng = np.random.default_rng(0)
    trained = [
        trained[i] for i in rng.choice(len(trained), min(limit, len(trained)), replace=False)
    ]
    lines = ["", "## Reply audio: pocketsphinx key-word hit rate", "",
             "| sentences | n | joe (piper) | oracle codec tokens | fused audio head | head / joe |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, sents in (("held out of audio targets", held[:limit]), ("trained", trained)):
        hits = np.zeros(3)
        for s in sents:
            kw = key[s]
            hits[0] += key_word_hit(asr(tts.synthesize(s), tts.sample_rate), kw)
            r = tz.synthesize(s)
            hits[1] += key_word_hit(
                asr(dec.decode_all(encode_latent(r.z, cbs, fm.codec_stack)), 22050), kw
            )
            t0 = time.perf_counter()
            toks = fm.audio_tokens_for(s)
            times["audio_tokens_for(sentence)"].append(time.perf_counter() - t0)
            hits[2] += key_word_hit(asr(dec.decode_all(toks), 22050), kw)
        r_ = hits / max(1, len(sents))
        lines.append(f"| {name} | {len(sents)} | {r_[0]:.3f} | {r_[1]:.3f} | {r_[2]:.3f} | "
                     f"{r_[2] / max(1e-9, r_[0]):.2f} |")  # fmt: skip
    return lines


def parity(fm: FusedModel, items: list[dict[str, Any]], runs: Path | None = None) -> list[str]:
    """Max |torch - ORT| of the shipped graphs on real speech (needs the runs' checkpoints)."""
    import torch

    from models.training.export_fused import load_trained

    m = load_trained() if runs is None else load_trained(runs)
    enc, lm = m["encoder"], m["lm"]
    diffs = {"encoder logits (ORT streamed 40-200 ms chunks vs torch offline)": 0.0,
             "lm_step logits": 0.0, "lm_step eot": 0.0, "audio z": 0.0}  # fmt: skip
    rng = np.random.default_rng(0)
    for it in items[:5]:
        mel = fm.fe.compute(it["pcm"].astype(np.float32) / 32767)
        n = len(mel) // 4 * 4
        with torch.no_grad():
            ref, _, _ = enc(torch.from_numpy(mel[None, :n]), enc.empty_state(1))
        st = np.zeros((fm.enc_layers, 1, fm.state_len, fm.enc_dim), np.float32)
        outs, a = [], 0
        while a < n:
            b = min(n, a + 4 * int(rng.integers(1, 6)))
            o, _, st = fm.encoder.run(None, {"mel": mel[None, a:b], "state": st})
            outs.append(o)
            a = b
        k = next(iter(diffs))
        diffs[k] = max(diffs[k], float(np.abs(np.concatenate(outs, 1) - ref.numpy()).max()))
    probs = rng.dirichlet(np.ones(fm.vocab) * 0.05, size=(1, 6)).astype(np.float32)
    encx = rng.standard_normal((1, 6, fm.enc_dim)).astype(np.float32)
    ck = np.zeros(fm.cache_shape, np.float32)
    lo, eo, _, _ = fm.lm.run(None, {"probs": probs, "enc": encx, "start_pos": np.array([0]),
                                    "cache_k": ck, "cache_v": ck.copy()})  # fmt: skip
    with torch.no_grad():
        lt, et, _ = lm(torch.from_numpy(probs), torch.from_numpy(encx))
    diffs["lm_step logits"] = float(np.abs(lo - lt.numpy()).max())
    diffs["lm_step eot"] = float(np.abs(eo - et.numpy()).max())
    if "audio_text" in m:
        s = "The capital of Peru is Lima."
        z = fm.latent_for(s)
        from models.training.fused import char_ids, regulate_indices

        with torch.no_grad():
            h, ld = m["audio_text"](torch.tensor([char_ids(s)]))
            dur = torch.clamp(torch.round(torch.expm1(ld[0])), min=0).long().tolist()
            gi, gp = regulate_indices(dur)
            zt = m["audio_frames"](h[:, gi], torch.tensor([gp], dtype=torch.float32))[0].T.numpy()
        diffs["audio z"] = float(np.abs(z - zt).max()) if z.shape == zt.shape else float("nan")
    lines = ["", "## Torch (fp32 checkpoints) vs ONNX Runtime (shipped bundle) max abs diff", ""]
    lines += [f"- {k}: {v:.2e}" for k, v in diffs.items()]
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--speech", type=Path, default=Path("data/fused/speech_eval_s0_n480.npy"))
    ap.add_argument("--limit", type=int, default=480)
    ap.add_argument("--audio-limit", type=int, default=58)
    ap.add_argument("--threshold", type=float, default=None, help="default: the bundle's")
    ap.add_argument("--min-gap-ms", type=float, default=None, help="default: the bundle's")
    ap.add_argument("--no-audio", action="store_true")
    ap.add_argument("--report", type=Path, default=Path("reports/fused_eval.md"))
    ap.add_argument("--shift-samples", type=int, default=0,
                    help="drop this many leading samples of every item (0-2399: inside its "
                         "leading silence), to see how the encoder's frame phase moves the figures")
    ap.add_argument("--parity-only", action="store_true")
    ap.add_argument("--runs", type=Path, default=None, help="parity: checkpoint folder (runs/fused)")
    args = ap.parse_args(argv)
    fm = FusedModel(args.bundle, FusedOptions(min_gap_ms=args.min_gap_ms))
    items = [shift_item(it, args.shift_samples)
             for it in list(np.load(args.speech, allow_pickle=True))[: args.limit]]  # fmt: skip
    lines = [f"# Fused model eval ({fm.bundle.root}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, 1 ORT thread)", ""]  # fmt: skip
    if args.shift_samples:
        lines += [f"Every item starts {args.shift_samples} samples later into its audio "
                  "(`--shift-samples`).", ""]  # fmt: skip
    if args.parity_only:
        print("\n".join(parity(fm, items, args.runs)))
        return
    thr = fm.eot_threshold if args.threshold is None else args.threshold
    text_lines, times = eval_text(fm, items, thr)
    lines += text_lines
    times["audio_tokens_for(sentence)"] = []
    if not args.no_audio:
        try:
            lines += eval_audio(fm, args.audio_limit, times)
        except Exception as e:  # noqa: BLE001 - report and go on
            lines += ["", f"reply audio eval failed: {type(e).__name__}: {e}"]
    lines += ["", "## Per-call latency on this CPU (ms)", "", "| call | n | p50 | p90 | max |",
              "|---|---|---|---|---|"]  # fmt: skip
    for k, v in times.items():
        if v:
            a = np.array(v) * 1000
            lines.append(f"| {k} | {len(a)} | {np.percentile(a, 50):.2f} | {np.percentile(a, 90):.2f} | "
                         f"{a.max():.2f} |")  # fmt: skip
    write_report(args.report, lines)


if __name__ == "__main__":
    main()
