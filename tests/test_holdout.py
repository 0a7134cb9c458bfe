"""Validation by default: without a validation file, a seeded share of the training rows is held out, by
the same rule on every path, and the encoders are fitted on the other rows only."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from deepfm.api import Estimator
from deepfm.cli import main
from deepfm.config import DataConfig
from deepfm.data.holdout import HASH_RULE, hashed_mask, held_out_rule, split_encoded
from deepfm.data.stream import ChunkedFile, StreamSource, fit_streaming
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
from deepfm.distributed import Context, encode_shard, encode_shard_and_held_out

TINY = ["--epochs", "2", "--mlp", "16", "--batch-size", "64", "--embed-dim", "4", "--quiet"]


@pytest.fixture
def numbered_csv(tmp_path):
    """300 CTR rows with a ``row`` column (its position) to follow rows through encoding."""
    table, _ = make_ctr_table(SyntheticSpec(rows=300, categorical=4, numeric=1, seed=2))
    path = tmp_path / "train.csv"
    pacsv.write_csv(table.append_column("row", pa.array([f"r{i}" for i in range(table.num_rows)])), path)
    return path


def metrics_of(directory) -> dict:
    return json.loads((directory / "metrics.json").read_text())


def positions(encoder, data) -> list[int]:
    """The file positions of encoded rows (from their ``row`` column, ``r<position>``), sorted."""
    spec = next(f for f in encoder.fields if f.name == "row")
    column = data.ids[:, encoder.fields.index(spec)]
    return sorted(int(spec.vocabulary[i - spec.offset - 2][1:]) for i in column)


def test_without_valid_the_best_epoch_is_chosen_on_held_out_training_rows(ctr_csv, tmp_path, capsys):
    assert main(["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "m"), *TINY[:-1]]) == 0
    metrics = metrics_of(tmp_path / "m")
    held = int(hashed_mask(0, 300, 0.1, seed=2026).sum())  # the default seed's
    assert metrics["validation"]["source"] == "held out of the training file"
    assert metrics["validation"]["fraction"] == 0.1 and metrics["valid_rows"] == held and 15 < held < 45
    assert metrics["rows"] == 300 - held, "held-out rows are not trained on"
    assert metrics["best_valid"] is not None and "auc" in metrics["best_valid"]
    assert all("valid" in epoch for epoch in metrics["history"])
    assert f"{held} training rows" in capsys.readouterr().err, "the log says that rows were held out"


def test_valid_fraction_zero_turns_validation_off(ctr_csv, tmp_path):
    assert main(["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "m"), "--valid-fraction", "0", *TINY]) == 0
    metrics = metrics_of(tmp_path / "m")
    assert metrics["validation"] == {"source": "none"} and metrics["valid_rows"] == 0
    assert metrics["rows"] == 300 and metrics["best_valid"] is None
    assert metrics["best_epoch"] == 2, "without validation the last epoch is kept"


def test_a_valid_file_wins_over_the_fraction(ctr_csv, tmp_path):
    valid = ctr_csv("valid.csv", rows=120, part=1)
    assert main(["train", "--train", str(ctr_csv()), "--valid", str(valid), "--valid-fraction", "0.5",
                 "--out", str(tmp_path / "m"), *TINY]) == 0
    metrics = metrics_of(tmp_path / "m")
    assert metrics["validation"] == {"source": "file", "path": str(valid)}
    assert metrics["rows"] == 300 and metrics["valid_rows"] == 120


def test_the_valid_fraction_is_checked_before_reading(ctr_csv, tmp_path, capsys):
    assert main(["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "m"), "--valid-fraction", "1", *TINY]) == 2
    assert "valid_fraction" in capsys.readouterr().err


def test_the_split_is_seeded_by_position_disjoint_and_complete(ctr_csv):
    est = Estimator(data={"valid_fraction": 0.25}, model={"name": "fm"}, training={"epochs": 1})
    data = est.fit(ctr_csv(), progress=False).encode(ctr_csv(), with_labels=True)
    train, held, how = split_encoded(data, 0.25, seed=7)
    mask = hashed_mask(0, len(data), 0.25, seed=7)
    assert how.rows == len(held) == mask.sum() and 50 < len(held) < 100 and len(train) == 300 - len(held)
    assert how.rule == HASH_RULE
    np.testing.assert_array_equal(held.ids, data.ids[mask])
    np.testing.assert_array_equal(train.ids, data.ids[~mask])
    assert not np.array_equal(mask, hashed_mask(0, len(data), 0.25, seed=8))


def test_the_encoders_are_fitted_on_the_training_rows_only_on_every_path(numbered_csv):
    """A value only held-out rows hold is not in the vocabulary (validation sees it as unseen, id 1, as
    production would); the counts behind the data rules and the label's mean are the training rows'.
    In memory (file or table), streaming and a rank's streamed fit hold out the same rows."""
    table = pacsv.read_csv(numbered_csv)
    held = hashed_mask(0, 300, 0.1, seed=2026)
    training_rows = table.filter(pa.array(~held))
    runs = {"file": Estimator(model={"name": "fm"}, training={"epochs": 1}).fit(numbered_csv, progress=False),
            "table": Estimator(model={"name": "fm"}, training={"epochs": 1}).fit(table, progress=False),
            "stream": Estimator(data={"stream": "on", "chunk_rows": 64}, model={"name": "fm"},
                                training={"epochs": 1}).fit(numbered_csv, progress=False)}
    expected = sorted(training_rows["row"].to_pylist())
    for how, run in runs.items():
        row = next(f for f in run.encoder.fields if f.name == "row")
        assert sorted(row.vocabulary.values.to_pylist()) == expected, how
        assert run.encoder.id_counts.rows == 300 - held.sum(), how
        assert run.encoder.label_mean == pytest.approx(np.mean(training_rows["label"].to_numpy())), how
        assert run.metrics["valid_rows"] == held.sum(), how
        held_ids = run.encode(table.filter(pa.array(held)), with_labels=True).ids[:, run.encoder.fields.index(row)]
        assert (held_ids == row.offset + 1).all(), f"{how}: a held-out row's own value is unseen"
    file = ChunkedFile(numbered_csv, chunk_bytes=2 << 10)
    fitted, _ = fit_streaming(file, DataConfig(categorical=("row",)), held_out=held_out_rule(0.1, 2026))
    assert sorted(next(f for f in fitted.fields if f.name == "row").vocabulary.values.to_pylist()) == expected, \
        "a rank's streamed fit (distributed training)"


