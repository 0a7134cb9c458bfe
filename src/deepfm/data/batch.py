"""Encoded data and the tensors a model reads, by job (re-exported here):

- ``deepfm.data.encoded``: ``EncodedData`` and ``Bag``, contiguous NumPy columns; ``id_dtype``;
- ``deepfm.data.tensors``: ``Batch`` and ``BagTensor``, with the model-side caches;
- ``deepfm.data.prefetch``: the thread that prepares the next batches;
- ``deepfm.data.sources``: ``BatchSource``, ``InMemorySource`` and ``iterate_batches``.
"""

from deepfm.data.encoded import Bag, EncodedData, id_dtype
from deepfm.data.prefetch import prefetch
from deepfm.data.sources import BatchSource, InMemorySource, iterate_batches
from deepfm.data.tensors import Batch, BagTensor

__all__ = ["Bag", "BagTensor", "Batch", "BatchSource", "EncodedData", "InMemorySource", "id_dtype",
           "iterate_batches", "prefetch"]
