"""The inference worker: the one thread that runs models.

The event loop never runs a model. Sessions submit work here and await a
future. VAD windows from all sessions that are pending at the same moment
are run as ONE batched ONNX Runtime call, before any model job still
waiting (between two model jobs the worker looks for new VAD work); model
jobs run in arrival order.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from streaming.vad import SileroVad, VadState

T = TypeVar("T")


@dataclass
class _Job:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    vad_state: VadState | None = None
    vad_windows: np.ndarray | None = None  # (n, 512)


class InferenceWorker:
    """Run model work off the event loop; batch VAD across sessions.

    Call :meth:`start` once, then ``await worker.run(fn, *args)`` or
    ``await worker.vad(state, windows)`` from any coroutine.
    """

    def __init__(self, vad: SileroVad | None = None, *, max_queue: int = 1024) -> None:
        self.vad_model = vad
        self._q: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.batched_windows = 0
        self.max_batch = 0

    @property
    def depth(self) -> int:
        return self._q.qsize()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _submit(self, job: _Job) -> asyncio.Future[Any]:
        try:
            self._q.put_nowait(job)
        except queue.Full:
            job.future.set_exception(RuntimeError("inference queue full"))
        return job.future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        result: T = await self._submit(_Job(loop, loop.create_future(), fn=fn, args=args))
        return result

    async def vad(self, state: VadState, windows: np.ndarray) -> np.ndarray:
        """Speech probabilities for ``windows`` (n, 512) of one session, in order."""
        if self.vad_model is None:
            raise RuntimeError("this worker has no VAD model")
        loop = asyncio.get_running_loop()
        job = _Job(loop, loop.create_future(), vad_state=state, vad_windows=windows)
        result: np.ndarray = await self._submit(job)
        return result

    @staticmethod
    def _resolve(job: _Job, result: Any = None, exc: BaseException | None = None) -> None:
        def done() -> None:
            if job.future.done():
                return
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

        job.loop.call_soon_threadsafe(done)

    def _take(self, into: list[_Job]) -> bool:
        """Move every job queued now into ``into``; True when a stop was queued."""
        while True:
            try:
                nxt = self._q.get_nowait()
            except queue.Empty:
                return False
            if nxt is None:
                return True
            into.append(nxt)

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            jobs = [first]
            stopping = self._take(jobs)
            while jobs:
                # VAD first: its windows decide turn ends and barge-ins, and one batched
                # call is cheap, so VAD that arrived while a model job ran does not wait
                # behind the model jobs queued before it (those keep arrival order).
                vad_jobs = [j for j in jobs if j.vad_state is not None]
                if vad_jobs:
                    self._run_vad(vad_jobs)
                    jobs = [j for j in jobs if j.vad_state is None]
                    continue
                job = jobs.pop(0)
                try:
                    self._resolve(job, job.fn(*job.args))  # type: ignore[misc]
                except BaseException as e:  # noqa: BLE001 - delivered to the caller
                    self._resolve(job, exc=e)
                if not stopping:
                    stopping = self._take(jobs)
            if stopping:
                return

    def _run_vad(self, jobs: list[_Job]) -> None:
        assert self.vad_model is not None
        outs = [np.empty(len(j.vad_windows), np.float32) for j in jobs]  # type: ignore[arg-type]
        try:
            step = 0
            while True:
                idx = [i for i, j in enumerate(jobs) if step < len(j.vad_windows)]  # type: ignore[arg-type]
                if not idx:
                    break
                states = [jobs[i].vad_state for i in idx]
                wins = np.stack([jobs[i].vad_windows[step] for i in idx])  # type: ignore[index]
                probs = self.vad_model.process_batch(states, wins)  # type: ignore[arg-type]
                self.batches += 1
                self.batched_windows += len(idx)
                self.max_batch = max(self.max_batch, len(idx))
                for k, i in enumerate(idx):
                    outs[i][step] = probs[k]
                step += 1
        except BaseException as e:  # noqa: BLE001
            for j in jobs:
                self._resolve(j, exc=e)
            return
        for j, o in zip(jobs, outs, strict=True):
            self._resolve(j, o)
