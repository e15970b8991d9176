"""The inference worker: model jobs in arrival order, VAD ahead of waiting model jobs."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from server.worker import InferenceWorker
from streaming.vad import SileroVad

pytestmark = pytest.mark.asyncio


async def test_vad_that_arrives_during_a_model_job_runs_before_the_queued_ones() -> None:
    vad = SileroVad()
    order: list[str] = []
    batch = vad.process_batch

    def recorded(states, windows):  # type: ignore[no-untyped-def]
        order.append("vad")
        return batch(states, windows)

    vad.process_batch = recorded  # type: ignore[method-assign]
    worker = InferenceWorker(vad)
    worker.start()
    gates = {name: (threading.Event(), threading.Event()) for name in ("model-1", "model-2")}

    def slow(name: str) -> str:
        started, release = gates[name]
        started.set()
        release.wait(5)
        order.append(name)
        return name

    def quick(name: str) -> str:
        order.append(name)
        return name

    async def until(ev: threading.Event) -> None:
        while not ev.is_set():
            await asyncio.sleep(0.001)

    try:
        jobs = [asyncio.ensure_future(worker.run(slow, "model-1"))]
        await until(gates["model-1"][0])
        # model-2 and model-3 wait together; the worker takes them as one batch
        jobs += [asyncio.ensure_future(worker.run(slow, "model-2")),
                 asyncio.ensure_future(worker.run(quick, "model-3"))]  # fmt: skip
        await asyncio.sleep(0.01)
        gates["model-1"][1].set()
        await until(gates["model-2"][0])
        probs = asyncio.ensure_future(worker.vad(vad.new_state(), np.zeros((2, 512), np.float32)))
        await asyncio.sleep(0.01)  # the VAD arrives while model-2 runs, model-3 still waiting
        gates["model-2"][1].set()
        assert [await j for j in jobs] == ["model-1", "model-2", "model-3"]
        assert (await probs).shape == (2,)
        # on the worker thread: the VAD (one batched call per window) went ahead of model-3
        assert order == ["model-1", "model-2", "vad", "vad", "model-3"]
    finally:
        worker.stop()


async def test_a_failing_model_job_does_not_stop_the_worker() -> None:
    worker = InferenceWorker()
    worker.start()

    def boom() -> None:
        raise ValueError("bad input")

    try:
        with pytest.raises(ValueError, match="bad input"):
            await worker.run(boom)
        assert await worker.run(lambda: 7) == 7
    finally:
        worker.stop()
