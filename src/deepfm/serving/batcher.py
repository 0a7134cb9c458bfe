"""Micro-batching: concurrent requests share one forward pass.

Request handlers encode their own rows (in a thread pool, so a bad row fails only its request)
and queue them; one model thread takes everything queued, up to ``max_rows``, as one batch.
It never waits for more work: an idle server answers a lone request at once, and under load
the batch grows by itself with the requests that arrived during the previous forward pass.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deepfm.data.batch import EncodedData
from deepfm.training.trainer import predict


@dataclass
class _Job:
    data: EncodedData
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class MicroBatcher:
    """Runs ``model`` on one thread for every request; ``max_rows=0`` turns batching off
    (each request is its own forward pass)."""

    def __init__(self, model: nn.Module, task: str, max_rows: int = 4096):
        self.model, self.task, self.max_rows = model, task, max_rows
        self.batches = 0  # forward passes run, for /metadata and tests
        self.rows = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="deepfm-serve-model", daemon=True)
        self._thread.start()

    async def predict(self, data: EncodedData) -> np.ndarray:
        loop = asyncio.get_running_loop()
        job = _Job(data, loop, loop.create_future())
        self._queue.put(job)
        return await job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

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
        torch.set_grad_enabled(False)
        while (jobs := self._take()) is not None:
            try:
                data = EncodedData.concat([j.data for j in jobs]) if len(jobs) > 1 else jobs[0].data
                predictions = predict(self.model, self.task, data)
                self.batches, self.rows = self.batches + 1, self.rows + len(data)
                start = 0
                for job in jobs:
                    stop = start + len(job.data)
                    job.loop.call_soon_threadsafe(_resolve, job.future, predictions[start:stop], None)
                    start = stop
            except Exception as error:  # noqa: BLE001 - handed to the waiting requests; the thread lives on
                for job in jobs:
                    job.loop.call_soon_threadsafe(_resolve, job.future, None, error)


def _resolve(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
