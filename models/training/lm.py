"""The text LM backbone: a small Llama-style decoder in one file.

RMSNorm, rotary position embeddings (RoPE), SwiGLU feed-forward and
grouped-query attention (GQA), no biases, tied input/output embeddings.

Two attention paths compute the same function:

* **full** (``cache=None``): positions ``0..T-1`` with a causal mask; used
  for training.
* **cached** (``cache`` and ``start_pos`` given): a fixed-size KV cache of
  ``max_seq_len`` slots, allocated up front; the ``T`` new tokens of row ``b``
  sit at positions ``start_pos[b] .. start_pos[b] + T - 1``. Their keys and
  values are written into the cache (a one-hot scatter that exports to plain
  ONNX ops), and queries attend to every slot at or before their position.
  The same code serves prefill (``T`` = prompt length) and decode (``T = 1``);
  this is the graph exported to ONNX.

The fused model reuses the backbone: :meth:`LM.embed` turns tokens into
embeddings, :meth:`LM.backbone` runs the decoder on any embeddings (so audio
frames can be fed directly), and :meth:`LM.logits` is the text head.

Shapes: B batch, T new tokens, S cache slots (``max_seq_len``), C model
width, H query heads, K key/value heads, D head width, L layers, V vocab.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (cache_k, cache_v), each (L, B, K, S, D)
KVCache = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class LMConfig:
    """Model shape. Use a preset: ``LMConfig.from_name("small", vocab_size=512)``."""

    vocab_size: int = 512
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_hidden: int = 384
    max_seq_len: int = 128
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # For tests: exports and runs in well under a second.
        "tiny": dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=64),
        # The built-in text LM (~0.85 M parameters, 3.4 MB in fp32).
        "small": dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=384),
        # Room to grow on a bigger machine.
        "base": dict(d_model=256, n_layers=6, n_heads=8, n_kv_heads=2, ffn_hidden=768),
    }

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be a multiple of n_heads")
        if self.n_heads % self.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> LMConfig:
        if name not in cls.PRESETS:
            raise KeyError(f"unknown LM preset {name!r}; known: {sorted(cls.PRESETS)}")
        return replace(cls(**cls.PRESETS[name]), **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:  # (..., C) -> (..., C)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(cfg: LMConfig) -> tuple[Tensor, Tensor]:
    """cos and sin of every (position, frequency): two (S, D/2) tables."""
    half = cfg.head_dim // 2
    inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(half, dtype=torch.float64) / half)
    angles = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, heads, T, D) by angles given as (B, 1, T, D/2) cos/sin (halves layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)

    def _repeat_kv(self, x: Tensor) -> Tensor:  # (B, K, S, D) -> (B, H, S, D)
        b, k, s, d = x.shape
        rep = self.n_heads // self.n_kv
        return x[:, :, None].expand(b, k, rep, s, d).flatten(1, 2)

    def forward(
        self,
        x: Tensor,  # (B, T, C)
        cos: Tensor,  # (B, 1, T, D/2)
        sin: Tensor,  # (B, 1, T, D/2)
        positions: Tensor | None,  # (B, T) absolute positions; None on the full path
        cache: tuple[Tensor, Tensor] | None,  # (B, K, S, D) each, this layer's slice
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.wk(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = self.wv(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        if cache is None or positions is None:
            y = F.scaled_dot_product_attention(
                q, self._repeat_kv(k), self._repeat_kv(v), is_causal=True
            )  # (B, H, T, D)
            new_cache = None
        else:
            cache_k, cache_v = cache
            slots = torch.arange(cache_k.shape[2], device=x.device)  # (S,)
            onehot = (positions[:, :, None] == slots).to(x.dtype)  # (B, T, S)
            keep = (1.0 - onehot.sum(1))[:, None, :, None]  # (B, 1, S, 1)
            cache_k = cache_k * keep + torch.einsum("bts,bktd->bksd", onehot, k)  # (B, K, S, D)
            cache_v = cache_v * keep + torch.einsum("bts,bktd->bksd", onehot, v)
            visible = slots[None, None, None, :] <= positions[:, None, :, None]  # (B, 1, T, S)
            scores = q @ self._repeat_kv(cache_k).transpose(-1, -2)  # (B, H, T, S)
            scores = scores * (1.0 / math.sqrt(self.head_dim))
            scores = scores.masked_fill(~visible, float("-inf"))
            y = scores.softmax(-1) @ self._repeat_kv(cache_v)  # (B, H, T, D)
            new_cache = (cache_k, cache_v)
        y = y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # (B, T, H*D)
        return self.wo(y), new_cache


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.w3 = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = FeedForward(cfg)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        positions: Tensor | None,
        cache: tuple[Tensor, Tensor] | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        h, new_cache = self.attn(self.attn_norm(x), cos, sin, positions, cache)
        x = x + h
        return x + self.ffn(self.ffn_norm(x)), new_cache


class LM(nn.Module):
    """Decoder-only LM. ``forward(tokens)`` for training, ``forward(tokens, cache, start_pos)``
    for incremental decoding with a fixed-size cache (see the module docstring)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        cos, sin = rope_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)  # (S, D/2)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02
                if name.endswith(("wo.weight", "w2.weight")):
                    std /= math.sqrt(2 * self.cfg.n_layers)
                nn.init.normal_(p, mean=0.0, std=std)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def empty_cache(self, batch: int) -> KVCache:
        c = self.cfg
        shape = (c.n_layers, batch, c.n_kv_heads, c.max_seq_len, c.head_dim)  # (L, B, K, S, D)
        dev = self.tok_embeddings.weight.device
        return torch.zeros(shape, device=dev), torch.zeros(shape, device=dev)

    def embed(self, tokens: Tensor) -> Tensor:  # (B, T) int64 -> (B, T, C)
        return self.tok_embeddings(tokens)

    def logits(self, h: Tensor) -> Tensor:  # (B, T, C) -> (B, T, V), tied to the embeddings
        return h @ self.tok_embeddings.weight.t()

    def backbone(
        self, h: Tensor, cache: KVCache | None = None, start_pos: Tensor | None = None
    ) -> tuple[Tensor, KVCache | None]:
        """Run the decoder on embeddings ``h`` (B, T, C); returns final-normed (B, T, C).

        With ``cache`` (L, B, K, S, D) x2 and ``start_pos`` (B,) int64, returns the
        updated cache; without, runs the causal full path from position 0.
        """
        b, t, _ = h.shape
        if cache is None:
            positions = None
            cos = self.rope_cos[:t][None, None]  # (1, 1, T, D/2)
            sin = self.rope_sin[:t][None, None]
        else:
            if start_pos is None:
                raise ValueError("start_pos is required with a cache")
            positions = start_pos[:, None] + torch.arange(t, device=h.device)  # (B, T)
            cos = self.rope_cos[positions][:, None]  # (B, 1, T, D/2)
            sin = self.rope_sin[positions][:, None]
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache[0][i], cache[1][i])
            h, updated = layer(h, cos, sin, positions, layer_cache)
            if updated is not None:
                new_k.append(updated[0])
                new_v.append(updated[1])
        out_cache = None if cache is None else (torch.stack(new_k), torch.stack(new_v))
        return self.norm(h), out_cache

    def forward(
        self, tokens: Tensor, cache: KVCache | None = None, start_pos: Tensor | None = None
    ) -> tuple[Tensor, KVCache | None]:
        """(B, T) token ids -> ((B, T, V) logits, updated cache or None)."""
        h, cache = self.backbone(self.embed(tokens), cache, start_pos)
        return self.logits(h), cache


class CachedStep(nn.Module):
    """The exported graph: ``(input_ids, start_pos, cache_k, cache_v) -> (logits, cache_k, cache_v)``."""

    def __init__(self, lm: LM) -> None:
        super().__init__()
        self.lm = lm

    def forward(
        self, input_ids: Tensor, start_pos: Tensor, cache_k: Tensor, cache_v: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        logits, cache = self.lm(input_ids, (cache_k, cache_v), start_pos)
        assert cache is not None
        return logits, cache[0], cache[1]
