"""Export the trained fused model to ONNX (opset 17, fp32) and write ``bundles/fused/``.

    python -m models.training.export_fused            # runs/fused/*_final.pt -> bundles/fused

Graphs (all batch 1 at run time, dynamic time axes):

* ``encoder``: ``mel`` (1, 4n, 80), ``state`` (L, 1, P, C) -> ``logits`` (1, n, V),
  ``hidden`` (1, n, C), ``state_out``;
* ``lm_step``: ``probs`` (1, T, V), ``enc`` (1, T, C), ``start_pos`` (1,),
  ``cache_k``/``cache_v`` (L, 1, K, S, D) -> ``logits`` (1, T, V), ``eot_logit`` (1, T),
  ``cache_k_out``/``cache_v_out``;
* ``audio_text``: ``chars`` (1, N) -> ``hidden`` (1, N, C), ``log_dur`` (1, N);
* ``audio_frames``: ``frames`` (1, Z, C), ``pos`` (1, Z, 2) -> ``z`` (1, Z, 192).

The codec (bundles/codec) turns ``z`` into tokens (its RVQ codebooks) and PCM.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models.bundle import write_manifest
from models.training.fused import AudioFrames, AudioText, Encoder, FusedConfig, FusedLM, LMStep
from models.training.lm import LMConfig

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "runs" / "fused"
OUT = ROOT / "bundles" / "fused"
OPSET = 17
REBUILD = "make fused-model (models/training/rebuild_fused.sh, about 6 h on 2 CPU cores)"


class AudioFramesOut(nn.Module):
    def __init__(self, m: AudioFrames, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.m = m
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, frames: Tensor, pos: Tensor) -> Tensor:
        return self.m(frames, pos) * self.std + self.mean


def load_trained(runs: Path = RUNS) -> dict[str, Any]:
    """The final checkpoints of the three stages as eval-mode modules."""
    enc_ck = torch.load(runs / "encoder_final.pt", weights_only=False)
    cfg = FusedConfig.from_dict(enc_ck["cfg"])
    enc = Encoder(cfg)
    enc.load_state_dict(enc_ck["model"])
    lm_ck = torch.load(runs / "lm_final.pt", weights_only=False)
    lm_cfg = LMConfig.from_dict(lm_ck["lm_cfg"])
    # the end-of-turn head's shape is stage 3's (the encoder run does not know it)
    cfg = replace(cfg, eot_hidden=FusedConfig.from_dict(lm_ck.get("cfg", {})).eot_hidden)
    lm = FusedLM(lm_cfg, cfg)
    lm.load_state_dict(lm_ck["model"])
    out: dict[str, Any] = {"cfg": cfg, "lm_cfg": lm_cfg, "encoder": enc.eval(), "lm": lm.eval(),
                           "tokenizer": enc_ck["tokenizer"], "warmup": enc_ck.get("warmup"),
                           "eot": lm_ck.get("eot_tuning", {"threshold": 0.5, "min_gap_ms": 80.0}),
                           "pause_token": lm_ck.get("pause_token"),
                           "pause_hears": bool(lm_ck.get("pause_hears"))}  # fmt: skip
    a_path = runs / "audio_final.pt"
    if a_path.exists():
        a_ck = torch.load(a_path, weights_only=False)
        acfg = FusedConfig.from_dict(a_ck["cfg"])
        at, af = AudioText(acfg), AudioFrames(acfg)
        at.load_state_dict(a_ck["text"])
        af.load_state_dict(a_ck["frames"])
        out["audio_text"] = at.eval()
        out["audio_frames"] = AudioFramesOut(af, a_ck["z_mean"], a_ck["z_std"]).eval()
    return out


def export_graphs(m: dict[str, Any], out: Path) -> dict[str, str]:
    cfg: FusedConfig = m["cfg"]
    lm_cfg: LMConfig = m["lm_cfg"]
    out.mkdir(parents=True, exist_ok=True)
    graphs = {}
    enc: Encoder = m["encoder"]
    with torch.no_grad():
        torch.onnx.export(
            enc, (torch.zeros(1, 8, cfg.n_mels), enc.empty_state(1)), str(out / "encoder.onnx"),
            input_names=["mel", "state"], output_names=["logits", "hidden", "state_out"],
            dynamic_axes={"mel": {1: "mel_frames"}, "logits": {1: "frames"}, "hidden": {1: "frames"}},
            opset_version=OPSET, dynamo=False,
        )  # fmt: skip
        graphs["encoder"] = "encoder.onnx"
        shape = (lm_cfg.n_layers, 1, lm_cfg.n_kv_heads, lm_cfg.max_seq_len, lm_cfg.head_dim)
        torch.onnx.export(
            LMStep(m["lm"]),
            (torch.zeros(1, 2, lm_cfg.vocab_size), torch.zeros(1, 2, cfg.enc_dim),
             torch.zeros(1, dtype=torch.long), torch.zeros(shape), torch.zeros(shape)),
            str(out / "lm_step.onnx"),
            input_names=["probs", "enc", "start_pos", "cache_k", "cache_v"],
            output_names=["logits", "eot_logit", "cache_k_out", "cache_v_out"],
            dynamic_axes={"probs": {1: "t"}, "enc": {1: "t"}, "logits": {1: "t"}, "eot_logit": {1: "t"}},
            opset_version=OPSET, dynamo=False,
        )  # fmt: skip
        graphs["lm_step"] = "lm_step.onnx"
        if "audio_text" in m:
            torch.onnx.export(
                m["audio_text"], (torch.ones(1, 12, dtype=torch.long),), str(out / "audio_text.onnx"),
                input_names=["chars"], output_names=["hidden", "log_dur"],
                dynamic_axes={"chars": {1: "n"}, "hidden": {1: "n"}, "log_dur": {1: "n"}},
                opset_version=OPSET, dynamo=False,
            )  # fmt: skip
            torch.onnx.export(
                m["audio_frames"], (torch.zeros(1, 40, cfg.ah_dim), torch.zeros(1, 40, 2)),
                str(out / "audio_frames.onnx"), input_names=["frames", "pos"], output_names=["z"],
                dynamic_axes={"frames": {1: "z"}, "pos": {1: "z"}, "z": {1: "z"}},
                opset_version=OPSET, dynamo=False,
            )  # fmt: skip
            graphs["audio_text"] = "audio_text.onnx"
            graphs["audio_frames"] = "audio_frames.onnx"
    return graphs


def store_fp16(path: Path, min_size: int = 1024) -> None:
    """Store large fp32 initializers as fp16 plus a Cast back to fp32 (halves the file).

    ORT folds the Casts at load time, so the graph still computes in fp32 with
    fp16-rounded weights.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    keep, casts = [], []
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT and np.prod(init.dims) >= min_size:
            arr = numpy_helper.to_array(init).astype(np.float16)
            half = numpy_helper.from_array(arr, init.name + "_fp16")
            keep.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                          name=init.name + "_cast"))  # fmt: skip
        else:
            keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    onnx.save(model, str(path))


