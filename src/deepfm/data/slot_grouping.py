"""A batch's distinct ids and slot grouping by counting instead of sorting, where the ids span a range not
much wider than the batch has slots (``SPAN_PER_SLOT``): two compiled passes over the slots and one over
the range's counts give what ``DistinctIds._grouped``'s stable sort gives. Batches of 4096 rows (medians
of 56, the two alternated; 2026-12-03): long tail (a 69k-row table, 160k slots) 6.75 → 2.98 ms, one-hot
(5.7k rows, 41k slots) 1.83 → 0.46 ms, Criteo-shaped (364k rows, 2.3× the slots) 7.40 → 6.47 ms; ids
spread over 9× the slots took 12.0 ms against 7.0.

Each thread keeps its own zeroed counts (the prefetch thread and the trainer's may group at once), as
wide as the widest range it has grouped (12 bytes an id of the range: ≤ 48 a slot, 7.7 MB for batches of
4096 × 39); the passes zero what they counted before they return.
"""

from __future__ import annotations

import threading
from functools import cache

import numpy as np
import torch

SPAN_PER_SLOT = 4
_scratch = threading.local()


@cache
def _passes():
    from deepfm.compiled import compiled  # (loads numba: training only)

    @compiled
    def count_ids(ids, counts):
        for i in range(ids.size):
            counts[ids[i]] += 1

    @compiled
    def place_slots(ids, unique, counts, where, slot_rows, inverse, order):
        """Each distinct id's run of slots (``slot_rows``, ``where[v, 1]`` its next free place) and rank
        (``where[v, 0]``); then each slot, in slot order, into its id's run: a stable counting sort."""
        place = 0
        for rank in range(unique.size):
            v = unique[rank]
            slot_rows[rank] = place
            where[v, 0] = rank
            where[v, 1] = place
            place += counts[v]
            counts[v] = 0  # the thread's counts are zero again
        slot_rows[unique.size] = place
        for slot in range(ids.size):
            v = ids[slot]
            at = where[v, 1]
            order[at] = slot
            where[v, 1] = at + 1
            inverse[slot] = where[v, 0]

    return count_ids, place_slots


def counting_pays(slots: int, span: int) -> bool:
    """Whether ids in [0, ``span``) over ``slots`` slots are grouped faster by counting than by sorting."""
    return span <= SPAN_PER_SLOT * slots


def group_by_counting(ids: torch.Tensor, span: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(unique (U,) int64, inverse (B·F,) int64, slot_rows (U + 1,) int32, slot_columns (B·F,) int32) of CPU
    int64 ``ids``, as ``DistinctIds._grouped`` makes them. The ids must lie in [0, ``span``): not checked
    here (``DistinctIds.of`` has their range), and the passes check no bounds."""
    count_ids, place_slots = _passes()
    counts = getattr(_scratch, "counts", None)
    if counts is None or len(counts) < span:
        counts, where = np.zeros(span, np.int32), np.empty((span, 2), np.int32)
        _scratch.where = where  # counts last: a failed allocation leaves none, never counts wider than where
        _scratch.counts = counts
    flat = ids.reshape(-1).numpy()
    inverse, order = np.empty(flat.size, np.int64), np.empty(flat.size, np.int32)
    try:
        count_ids(flat, counts)
        unique = np.flatnonzero(counts[:span])
        slot_rows = np.empty(len(unique) + 1, np.int32)
        place_slots(flat, unique, counts, _scratch.where, slot_rows, inverse, order)
    except BaseException:  # (an interrupt between the passes) counts not zeroed again are never reused
        _scratch.counts = None
        raise
    return torch.from_numpy(unique), torch.from_numpy(inverse), torch.from_numpy(slot_rows), torch.from_numpy(order)
