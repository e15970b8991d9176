"""Fit the codec's residual vector quantizer on the joe voice's latent ``z``.

Codebooks are fit with plain numpy k-means (k-means++ seeding from a fixed
seed, Lloyd iterations, dead codes re-seeded from the worst-coded vectors),
one stage at a time on the residual of the previous stages. ``S`` consecutive
``z`` frames are stacked into one token frame, so the LM steps at
``sample_rate / hop / S`` Hz.

Rebuild the committed codebooks (deterministic; needs the latents cached by
``python -m models.training.codec_targets latents``)::

    python -m models.training.codec_fit --stack 4 --codebooks 8 --size 1024

which writes ``bundles/codec/codebooks.npy`` and ``bundles/codec/manifest.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from models.codec import (
    CodecConfig,
    encode_stacked,
    stack_frames,
    write_codec_bundle,
)


def kmeans(x: np.ndarray, k: int, *, iters: int = 20, seed: int = 0,
           verbose: bool = False) -> np.ndarray:
    """(N, D) float32 -> (k, D) centroids. Deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    x = np.ascontiguousarray(x, dtype=np.float32)
    x2 = (x * x).sum(1)
    # k-means++ seeding on a subsample (cheap, deterministic)
    sub = x[rng.choice(n, size=min(n, 20 * k), replace=False)]
    sub2 = (sub * sub).sum(1)
    centers = [sub[rng.integers(len(sub))]]
    d = ((sub - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d / d.sum() if d.sum() > 0 else None
        c = sub[rng.choice(len(sub), p=p)]
        centers.append(c)
        d = np.minimum(d, sub2 - 2 * sub @ c + c @ c)
        np.maximum(d, 0, out=d)
    cb = np.stack(centers).astype(np.float32)
    for it in range(iters):
        idx, dist = _assign(x, x2, cb)
        counts = np.bincount(idx, minlength=k)
        sums = np.zeros_like(cb)
        np.add.at(sums, idx, x)
        alive = counts > 0
        cb[alive] = sums[alive] / counts[alive, None]
        dead = np.flatnonzero(~alive)
        if len(dead):  # re-seed dead codes on the worst-coded vectors
            worst = np.argsort(-dist)[: len(dead)]
            cb[dead] = x[worst]
        if verbose:
            print(f"    iter {it + 1}/{iters} mse/dim {dist.mean() / x.shape[1]:.4f} "
                  f"dead {len(dead)}", file=sys.stderr)
    return cb


def _assign(x: np.ndarray, x2: np.ndarray, cb: np.ndarray,
            block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    idx = np.empty(len(x), np.int64)
    dist = np.empty(len(x), np.float32)
    c2 = (cb * cb).sum(1)
    for s in range(0, len(x), block):
        d = x2[s:s + block, None] - 2 * x[s:s + block] @ cb.T + c2[None]
        idx[s:s + block] = d.argmin(1)
        dist[s:s + block] = np.maximum(d[np.arange(len(d)), idx[s:s + block]], 0)
    return idx, dist


def fit_rvq(x: np.ndarray, n_codebooks: int, size: int, *, iters: int = 20,
            seed: int = 0, verbose: bool = False) -> np.ndarray:
    """Residual VQ: (N, D) -> codebooks (K, C, D) float32."""
    resid = x.astype(np.float32).copy()
    books = []
    for k in range(n_codebooks):
        t = time.perf_counter()
        cb = kmeans(resid, size, iters=iters, seed=seed + k, verbose=verbose)
        idx, _ = _assign(resid, (resid * resid).sum(1), cb)
        resid -= cb[idx]
        books.append(cb)
        snr = 10 * np.log10((x ** 2).sum() / max((resid ** 2).sum(), 1e-12))
        print(f"  codebook {k + 1}/{n_codebooks}: SNR {snr:.2f} dB "
              f"({time.perf_counter() - t:.1f} s)", file=sys.stderr)
    return np.stack(books)


def fit_vectors(stack: int, max_vectors: int = 60000, seed: int = 0,
                variants: int = 3) -> np.ndarray:
    """Stacked z vectors (N, S*192) of the fit sentences, subsampled deterministically."""
    from models.training.codec_targets import LatentCache, answer_sentences, split_sentences

    fit, _ = split_sentences(answer_sentences())
    lats = LatentCache().many(fit, variants, desc="z fit")
    x = np.concatenate([stack_frames(lat.z, stack) for lat in lats])
    if len(x) > max_vectors:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_vectors, replace=False))]
    return x


def output_gain(bundle: Path, seed: int = 0, n: int = 60) -> float:
    from models.codec import CodecDecoder, encode_latent, load_codebooks
    from models.training.codec_targets import LatentCache, answer_sentences, split_sentences

    fit, _ = split_sentences(answer_sentences())
    rng = np.random.default_rng(seed)
    texts = [fit[i] for i in np.sort(rng.choice(len(fit), min(n, len(fit)), replace=False))]
    dec = CodecDecoder(bundle)
    books = load_codebooks(bundle)
    cache = LatentCache()
    peak = max(float(np.abs(dec.decode_all(encode_latent(cache.get(t).z, books, dec.config.stack))).max())
               for t in texts)
    return round(0.95 / peak, 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--stack", type=int, default=4)
    ap.add_argument("--codebooks", type=int, default=8)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--max-vectors", type=int, default=60000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bundles/codec")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    x = fit_vectors(args.stack, args.max_vectors, args.seed)
    print(f"fitting RVQ K={args.codebooks} C={args.size} on {x.shape}", file=sys.stderr)
    books = fit_rvq(x, args.codebooks, args.size, iters=args.iters, seed=args.seed,
                    verbose=args.verbose)
    tokens = encode_stacked(x, books)
    assert tokens.shape == (len(x), args.codebooks)
    cfg = CodecConfig(stack=args.stack, n_codebooks=args.codebooks, codebook_size=args.size)
    rebuild = " ".join(["python -m models.training.codec_fit"] + (argv or sys.argv[1:]))
    out = Path(args.out)
    write_codec_bundle(out, cfg, books, rebuild=rebuild)
    # A fixed output gain (piper peak-normalizes each sentence; a stream cannot):
    # the loudest of 60 fit sentences peaks at 0.95 after the codec.
    gain = output_gain(out, seed=args.seed)
    cfg = CodecConfig.from_manifest({**cfg.to_manifest(), "gain": gain})
    path = write_codec_bundle(out, cfg, books, rebuild=rebuild)
    print(f"gain {gain}", file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