def write_bundle(
    m: dict[str, Any], out: Path, codec_bundle: str = "codec", fp16: bool = True
) -> Path:
    """Export the graphs of ``m`` (see :func:`load_trained`) and write the manifest in ``out``."""
    import json

    if out.exists():
        shutil.rmtree(out)
    graphs = export_graphs(m, out)
    if fp16:
        for f in graphs.values():
            store_fp16(out / f)
    (out / "tokenizer.json").write_text(json.dumps(m["tokenizer"], indent=1) + "\n")
    cfg: FusedConfig = m["cfg"]
    lm_cfg: LMConfig = m["lm_cfg"]
    config = {
        "sample_rate": 16000,
        "features": {"type": "logmel", "n_mels": 80, "win": 400, "hop": 160, "n_fft": 512},
        "encoder": {
            "stack": cfg.stack,
            "frame_ms": 10 * cfg.stack,
            "dim": cfg.enc_dim,
            "n_layers": len(cfg.enc_dilations),
            "state_len": cfg.enc_state_len,
            "blank": 0,
        }
        | ({"warmup": m["warmup"]} if m.get("warmup") else {}),  # fmt: skip
        "model": lm_cfg.to_dict(),
        "token_layout": {
            "prompt": ["<bos>", "<user>"],
            "user": "soft pieces (one per CTC emission)",
            "reply": ["<eot>", "<assistant>"],
            "end": "<eot>",
        }
        | ({"pause": f"{m['pause_token']} (the head's probe when the user is quiet; the reply "
                     "starts with it)"} if m.get("pause_token") else {}),  # fmt: skip
        "audio": {
            "dim": cfg.ah_dim,
            "latent_dim": cfg.latent_dim,
            "codec_bundle": codec_bundle,
            "z_rate": 22050 / 256,
        }
        if "audio_text" in graphs
        else None,  # fmt: skip
        "end_of_turn": (
            {k: float(v) for k, v in m.get("eot", {}).items() if k in ("threshold", "min_gap_ms")}
            or {"threshold": 0.5, "min_gap_ms": 80.0}
        )
        | ({"pause_token": m["pause_token"]} if m.get("pause_token") else {})
        | ({"pause_hears": True} if m.get("pause_token") and m.get("pause_hears") else {}),
        "fused": cfg.to_dict(),
        "weights_storage": "fp16 (computed in fp32)" if fp16 else "fp32",
    }
    return write_manifest(
        out, kind="fused", name="rejoinder-fused-small", config=config, graphs=graphs,
        files={"tokenizer": "tokenizer.json"},
        licenses=["weights: trained here from synthetic speech (espeak-ng, flite, piper joe targets)"],
        rebuild=REBUILD,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=Path, default=RUNS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--codec-bundle", default="codec")
    ap.add_argument("--fp32", action="store_true", help="store weights in fp32 (default: fp16)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    write_bundle(load_trained(args.runs), args.out, args.codec_bundle, fp16=not args.fp32)
    total = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
