"""clients.bench.providers: per-provider stage times and parity of the fused model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clients.bench.providers import STAGES, SpecRun, compare, report, run_spec, runtime_for
from clients.bench.server_process import parse_providers
from clients.bench.testset import DEFAULT_VOICES, load_or_build
from models.runtime import ProviderUnavailable, provider_options
from tests.clients.conftest import needs_espeak

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def test_specs_name_a_device_and_a_conv_search() -> None:
    assert runtime_for("cpu").device == "cpu"
    assert runtime_for("cuda:EXHAUSTIVE").cudnn_conv_algo_search == "EXHAUSTIVE"
    assert runtime_for("cuda").cudnn_conv_algo_search == "HEURISTIC"
    with pytest.raises(ValueError):
        provider_options(runtime_for("cpu:FASTEST"))


def test_compare_counts_what_differs() -> None:
    def run(reply: str, head: float, tok: int) -> SpecRun:
        r = SpecRun("x", ["CPUExecutionProvider"])
        r.replies["a"], r.heads["a"], r.tokens["a"] = "four", np.array([0.1, 0.9]), np.zeros((4, 6), np.int64)
        r.replies["b"], r.heads["b"] = reply, np.array([0.2, head])
        r.tokens["b"] = np.full((4, 6), tok, np.int64)
        return r

    c = compare(run("nine", 0.8, 3), run("ten", 0.5, 3))
    assert c["cases"] == 2 and c["same_reply"] == 1
    assert c["max_head_diff"] == pytest.approx(0.3)
    assert c["token_agreement"] == 1.0
    c = compare(run("nine", 0.8, 3), run("nine", 0.8, 2))
    assert c["same_reply"] == 2 and c["max_head_diff"] == 0.0 and c["token_agreement"] == 0.5


@needs_espeak
def test_two_cpu_specs_agree_and_every_stage_is_timed(tmp_path: Path) -> None:
    espeak = tuple(v for v in DEFAULT_VOICES if v.engine == "espeak")[:1]
    ts = load_or_build(5, 2, ("normal",), espeak, tmp_path)
    ids = [c.id for c in ts.cases]
    a = run_spec("cpu", ts, ids, BUNDLES)
    b = run_spec("cpu:EXHAUSTIVE", ts, ids, BUNDLES)
    assert a.providers == ["CPUExecutionProvider"]
    assert all(a.times[s] for s in STAGES)
    assert all(a.replies[c].strip() for c in ids)  # the model answered something
    c = compare(a, b)
    assert c == {"cases": 2, "same_reply": 2, "max_head_diff": 0.0, "token_agreement": 1.0}
    text = report([a, b], "meta")
    assert "| cpu | CPU |" in text and "same reply text 2/2" in text


def test_cuda_spec_without_the_cuda_provider_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("models.runtime.ort.get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderUnavailable):
        provider_options(runtime_for("cuda"))


def test_the_bench_reads_each_pipelines_provider_from_the_servers_metrics() -> None:
    text = (
        "# HELP rejoinder_pipeline_provider 1 for the ONNX Runtime provider\n"
        'rejoinder_pipeline_provider{pipeline="fused",provider="CUDAExecutionProvider"} 1.0\n'
        'rejoinder_pipeline_provider{pipeline="cascade",provider="CPUExecutionProvider"} 1.0\n'
        'rejoinder_pipeline_provider{pipeline="old",provider="CPUExecutionProvider"} 0.0\n'
        "rejoinder_open_sessions 0.0\n"
    )
    assert parse_providers(text) == {"fused": "CUDA", "cascade": "CPU"}
    assert parse_providers("") == {}
