"""A background thread that turns encoded batches into prepared ``Batch``es while the model computes."""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

import torch

from deepfm.data.encoded import EncodedData
from deepfm.data.tensors import Batch


def prefetch(batches: Iterable[EncodedData], device: torch.device | str = "cpu", depth: int = 2,
             distinct: bool = True) -> Iterator[tuple[int, Batch]]:
    """``(rows, Batch)`` pairs made by a background thread while the caller computes.

    The thread gathers/reads the next batches, turns them into tensors and (``distinct``) finds
    their distinct ids and design matrices, ``depth`` batches ahead; an error there is raised here, in order.
    Leaving the loop early (or ``close()``) stops the thread. ``depth=0`` does the same work inline: better
    where every core computes on one thread each, with no idle stretch for the thread to fill. A bare ``"cuda"``
    is taken as the caller's current GPU (a new thread's is GPU 0).
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if depth == 0:
        for chunk in batches:
            batch = chunk.to_batch(device)
            if distinct:
                batch.prepare()
            yield len(chunk), batch
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in batches:
                batch = chunk.to_batch(device)
                if distinct:
                    batch.prepare()
                if not put((len(chunk), batch)):
                    return
            put(done)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put(error)

    thread = threading.Thread(target=produce, name="deepfm-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
