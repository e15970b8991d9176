"""ONNX Runtime session creation: the one place that picks providers and threads.

Every graph Rejoinder runs is opened through :func:`create_session`, so the
thread budget of the whole server is decided here. Defaults suit a server
that shares a few cores between the event loop and one inference worker:
one intra-op thread, sequential execution and no spinning.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    """How ONNX Runtime sessions are created.

    ``device`` is ``"auto"`` (CUDA when the CUDA provider is present, CPU
    otherwise), ``"cpu"`` or ``"cuda"``.

    ``cudnn_conv_algo_search`` is the CUDA provider's convolution algorithm
    search. Its own default, ``EXHAUSTIVE``, benchmarks every algorithm on each
    new input shape; our graphs see a new length at nearly every call (encoder
    chunks, lookahead tails, codec chunks). On an H200 host that search put the
    fused pipeline's turn latency at p50 1.34 s (HEURISTIC: 0.29 s; CPU: 0.17 s).
    ``use_tf32`` is off so CUDA keeps fp32 results (these graphs are too small
    to gain from it).
    """

    device: str = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = False
    cudnn_conv_algo_search: str = "HEURISTIC"
    use_tf32: bool = False


class ProviderUnavailable(RuntimeError):
    """The requested execution provider is not in this onnxruntime build."""


def providers_for(device: str) -> list[str]:
    """Return the provider names for ``device``, CUDA first where it applies."""
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


def provider_options(opts: RuntimeOptions) -> list[str | tuple[str, dict[str, str]]]:
    """:func:`providers_for` with the CUDA provider's options attached."""
    if opts.cudnn_conv_algo_search not in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
        raise ValueError(f"unknown cudnn_conv_algo_search {opts.cudnn_conv_algo_search!r}")
    cuda = {"cudnn_conv_algo_search": opts.cudnn_conv_algo_search,
            "use_tf32": "1" if opts.use_tf32 else "0"}  # fmt: skip
    return [(p, cuda) if p == "CUDAExecutionProvider" else p for p in providers_for(opts.device)]


@cache
def preload_cuda() -> str:
    """Load CUDA and cuDNN from pip's ``nvidia`` packages, once per process.

    onnxruntime-gpu does not find those libraries by itself (they are not on
    the loader's path); ``onnxruntime.preload_dlls`` does. Returns what it
    printed (its complaints about missing libraries), for error messages.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return ""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            preload()
        except Exception as e:  # noqa: BLE001 - a failed preload only means CUDA may not load
            print(e)
    return " ".join(out.getvalue().split())


@cache
def _warn_cpu_fallback(msg: str) -> None:
    log.warning("%s; running on CPU", msg)


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
    providers = provider_options(opts)
    wants_cuda = providers[0] != "CPUExecutionProvider"
    note = preload_cuda() if wants_cuda else ""
    sess = ort.InferenceSession(model, sess_options=so, providers=providers)
    if wants_cuda and "CUDAExecutionProvider" not in sess.get_providers():
        # onnxruntime falls back to CPU quietly when the CUDA provider fails to load
        msg = ("the CUDA provider did not load" + (f" ({note})" if note else "")
               + "; install the 'gpu' extra (onnxruntime-gpu[cuda,cudnn]) or put CUDA 13 "
               "and cuDNN 9 on the library path")  # fmt: skip
        if opts.device == "cuda":
            raise ProviderUnavailable(msg)
        _warn_cpu_fallback(msg)
    return sess
