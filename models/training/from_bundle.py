"""Read a fused bundle's trained weights back into the PyTorch modules, to fine-tune it.

    python -m models.training.from_bundle --bundle bundles/fused --runs runs/fused_p

writes ``encoder_final.pt``, ``lm_init.pt`` and ``audio_final.pt`` in ``--runs``, in the
formats ``train_fused`` writes, so a later stage can start from the shipped model
(``train_fused lm --init-lm RUNS/lm_init.pt``) without the 6 h rebuild of every stage.
The weights are the bundle's fp16-stored values; re-exporting them gives the same graphs.

How: the same modules, given probe weights whose every element is a distinct integer
(exact in fp32), are exported with the bundle's own export code. Export only moves
weights around (transposes, slices of the depthwise taps, the tied embedding used twice),
so each element of a probe initializer names the parameter element it came from, and the
bundle's initializer of the same name holds its trained value. A parameter element that
no initializer carries is an error: the mapping never guesses.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.training.export_fused import AudioFramesOut, export_graphs
from models.training.fused import AudioFrames, AudioText, Encoder, FusedConfig, FusedLM
from models.training.lm import LMConfig

#: probe values are BASE + global element index: exact fp32 integers (< 2**24), and far from
#: the small integers (0, 1, -1) that non-weight constants such as the RoPE tables hold
BASE = 1000


def _initializers(path: Path) -> dict[str, np.ndarray]:
    """Float initializers by name: an fp16-stored ``X_fp16`` (+ Cast) under its fp32 name
    ``X``, and the exporter's Identity aliases (it merges initializers of equal value, such
    as the zero biases of a fresh model) under their own names too."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    out = {}
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind == "f":
            name = init.name[: -len("_fp16")] if init.name.endswith("_fp16") else init.name
            out[name] = arr.astype(np.float32)
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in out:
            out[node.output[0]] = out[node.input[0]]
    return out


def _weights(modules: dict[str, nn.Module]) -> list[tuple[str, str, torch.Tensor]]:
    """(graph module key, state name, tensor) of every float weight to recover, in order."""
    return [(key, name, t) for key, m in modules.items() for name, t in m.state_dict().items()
            if t.is_floating_point()]  # fmt: skip


def recover(modules: dict[str, Any], bundle: Path) -> dict[str, list[str]]:
    """Fill the weights of ``modules`` (the dict :func:`export_fused.export_graphs` takes,
    built with the bundle's configs) from the bundle's graphs, in place.

    Returns, per module key, the state entries recovered. Raises if any element is missing
    or the bundle's graphs disagree with each other on an element."""
    weights = _weights({k: modules[k] for k in ("encoder", "lm", "audio_text", "audio_frames")
                        if k in modules})  # fmt: skip
    total = sum(t.numel() for _, _, t in weights)
    if BASE + total >= 2**24:
        raise ValueError(f"{total} weights are too many for exact fp32 probe values")
    offsets, start = [], 0
    for _, _, t in weights:
        offsets.append(start)
        start += t.numel()
    # probe: element i of the concatenated weights holds BASE + i
    saved = [t.detach().clone() for _, _, t in weights]
    with torch.no_grad():
        for (_, _, t), off in zip(weights, offsets, strict=True):
            t.copy_(torch.arange(off, off + t.numel(), dtype=torch.float64).add_(BASE)
                    .reshape(t.shape).to(t.dtype))  # fmt: skip
    value = np.full(total, np.nan, np.float64)
    with tempfile.TemporaryDirectory() as tmp:
        graphs = export_graphs(modules, Path(tmp))
        for f in graphs.values():
            probe, shipped = _initializers(Path(tmp) / f), _initializers(bundle / f)
            for name, arr in probe.items():
                idx = arr.astype(np.float64).ravel() - BASE
                if not (np.all(idx == np.round(idx)) and np.all((idx >= 0) & (idx < total))):
                    continue  # a constant that is not a weight (RoPE tables, shapes)
                if name not in shipped or shipped[name].size != arr.size:
                    raise ValueError(f"{bundle / f}: the weights {name!r} are missing or reshaped")
                got = shipped[name].astype(np.float64).ravel()
                ii = idx.astype(np.int64)
                seen = ~np.isnan(value[ii])
                if np.any(value[ii][seen] != got[seen]):
                    raise ValueError(f"{bundle / f}: {name!r} disagrees with another graph")
                value[ii] = got
    out: dict[str, list[str]] = {}
    with torch.no_grad():
        for (key, name, t), off, old in zip(weights, offsets, saved, strict=True):
            v = value[off : off + t.numel()]
            if np.isnan(v).any():
                t.copy_(old)
                raise ValueError(f"{key}.{name}: {int(np.isnan(v).sum())} of {t.numel()} "
                                 "elements are in no graph of the bundle")  # fmt: skip
            t.copy_(torch.from_numpy(v.reshape(t.shape)).to(t.dtype))
            out.setdefault(key, []).append(name)
    return out


