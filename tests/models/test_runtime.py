"""Provider choice and CUDA provider options (models.runtime)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from models import runtime
from models.runtime import ProviderUnavailable, RuntimeOptions, create_session, provider_options


def _with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])  # fmt: skip


def test_cpu_device_never_asks_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_cuda(monkeypatch)
    assert provider_options(RuntimeOptions(device="cpu")) == ["CPUExecutionProvider"]


def test_auto_puts_cuda_first_with_heuristic_search_and_no_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_cuda(monkeypatch)
    first, rest = provider_options(RuntimeOptions(device="auto"))[0], provider_options(RuntimeOptions())[1:]
    assert first == ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"})
    assert rest == ["CPUExecutionProvider"]
    opts = RuntimeOptions(device="cuda", cudnn_conv_algo_search="EXHAUSTIVE", use_tf32=True)
    assert provider_options(opts)[0] == ("CUDAExecutionProvider",
                                         {"cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": "1"})  # fmt: skip


def test_auto_without_cuda_is_cpu_and_cuda_without_it_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert provider_options(RuntimeOptions()) == ["CPUExecutionProvider"]
    with pytest.raises(ProviderUnavailable, match="onnxruntime-gpu"):
        provider_options(RuntimeOptions(device="cuda"))


def test_bad_device_or_search_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown device"):
        provider_options(RuntimeOptions(device="tpu"))
    with pytest.raises(ValueError, match="cudnn_conv_algo_search"):
        provider_options(RuntimeOptions(device="cpu", cudnn_conv_algo_search="FAST"))


def test_session_runs_on_this_machines_providers() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    sess = create_session(model.SerializeToString(), RuntimeOptions())
    (out,) = sess.run(None, {"x": np.array([[-1.0, 0.0, 2.0]], np.float32)})
    np.testing.assert_array_equal(out, [[0.0, 0.0, 2.0]])
    onnx.checker.check_model(model)


class _FakeSession:
    """Stands in for an InferenceSession whose CUDA provider failed to load."""

    def __init__(self, model: object, sess_options: object = None, providers: object = None) -> None:
        self.asked = providers

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]


def test_a_cuda_provider_that_fails_to_load_is_an_error_for_cuda_and_a_warning_for_auto(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _with_cuda(monkeypatch)
    calls: list[int] = []

    def preload() -> None:
        calls.append(1)
        print("Failed to load libcudnn.so.9: not found")

    monkeypatch.setattr(runtime.ort, "preload_dlls", preload, raising=False)
    monkeypatch.setattr(runtime.ort, "InferenceSession", _FakeSession)
    runtime.preload_cuda.cache_clear()
    runtime._warn_cpu_fallback.cache_clear()
    try:
        with pytest.raises(ProviderUnavailable, match="libcudnn.so.9"):
            create_session(b"graph", RuntimeOptions(device="cuda"))
        with caplog.at_level("WARNING", logger="models.runtime"):
            sess = create_session(b"graph", RuntimeOptions(device="auto"))
            create_session(b"graph", RuntimeOptions(device="auto"))
        assert sess.get_providers() == ["CPUExecutionProvider"]
        assert [r.message.count("running on CPU") for r in caplog.records] == [1]  # once, not per graph
        assert calls == [1]  # the libraries are preloaded once per process
        create_session(b"graph", RuntimeOptions(device="cpu"))
        assert calls == [1]
    finally:
        runtime.preload_cuda.cache_clear()
        runtime._warn_cpu_fallback.cache_clear()
