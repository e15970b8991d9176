"""Export a trained text LM to an ONNX bundle that :class:`models.textlm.TextLM` loads.

    python -m models.training.export_lm                   # runs/textlm/final.pt -> bundles/textlm

Writes ``lm.onnx`` (opset 17, fp32), ``tokenizer.json`` and ``manifest.json``.
The one graph serves both manifest entries ``prefill`` and ``decode``: it
takes ``input_ids`` (B, T), ``start_pos`` (B,), ``cache_k``/``cache_v``
(L, B, K, S, D) and returns ``logits`` (B, T, V), ``cache_k_out``,
``cache_v_out``, with B and T dynamic. After writing, the bundle is loaded
back and compared with torch on random inputs (max abs logits difference).
"""

from __future__ import annotations

import argparse
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from models.bundle import write_manifest
from models.runtime import RuntimeOptions, create_session
from models.textlm import INPUTS, KIND, OUTPUTS
from models.tokenizer import Tokenizer
from models.training.lm import LM, CachedStep, LMConfig

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CKPT = ROOT / "runs" / "textlm" / "final.pt"
DEFAULT_BUNDLE = ROOT / "bundles" / "textlm"
OPSET = 17
GRAPH_FILE = "lm.onnx"
REBUILD = "python -m models.training.train_lm --seed 0 && python -m models.training.export_lm"


def onnx_bytes(model: LM, opset: int = OPSET) -> bytes:
    """Serialize the cached-step graph of ``model`` (fp32, dynamic batch and tokens)."""
    model = model.eval()
    cfg = model.cfg
    cache_k, cache_v = model.empty_cache(1)
    args = (
        torch.zeros(1, 3, dtype=torch.long),  # input_ids (B, T)
        torch.zeros(1, dtype=torch.long),  # start_pos (B,)
        cache_k,  # (L, B, K, S, D)
        cache_v,
    )
    dynamic = {
        "input_ids": {0: "batch", 1: "tokens"},
        "start_pos": {0: "batch"},
        "cache_k": {1: "batch"},
        "cache_v": {1: "batch"},
        "logits": {0: "batch", 1: "tokens"},
        "cache_k_out": {1: "batch"},
        "cache_v_out": {1: "batch"},
    }
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes
        torch.onnx.export(
            CachedStep(model),
            args,
            buf,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.doc_string = f"rejoinder text LM, {cfg}"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def write_bundle(
    model: LM,
    tok: Tokenizer,
    out: Path,
    *,
    name: str = "builtin-textlm",
    training: dict[str, Any] | None = None,
    max_new_tokens: int = 48,
) -> Path:
    """Write graph, tokenizer and manifest into ``out``; returns the manifest path."""
    if tok.vocab_size != model.cfg.vocab_size:
        raise ValueError(f"tokenizer vocab {tok.vocab_size} != model vocab {model.cfg.vocab_size}")
    out.mkdir(parents=True, exist_ok=True)
    (out / GRAPH_FILE).write_bytes(onnx_bytes(model))
    tok.save(out / "tokenizer.json")
    config = {
        "model": model.cfg.to_dict(),
        "architecture": "llama-style decoder: RMSNorm, RoPE, SwiGLU, GQA, tied embeddings",
        "dtype": "float32",
        "opset": OPSET,
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "prompt_format": "<bos><user>{normalize(question)}<eot><assistant>",
        "stop_tokens": ["<eot>", "<eos>"],
        "max_new_tokens": max_new_tokens,
        "training": training or {},
    }
    return write_manifest(
        out,
        kind=KIND,
        name=name,
        config=config,
        graphs={"prefill": GRAPH_FILE, "decode": GRAPH_FILE},
        files={"tokenizer": "tokenizer.json"},
        licenses=["MIT"],
        rebuild=REBUILD,
    )


@torch.no_grad()
def parity(model: LM, graph: Path, *, trials: int = 4, seed: int = 0) -> float:
    """Max abs difference of logits and caches, torch vs ONNX Runtime CPU, on random inputs."""
    cfg = model.cfg
    sess = create_session(graph, RuntimeOptions(device="cpu"))
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for i in range(trials):
        b, t = 1 + i % 2, (1, 5, 9, 17)[i % 4]
        start = torch.randint(0, cfg.max_seq_len - t, (b,), generator=gen)
        ids = torch.randint(0, cfg.vocab_size, (b, t), generator=gen)
        shape = (cfg.n_layers, b, cfg.n_kv_heads, cfg.max_seq_len, cfg.head_dim)
        ck, cv = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        want = CachedStep(model.eval())(ids, start, ck, cv)
        got = sess.run(
            list(OUTPUTS),
            {"input_ids": ids.numpy(), "start_pos": start.numpy(),
             "cache_k": ck.numpy(), "cache_v": cv.numpy()},
        )  # fmt: skip
        for w, g in zip(want, got, strict=True):
            worst = max(worst, float(np.abs(w.numpy() - g).max()))
    return worst


def load_final(path: Path) -> tuple[LM, Tokenizer, dict[str, Any]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = LM(LMConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    tok = Tokenizer([(a, b) for a, b in ckpt["tokenizer"]["merges"]])
    return model.eval(), tok, ckpt.get("signature", {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ckpt", type=Path, default=DEFAULT_CKPT)
    ap.add_argument("--out", type=Path, default=DEFAULT_BUNDLE)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, tok, signature = load_final(args.ckpt)
    manifest = write_bundle(model, tok, args.out, training=signature)
    diff = parity(model, args.out / GRAPH_FILE)
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"wrote {manifest.parent}: {model.num_parameters():,} parameters")
    for p in sorted(args.out.iterdir()):
        print(f"  {p.name:16s} {p.stat().st_size / 1e6:7.3f} MB")
    print(f"  total            {total / 1e6:7.3f} MB")
    print(f"parity torch vs onnxruntime (CPU), max abs diff: {diff:.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
