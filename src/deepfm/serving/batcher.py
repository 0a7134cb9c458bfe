"""Micro-batching: concurrent requests share one forward pass; a request that finds the model idle
runs at once, on the caller's thread.

Request handlers decode their bodies into encoded rows (``deepfm.serving.decode``) and call
``predict``; the forward pass is a ``deepfm.serving.backends.Predictor`` (ONNX Runtime or PyTorch).
When nothing is queued or running, a request of up to ``inline_rows`` rows runs its forward pass
right there, on the event loop: handing it to another thread and back costs two thread wake-ups
(0.1 ms on an idle machine, milliseconds on a busy one) for a forward pass that takes 0.15-0.6 ms
for one row. Otherwise the rows are queued; one model thread takes everything queued, up to
``max_rows`` rows, runs one forward pass over it, then hands each request its slice. Encoding
errors never reach the queue: they are the sender's alone. The thread never waits for more work:
under load the batch grows by itself with the requests that arrived during the previous pass.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from deepfm.data.batch import EncodedData
from deepfm.serving.backends import Predictor

INLINE_ROWS = 512  # the largest request run on the event loop when the model is idle (~8 ms of forward pass
# for the paper's DeepFM on one core): larger ones go to the model thread so that the loop stays free


@dataclass
class _Job:
    data: EncodedData
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class MicroBatcher:
    """Runs ``predictor`` for every request; ``max_rows=0`` turns batching off (each request runs alone),
    ``inline_rows=0`` sends every request through the model thread."""

    def __init__(self, predictor: Predictor, max_rows: int = 4096, inline_rows: int = INLINE_ROWS,
                 outcome: Callable[[Exception | None], None] = lambda error: None):
        self.predictor, self.max_rows, self.inline_rows = predictor, max_rows, inline_rows
        self.outcome = outcome  # told each forward pass's error, or None (``deepfm.serving.health``)
        self.batches = 0  # forward passes run, for /metadata and tests
        self.rows = 0
        self._pending = 0  # jobs queued or in the model thread's pass
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="deepfm-serve-model", daemon=True)
        self._thread.start()

    async def predict(self, data: EncodedData) -> np.ndarray:
        """Predictions (float64) for the rows of ``data``, in order."""
        with self._lock:
            inline = len(data) <= self.inline_rows and self._pending == 0
            if not inline:
                self._pending += 1
        if inline:
            return self._forward(data)
        loop = asyncio.get_running_loop()
        job = _Job(data, loop, loop.create_future())
        self._queue.put(job)
        return await job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _forward(self, data: EncodedData) -> np.ndarray:
        try:
            predictions = self.predictor(data)
        except Exception as error:
            self.outcome(error)
            raise
        self.outcome(None)
        with self._lock:
            self.batches, self.rows = self.batches + 1, self.rows + len(data)
        return predictions

    def _take(self) -> list[_Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs, rows = [first], len(first.data)
        while self.max_rows and rows < self.max_rows:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            jobs.append(job)
            rows += len(job.data)
        return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            try:
                predictions, error = self._forward(_together(jobs)), None
            except Exception as failure:  # noqa: BLE001 - handed to the waiting requests; the thread lives on
                predictions, error = None, failure
            with self._lock:
                self._pending -= len(jobs)
            start = 0
            for job in jobs:
                stop = start + len(job.data)
                answer = predictions[start:stop] if error is None else None
                job.loop.call_soon_threadsafe(_resolve, job.future, answer, error)
                start = stop


def _together(jobs: list[_Job]) -> EncodedData:
    return EncodedData.concat([job.data for job in jobs]) if len(jobs) > 1 else jobs[0].data


def _resolve(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