def load_bundle(bundle: Path) -> dict[str, Any]:
    """The bundle as eval-mode modules, in the dict :func:`export_fused.load_trained` returns."""
    man = json.loads((bundle / "manifest.json").read_text())
    conf = man["config"]
    cfg = FusedConfig.from_dict(conf["fused"])
    lm_cfg = LMConfig.from_dict(conf["model"])
    m: dict[str, Any] = {
        "cfg": cfg, "lm_cfg": lm_cfg, "encoder": Encoder(cfg).eval(),
        "lm": FusedLM(lm_cfg, cfg).eval(),
        "tokenizer": json.loads((bundle / conf_file(man, "tokenizer")).read_text()),
        "warmup": conf["encoder"].get("warmup"), "eot": dict(conf["end_of_turn"]),
        "pause_token": conf["end_of_turn"].get("pause_token"),
        "pause_hears": bool(conf["end_of_turn"].get("pause_hears")),
    }  # fmt: skip
    if "audio_text" in man["graphs"]:
        m["audio_text"] = AudioText(cfg).eval()
        z = torch.zeros(cfg.latent_dim)
        m["audio_frames"] = AudioFramesOut(AudioFrames(cfg), z, z + 1).eval()
    recover(m, bundle)
    return m


def conf_file(man: dict[str, Any], key: str) -> str:
    f = man["files"][key]
    return str(f["file"] if isinstance(f, dict) else f)


def write_checkpoints(m: dict[str, Any], runs: Path) -> None:
    """``encoder_final.pt``, ``lm_init.pt`` and ``audio_final.pt`` as ``train_fused`` writes them."""
    runs.mkdir(parents=True, exist_ok=True)
    cfg = m["cfg"]
    torch.save({"model": m["encoder"].state_dict(), "cfg": cfg.to_dict(), "tokenizer": m["tokenizer"],
                "warmup": m["warmup"]}, runs / "encoder_final.pt")  # fmt: skip
    torch.save({"model": m["lm"].state_dict(), "cfg": cfg.to_dict(),
                "lm_cfg": m["lm_cfg"].to_dict(), "eot_tuning": m["eot"]}, runs / "lm_init.pt")  # fmt: skip
    if "audio_text" in m:
        af: AudioFramesOut = m["audio_frames"]
        torch.save({"text": m["audio_text"].state_dict(), "frames": af.m.state_dict(),
                    "cfg": cfg.to_dict(), "z_mean": af.mean.clone(), "z_std": af.std.clone()},
                   runs / "audio_final.pt")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=Path("bundles/fused"))
    ap.add_argument("--runs", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    m = load_bundle(args.bundle)
    write_checkpoints(m, args.runs)
    print(f"wrote {args.runs}/encoder_final.pt, lm_init.pt, audio_final.pt from {args.bundle}")


if __name__ == "__main__":
    main()
