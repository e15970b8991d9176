"""Codec runtime: bundle, token checks, offline decode, streaming equals offline."""

from __future__ import annotations

import numpy as np
import pytest

from models import codec
from models.bundle import load_manifest
from models.codec import CodecDecoder, CodecError, encode_latent, load_codebooks, lookup


@pytest.fixture(scope="module")
def decoder() -> CodecDecoder:
    codec.build(quiet=True)  # no-op when `python -m models.build` already ran
    return CodecDecoder()


def smooth_tokens(cfg: codec.CodecConfig, n: int, seed: int = 0) -> np.ndarray:
    """Speech-like token stream: quantized z of a slowly varying random trajectory."""
    rng = np.random.default_rng(seed)
    books = load_codebooks()
    steps = rng.integers(0, cfg.codebook_size, size=n // 3 + 2)
    coarse = books[0][steps].reshape(len(steps) * cfg.stack, cfg.latent_dim).T  # (D, T)
    z = np.repeat(coarse, 3, axis=1)[:, : n * cfg.stack]
    z = z + 0.3 * rng.standard_normal(z.shape).astype(np.float32)
    return encode_latent(z, books, cfg.stack)


def test_manifest_matches_codebooks() -> None:
    b = load_manifest(codec.DEFAULT_BUNDLE, kind="codec", verify=False)
    cfg = codec.CodecConfig.from_manifest(b.config)
    books = load_codebooks()
    assert books.shape == (cfg.n_codebooks, cfg.codebook_size, cfg.stack * cfg.latent_dim)
    assert b.config["frame_rate"] == pytest.approx(cfg.sample_rate / cfg.hop / cfg.stack)
    assert 12.5 <= cfg.frame_rate <= 25
    assert b.manifest["graphs"]["decoder"]["built"] is True


def test_stack_encode_lookup_roundtrip() -> None:
    cfg = codec.CodecConfig.from_bundle()
    books = load_codebooks()
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, cfg.codebook_size, size=(cfg.n_codebooks, 7))
    z = lookup(tokens, books, cfg.stack)  # (D, 7 * S)
    assert z.shape == (cfg.latent_dim, 7 * cfg.stack)
    again = lookup(encode_latent(z, books, cfg.stack), books, cfg.stack)
    # greedy RVQ need not recover the same codes, but must code z closely
    assert np.mean((again - z) ** 2) < 0.05 * np.mean(z**2)
    # a partial last token frame is padded by repeating the last z frame
    assert codec.stack_frames(z[:, :-1], cfg.stack).shape == (7, cfg.stack * cfg.latent_dim)


def test_decode_all_shapes_and_batch(decoder: CodecDecoder) -> None:
    cfg = decoder.config
    tokens = smooth_tokens(cfg, 10)
    pcm = decoder.decode_all(tokens)
    assert pcm.dtype == np.float32 and pcm.shape == (10 * cfg.samples_per_token,)
    assert np.isfinite(pcm).all() and np.abs(pcm).max() <= 1.0 and pcm.std() > 1e-3
    batch = decoder.decode_all(np.stack([tokens, tokens]))
    assert batch.shape == (2, pcm.size)
    np.testing.assert_allclose(batch[1], pcm, atol=1e-4)


def test_bad_tokens_raise(decoder: CodecDecoder) -> None:
    cfg = decoder.config
    good = np.zeros((cfg.n_codebooks, 3), np.int64)
    with pytest.raises(CodecError, match="K="):
        decoder.decode_all(good[:-1])
    with pytest.raises(CodecError, match=r"\[0, "):
        decoder.decode_all(good + cfg.codebook_size)
    with pytest.raises(CodecError, match="integers"):
        decoder.decode(decoder.new_stream(), good.astype(np.float32))


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / max(((ref - test) ** 2).sum(), 1e-20)))


def stream(decoder: CodecDecoder, tokens: np.ndarray, chunks: list[int]) -> np.ndarray:
    s = decoder.new_stream()
    out, i, c = [], 0, 0
    while i < tokens.shape[1]:
        n = chunks[c % len(chunks)]
        out.append(decoder.decode(s, tokens[:, i : i + n]))
        i, c = i + n, c + 1
        # the kept context stays bounded whatever the stream length
        assert s.tokens.shape[1] <= n + 2 + (decoder.left + decoder.right) // decoder.config.stack
    out.append(decoder.flush(s))
    assert s.received == 0 and s.tokens.shape[1] == 0  # flush resets for the next utterance
    return np.concatenate(out)


@pytest.mark.parametrize("chunks", [[1], [2], [3], [5], [8], [1, 4, 2]])
def test_streaming_matches_offline(decoder: CodecDecoder, chunks: list[int]) -> None:
    tokens = smooth_tokens(decoder.config, 29, seed=len(chunks) + chunks[0])
    offline = decoder.decode_all(tokens)
    streamed = stream(decoder, tokens, chunks)
    assert streamed.shape == offline.shape
    # No edge region is excluded: the first and last chunks see the same zero
    # padding as the offline run; only inner chunk boundaries lose context.
    assert snr_db(offline, streamed) >= 25.0


def test_full_receptive_field_is_exact(decoder: CodecDecoder) -> None:
    exact = CodecDecoder(left_context=11, right_context=11)
    tokens = smooth_tokens(exact.config, 17, seed=3)
    assert snr_db(exact.decode_all(tokens), stream(exact, tokens, [2])) > 80.0


def test_large_chunk_is_split(decoder: CodecDecoder) -> None:
    small = CodecDecoder(max_frames_per_run=16)
    tokens = smooth_tokens(small.config, 20, seed=4)
    s = small.new_stream()
    pcm = np.concatenate([small.decode(s, tokens), small.flush(s)])
    assert snr_db(small.decode_all(tokens), pcm) >= 25.0
