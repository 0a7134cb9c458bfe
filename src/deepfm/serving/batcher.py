"""Micro-batching: concurrent requests share one forward pass.

Request handlers decode their bodies into encoded rows (``deepfm.serving.decode``) and queue
them; one model thread takes everything queued, up to ``max_rows`` rows, and runs one forward
pass over it in inference mode, then hands each request its slice. Encoding errors never reach
the queue: they are the sender's alone. The thread never waits for more work: an idle server
answers a lone request at once, and under load the batch grows by itself with the requests that
arrived during the previous pass.
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
from deepfm.training.trainer import to_prediction


@dataclass
class _Job:
    data: EncodedData
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class MicroBatcher:
    """Runs ``model`` on one thread for every request; ``max_rows=0`` turns batching off (each
    request runs alone). ``task`` says what the model's outputs are (probabilities or ratings)."""

    def __init__(self, model: nn.Module, task: str, max_rows: int = 4096):
        self.model, self.task, self.max_rows = model, task, max_rows
        self.batches = 0  # forward passes run, for /metadata and tests
        self.rows = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="deepfm-serve-model", daemon=True)
        self._thread.start()

    async def predict(self, data: EncodedData) -> np.ndarray:
        """Predictions (float64) for the rows of ``data``, in order."""
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
        self.model.eval()
        while (jobs := self._take()) is not None:
            try:
                self._answer(jobs)
            except Exception as error:  # noqa: BLE001 - handed to the waiting requests; the thread lives on
                for job in jobs:
                    job.loop.call_soon_threadsafe(_resolve, job.future, None, error)

    def _answer(self, jobs: list[_Job]) -> None:
        data = EncodedData.concat([job.data for job in jobs]) if len(jobs) > 1 else jobs[0].data
        with torch.inference_mode():
            predictions = to_prediction(self.task, self.model(data.to_batch())).double().numpy()
        self.batches, self.rows = self.batches + 1, self.rows + len(data)
        start = 0
        for job in jobs:
            stop = start + len(job.data)
            job.loop.call_soon_threadsafe(_resolve, job.future, predictions[start:stop], None)
            start = stop


def _resolve(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
