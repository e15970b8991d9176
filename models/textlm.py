"""The built-in text LM at inference time: ONNX Runtime, numpy, no torch.

One :class:`TextLM` holds the sessions and the tokenizer and serves every
conversation; each conversation owns a :class:`TextLMState` (its KV cache and
position), reset at every turn because turns are independent.

Simple use::

    lm = TextLM()                                    # bundles/textlm
    reply = lm.generate("what is seven plus five", on_token=print)

Step use, for a pipeline that interleaves sessions and may cancel between
tokens (each call is one graph run; nothing is kept between turns)::

    state = lm.new_state()
    lm.start_reply(state, "what is seven plus five")  # reset + prefill
    while (piece := lm.next_piece(state)) is not None:
        send(piece)                                   # stop calling to cancel

Prompt format (fixed by the training corpus, see :func:`prompt_ids`)::

    <bos> <user> normalize(question) <eot> <assistant>   ->   answer <eot>

The graph takes ``input_ids`` (B, T), ``start_pos`` (B,) and a fixed-size
cache ``cache_k``/``cache_v`` (L, B, K, S, D) and returns ``logits`` (B, T, V)
and the updated cache; prefill feeds the prompt (T tokens), decode one token.
See ``docs/bundle.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.bundle import Bundle, BundleError, load_manifest
from models.domain import normalize
from models.runtime import RuntimeOptions, create_session
from models.tokenizer import Tokenizer, TokenizerError

DEFAULT_BUNDLE = Path(__file__).resolve().parent.parent / "bundles" / "textlm"
KIND = "textlm"
INPUTS = ("input_ids", "start_pos", "cache_k", "cache_v")
OUTPUTS = ("logits", "cache_k_out", "cache_v_out")
_MODEL_KEYS = ("vocab_size", "n_layers", "n_kv_heads", "max_seq_len", "d_model", "n_heads")


class ContextFull(RuntimeError):
    """A prefill or decode step would write past the fixed cache size (``max_seq_len``)."""


def prompt_ids(tok: Tokenizer, question: str, max_question_tokens: int | None = None) -> list[int]:
    """Token ids of the prompt for ``question``; keeps the question's last tokens if too long."""
    q = tok.encode(normalize(question))
    if max_question_tokens is not None and len(q) > max_question_tokens:
        q = q[len(q) - max_question_tokens :]
    return [
        tok.special("<bos>"),
        tok.special("<user>"),
        *q,
        tok.special("<eot>"),
        tok.special("<assistant>"),
    ]


def reply_ids(tok: Tokenizer, answer: str) -> list[int]:
    """Token ids the model is trained to produce after the prompt: the answer, then ``<eot>``."""
    return tok.encode(answer) + [tok.special("<eot>")]


@dataclass
class TextLMState:
    """One conversation's decoding state: KV cache, position and the reply so far.

    Create with :meth:`TextLM.new_state`; :meth:`TextLM.start_reply` resets it.
    """

    cache_k: np.ndarray  # (L, 1, K, S, D) float32
    cache_v: np.ndarray  # (L, 1, K, S, D) float32
    position: int = 0  # cache slots in use
    reply_ids: list[int] = field(default_factory=list)
    max_new_tokens: int = 0
    finished: bool = True
    _pending: int | None = None  # next token, chosen but not emitted yet
    _unfed: int | None = None  # emitted token whose K/V is not in the cache yet

    def reset(self) -> None:
        self.cache_k.fill(0.0)
        self.cache_v.fill(0.0)
        self.position = 0
        self.reply_ids = []
        self.max_new_tokens = 0
        self.finished = True
        self._pending = None
        self._unfed = None


