"""Prometheus metrics for one server (its own registry, so tests can make many)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes
        self.sessions = Gauge("rejoinder_open_sessions", "open websocket sessions", registry=r)
        self.sessions_total = Counter("rejoinder_sessions_opened", "sessions opened", registry=r)
        self.rejected = Counter("rejoinder_rejected_total", "connections refused", ["reason"], registry=r)
        self.frames_in = Counter("rejoinder_audio_frames_in_total", "audio messages received", registry=r)
        self.samples_in = Counter("rejoinder_audio_samples_in_total", "input samples accepted", registry=r)
        self.frames_out = Counter("rejoinder_audio_frames_out_total", "audio messages sent", registry=r)
        self.errors = Counter("rejoinder_errors_total", "error events sent", ["code"], registry=r)
        self.responses = Counter("rejoinder_responses_total", "responses finished", ["pipeline", "status"], registry=r)
        self.turn_latency = Histogram(
            "rejoinder_turn_latency_seconds",
            "server-side: arrival of the user's last speech sample to first reply audio sent",
            ["pipeline"],
            buckets=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0),
            registry=r,
        )
        self.loop_lag = Gauge("rejoinder_event_loop_lag_seconds", "last measured event-loop lag", registry=r)
        self.worker_queue = Gauge("rejoinder_worker_queue_depth", "jobs waiting for the inference worker", registry=r)
        self.vad_batch = Gauge("rejoinder_vad_max_batch", "largest VAD batch so far", registry=r)
        self.provider = Gauge("rejoinder_pipeline_provider",
                              "1 for the ONNX Runtime provider each pipeline's main model runs on",
                              ["pipeline", "provider"], registry=r)  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
