"""Run by tests/test_stream_ranks.py under torchrun (gloo ranks): the held-out rows each rank encodes
from its block of chunks, gathered, equal those one streaming process holds out (``encode_hashed``).
Prints "equal" on every rank that finds them so."""

import sys

import numpy as np

from deepfm.config import DataConfig
from deepfm.data.holdout import encode_hashed
from deepfm.data.stream import ChunkedFile, fit_streaming
from deepfm.distributed import cleanup, context, encode_held_out_share, gather_rows, setup

setup("cpu")  # gloo, as training joins it
path, chunk_bytes = sys.argv[1], int(sys.argv[2])
file = ChunkedFile(path, chunk_bytes=chunk_bytes)
encoder, rows = fit_streaming(file, DataConfig(numeric=("I1", "I2")))
gathered = gather_rows(encode_held_out_share(file, encoder, rows, 0.1, 3, context()))
expected = encode_hashed(file, encoder, 0.1, 3)
same = (np.array_equal(gathered.ids, expected.ids) and np.array_equal(gathered.labels, expected.labels)
        and np.array_equal(gathered.dense_values(), expected.dense_values()) and len(rows) > context().world)
print("equal" if same else f"differ: {len(gathered)} rows gathered, {len(expected)} expected")
cleanup()
