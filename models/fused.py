"""The fused audio-token model at run time: numpy + ONNX Runtime, no torch, no piper.

One :class:`FusedModel` holds the graphs of ``bundles/fused`` (and the codec's
RVQ codebooks) and serves every session; each session owns a
:class:`FusedState` (mel stream, encoder state, LM KV cache and position),
bounded per turn and reset at each new turn.

Use (each call is short; run them in the inference worker)::

    fm = FusedModel()                        # bundles/fused
    st = fm.new_state()
    fm.push_audio(st, pcm16k)                # every input chunk (float32, 16 kHz)
    p = fm.end_of_turn_probability(st)       # after each push; fire when p > fm.eot_threshold
    fm.start_reply(st)                       # <eot> <assistant>
    while (piece := fm.next_text_piece(st)) is not None:
        text += piece                        # the reply's transcript, piece by piece
    tokens = fm.audio_tokens_for(clause)     # (K, T) codec tokens for a text clause
    fm.reset_turn(st)                        # before the next user turn

How it hears: 40 ms encoder frames; a frame whose greedy CTC argmax is a new
non-blank piece *emits*, and the LM ingests one step for it at once (a soft
token: the piece distribution times the token embeddings, plus a projection of
the encoder state). So the LM is never behind the user, and no prefill burst
happens at the end of the turn. The end-of-turn head reads every ingested
step; :meth:`end_of_turn_probability` reports it once ``min_gap_ms`` of audio
has passed with no new piece (0 while pieces keep coming). A bundle with
``end_of_turn.pause_token`` reads the head instead on that token's step after
the pieces heard so far: "the user went quiet here". The step is a probe
(the state keeps no trace of it, so a pause that ends adds nothing to the
context); the reply then starts with ``<pause> <eot> <assistant>``.

How it speaks: :meth:`audio_tokens_for` runs the audio head (characters ->
durations -> voice latent ``z``) and quantizes ``z`` with the codec bundle's
codebooks; :class:`models.codec.CodecDecoder` turns the tokens into PCM.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.bundle import Bundle, BundleError, load_manifest
from models.features import N_MELS, SAMPLE_RATE, LogMel, LogMelStream
from models.runtime import RuntimeOptions, create_session
from models.tokenizer import Tokenizer, TokenizerError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = ROOT / "bundles" / "fused"
KIND = "fused"
BLANK = 0
CHARS = "".join(chr(c) for c in range(32, 127))


#: a noise floor added to every input sample (RMS, dBFS): digital silence (a file, a
#: muted mic, the bench's clean cases) gives log-mel frames at the front end's floor,
#: which training never saw (its speech always has noise, its prefixes -80..-50 dBFS).
#: Lone social words in 10 espeak-ng voices, in digital silence: 47 of 60 answered
#: right without it, 54 with -70 dBFS, 56 with -60 dBFS.
DITHER_DBFS = -60.0
_DITHER = (np.random.default_rng(7).standard_normal(SAMPLE_RATE) * 10 ** (DITHER_DBFS / 20)).astype(
    np.float32
)  # 1 s, cycled by sample position: the same for any chunking


class FusedError(ValueError):
    """Wrong input (rate, shape) or a bundle the runtime cannot serve."""


def warm_audio(seconds: float, dbfs: float, seed: int) -> np.ndarray:
    """Quiet white noise (RMS ``dbfs``) that primes the encoder before each turn.

    A causal encoder started from a zero state knows how far into the audio it is.
    Trained on questions that mostly begin with "hey" a few hundred ms in, it heard
    "hey" there whatever was said (a lone "thanks" was heard "hey"). A bundle whose
    manifest has ``encoder.warmup`` starts every turn from the state this audio
    leaves instead; training prepends the same audio (and random lengths of other
    quiet noise), so the encoder never learns a position.
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    return (rng.standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


@dataclass(frozen=True, kw_only=True)
class FusedOptions:
    """Run-time knobs with safe, bounded defaults."""

    runtime: RuntimeOptions | None = None
    min_gap_ms: float | None = None  # silence (no new piece) before the head counts; None: manifest
    max_user_steps: int = 64  # LM steps a user turn may use; later pieces are dropped
    max_reply_tokens: int = 48
    max_chars: int = 400  # audio head input bound


@dataclass
class FusedState:
    """One session's state for the current turn; :meth:`FusedModel.reset_turn` clears it."""

    mel: LogMelStream
    mel_buf: np.ndarray  # (m, 80) mel frames not yet a whole encoder frame
    enc_state: np.ndarray  # (L, 1, P, C)
    cache_k: np.ndarray  # (L, 1, K, S, D)
    cache_v: np.ndarray
    position: int = 0
    samples: int = 0  # input samples heard this turn (the dither's phase)
    prev_top: int = BLANK
    frames: int = 0  # encoder frames heard this turn
    last_emit_frame: int = -1
    eot_logit: float = -20.0  # the head at the last ingested step
    pause_at: int = -1  # the position ``pause_logit`` was read at (-1: not yet)
    pause_logit: float = -20.0  # the head on a ``<pause>`` step after the steps so far
    pause_frames: int = -1  # ``frames`` when ``pause_logit`` was read (a probe that hears)
    last_hidden: np.ndarray | None = None  # the encoder state of the latest frame
    user_ids: list[int] = field(default_factory=list)  # greedy pieces heard (transcript)
    reply_ids: list[int] = field(default_factory=list)
    replying: bool = False
    finished: bool = False
    _next: int | None = None


def rvq_graph(codebooks: np.ndarray) -> bytes:
    """An ONNX graph ``x`` (N, D) -> ``tokens`` (N, K): greedy residual nearest-code search.

    The same function as :func:`models.codec.encode_stacked`, built in memory from the
    codec bundle's codebooks so it runs on ORT's thread budget (numpy's BLAS may spin
    several threads on a shared CPU).
    """
    from onnx import TensorProto, helper, numpy_helper

    cbs = codebooks.astype(np.float32)
    nodes, inits = [], []
    resid, outs = "x", []
    for k, cb in enumerate(cbs):
        inits += [numpy_helper.from_array(np.ascontiguousarray(cb.T), f"cbT{k}"),
                  numpy_helper.from_array(cb, f"cb{k}"),
                  numpy_helper.from_array((cb * cb).sum(1), f"n{k}")]  # fmt: skip
        nodes += [
            helper.make_node("MatMul", [resid, f"cbT{k}"], [f"dot{k}"]),
            helper.make_node("Mul", [f"dot{k}", "minus2"], [f"m{k}"]),
            helper.make_node("Add", [f"m{k}", f"n{k}"], [f"d{k}"]),
            helper.make_node("ArgMin", [f"d{k}"], [f"i{k}"], axis=1, keepdims=1),
            helper.make_node("Squeeze", [f"i{k}", "ax1"], [f"s{k}"]),
            helper.make_node("Gather", [f"cb{k}", f"s{k}"], [f"q{k}"], axis=0),
            helper.make_node("Sub", [resid, f"q{k}"], [f"r{k}"]),
        ]
        resid = f"r{k}"
        outs.append(f"i{k}")
    inits += [numpy_helper.from_array(np.array(-2.0, np.float32), "minus2"),
              numpy_helper.from_array(np.array([1], np.int64), "ax1")]  # fmt: skip
    nodes.append(helper.make_node("Concat", outs, ["tokens"], axis=1))
    d = cbs.shape[2]
    graph = helper.make_graph(
        nodes, "rvq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", d])],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["n", len(cbs)])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


