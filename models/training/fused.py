"""The fused audio-token model in one file: streaming encoder, LM adapter, heads, audio head.

Data path (one user turn, then the reply)::

    16 kHz PCM -> log-mel (models.features, numpy, 10 ms)
      -> Encoder: stack 4 mel frames (40 ms) -> causal dilated depthwise-conv
         blocks (bounded left context, state = last frames of every conv)
         -> CTC logits over the LM's own vocabulary (blank = <pad>, id 0)
      -> collapse: a 40 ms frame *emits* when its argmax is not blank and differs
         from the previous frame's argmax (greedy CTC)
      -> FusedLM ingests one step per emitted piece while the user speaks:
         embedding = softmax(non-blank logits) @ E_tok + proj(encoder state)
         (a soft token; ``proj`` starts at zero), on the text LM's backbone
      -> heads on every LM step: text logits (tied) and end of turn (sigmoid)
    reply: <eot> <assistant> then greedy text pieces; each reply text goes to
      AudioHead: characters -> conv text encoder -> per-char durations (z frames)
         -> length regulator (numpy, between two graphs) -> conv frame decoder
         -> the voice latent z (192 @ 86.13 Hz), quantized by the codec's RVQ
         codebooks into codec tokens (K, T) at run time.

Shapes: B batch, T time steps, F mel bins, C channels, V vocab, N chars, Z frames.

Presets: ``FusedConfig.from_name("tiny")`` for tests, ``"small"`` ships.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.training.lm import LM, LMConfig

BLANK = 0  # CTC blank = the tokenizer's <pad>, never an LM input
CHARS = "".join(chr(c) for c in range(32, 127))  # audio head alphabet; id 0 = padding


@dataclass(frozen=True)
class FusedConfig:
    n_mels: int = 80
    stack: int = 4  # mel frames per encoder frame (40 ms)
    enc_dim: int = 144
    enc_ffn: int = 288
    enc_kernel: int = 5
    enc_dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2, 4)
    vocab_size: int = 996
    # audio head
    ah_dim: int = 128
    ah_text_layers: int = 3
    ah_frame_dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2, 4)
    latent_dim: int = 192
    z_stack: int = 4  # z frames per audio-head step (the codec's stack)
    # end-of-turn head: 0 = linear on the LM state, else one hidden GELU layer this wide
    eot_hidden: int = 0

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(
            enc_dim=32,
            enc_ffn=64,
            enc_dilations=(1, 2),
            ah_dim=32,
            ah_text_layers=1,
            ah_frame_dilations=(1, 2),
        ),  # fmt: skip
        "small": {},
        # a wider, deeper encoder (1.4 M parameters); the audio head is the same as small's
        "medium": dict(enc_dim=192, enc_ffn=384, enc_dilations=(1, 2, 4, 8, 1, 2, 4, 8)),
    }

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> FusedConfig:
        if name not in cls.PRESETS:
            raise KeyError(f"unknown fused preset {name!r}; known: {sorted(cls.PRESETS)}")
        return replace(cls(**cls.PRESETS[name]), **overrides)

    @property
    def enc_state_len(self) -> int:
        return (self.enc_kernel - 1) * max(self.enc_dilations)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FusedConfig:
        names = {f.name for f in fields(cls)}
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        )


# --------------------------------------------------------------------------- encoder


class CausalBlock(nn.Module):
    """x + FFN(LN(causal depthwise conv(x))); the conv sees ``(k - 1) * dilation`` past frames.

    The depthwise conv is written as a sum of ``k`` shifted, per-channel scaled
    copies in (B, T, C) layout: cheaper than a grouped Conv1d on CPU and the
    same function.
    """

    def __init__(self, dim: int, ffn: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.kernel, self.dilation = kernel, dilation
        self.pad = (kernel - 1) * dilation
        self.weight = nn.Parameter(torch.randn(kernel, dim) / math.sqrt(kernel))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.norm = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ffn)
        self.ff2 = nn.Linear(ffn, dim)

    def forward(self, x: Tensor, past: Tensor) -> tuple[Tensor, Tensor]:
        # x (B, T, C); past (B, pad, C) -> y (B, T, C), new past (B, pad, C)
        t = x.shape[1]
        xt = torch.cat([past, x], dim=1)  # (B, pad + T, C)
        h = self.bias + xt[:, self.pad : self.pad + t] * self.weight[self.kernel - 1]
        for j in range(1, self.kernel):  # tap j looks j * dilation frames back
            o = self.pad - j * self.dilation
            h = h + xt[:, o : o + t] * self.weight[self.kernel - 1 - j]
        h = self.ff2(F.gelu(self.ff1(self.norm(h))))
        return x + h, xt[:, xt.shape[1] - self.pad :]


class Encoder(nn.Module):
    """Streaming log-mel -> CTC encoder. ``forward(mel, state)``; zeros state = start of audio.

    ``state`` (L, B, P, C) holds the last P = ``enc_state_len`` inputs of every
    block (each block reads its own tail). Chunks must be multiples of ``stack``
    mel frames; a run over chunks equals one run over their concatenation.
    """

    #: the run-time warm-up (manifest ``encoder.warmup``) it was trained for; None: zeros
    warmup: dict[str, Any] | None = None

    def __init__(self, cfg: FusedConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))
        self.inp = nn.Linear(cfg.n_mels * cfg.stack, cfg.enc_dim)
        self.blocks = nn.ModuleList(
            CausalBlock(cfg.enc_dim, cfg.enc_ffn, cfg.enc_kernel, d) for d in cfg.enc_dilations
        )
        self.norm = nn.LayerNorm(cfg.enc_dim)
        self.ctc = nn.Linear(cfg.enc_dim, cfg.vocab_size)

    def empty_state(self, batch: int) -> Tensor:
        c = self.cfg
        return torch.zeros(len(c.enc_dilations), batch, c.enc_state_len, c.enc_dim)

    def forward(self, mel: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # mel (B, 4T, F) -> logits (B, T, V), hidden (B, T, C), state (L, B, P, C)
        b, tm, f = mel.shape
        x = (mel - self.mel_mean) / self.mel_std
        x = self.inp(x.reshape(b, tm // self.cfg.stack, f * self.cfg.stack))  # (B, T, C)
        new = []
        p = state.shape[2]
        for i, blk in enumerate(self.blocks):
            x_in = x
            x, _ = blk(x, state[i][:, p - blk.pad :])
            full = torch.cat([state[i], x_in], dim=1)  # (B, P + T, C)
            new.append(full[:, full.shape[1] - p :])
        h = self.norm(x)
        return self.ctc(h), h, torch.stack(new)


def spec_augment(mel: Tensor, gen: torch.Generator, n_freq: int = 2, n_time: int = 2) -> Tensor:
    """Zero (in normalised units: set to the per-bin mean) random frequency and time bands."""
    b, t, f = mel.shape
    out = mel.clone()
    fill = mel.mean(dim=(0, 1))
    for i in range(b):
        for _ in range(n_freq):
            w = int(torch.randint(0, 12, (1,), generator=gen))
            s = int(torch.randint(0, f - w, (1,), generator=gen))
            out[i, :, s : s + w] = fill[s : s + w]
        for _ in range(n_time):
            w = int(torch.randint(0, min(20, max(1, t // 8)), (1,), generator=gen))
            s = int(torch.randint(0, max(1, t - w), (1,), generator=gen))
            out[i, s : s + w, :] = fill
    return out


def emissions(logits: Tensor) -> Tensor:
    """(T, V) CTC logits -> (T,) bool: greedy-collapse frames that emit a piece."""
    top = logits.argmax(-1)
    prev = torch.cat([torch.full((1,), BLANK, dtype=top.dtype), top[:-1]])
    return (top != BLANK) & (top != prev)


def soft_piece(logits: Tensor) -> Tensor:
    """(..., V) CTC logits -> (..., V) piece distribution without blank (the LM's soft token)."""
    mask = torch.zeros(logits.shape[-1], dtype=logits.dtype)
    mask[BLANK] = float("-inf")
    return (logits + mask).softmax(-1)


# --------------------------------------------------------------------------- LM side


class FusedLM(nn.Module):
    """Text LM backbone fed with token distributions (one-hot text or soft pieces) and
    encoder states; text and end-of-turn heads on every step."""

    def __init__(self, lm_cfg: LMConfig, cfg: FusedConfig) -> None:
        super().__init__()
        self.lm = LM(lm_cfg)
        self.proj = nn.Linear(cfg.enc_dim, lm_cfg.d_model, bias=False)
        nn.init.zeros_(self.proj.weight)
        d, k = lm_cfg.d_model, cfg.eot_hidden
        self.eot_hidden = k
        self.eot: nn.Module = (nn.Sequential(nn.Linear(d, k), nn.GELU(), nn.Linear(k, 1)) if k
                               else nn.Linear(d, 1))  # fmt: skip

    def embed(self, probs: Tensor, enc: Tensor) -> Tensor:
        # probs (B, T, V), enc (B, T, C_enc) -> (B, T, d_model)
        return probs @ self.lm.tok_embeddings.weight + self.proj(enc)

    def forward(
        self,
        probs: Tensor,
        enc: Tensor,
        cache: tuple[Tensor, Tensor] | None = None,
        start_pos: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        h, cache = self.lm.backbone(self.embed(probs, enc), cache, start_pos)  # (B, T, C)
        return self.lm.logits(h), self.eot(h).squeeze(-1), cache


class LMStep(nn.Module):
    """Exported graph: (probs, enc, start_pos, cache_k, cache_v) -> (logits, eot_logit, caches)."""

    def __init__(self, m: FusedLM) -> None:
        super().__init__()
        self.m = m

    def forward(self, probs: Tensor, enc: Tensor, start_pos: Tensor, cache_k: Tensor,
                cache_v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        logits, eot, cache = self.m(probs, enc, (cache_k, cache_v), start_pos)
        assert cache is not None
        return logits, eot, cache[0], cache[1]


# --------------------------------------------------------------------------- audio head


def char_ids(text: str) -> list[int]:
    """Audio-head character ids (1..95); unknown characters become spaces."""
    return [CHARS.index(c) + 1 if c in CHARS else 1 for c in text]


class ConvBlock(nn.Module):
    """Non-causal residual conv block (the reply text is known in full)."""

    def __init__(self, dim: int, kernel: int = 5, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, padding=(kernel - 1) // 2 * dilation,
                              dilation=dilation)  # fmt: skip
        self.norm = nn.LayerNorm(dim)
        self.ff = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        h = F.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2))
        return x + self.ff(self.norm(h))


class AudioText(nn.Module):
    """Graph 1: chars (B, N) -> (hidden (B, N, C), log durations (B, N) in z frames)."""

    def __init__(self, cfg: FusedConfig) -> None:
        super().__init__()
        self.emb = nn.Embedding(len(CHARS) + 1, cfg.ah_dim)
        self.blocks = nn.ModuleList(ConvBlock(cfg.ah_dim) for _ in range(cfg.ah_text_layers))
        self.dur = nn.Sequential(
            nn.Linear(cfg.ah_dim, cfg.ah_dim), nn.GELU(), nn.Linear(cfg.ah_dim, 1)
        )

    def forward(self, chars: Tensor) -> tuple[Tensor, Tensor]:
        x = self.emb(chars)
        for blk in self.blocks:
            x = blk(x)
        return x, self.dur(x).squeeze(-1)


class AudioFrames(nn.Module):
    """Graph 2: upsampled char states (B, Z, C) + in-char position (B, Z, 2) -> z (B, Z, 192).

    Works at the codec's token rate: every ``z_stack`` z frames are merged into
    one step (Z is padded to a multiple), the conv stack runs there, and each
    step predicts its ``z_stack`` z frames.
    """

    def __init__(self, cfg: FusedConfig) -> None:
        super().__init__()
        self.k = cfg.z_stack
        self.pos = nn.Linear(2, cfg.ah_dim)
        self.merge = nn.Linear(cfg.ah_dim * self.k, cfg.ah_dim)
        self.blocks = nn.ModuleList(ConvBlock(cfg.ah_dim, 5, d) for d in cfg.ah_frame_dilations)
        self.out = nn.Linear(cfg.ah_dim, cfg.latent_dim * self.k)

    def forward(self, frames: Tensor, pos: Tensor) -> Tensor:
        b, z, c = frames.shape
        x = frames + self.pos(pos)  # (B, Z, C)
        pad = (self.k - z % self.k) % self.k
        x = torch.cat([x, x[:, z - 1 :].expand(b, pad, c)], dim=1)  # (B, Z + pad, C)
        x = self.merge(x.reshape(b, (z + pad) // self.k, self.k * c))  # (B, Z', C)
        for blk in self.blocks:
            x = blk(x)
        y = self.out(x).reshape(b, z + pad, -1)  # (B, Z + pad, 192)
        return y[:, :z]


def regulate_indices(durations: list[int]) -> tuple[list[int], list[tuple[float, float]]]:
    """Length regulator: char index of every z frame and its (fraction in char, 1/len) feature."""
    idx: list[int] = []
    pos: list[tuple[float, float]] = []
    for i, d in enumerate(durations):
        for j in range(d):
            idx.append(i)
            pos.append(((j + 0.5) / d, 1.0 / math.sqrt(d)))
    return idx, pos
