"""The memory of the embedding tables follows from the field sizes (docs/production.md, "Embedding
tables larger than one process"): a field with more distinct values than ``hash_buckets`` takes
2 + hash_buckets rows, any other 2 + its distinct values, a numeric field 2; every row holds k
latent factors and one first-order weight in fp32; the optimiser adds its state per row."""

from __future__ import annotations

import pytest
import torch

from deepfm.config import DataConfig, RunConfig
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.readers import read_frame
from deepfm.models import model_for_run
from deepfm.training.optim import ModelOptimizer

K, BUCKETS = 8, 64
SITES, DEVICES = 500, 6  # distinct values: one field above the bucket count (hashed), one below
STATE_PER_ROW = {"adam": 2 * (K + 1), "adagrad": K + 1, "rowwise_adagrad": 2, "sgd": 0}  # fp32 values


def expected_rows() -> int:
    return (2 + BUCKETS) + (2 + DEVICES) + 2


def table_bytes(rows: int, k: int, bytes_per_value: int = 4) -> int:
    """Latent factors and first-order weights of ``rows`` rows."""
    return rows * (k + 1) * bytes_per_value


@pytest.fixture
def encoded(write_table):
    n = 2 * SITES
    path = write_table("train.csv", {"label": [i % 2 for i in range(n)], "site": [f"s{i % SITES}" for i in range(n)],
                                     "device": [f"d{i % DEVICES}" for i in range(n)], "count": list(range(n))})
    frame = read_frame(path)
    encoder = FeatureEncoder.fit([frame], DataConfig(label="label", numeric=("count",), hash_buckets=BUCKETS))
    return encoder, encoder.transform(frame)


def deepfm(encoder: FeatureEncoder, optimizer: str = "adam") -> tuple[RunConfig, torch.nn.Module]:
    run = RunConfig.model_validate({"model": {"name": "deepfm", "embed_dim": K, "mlp": [16]},
                                    "training": {"optimizer": optimizer}})
    return run, model_for_run(run, encoder.num_features, encoder.num_fields, encoder.task)


def test_a_hashed_field_takes_two_plus_the_bucket_count_rows(encoded):
    encoder, _ = encoded
    sizes = {spec.name: (spec.size, spec.hash_buckets) for spec in encoder.fields}
    assert sizes == {"site": (2 + BUCKETS, BUCKETS), "device": (2 + DEVICES, 0), "count": (2, 0)}
    _, model = deepfm(encoder)
    assert tuple(model.embedding.weight.shape) == (expected_rows(), K)
    assert tuple(model.linear.weights.weight.shape) == (expected_rows(), 1)
    tables = [model.embedding.weight, model.linear.weights.weight]
    assert sum(t.numel() * t.element_size() for t in tables) == table_bytes(expected_rows(), K)


@pytest.mark.parametrize("optimizer", sorted(STATE_PER_ROW))
def test_the_optimiser_state_of_the_tables_is_the_stated_values_per_row(encoded, optimizer):
    encoder, data = encoded
    run, model = deepfm(encoder, optimizer)
    optimiser = ModelOptimizer(model, run.training)
    batch = data.to_batch("cpu")
    encoder.task.loss(model(batch).float(), batch.labels, batch.weights).backward()
    optimiser.step()
    tables = {id(model.embedding.weight), id(model.linear.weights.weight)}
    state = [tensor for opt in optimiser.optimizers.values() for param, values in opt.state.items()
             if id(param) in tables for tensor in values.values() if tensor.dim() > 0]
    assert sum(t.numel() for t in state) == STATE_PER_ROW[optimizer] * expected_rows()
