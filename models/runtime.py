"""ONNX Runtime session creation: the one place that picks providers and threads.

Every graph Rejoinder runs is opened through :func:`create_session`, so the
thread budget of the whole server is decided here. Defaults suit a server
that shares a few cores between the event loop and one inference worker:
one intra-op thread, sequential execution and no spinning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    """How ONNX Runtime sessions are created.

    ``device`` is ``"auto"`` (CUDA when the CUDA provider is present, CPU
    otherwise), ``"cpu"`` or ``"cuda"``.
    """

    device: str = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = False


class ProviderUnavailable(RuntimeError):
    """The requested execution provider is not in this onnxruntime build."""


def providers_for(device: str) -> list[str]:
    """Return the provider list for ``device``, CUDA first where it applies."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ProviderUnavailable(
                "device='cuda' but this onnxruntime has no CUDAExecutionProvider; "
                "install the 'gpu' extra (onnxruntime-gpu)"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]
    raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda")


def create_session(
    path: str | os.PathLike[str] | bytes, options: RuntimeOptions | None = None
) -> ort.InferenceSession:
    """Open one ONNX graph (a path, or serialized model bytes) with explicit options."""
    opts = options or RuntimeOptions()
    so = ort.SessionOptions()
    so.intra_op_num_threads = opts.intra_op_threads
    so.inter_op_num_threads = opts.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spin = "1" if opts.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.log_severity_level = 3
    model = str(path) if isinstance(path, (str, Path, os.PathLike)) else path
    return ort.InferenceSession(model, sess_options=so, providers=providers_for(opts.device))