def test_a_small_file_whose_hashes_hold_out_no_row_trains_without_validation(ctr_csv, tmp_path, capsys):
    seed = next(seed for seed in range(100) if not hashed_mask(0, 20, 0.1, seed).any())  # 0.9^20: about 1 in 8
    assert main(["train", "--train", str(ctr_csv(rows=20)), "--out", str(tmp_path / "m"), "--seed", str(seed), *TINY[:-1]]) == 0
    metrics = metrics_of(tmp_path / "m")
    assert metrics["valid_rows"] == 0 and metrics["rows"] == 20 and metrics["best_valid"] is None
    assert "holds out none of the training rows" in capsys.readouterr().err


def test_streaming_holds_out_rows_by_position_and_never_trains_on_them(numbered_csv):
    file = ChunkedFile(numbered_csv, chunk_bytes=2 << 10)
    assert len(file.chunks()) > 3
    encoder, rows = fit_streaming(file, DataConfig(categorical=("row",)))
    held = hashed_mask(0, sum(rows), 0.2, seed=4)
    assert 30 < held.sum() < 90, "about the fraction"
    np.testing.assert_array_equal(held[100:], hashed_mask(100, sum(rows) - 100, 0.2, seed=4),
                                  "a chunk decides its rows from their positions alone")
    source = StreamSource(file, encoder, rows, window=2, exclude=lambda first, n: hashed_mask(first, n, 0.2, seed=4))
    assert source.num_rows == (~held).sum()
    batches = list(source.batches(32, seed=1, epoch=0))
    assert len(batches) == source.steps_per_epoch(32)
    from deepfm.data.batch import EncodedData

    seen = positions(encoder, EncodedData.concat(batches))
    assert seen == np.flatnonzero(~held).tolist()


def test_streamed_training_reports_the_held_out_rows(numbered_csv):
    est = Estimator(data={"stream": "on", "chunk_rows": 64, "valid_fraction": 0.2},
                    model={"mlp": (8,)}, training={"epochs": 1, "batch_size": 32})
    est.fit(numbered_csv, progress=False)
    held = int(hashed_mask(0, 300, 0.2, est.config.training.seed).sum())
    assert est.metrics["valid_rows"] == held and est.metrics["rows"] == 300 - held
    assert est.metrics["validation"]["rule"] == HASH_RULE
    assert est.metrics["best_valid"] is not None


