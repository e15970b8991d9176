"""Codec training data and targets: text -> z (+ durations) -> audio tokens.

``z`` comes from the joe voice's own text-to-latent graph
(:mod:`models.training.piper_z`), so targets are exactly what the voice would
say. Everything is deterministic (noise seeded from the text and scales) and
cached outside git under ``data/codec/``.

Sentences are the domain's reply sentences (``models.domain.answer_sentences``)
split by a stable hash: :func:`split_sentences` holds out at least 200 (and at
least 30 %) for evaluation; the rest fit the codebooks.

Commands::

    python -m models.training.codec_targets latents      # cache z for the fit set
    python -m models.training.codec_targets tokens --out data/codec/targets.npz

API for the fused model's data pipeline::

    maker = TargetMaker.load()             # piper + codec bundle
    t = maker.target("Goodbye!")
    t.tokens      # (K, T_tok) int64 at config.frame_rate
    t.durations   # (P,) frames of z per phoneme id (z rate, 86.13 Hz)
    t.phoneme_token_frames  # (P,) first token frame of each phoneme id
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path("data/codec")
MIN_HELDOUT = 200
HELDOUT_FRACTION = 0.3

# (noise_scale, length_scale, noise_w) variants for fitting codebooks: the
# voice's default plus seeded random draws, so the codebooks cover the tempo
# and prosody range that training targets will use.
DEFAULT_SCALES = (0.667, 1.0, 0.8)
SCALE_RANGES = ((0.3, 0.9), (0.8, 1.3), (0.4, 1.1))


def answer_sentences() -> list[str]:
    """Every distinct reply sentence of the domain, sorted."""
    from models import domain

    return sorted(set(domain.answer_sentences()))


def sentence_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def split_sentences(sentences: Iterable[str]) -> tuple[list[str], list[str]]:
    """(fit, heldout): heldout is the max(200, 30 %) sentences with the smallest hash."""
    ordered = sorted(set(sentences), key=sentence_hash)
    n_held = min(len(ordered), max(MIN_HELDOUT, round(HELDOUT_FRACTION * len(ordered))))
    return sorted(ordered[n_held:]), sorted(ordered[:n_held])


def variant_scales(text: str, n_variants: int) -> list[tuple[float, float, float]]:
    """The default scales plus ``n_variants - 1`` seeded draws from SCALE_RANGES."""
    out = [DEFAULT_SCALES]
    rng = np.random.default_rng(sentence_hash(text) ^ 0x5EED)
    for _ in range(n_variants - 1):
        a, b, c = (round(float(rng.uniform(lo, hi)), 3) for lo, hi in SCALE_RANGES)
        out.append((a, b, c))
    return out


def progress(items: list[str], desc: str) -> Iterator[str]:
    try:
        from tqdm import tqdm
    except ImportError:  # progress to stderr without tqdm
        for i, it in enumerate(items):
            print(f"\r{desc} {i + 1}/{len(items)}", end="", file=sys.stderr)
            yield it
        print(file=sys.stderr)
        return
    yield from tqdm(items, desc=desc, file=sys.stderr, dynamic_ncols=True)


@dataclass(frozen=True)
class Latent:
    text: str
    scales: tuple[float, float, float]
    z: np.ndarray  # (192, T) float32
    durations: np.ndarray  # (P,) int64
    phoneme_ids: np.ndarray  # (P,) int64


class LatentCache:
    """z per (text, scales, seed), computed with piper once and kept under data/codec/z."""

    def __init__(self, root: Path = DATA_DIR / "z") -> None:
        self.root = root
        self._tz = None

    def _key(self, text: str, scales: tuple[float, float, float], seed: int) -> Path:
        k = f"{text}|{scales}|{seed}".encode()
        return self.root / f"{hashlib.sha256(k).hexdigest()[:24]}.npz"

    def get(self, text: str, scales: tuple[float, float, float] = DEFAULT_SCALES,
            seed: int = 0) -> Latent:
        path = self._key(text, scales, seed)
        if path.is_file():
            with np.load(path) as f:
                return Latent(text, scales, f["z"], f["durations"], f["phoneme_ids"])
        if self._tz is None:
            from models.training.piper_z import PiperTextToZ

            self._tz = PiperTextToZ.load()  # type: ignore[assignment]
        assert self._tz is not None
        r = self._tz.synthesize(  # type: ignore[attr-defined]
            text, noise_scale=scales[0], length_scale=scales[1], noise_w=scales[2], seed=seed
        )
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, z=r.z, durations=r.durations, phoneme_ids=r.phoneme_ids)
        tmp.replace(path)
        return Latent(text, scales, r.z, r.durations, r.phoneme_ids)

    def many(self, texts: list[str], n_variants: int = 1, desc: str = "z") -> list[Latent]:
        jobs = [(t, s) for t in texts for s in variant_scales(t, n_variants)]
        keys = [f"{i}" for i in range(len(jobs))]
        out: list[Latent] = []
        for k in progress(keys, desc):
            t, s = jobs[int(k)]
            out.append(self.get(t, s))
        return out


@dataclass(frozen=True)
class CodecTarget:
    """Audio tokens for one sentence, with its phoneme alignment on both grids."""

    text: str
    tokens: np.ndarray  # (K, T_tok) int64
    durations: np.ndarray  # (P,) z frames per phoneme id
    phoneme_ids: np.ndarray  # (P,)
    phoneme_token_frames: np.ndarray  # (P,) token frame in which each phoneme id starts


class TargetMaker:
    """text -> CodecTarget with the committed codebooks (bundles/codec)."""

    def __init__(self, codebooks: np.ndarray, stack: int, cache: LatentCache) -> None:
        self.codebooks = codebooks
        self.stack = stack
        self.cache = cache

    @classmethod
    def load(cls, bundle: str | Path = "bundles/codec") -> TargetMaker:
        from models.codec import CodecConfig, load_codebooks

        cfg = CodecConfig.from_bundle(bundle)
        return cls(load_codebooks(bundle), cfg.stack, LatentCache())

    def target(self, text: str, scales: tuple[float, float, float] = DEFAULT_SCALES,
               seed: int = 0) -> CodecTarget:
        from models.codec import encode_latent

        lat = self.cache.get(text, scales, seed)
        tokens = encode_latent(lat.z, self.codebooks, self.stack)
        starts = np.concatenate([[0], np.cumsum(lat.durations)[:-1]])
        return CodecTarget(text, tokens, lat.durations, lat.phoneme_ids, starts // self.stack)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=["latents", "tokens"])
    ap.add_argument("--variants", type=int, default=3, help="scale variants per fit sentence")
    ap.add_argument("--bundle", default="bundles/codec")
    ap.add_argument("--out", default=str(DATA_DIR / "targets.npz"))
    args = ap.parse_args(argv)
    fit, held = split_sentences(answer_sentences())
    print(f"sentences: {len(fit)} fit, {len(held)} held out", file=sys.stderr)
    cache = LatentCache()
    if args.what == "latents":
        cache.many(fit, args.variants, desc="z fit")
        cache.many(held, 1, desc="z heldout")
        return 0
    maker = TargetMaker.load(args.bundle)
    texts = sorted(fit + held)
    toks, durs, pids, starts = [], [], [], []
    for text in progress(texts, "tokens"):
        t = maker.target(text)
        toks.append(t.tokens)
        durs.append(t.durations)
        pids.append(t.phoneme_ids)
        starts.append(t.phoneme_token_frames)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    heldset = set(held)
    # Ragged arrays are stored flat with offsets (no pickle): sentence i's tokens are
    # tokens[:, token_offsets[i]:token_offsets[i + 1]], its phonemes likewise.
    np.savez(
        out,
        texts=np.asarray(texts),
        heldout=np.asarray([t in heldset for t in texts]),
        tokens=np.concatenate(toks, axis=1),
        token_offsets=np.cumsum([0] + [t.shape[1] for t in toks]),
        durations=np.concatenate(durs),
        phoneme_ids=np.concatenate(pids),
        phoneme_token_frames=np.concatenate(starts),
        phoneme_offsets=np.cumsum([0] + [len(d) for d in durs]),
    )
    print(f"wrote {out} ({len(texts)} sentences)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
