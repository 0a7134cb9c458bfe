"""The serving lookup table (``deepfm.serving.vocabulary``) gives every categorical value the id
``FeatureEncoder.transform`` gives it, and never another value's id on a hash collision."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from deepfm.config import DataConfig
from deepfm.data.encoders import MISSING, UNSEEN, FeatureEncoder
from deepfm.data.hashing import fnv1a64_unique
from deepfm.data.readers import frame_from_table
from deepfm.serving.vocabulary import VocabularyTable, string_buffers

CITIES = ["paris", "oslo", "zürich", "são paulo", "東京", "x"]  # multi-byte UTF-8 too


@pytest.fixture(scope="module")
def encoder() -> FeatureEncoder:
    """``city`` has a vocabulary; ``user`` (40 values, more than 30 buckets) is hashed."""
    rng = np.random.default_rng(0)
    table = pa.table({"label": ["0", "1"] * 100,
                      "city": [CITIES[i] for i in rng.integers(0, len(CITIES), 200)],
                      "user": [f"u{i % 40}" for i in range(200)]})
    return FeatureEncoder.fit([frame_from_table(table, "t")], DataConfig(hash_buckets=30))


def _transform_ids(encoder: FeatureEncoder, values: dict[str, list]) -> np.ndarray:
    """``FeatureEncoder.transform``'s ids for these values as a file gives them ("" is an empty cell: null)."""
    columns = {k: pa.array([x if x != "" else None for x in v], pa.string()) for k, v in values.items()}
    frame = frame_from_table(pa.table(columns), "t", require_label=False)
    return encoder.transform(frame, with_labels=False).ids


@pytest.mark.parametrize("text_type", [pa.string(), pa.large_string()])
def test_the_table_gives_the_encoders_ids(encoder, text_type):
    specs = encoder.single_fields
    assert [s.name for s in specs] == ["city", "user"] and specs[1].hash_buckets and not specs[0].hash_buckets
    city = CITIES + ["never-seen", None, "", "ZÜRICH", "osl", "oslo "]
    user = [f"u{i}" for i in range(len(city) - 3)] + [None, "", "u999"]
    expected = _transform_ids(encoder, {"city": city, "user": user})
    text = pa.array(["padding"] + city + user, text_type).slice(1)  # a slice: its buffers start at an offset
    ids = VocabularyTable(specs).encode(text, len(city)).reshape(2, len(city)).T
    np.testing.assert_array_equal(ids, expected)
    assert ids[len(CITIES) + 1, 0] == ids[len(CITIES) + 2, 0] == specs[0].offset + MISSING  # null and "" alike
    assert ids[len(CITIES), 0] == specs[0].offset + UNSEEN
    assert ids[-1, 1] == specs[1].offset + UNSEEN  # a hashed field's value never seen in training: unseen, no bucket


def test_a_value_whose_key_matches_another_values_key_is_unseen(encoder):
    """The key (hash xor field salt) only finds a candidate; the strings must be equal too."""
    city = encoder.single_fields[0]
    table = VocabularyTable([city])
    oslo = int(table.encode(pa.array(["oslo"]), 1)[0])
    texts = [bytes(table.text_bytes[a:b]).decode() for a, b in zip(table.text_offsets[:-1], table.text_offsets[1:])]
    keys = table.keys.copy()
    keys[texts.index("oslo")] = fnv1a64_unique(pa.array(["intruder"]))[0] ^ table.salts[0]  # a collision, made
    order = np.argsort(keys)
    table.keys, table.global_ids = keys[order], table.global_ids[order]
    table.text_offsets, table.text_bytes, _ = string_buffers(pa.array([texts[i] for i in order], pa.large_string()))
    assert table.encode(pa.array(["intruder", "paris"]), 2).tolist() == [
        city.offset + UNSEEN, int(VocabularyTable([city]).encode(pa.array(["paris"]), 1)[0])]
    assert oslo != city.offset + UNSEEN


def test_string_buffers_read_nulls_and_offsets():
    text = pa.array(["zz", "a", None, "", "bc"]).slice(1)
    offsets, data, valid = string_buffers(text)
    assert valid.tolist() == [True, False, True, True]
    assert [bytes(data[offsets[i] : offsets[i + 1]]).decode() for i in range(4)] == ["a", "", "", "bc"]


def test_a_table_without_fields_encodes_nothing():
    """A model without categorical fields (numeric ones only) still gets a table, which starts and answers."""
    assert VocabularyTable([]).encode(pa.array([], pa.string()), 3).tolist() == []