@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_holds_out_the_same_rows_and_shards_the_others(numbered_csv, world):
    file = ChunkedFile(numbered_csv, chunk_bytes=2 << 10)
    encoder, rows = fit_streaming(file, DataConfig(categorical=("row",)))
    held = hashed_mask(0, 300, 0.1, seed=3)
    shards, valids = [], []
    for rank in range(world):
        shard, valid = encode_shard_and_held_out(file.frames(), encoder, 300, Context(rank, world), held)
        shards.append(positions(encoder, shard))
        valids.append(positions(encoder, valid))
    assert all(v == np.flatnonzero(held).tolist() for v in valids)
    assert len({len(s) for s in shards}) == 1, "every rank takes as many steps"
    trained = sorted(p for s in shards for p in s)
    assert len(trained) == len(set(trained)) and not set(trained) & set(valids[0])
    assert len(trained) == (300 - held.sum()) // world * world
    without = encode_shard(file.frames(), encoder, 300, Context(0, world))
    assert len(without) == 300 // world, "no hold-out: the shards of before"


@pytest.mark.parametrize("stream", ["off", "on"])
def test_a_file_whose_hashes_hold_out_no_row_or_every_row_is_handled_alike_in_memory_and_streaming(tmp_path, stream):
    from deepfm.errors import DataError

    table = pa.table({"label": [1.5, 2.5, 3.5], "user": ["a", "b", "c"]})
    none_held = next(s for s in range(100) if not hashed_mask(0, 3, 0.1, s).any())
    every_held = next(s for s in range(10_000) if hashed_mask(0, 3, 0.5, s).all())
    path = tmp_path / "three.csv"
    pacsv.write_csv(table, path)
    logs: list[str] = []
    est = Estimator(data={"stream": stream}, model={"name": "fm"}, training={"epochs": 1, "seed": none_held})
    est.fit(path, progress=False, log=logs.append)
    assert est.metrics["valid_rows"] == 0 and est.metrics["rows"] == 3
    assert any("holds out none of the training rows" in line for line in logs)
    with pytest.raises(DataError, match="holds out every one of the file's 3 rows"):
        Estimator(data={"stream": stream, "valid_fraction": 0.5}, model={"name": "fm"},
                  training={"epochs": 1, "seed": every_held}).fit(path, progress=False)


def test_a_lowered_streaming_share_is_the_share_the_encoders_leave_out(numbered_csv, monkeypatch):
    """A streamed file so large that its held-out rows would pass STREAM_HELD_OUT_ROWS holds out a smaller
    share, decided from its estimated rows before it is read: every row it trains on was counted."""
    from deepfm.data import holdout

    monkeypatch.setattr(holdout, "STREAM_HELD_OUT_ROWS", 20)  # 300 rows at 0.2 would hold out ~60
    est = Estimator(data={"stream": "on", "chunk_rows": 64, "valid_fraction": 0.2}, model={"name": "fm"},
                    training={"epochs": 1}).fit(numbered_csv, progress=False)
    fraction = est.metrics["validation"]["fraction"]
    assert 0.05 < fraction < 0.08  # about 20 / 300
    held = hashed_mask(0, 300, fraction, est.config.training.seed)
    row = next(f for f in est.encoder.fields if f.name == "row")
    trained = sorted(f"r{i}" for i in np.flatnonzero(~held))
    assert sorted(row.vocabulary.values.to_pylist()) == trained
    assert est.metrics["valid_rows"] == held.sum() and est.metrics["rows"] == 300 - held.sum()


def test_the_lowered_share_is_the_same_streamed_or_not_so_a_resumed_run_holds_out_the_same_rows(numbered_csv, monkeypatch):
    """--stream auto decides by free memory: a run resumed in memory after a streamed start (or the other way)
    holds out the rows its checkpoint's encoders left out, not another share of them."""
    from deepfm.data import holdout

    monkeypatch.setattr(holdout, "STREAM_HELD_OUT_ROWS", 20)
    runs = {stream: Estimator(data={"stream": stream, "chunk_rows": 64, "valid_fraction": 0.2}, model={"name": "fm"},
                              training={"epochs": 1}).fit(numbered_csv, progress=False) for stream in ("on", "off")}
    assert runs["on"].metrics["validation"]["fraction"] == runs["off"].metrics["validation"]["fraction"] < 0.08
    assert runs["on"].encoder.to_dict() == runs["off"].encoder.to_dict()
    resumed = Estimator(data={"stream": "off", "chunk_rows": 64, "valid_fraction": 0.2}, model={"name": "fm"},
                        training={"epochs": 1})
    _, valid, _ = resumed._training_data(numbered_csv, runs["on"].encoder, hold_out=True)  # as --resume reads it
    assert len(valid) == runs["on"].metrics["valid_rows"]
