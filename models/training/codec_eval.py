"""Evaluate the codec: intelligibility, bitrate, decode speed, streaming fidelity.

    python -m models.training.codec_eval [--bundle bundles/codec] [--limit N]

On the held-out domain sentences (``codec_targets.split_sentences``, >= 200):

- pocketsphinx WER (general English model) of the codec's resynthesis
  (z -> tokens -> decoder) and of the unquantized voice (z -> HiFi-GAN),
  both against the sentence text, and the difference (goal: <= +5 points);
- bitrate and token frame rate;
- offline decode real-time factor (one ONNX thread, as the server runs it);
- streamed decode for several chunk sizes: SNR of the joined chunks against
  the offline decode, per-stream RTF counting the recomputed context, and
  first-chunk latency (time to decode the first chunk; the LM's time to
  produce that chunk is not included).

Writes ``reports/codec_eval.md`` and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from models.codec import DEFAULT_BUNDLE, CodecDecoder, encode_latent, load_codebooks
from models.runtime import create_session

CHUNK_SIZES = (1, 2, 4, 8)


class Transcriber:
    """pocketsphinx, general English model; 22.05 kHz float PCM in, words out."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self.decoder = Decoder(loglevel="FATAL")

    def __call__(self, pcm: np.ndarray, rate: int) -> str:
        import soxr

        x = soxr.resample(pcm.astype(np.float32), rate, 16000)
        raw = (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(raw, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""


def word_errors(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words."""
    d = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(hyp) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (ref[i - 1] != hyp[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(hyp)]


def voice_decoder():  # type: ignore[no-untyped-def]
    """The voice's own HiFi-GAN (z -> PCM), cut from the installed voice."""
    import onnx.utils

    from models.codec import VOICE_AUDIO_TENSOR, VOICE_Z_TENSOR, _voice_path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hifigan.onnx"
        onnx.utils.extract_model(str(_voice_path()), str(path), [VOICE_Z_TENSOR],
                                 [VOICE_AUDIO_TENSOR])
        return create_session(path.read_bytes())


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    err = float(((ref - test) ** 2).sum())
    return float("inf") if err == 0 else 10 * np.log10(float((ref ** 2).sum()) / err)


def stream_decode(dec: CodecDecoder, tokens: np.ndarray, chunk: int) -> tuple[np.ndarray, float, float]:
    """(pcm, seconds to decode the first chunk, total decode seconds) for one utterance."""
    s = dec.new_stream()
    parts, first, total = [], None, 0.0
    for i in range(0, tokens.shape[1], chunk):
        t = time.perf_counter()
        out = dec.decode(s, tokens[:, i:i + chunk])
        dt = time.perf_counter() - t
        total += dt
        if first is None and out.size:
            first = total  # all decode time until the first audio came out
        parts.append(out)
    t = time.perf_counter()
    parts.append(dec.flush(s))
    total += time.perf_counter() - t
    return np.concatenate(parts), total if first is None else first, total


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} CPUs (shared; load average {load} at the end), "
            f"{platform.system()} {platform.release()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    ap.add_argument("--limit", type=int, default=0, help="evaluate only N held-out sentences")
    ap.add_argument("--stream-sentences", type=int, default=40,
                    help="held-out sentences used for the streaming measurements")
    ap.add_argument("--report", default="reports/codec_eval.md")
    args = ap.parse_args(argv)

    from models import domain
    from models.training.codec_targets import (
        LatentCache,
        answer_sentences,
        progress,
        split_sentences,
    )

    fit, held = split_sentences(answer_sentences())
    if args.limit:
        held = held[: args.limit]
    dec = CodecDecoder(args.bundle)
    cfg = dec.config
    books = load_codebooks(args.bundle)
    voice = voice_decoder()
    asr = Transcriber()
    cache = LatentCache()

    errs_q = errs_u = errs_qu = words = 0
    worst: list[tuple[int, str, str, str]] = []
    dec_time = audio_time = 0.0
    token_sets: list[np.ndarray] = []
    for text in progress(held, "eval"):
        lat = cache.get(text)
        tokens = encode_latent(lat.z, books, cfg.stack)
        token_sets.append(tokens)
        t = time.perf_counter()
        pcm_q = dec.decode_all(tokens)
        dec_time += time.perf_counter() - t
        audio_time += len(pcm_q) / cfg.sample_rate
        pcm_u = voice.run(None, {"/Mul_7_output_0": lat.z[None]})[0].reshape(-1) * cfg.gain
        ref = domain.normalize(text).split()
        hq = domain.normalize(asr(pcm_q, cfg.sample_rate)).split()
        hu = domain.normalize(asr(pcm_u, cfg.sample_rate)).split()
        eq, eu = word_errors(ref, hq), word_errors(ref, hu)
        errs_q, errs_u, words = errs_q + eq, errs_u + eu, words + len(ref)
        errs_qu += word_errors(hu, hq)
        worst.append((eq - eu, text, " ".join(hu), " ".join(hq)))
    wer_q, wer_u = 100 * errs_q / words, 100 * errs_u / words

    # Streaming: fidelity, RTF with recomputed context, first-chunk latency.
    rows = []
    sample = token_sets[: args.stream_sentences]
    for chunk in CHUNK_SIZES:
        snrs, firsts, tot, aud, off = [], [], 0.0, 0.0, 0.0
        for tokens in sample:
            t = time.perf_counter()
            ref_pcm = dec.decode_all(tokens)
            off += time.perf_counter() - t
            pcm, first, total = stream_decode(dec, tokens, chunk)
            assert pcm.shape == ref_pcm.shape, (pcm.shape, ref_pcm.shape)
            snrs.append(snr_db(ref_pcm, pcm))
            firsts.append(first)
            tot += total
            aud += len(pcm) / cfg.sample_rate
        rows.append((chunk, float(np.min(snrs)), float(np.median(snrs)), tot / aud, off / aud,
                     1000 * float(np.percentile(firsts, 50)), 1000 * float(np.percentile(firsts, 90))))

    worst.sort(reverse=True)
    lines = [
        "# Codec evaluation",
        "",
        f"- machine: {machine()}; ONNX Runtime 1 intra-op thread",
        f"- bundle: {args.bundle} ({cfg.voice})",
        f"- codec: {cfg.n_codebooks} codebooks x {cfg.codebook_size}, stack {cfg.stack} z frames "
        f"-> {cfg.frame_rate:.2f} token frames/s, **{cfg.bitrate:.0f} bit/s**, "
        f"{cfg.sample_rate} Hz, hop {cfg.hop}",
        f"- sentences: {len(held)} held out (hash split), {len(fit)} used to fit the codebooks",
        "",
        "## Intelligibility (pocketsphinx, general English model)",
        "",
        "| audio | WER % |",
        "|---|---|",
        f"| unquantized voice (z -> HiFi-GAN) | {wer_u:.1f} |",
        f"| codec (z -> tokens -> decoder) | {wer_q:.1f} |",
        f"| difference | {wer_q - wer_u:+.1f} points (goal <= +5) |",
        f"| codec transcript vs unquantized transcript | {100 * errs_qu / words:.1f} |",
        "",
        f"Offline decode RTF: {dec_time / audio_time:.3f} ({audio_time:.0f} s of audio)",
        "",
        f"## Streaming (left {dec.left} / right {dec.right} z frames of context, "
        f"{len(sample)} sentences)",
        "",
        "| chunk (token frames) | chunk ms | SNR vs offline min / median dB | RTF incl. context "
        "| offline RTF, same sentences | first-chunk decode ms p50 / p90 |",
        "|---|---|---|---|---|---|",
    ]
    for chunk, smin, smed, rtf, rtf_off, f50, f90 in rows:
        lines.append(f"| {chunk} | {1000 * chunk / cfg.frame_rate:.0f} | {smin:.1f} / {smed:.1f} "
                     f"| {rtf:.3f} | {rtf_off:.3f} | {f50:.1f} / {f90:.1f} |")
    lines += [
        "",
        "First audio needs the chunk plus the right context: with chunk n token frames, "
        f"the first call returns n*{cfg.stack}-{dec.right} z frames of audio "
        "(none when that is <= 0: then the latency is the decode time summed until the first "
        "non-empty output). The LM's time to produce the tokens is not included.",
        "",
        "## Largest WER regressions (text | unquantized | codec)",
        "",
    ]
    for diff, text, hyp_u, hyp_q in worst[:8]:
        lines.append(f"- {diff:+d}: {text} | {hyp_u} | {hyp_q}")
    report = "\n".join(lines) + "\n"
    out = Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
