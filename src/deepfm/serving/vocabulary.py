"""Every categorical field's vocabulary in one sorted table, looked up by one compiled pass over a
request's values.

A value's key is its FNV-1a 64 hash (the hash of hashed vocabularies, ``deepfm.data.hashing``)
xor a per-field salt. A vocabulary value's id is found by a binary search of its key and confirmed
by comparing the bytes of the two strings, so a hash collision can never give a value another's id;
a hashed field's id is its hash modulo its buckets, or the unseen id for a value its filter of
frequent training values (``deepfm.data.frequent``) does not hold; null and ``""`` are the field's
missing id. The
pass (numba) reads the Arrow string buffers directly: no Python per value, and no fixed cost of a
dozen array operations, which for a one-row request was most of the lookup's time.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

from deepfm.data.encoders import MISSING, RESERVED, UNSEEN, FieldSpec
from deepfm.data.hashing import FNV_OFFSET, FNV_PRIME, fnv1a64_unique


class VocabularyTable:
    """The fields ``specs`` (categorical, single-valued), vocabularies and hash buckets alike."""

    def __init__(self, specs: list[FieldSpec]):
        self.offsets = np.array([s.offset for s in specs], np.int64)
        self.buckets = np.array([max(s.hash_buckets, 1) for s in specs], np.uint64)
        self.hashed = np.array([s.hash_buckets > 0 for s in specs], bool)
        self.filtered = [(k, s.frequent, s.offset) for k, s in enumerate(specs) if s.hash_buckets and s.frequent is not None]
        self.salts = (np.arange(len(specs), dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        keys, ids, texts = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)], []
        for k, spec in enumerate(specs):
            if spec.hash_buckets or spec.vocabulary is None or len(spec.vocabulary) == 0:
                continue
            vocabulary = spec.vocabulary.values
            keys.append(fnv1a64_unique(vocabulary) ^ self.salts[k])
            ids.append(spec.offset + RESERVED + np.arange(len(vocabulary), dtype=np.int64))
            texts.append(vocabulary.cast(pa.large_string()))
        key = np.concatenate(keys)
        order = np.argsort(key, kind="stable")
        self.keys, self.global_ids = key[order], np.concatenate(ids)[order]
        text = pa.concat_arrays(texts).take(pa.array(order)) if texts else pa.array([], pa.large_string())
        self.text_offsets, self.text_bytes, _ = string_buffers(text)
        if len(self.keys) > 1 and (self.keys[1:] == self.keys[:-1]).any():
            raise ValueError("two vocabulary values share a lookup key")  # ~1e-8 at 10^6 values
        self.encode(pa.array([""] * len(specs), pa.string()), 1)  # compiled now (or loaded from numba's cache), not on a request

    def encode(self, text: pa.Array, n: int) -> np.ndarray:
        """Global ids (int64) of ``text``: the fields' values one field after another, ``n`` each."""
        if len(text) != n * len(self.offsets):
            raise ValueError(f"{len(text)} values for {len(self.offsets)} fields of {n} rows")
        offsets, data, valid = string_buffers(text)
        return self.encode_spans(data, offsets[:-1], offsets[1:], valid, n)

    def encode_spans(self, data: np.ndarray, starts: np.ndarray, stops: np.ndarray, valid: np.ndarray,
                     n: int) -> np.ndarray:
        """``encode`` of the values ``data[starts[i]:stops[i]]`` (UTF-8 bytes; ``valid`` False: null), ``n`` a field."""
        ids, hashes = np.empty(len(starts), np.int64), np.empty(len(starts), np.uint64)
        _lookup(starts, stops, data, valid, n, self.offsets, self.salts, self.hashed, self.buckets, self.keys,
                self.global_ids, self.text_offsets, self.text_bytes, ids, hashes)
        for k, frequent, offset in self.filtered:  # rare and unseen values of a hashed field: the unseen id
            field = slice(k * n, (k + 1) * n)
            rare = ~frequent.contains(hashes[field]) & (ids[field] != offset + MISSING)
            ids[field][rare] = offset + UNSEEN
        return ids


def string_buffers(text: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A string array's value offsets (int64, n + 1), bytes (uint8) and validity (bool, n), without copying the bytes."""
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        raise TypeError(f"expected strings, got {text.type}")
    validity, offsets, data = text.buffers()
    offset_type = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(offsets, offset_type)[text.offset : text.offset + len(text) + 1].astype(np.int64)
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    if text.null_count == 0:
        valid = np.ones(len(text), bool)
    else:
        bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")
        valid = bits[text.offset : text.offset + len(text)].astype(bool)
    return offsets, data, valid


@njit(cache=True, nogil=True)
def fnv1a64_span(data, start, stop):  # pragma: no cover - compiled
    """FNV-1a 64 of the bytes ``data[start:stop]``: ``fnv1a64_unique``'s hash, one value at a time."""
    h = FNV_OFFSET
    for p in range(start, stop):
        h = (h ^ np.uint64(data[p])) * FNV_PRIME
    return h


@njit(cache=True, nogil=True)
def lower_bound(keys, key):  # pragma: no cover - compiled
    """The first index of the sorted ``keys`` whose key is not less than ``key`` (``len(keys)`` if none)."""
    lo, hi = 0, len(keys)
    while lo < hi:
        mid = (lo + hi) // 2
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _lookup(starts, stops, data, valid, n, field_offsets, salts, hashed, buckets, keys, key_ids, text_offsets, text_bytes,
            out, hashes):  # pragma: no cover - compiled
    for i in range(len(starts)):
        field = i // n
        start, stop = starts[i], stops[i]
        if not valid[i] or stop == start:
            out[i], hashes[i] = field_offsets[field] + MISSING, 0
            continue
        h = fnv1a64_span(data, start, stop)
        hashes[i] = h
        if hashed[field]:
            out[i] = field_offsets[field] + RESERVED + np.int64(h % buckets[field])
            continue
        key = h ^ salts[field]
        lo = lower_bound(keys, key)
        out[i] = field_offsets[field] + UNSEEN
        if lo < len(keys) and keys[lo] == key:
            begin, length = text_offsets[lo], text_offsets[lo + 1] - text_offsets[lo]
            if length == stop - start:
                same = True
                for p in range(length):
                    if text_bytes[begin + p] != data[start + p]:
                        same = False
                        break
                if same:
                    out[i] = key_ids[lo]
