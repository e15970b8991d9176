"""Assemble a server: load models, start the inference worker, warm up, listen."""

from __future__ import annotations

import asyncio
import logging

from websockets.asyncio.server import Server

from models.runtime import RuntimeOptions
from server.config import ServerConfig
from server.logs import log
from server.pipelines.registry import build_pipelines
from server.transport import App, start_server
from streaming.vad import SileroVad


def build_app(cfg: ServerConfig) -> App:
    """Load VAD and pipelines. Failures leave the app not ready, with the reason."""
    from server.worker import InferenceWorker

    reasons: list[str] = []
    vad = None
    try:
        vad = SileroVad(options=RuntimeOptions(device="cpu", intra_op_threads=1))
    except Exception as e:  # noqa: BLE001
        reasons.append(f"VAD failed to load: {e}")
    pipelines, skipped = build_pipelines(cfg)
    worker = InferenceWorker(vad)
    app = App(cfg=cfg, pipelines=pipelines, worker=worker, skipped=skipped)
    for name, p in pipelines.items():
        if providers := p.providers():
            app.metrics.provider.labels(name, providers[0]).set(1)
    if not pipelines:
        reasons.append("no pipeline loaded: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    elif cfg.pipelines_required and skipped:
        reasons += [f"pipeline {k} failed to load: {v}" for k, v in skipped.items()]
    app.load_problems = reasons
    app.not_ready_reason = "; ".join(reasons) or "warming up"
    return app


async def warm_up(app: App) -> None:
    """Run each pipeline's warm-up in the worker, then mark the app ready."""
    app.worker.start()
    if app.load_problems:
        return
    try:
        for p in app.pipelines.values():
            await app.worker.run(p.warmup)
        assert app.worker.vad_model is not None
        st = app.worker.vad_model.new_state()
        import numpy as np

        await app.worker.vad(st, np.zeros((1, 512), np.float32))
    except Exception as e:  # noqa: BLE001
        app.not_ready_reason = f"warm-up failed: {e}"
        log(logging.ERROR, "warm-up failed", reason=str(e))
        return
    app.ready = True
    app.not_ready_reason = ""


async def serve_forever(cfg: ServerConfig) -> None:
    app = build_app(cfg)
    server: Server = await start_server(app, install_signals=True)
    await warm_up(app)
    log(logging.INFO, "serving", host=cfg.host, port=cfg.port, pipelines=sorted(app.pipelines),
        providers={n: (p.providers() or ["-"])[0] for n, p in app.pipelines.items()},
        skipped=app.skipped, ready=app.ready, url=f"http://{cfg.host}:{cfg.port}/")
    try:
        await server.wait_closed()
    finally:
        app.worker.stop()


def run(cfg: ServerConfig) -> None:
    asyncio.run(serve_forever(cfg))