class TextLM:
    """Shared weights of the text LM; see the module docstring for use."""

    def __init__(
        self,
        bundle_dir: str | os.PathLike[str] = DEFAULT_BUNDLE,
        *,
        options: RuntimeOptions | None = None,
        verify: bool = True,
    ) -> None:
        self.bundle: Bundle = load_manifest(bundle_dir, kind=KIND, verify=verify)
        cfg = self.bundle.config
        model = cfg.get("model")
        if not isinstance(model, dict) or any(
            not isinstance(model.get(k), int) for k in _MODEL_KEYS
        ):
            raise BundleError(
                f"{self.bundle.root}: config.model needs integer {', '.join(_MODEL_KEYS)}"
            )
        self.model_config: dict[str, Any] = model
        self.max_seq_len: int = model["max_seq_len"]
        self.default_max_new_tokens = int(cfg.get("max_new_tokens", 48))
        try:
            self.tokenizer = Tokenizer.load(self.bundle.file("tokenizer"))
        except TokenizerError as e:
            raise BundleError(f"{self.bundle.root}: {e}") from None
        if self.tokenizer.vocab_size != model["vocab_size"]:
            raise BundleError(
                f"{self.bundle.root}: tokenizer has {self.tokenizer.vocab_size} tokens, "
                f"config.model.vocab_size is {model['vocab_size']}"
            )
        try:
            self.stop_ids = frozenset(
                self.tokenizer.special(n) for n in cfg.get("stop_tokens", ["<eot>", "<eos>"])
            )
        except TokenizerError as e:
            raise BundleError(f"{self.bundle.root}: config.stop_tokens: {e}") from None
        head_dim = model["d_model"] // model["n_heads"]
        self.cache_shape = (
            model["n_layers"], 1, model["n_kv_heads"], model["max_seq_len"], head_dim,
        )  # fmt: skip

        self.options = options or RuntimeOptions()
        prefill_path, decode_path = self.bundle.graph("prefill"), self.bundle.graph("decode")
        self._prefill = create_session(prefill_path, self.options)
        self._decode = (
            self._prefill
            if decode_path == prefill_path
            else create_session(decode_path, self.options)
        )
        for name, sess in (("prefill", self._prefill), ("decode", self._decode)):
            self._check_io(name, sess)

    def _check_io(self, name: str, sess: Any) -> None:
        inputs = {i.name: i for i in sess.get_inputs()}
        outputs = [o.name for o in sess.get_outputs()]
        if set(inputs) != set(INPUTS) or set(outputs) != set(OUTPUTS):
            raise BundleError(
                f"{self.bundle.root}: graph {name!r} has inputs {sorted(inputs)} and outputs "
                f"{outputs}; expected {list(INPUTS)} and {list(OUTPUTS)}"
            )
        shape = inputs["cache_k"].shape
        fixed = [d for i, d in enumerate(shape) if i != 1]  # batch may be symbolic
        want = [d for i, d in enumerate(self.cache_shape) if i != 1]
        if len(shape) != 5 or fixed != want:
            raise BundleError(
                f"{self.bundle.root}: graph {name!r} cache_k shape {shape} does not match "
                f"config (L, B, K, S, D) = {self.cache_shape}"
            )

    @property
    def providers(self) -> list[str]:
        return list(self._prefill.get_providers())

    # ------------------------------------------------------------------ step API

    def new_state(self) -> TextLMState:
        return TextLMState(
            cache_k=np.zeros(self.cache_shape, dtype=np.float32),
            cache_v=np.zeros(self.cache_shape, dtype=np.float32),
        )

    def _run(self, sess: Any, state: TextLMState, ids: Sequence[int]) -> np.ndarray:
        if not ids:
            raise ValueError("no tokens to feed")
        if state.position + len(ids) > self.max_seq_len:
            raise ContextFull(
                f"{state.position} + {len(ids)} tokens exceed max_seq_len {self.max_seq_len}"
            )
        logits, state.cache_k, state.cache_v = sess.run(
            list(OUTPUTS),
            {
                "input_ids": np.asarray([ids], dtype=np.int64),
                "start_pos": np.asarray([state.position], dtype=np.int64),
                "cache_k": state.cache_k,
                "cache_v": state.cache_v,
            },
        )
        state.position += len(ids)
        return np.asarray(logits[0, -1])  # (V,)

    def prefill(self, state: TextLMState, ids: Sequence[int]) -> np.ndarray:
        """Feed ``ids`` at the state's position; returns the last position's logits (V,)."""
        return self._run(self._prefill, state, ids)

    def decode_step(self, state: TextLMState, token_id: int) -> np.ndarray:
        """Feed one token; returns the next-token logits (V,)."""
        return self._run(self._decode, state, [token_id])

    def start_reply(
        self, state: TextLMState, question: str, max_new_tokens: int | None = None
    ) -> None:
        """Reset ``state`` and prefill the prompt for ``question`` (one graph run)."""
        limit = self.default_max_new_tokens if max_new_tokens is None else max_new_tokens
        room = self.max_seq_len - 4 - limit  # 4 = <bos> <user> ... <eot> <assistant>
        if limit < 1 or room < 1:
            raise ValueError(f"max_new_tokens must be in 1..{self.max_seq_len - 5}")
        state.reset()
        logits = self.prefill(state, prompt_ids(self.tokenizer, question, room))
        state._pending = int(np.argmax(logits))
        state.max_new_tokens = limit
        state.finished = False

    def next_piece(self, state: TextLMState) -> str | None:
        """Text of the next reply token, or ``None`` once the reply is over.

        The first call after :meth:`start_reply` runs no graph; each later one
        runs one decode step. Greedy; stops at a stop token or ``max_new_tokens``.
        """
        return self.next_pieces([state])[0]

    def next_pieces(self, states: Sequence[TextLMState]) -> list[str | None]:
        """:meth:`next_piece` for several sessions at once, with one batched decode run.

        For a worker that serves many conversations: the states may be at
        different positions; finished states give ``None`` and cost nothing.
        """
        if len({id(s) for s in states}) != len(states):
            raise ValueError("a state appears twice")
        to_feed = []
        for s in states:
            if s.finished:
                continue
            if len(s.reply_ids) >= s.max_new_tokens or s.position >= self.max_seq_len:
                s.finished = True
            elif s._unfed is not None:
                to_feed.append(s)
        if len(to_feed) == 1:
            s = to_feed[0]
            s._pending = int(np.argmax(self.decode_step(s, s._unfed or 0)))
            s._unfed = None
        elif to_feed:
            self._decode_batch(to_feed)
        out: list[str | None] = []
        for s in states:
            token = s._pending
            if s.finished or token is None or token in self.stop_ids:
                s.finished = True
                out.append(None)
                continue
            s.reply_ids.append(token)
            s._unfed = token
            out.append(self.tokenizer.decode([token]))
        return out

    def _decode_batch(self, states: list[TextLMState]) -> None:
        logits, cache_k, cache_v = self._decode.run(
            list(OUTPUTS),
            {
                "input_ids": np.asarray([[s._unfed] for s in states], dtype=np.int64),
                "start_pos": np.asarray([s.position for s in states], dtype=np.int64),
                "cache_k": np.concatenate([s.cache_k for s in states], axis=1),
                "cache_v": np.concatenate([s.cache_v for s in states], axis=1),
            },
        )
        for i, s in enumerate(states):
            s.cache_k = np.ascontiguousarray(cache_k[:, i : i + 1])
            s.cache_v = np.ascontiguousarray(cache_v[:, i : i + 1])
            s.position += 1
            s._pending = int(np.argmax(logits[i, -1]))
            s._unfed = None

    def reply_text(self, state: TextLMState) -> str:
        return self.tokenizer.decode(state.reply_ids)

    # ------------------------------------------------------------------ one call

    def generate(
        self,
        prompt_text: str,
        max_new_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
        *,
        state: TextLMState | None = None,
    ) -> str:
        """Greedy reply to the question ``prompt_text``; ``on_token`` gets each piece as decoded."""
        state = state or self.new_state()
        self.start_reply(state, prompt_text, max_new_tokens)
        while (piece := self.next_piece(state)) is not None:
            if on_token is not None:
                on_token(piece)
        return self.reply_text(state)