LOOK_RECENT = 1024  # samples of recent input whose quietest block lookahead repeats
LOOK_MARGIN_MS = 160.0  # a server looks ahead in pauses up to lookahead_ms + this
LOOK_FULL_MS = 96.0  # a lookahead copy pushes all of lookahead_ms up to this far into a pause


def look_ms(lookahead_ms: float, pause_ms: float) -> float:
    """How much background a lookahead copy pushes ``pause_ms`` into a VAD pause: all of
    ``lookahead_ms`` up to :data:`LOOK_FULL_MS`, then less by as much as the pause has grown.

    The copy is there to bring out the late pieces of the words before the pause. By then the
    real encoder has heard that much silence itself, so the copy never hears more than
    ``lookahead_ms + LOOK_FULL_MS`` of it in all; a piece that only a longer made-up silence
    gave would come from new audio the VAD has not called speech yet (the next word's onset:
    in a bench pause case "spell <pause> a[pple]" plus 400 ms of background was heard as
    "spell cat" 448 ms into the pause, and ended the turn).
    """
    return max(0.0, lookahead_ms - max(0.0, pause_ms - LOOK_FULL_MS))


def look_tail(recent: np.ndarray, ms: float, block: int = 256) -> np.ndarray:
    """``ms`` of background for :meth:`FusedModel.lookahead`: the quietest ``block`` of
    ``recent`` audio (so a word's faint end is not repeated), tiled."""
    n = int(ms * SAMPLE_RATE / 1000)
    x = np.asarray(recent, np.float32)
    if n <= 0 or len(x) == 0:
        return np.zeros(0, np.float32)
    if len(x) > block:
        k = len(x) // block
        blocks = x[len(x) - k * block :].reshape(k, block)
        x = blocks[int((blocks**2).sum(1).argmin())]
    return np.tile(x, n // len(x) + 1)[:n]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class FusedModel:
    """Shared weights of the fused model; see the module docstring."""

    def __init__(self, bundle_dir: str | os.PathLike[str] = DEFAULT_BUNDLE,
                 options: FusedOptions | None = None, *, verify: bool = True) -> None:  # fmt: skip
        self.options = options or FusedOptions()
        self.bundle: Bundle = load_manifest(bundle_dir, kind=KIND, verify=verify)
        cfg = self.bundle.config
        try:
            self.stack = int(cfg["encoder"]["stack"])
            self.enc_layers = int(cfg["encoder"]["n_layers"])
            self.enc_dim = int(cfg["encoder"]["dim"])
            self.state_len = int(cfg["encoder"]["state_len"])
            m = cfg["model"]
            self.vocab = int(m["vocab_size"])
            self.cache_shape = (int(m["n_layers"]), 1, int(m["n_kv_heads"]), int(m["max_seq_len"]),
                                int(m["d_model"]) // int(m["n_heads"]))  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{self.bundle.root}: bad fused config: {e}") from None
        self.max_seq_len = self.cache_shape[3]
        eot_cfg = cfg.get("end_of_turn") or {}
        #: the bundle's tuned decision threshold for :meth:`end_of_turn_probability`
        self.eot_threshold = float(eot_cfg.get("threshold", 0.5))
        self.min_gap_ms = float(self.options.min_gap_ms if self.options.min_gap_ms is not None
                                else eot_cfg.get("min_gap_ms", 80.0))  # fmt: skip
        #: silence pushed by :meth:`lookahead` in a pause (0: the server does not look ahead)
        self.lookahead_ms = float(eot_cfg.get("lookahead_ms", 0.0))
        #: VAD silence that must confirm the head (the server's ``min_silence_ms``)
        self.min_silence_ms = float(eot_cfg.get("min_silence_ms", 64.0))
        #: the server's ``level_gate`` (``streaming.level.QuietGate``; 0: off)
        self.level_gate = float(eot_cfg.get("level_gate", 0.0))
        #: how far under the user's speech level a window must be for the gate (dB)
        self.level_gate_depth_db = float(eot_cfg.get("level_gate_depth_db", 30.0))
        #: the special token whose step asks the head "the user went quiet here: done?"
        #: (``end_of_turn.pause_token``; None: the head is read at the last heard piece)
        self.pause_id: int | None = None
        #: the probe also gets the latest encoder state (``end_of_turn.pause_hears``): how
        #: the speech stopped, not only the words
        self.pause_hears = bool(eot_cfg.get("pause_hears", False))
        #: the server's late tier: head threshold after a silence longer than any pause (0: off)
        self.late_threshold = float(eot_cfg.get("late_threshold", 0.0))
        self.late_silence_ms = float(eot_cfg.get("late_silence_ms", 768.0))
        #: the server's confirm in noise the level gate cannot see through (0: min_silence_ms
        #: everywhere): when the gate's quiet level is under ``low_snr_headroom_db`` above the
        #: background, the VAD's own (lagging) silence confirms the head after this long
        self.low_snr_min_silence_ms = float(eot_cfg.get("low_snr_min_silence_ms", 0.0))
        self.low_snr_headroom_db = float(eot_cfg.get("low_snr_headroom_db", 2.0))
        #: with the low-SNR confirm, where speech ends in those windows (0: the VAD's own bound)
        self.low_snr_pause_prob = float(eot_cfg.get("low_snr_pause_prob", 0.0))
        ro = self.options.runtime
        self.encoder = create_session(self.bundle.graph("encoder"), ro)
        self.lm = create_session(self.bundle.graph("lm_step"), ro)
        self.tok = Tokenizer.load(self.bundle.file("tokenizer"))
        self.fe = LogMel()
        #: the encoder state every turn starts from (zeros unless ``encoder.warmup``)
        self.warm_state = self._warm_state(cfg["encoder"].get("warmup"))
        self._onehot = np.eye(self.vocab, dtype=np.float32)
        self._ids = {n: self.tok.special(n) for n in ("<bos>", "<user>", "<eot>", "<assistant>")}
        if eot_cfg.get("pause_token"):
            try:
                self.pause_id = self.tok.special(str(eot_cfg["pause_token"]))
            except TokenizerError:
                raise BundleError(f"{self.bundle.root}: unknown end_of_turn.pause_token "
                                  f"{eot_cfg['pause_token']!r}") from None  # fmt: skip
        self.audio_text = self.audio_frames = None
        self.codebooks: np.ndarray | None = None
        self.codec_stack = 4
        if "audio_text" in self.bundle.graphs:
            self.audio_text = create_session(self.bundle.graph("audio_text"), ro)
            self.audio_frames = create_session(self.bundle.graph("audio_frames"), ro)
            codec_dir = self.bundle.root.parent / str(cfg["audio"]["codec_bundle"])
            if (codec_dir / "manifest.json").is_file():
                from models.codec import CodecConfig, load_codebooks

                self.codebooks = load_codebooks(codec_dir)
                self.codec_stack = CodecConfig.from_bundle(codec_dir).stack
                self.rvq = create_session(rvq_graph(self.codebooks), ro)

    def _warm_state(self, spec: object) -> np.ndarray:
        state = np.zeros((self.enc_layers, 1, self.state_len, self.enc_dim), np.float32)
        if not spec:
            return state
        try:
            if not isinstance(spec, dict):
                raise TypeError
            pcm = warm_audio(float(spec["seconds"]), float(spec["dbfs"]), int(spec["seed"]))
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{self.bundle.root}: bad encoder.warmup {spec!r}") from None
        mel = self.fe.compute(pcm)
        n = len(mel) // self.stack * self.stack
        if n:
            _, _, state = self.encoder.run(None, {"mel": mel[None, :n], "state": state})
        return np.asarray(state, np.float32)

    # ------------------------------------------------------------------ state

    def new_state(self) -> FusedState:
        st = FusedState(
            mel=self.fe.new_stream(), mel_buf=np.zeros((0, N_MELS), np.float32),
            enc_state=np.zeros((self.enc_layers, 1, self.state_len, self.enc_dim), np.float32),
            cache_k=np.zeros(self.cache_shape, np.float32), cache_v=np.zeros(self.cache_shape, np.float32),
        )  # fmt: skip
        self.reset_turn(st)
        return st

    def reset_turn(self, st: FusedState) -> None:
        """Forget the turn: audio state, KV cache; then feed ``<bos> <user>``."""
        st.mel.reset()
        st.mel_buf = np.zeros((0, N_MELS), np.float32)
        st.enc_state[...] = self.warm_state
        st.cache_k.fill(0.0)
        st.cache_v.fill(0.0)
        st.position = 0
        st.samples = 0
        st.prev_top = BLANK
        st.frames = 0
        st.last_emit_frame = -1
        st.user_ids = []
        st.reply_ids = []
        st.pause_at = st.pause_frames = -1
        st.last_hidden = None
        st.replying = st.finished = False
        st._next = None
        logits, eot = self._lm_step(st, self._onehot[[self._ids["<bos>"], self._ids["<user>"]]],
                                    np.zeros((2, self.enc_dim), np.float32))  # fmt: skip
        st.eot_logit = float(eot[-1])

    def _run_lm(self, st: FusedState, probs: np.ndarray, enc: np.ndarray) -> list[np.ndarray]:
        """One ``lm_step`` call at ``st.position``: logits, eot, new caches (``st`` unchanged)."""
        return self.lm.run(None, {  # type: ignore[no-any-return]
            "probs": probs[None].astype(np.float32), "enc": enc[None].astype(np.float32),
            "start_pos": np.array([st.position], np.int64), "cache_k": st.cache_k, "cache_v": st.cache_v,
        })  # fmt: skip

    def _lm_step(
        self, st: FusedState, probs: np.ndarray, enc: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        t = len(probs)
        if st.position + t > self.max_seq_len:
            raise FusedError(f"context full ({st.position} + {t} > {self.max_seq_len})")
        logits, eot, st.cache_k, st.cache_v = self._run_lm(st, probs, enc)
        st.position += t
        return logits[0], eot[0]

    # ------------------------------------------------------------------ hearing

    def push_audio(self, st: FusedState, pcm16k: np.ndarray) -> None:
        """Feed 16 kHz float32 mono audio; runs front end, encoder and LM ingestion."""
        x = np.asarray(pcm16k, dtype=np.float32)
        if x.ndim != 1:
            raise FusedError(f"expected mono 1-D PCM at {SAMPLE_RATE} Hz, got shape {x.shape}")
        if st.replying:
            return
        x = x + _DITHER[(st.samples + np.arange(len(x))) % len(_DITHER)]
        st.samples += len(x)
        mel = st.mel.push(x)
        buf = np.concatenate([st.mel_buf, mel]) if len(st.mel_buf) else mel
        n = len(buf) // self.stack * self.stack
        st.mel_buf = buf[n:]
        if n == 0:
            return
        logits, hidden, st.enc_state = self.encoder.run(
            None, {"mel": buf[None, :n], "state": st.enc_state}
        )
        logits, hidden = logits[0], hidden[0]
        st.last_hidden = hidden[-1]
        top = logits.argmax(-1)
        for i in range(len(top)):
            t = int(top[i])
            if t != BLANK and t != st.prev_top and len(st.user_ids) < self.options.max_user_steps:
                lg = logits[i].copy()
                lg[BLANK] = -np.inf
                _, eot = self._lm_step(st, _softmax(lg)[None], hidden[i][None])
                st.eot_logit = float(eot[-1])
                st.user_ids.append(t)
                st.last_emit_frame = st.frames + i
            st.prev_top = t
        st.frames += len(top)

    def clone_state(self, st: FusedState) -> FusedState:
        """An independent copy (arrays and lists copied; the mel stream's buffer too)."""
        c = copy.copy(st)
        c.mel = copy.copy(st.mel)
        c.enc_state, c.cache_k, c.cache_v = st.enc_state.copy(), st.cache_k.copy(), st.cache_v.copy()
        c.user_ids, c.reply_ids = list(st.user_ids), list(st.reply_ids)
        return c

    def lookahead(self, st: FusedState, tail: np.ndarray) -> FusedState:
        """What the model would have heard if ``tail`` came next: a copy of ``st`` with
        ``tail`` pushed (``st`` is unchanged).

        The causal encoder emits a word's last piece only some 100-400 ms after the word
        ends. When the VAD hears silence, pushing the silence that the user is presumably
        keeping (the recent background, repeated) gives that piece now; if the user does
        keep silent, the real audio would have given the same. Read
        :meth:`head_probability` on the copy, and start the reply from it.
        """
        c = self.clone_state(st)
        self.push_audio(c, tail)
        return c

    def _head_logit(self, st: FusedState) -> float:
        """The head's logit for "the user is done": on a ``<pause>`` step after the steps so far
        when the bundle has one (a probe: ``st`` keeps no trace of it), else at the last step."""
        if self.pause_id is None or st.position + 1 > self.max_seq_len:
            return st.eot_logit
        h = st.last_hidden if self.pause_hears else None
        if st.pause_at != st.position or (h is not None and st.pause_frames != st.frames):
            enc = h[None] if h is not None else np.zeros((1, self.enc_dim), np.float32)
            _, eot, _, _ = self._run_lm(st, self._onehot[[self.pause_id]], enc)
            st.pause_logit, st.pause_at, st.pause_frames = float(eot[0, -1]), st.position, st.frames
        return st.pause_logit

    def head_probability(self, st: FusedState) -> float:
        """The end-of-turn head after the heard pieces (0.0 before any), with no gap rule."""
        return float(1.0 / (1.0 + np.exp(-self._head_logit(st)))) if st.user_ids else 0.0

    def push_text(self, st: FusedState, text: str) -> None:
        """Text input instead of speech: the LM reads ``text`` as exact (one-hot) pieces."""
        from models.domain import normalize

        if st.replying:
            raise FusedError("the turn is already being answered; reset_turn first")
        room = self.options.max_user_steps - len(st.user_ids)
        ids = self.tok.encode(normalize(text))[: max(0, room)]
        if not ids:
            return
        _, eot = self._lm_step(st, self._onehot[ids], np.zeros((len(ids), self.enc_dim), np.float32))
        st.eot_logit = float(eot[-1])
        st.user_ids.extend(ids)

    def heard_text(self, st: FusedState) -> str:
        """Greedy transcript of the pieces heard this turn (for logs and transcripts)."""
        return self.tok.decode(st.user_ids)

    def end_of_turn_probability(self, st: FusedState) -> float:
        """The end-of-turn head at the last heard piece, once ``min_gap_ms`` passed without a
        new piece (else 0.0). Semantic: low after "what is seven plus", high after "... five"."""
        if not st.user_ids:
            return 0.0
        gap_ms = (st.frames - 1 - st.last_emit_frame) * 10.0 * self.stack
        if gap_ms < self.min_gap_ms:
            return 0.0
        return self.head_probability(st)

    # ------------------------------------------------------------------ replying

    def start_reply(self, st: FusedState) -> None:
        """Close the user turn (``[<pause>] <eot> <assistant>``) and choose the first reply piece."""
        if st.replying:
            return
        ids = [self._ids["<eot>"], self._ids["<assistant>"]]
        enc = np.zeros((len(ids) + (self.pause_id is not None), self.enc_dim), np.float32)
        if self.pause_id is not None:
            ids.insert(0, self.pause_id)  # the user went quiet, as in training
            if self.pause_hears and st.last_hidden is not None:
                enc[0] = st.last_hidden
        logits, _ = self._lm_step(st, self._onehot[ids], enc)
        st.replying = True
        st._next = int(logits[-1].argmax())

    def next_text_piece(self, st: FusedState) -> str | None:
        """The next piece of the reply's transcript, or None when the reply is complete."""
        if not st.replying:
            raise FusedError("call start_reply first")
        if st.finished or st._next is None:
            return None
        tid = st._next
        if tid == self._ids["<eot>"] or len(st.reply_ids) >= self.options.max_reply_tokens \
                or st.position >= self.max_seq_len:  # fmt: skip
            st.finished = True
            st._next = None
            return None
        st.reply_ids.append(tid)
        logits, _ = self._lm_step(st, self._onehot[[tid]], np.zeros((1, self.enc_dim), np.float32))
        st._next = int(logits[-1].argmax())
        return self.tok.decode([tid])

    def reply_text(self, st: FusedState) -> str:
        return self.tok.decode(st.reply_ids)

    # ------------------------------------------------------------------ speaking

    def latent_for(self, text: str) -> np.ndarray:
        """(192, Z) voice latent for ``text`` from the audio head."""
        if self.audio_text is None or self.audio_frames is None:
            raise FusedError("this bundle has no audio head")
        text = text.strip()[: self.options.max_chars]
        if not text:
            return np.zeros((192, 0), np.float32)
        chars = np.array([[CHARS.index(c) + 1 if c in CHARS else 1 for c in text]], np.int64)
        hid, log_dur = self.audio_text.run(None, {"chars": chars})
        dur = np.maximum(0, np.round(np.expm1(log_dur[0]))).astype(np.int64)
        idx = np.repeat(np.arange(len(dur)), dur)
        if len(idx) == 0:
            return np.zeros((192, 0), np.float32)
        starts = np.repeat(np.cumsum(dur) - dur, dur)
        d_rep = np.repeat(dur, dur).astype(np.float32)
        j = np.arange(len(idx)) - starts
        pos = np.stack([(j + 0.5) / np.maximum(d_rep, 1), 1.0 / np.sqrt(np.maximum(d_rep, 1))], -1)
        (z,) = self.audio_frames.run(None, {"frames": hid[:, idx].astype(np.float32),
                                            "pos": pos[None].astype(np.float32)})  # fmt: skip
        return np.ascontiguousarray(z[0].T)

    def audio_tokens_for(self, text: str) -> np.ndarray:
        """(K, T) int64 codec tokens speaking ``text`` (quantized with the codec's codebooks)."""
        if self.codebooks is None:
            raise FusedError("codec bundle (codebooks) not found next to the fused bundle")
        from models.codec import stack_frames

        z = self.latent_for(text)
        if z.shape[1] == 0:
            return np.zeros((len(self.codebooks), 0), np.int64)
        (tokens,) = self.rvq.run(None, {"x": stack_frames(z, self.codec_stack)})
        return np.ascontiguousarray(tokens.T)
