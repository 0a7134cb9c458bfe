"""Micro-batching: concurrent requests share one encoding pass and one forward pass.

Request handlers validate their rows into raw frames (in a thread pool) and queue them; one
model thread takes everything queued, up to ``max_rows``, encodes it as one frame and runs one
forward pass. Encoding costs about a millisecond per call whatever the rows (one Arrow kernel
per field), so sharing it is where batching pays for small requests. If the shared frame holds
a value the encoder refuses, each request is encoded alone, so only its sender gets the 422.
The thread never waits for more work: an idle server answers a lone request at once, and under
load the batch grows by itself with the requests that arrived during the previous pass.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deepfm.data.encoders import FeatureEncoder
from deepfm.data.frame import RawFrame
from deepfm.serving.rows import RequestError, concat_frames, encode_frame
from deepfm.training.trainer import predict


@dataclass
class _Job:
    frame: RawFrame
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class MicroBatcher:
    """Encodes and runs ``model`` on one thread for every request; ``max_rows=0`` turns batching
    off (each request is encoded and run alone)."""

    def __init__(self, model: nn.Module, encoder: FeatureEncoder, max_rows: int = 4096):
        self.model, self.encoder, self.max_rows = model, encoder, max_rows
        self.batches = 0  # forward passes run, for /metadata and tests
        self.rows = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="deepfm-serve-model", daemon=True)
        self._thread.start()

    async def predict(self, frame: RawFrame) -> np.ndarray:
        """Predictions for the rows of ``frame``; a ``RequestError`` if a value cannot be encoded."""
        loop = asyncio.get_running_loop()
        job = _Job(frame, loop, loop.create_future())
        self._queue.put(job)
        return await job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _take(self) -> list[_Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs, rows = [first], first.frame.num_rows
        while self.max_rows and rows < self.max_rows:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            jobs.append(job)
            rows += job.frame.num_rows
        return jobs

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while (jobs := self._take()) is not None:
            try:
                self._answer(jobs)
            except Exception as error:  # noqa: BLE001 - handed to the waiting requests; the thread lives on
                for job in jobs:
                    job.loop.call_soon_threadsafe(_resolve, job.future, None, error)

    def _answer(self, jobs: list[_Job]) -> None:
        try:
            data = encode_frame(self.encoder, concat_frames([j.frame for j in jobs]))
        except RequestError:
            if len(jobs) == 1:
                raise
            for job in jobs:  # find whose rows the encoder refused; only they get the error
                try:
                    self._answer([job])
                except Exception as error:  # noqa: BLE001
                    job.loop.call_soon_threadsafe(_resolve, job.future, None, error)
            return
        predictions = predict(self.model, self.encoder.task, data)
        self.batches, self.rows = self.batches + 1, self.rows + len(data)
        start = 0
        for job in jobs:
            stop = start + job.frame.num_rows
            job.loop.call_soon_threadsafe(_resolve, job.future, predictions[start:stop], None)
            start = stop


def _resolve(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
