"""``--task multiclass``: softmax over the classes seen in training, for every model."""

import math

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import torch

from deepfm import Estimator
from deepfm.config import DataConfig
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.readers import read_frame
from deepfm.errors import DataError
from deepfm.models import MODELS
from deepfm.tasks import MulticlassTask, task_from_dict

COLOURS = np.array(["red", "green", "blue"])


def colours(rows: int = 1500, seed: int = 0) -> pa.Table:
    """The class is (a + b) mod 3: an interaction of two fields, which a linear model cannot learn."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 10, rows), rng.integers(0, 8, rows)
    return pa.table({"a": a.astype(str), "b": b.astype(str), "label": COLOURS[(a + b) % 3]})


@pytest.mark.parametrize("model", sorted(set(MODELS) - {"lr"}))
def test_every_model_learns_classes(model):
    train, test = colours(1500), colours(400, seed=1)
    step = {} if model == "fm" else {"lr": 1e-2}  # FM: AdaGrad at its own step (deepfm.defaults)
    est = Estimator(data={"task": "multiclass"}, model={"name": model, "mlp": (32,), "embed_dim": 4},
                    training={"epochs": 6, "batch_size": 128, **step}).fit(train, progress=False)
    probabilities = est.predict(test)
    assert est.classes == ["blue", "green", "red"]  # predict's columns
    assert probabilities.shape == (400, 3) and np.allclose(probabilities.sum(axis=1), 1)
    assert est.predict(test.slice(0, 0)).shape == (0, 3)  # no rows: still a column per class (was (0,): p @ classes failed)
    metrics = est.evaluate(test)
    assert metrics["accuracy"] > 0.9 and metrics["auc"] > 0.95, metrics


def test_numeric_classes_are_ordered_as_numbers(write_table):
    path = write_table("train.csv", {"x": ["a", "b", "c", "d"], "label": [10, 2, 1, 2]})
    task = FeatureEncoder.fit([read_frame(path)], DataConfig(task="multiclass")).task
    assert task.classes == ["1", "2", "10"] and task.class_rates == [0.25, 0.5, 0.25]
    torch.testing.assert_close(torch.softmax(torch.tensor(task.prior), 0).double(),
                               torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))


def test_a_class_unseen_in_training_is_located(write_table):
    train = write_table("train.csv", {"x": ["a", "b"], "label": ["cat", "dog"]})
    test = write_table("test.csv", {"x": ["a", "b"], "label": ["dog", "bird"]})
    encoder = FeatureEncoder.fit([read_frame(train)], DataConfig(task="multiclass"))
    with pytest.raises(DataError) as caught:
        encoder.transform(read_frame(test))
    assert str(caught.value) == f"{test}:3:2: label 'bird' is not one of the training classes ('cat', 'dog')"


def test_one_class_is_not_a_multiclass_task(write_table):
    path = write_table("train.csv", {"x": ["a", "b"], "label": ["cat", "cat"]})
    with pytest.raises(DataError, match="needs at least two classes"):
        FeatureEncoder.fit([read_frame(path)], DataConfig(task="multiclass"))


def test_metrics_are_accuracy_logloss_and_macro_auc():
    labels = np.array([0, 1, 2, 2])
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25]]))
    metrics = MulticlassTask(["a", "b", "c"]).metrics(labels, logits)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["logloss"] == pytest.approx(-np.mean(np.log([0.7, 0.5, 0.8, 0.25])))
    # one-vs-rest AUCs: a 1.0 (0.7 above 0.2, 0.1, 0.5), b 1.0, c 0.75 (0.8 and 0.25 against 0.1 and 0.3)
    assert metrics["auc"] == pytest.approx((1 + 1 + 0.75) / 3)


def test_a_class_whose_rows_all_weigh_0_is_not_in_the_macro_auc():
    """Rows of weight 0 count for nothing, as in the binary task: the AUC is that of the rows that count."""
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    logits = np.random.default_rng(0).normal(size=(8, 3))
    weights = np.ones(8)
    weights[[2, 5]] = 0  # every row of class 2
    task, kept = MulticlassTask(["a", "b", "c"]), weights > 0
    assert task.metrics(labels, logits, weights)["auc"] == pytest.approx(task.metrics(labels[kept], logits[kept])["auc"])


def test_classes_are_numbers_where_every_label_is_one_so_they_compare_with_the_labels():
    """A new user's ``np.array(est.classes)[p.argmax(1)] == labels`` gave accuracy 0 against evaluate's 0.41 while
    the classes of integer ratings were the texts '1'-'5'."""
    from deepfm.api import typed_classes

    assert typed_classes(["1", "2", "10"]) == [1, 2, 10] and typed_classes(["-1", "1"]) == [-1, 1]
    assert typed_classes(["0.5", "1", "2.5"]) == [0.5, 1.0, 2.5]
    for texts in (["blue", "1"], ["01", "02", "10"], ["1_0", "2"], ["nan", "1"], ["1e400", "1"], ["4", "4.0"]):
        assert typed_classes(texts) == texts  # as predict writes them: ids, not numbers, or two spellings of one
    rng = np.random.default_rng(0)
    table = pa.table({"x": rng.choice(["a", "b", "c"], 600), "label": rng.integers(1, 4, 600)})
    est = Estimator(data={"task": "multiclass"}, model={"name": "fm", "embed_dim": 4},
                    training={"epochs": 2}).fit(table, progress=False)
    predicted = np.array(est.classes)[est.predict(table).argmax(axis=1)]
    accuracy = float(np.mean(predicted == table["label"].to_numpy()))
    assert accuracy == pytest.approx(est.evaluate(table)["accuracy"])


def test_the_task_round_trips_and_saved_models_predict_the_same(tmp_path):
    task = MulticlassTask(["1", "2", "3"], [0.2, 0.3, 0.5])
    assert task_from_dict(task.to_dict()) == task and task_from_dict(task.to_dict()).output_dim == 3
    est = Estimator(data={"task": "multiclass"}, model={"name": "fm", "embed_dim": 4},
                    training={"epochs": 1}).fit(colours(300), out=tmp_path / "m", progress=False)
    again = Estimator.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict(colours(50, 3)), est.predict(colours(50, 3)), rtol=1e-6)
    assert again.classes == est.classes == ["blue", "green", "red"]


def test_cli_trains_evaluates_and_writes_class_probabilities(tmp_path):
    from deepfm.cli import main

    pacsv.write_csv(colours(600), tmp_path / "train.csv")
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"), "--task", "multiclass",
                 "--model", "fm", "--epochs", "2", "--quiet"]) == 0
    assert main(["predict", str(tmp_path / "m"), str(tmp_path / "train.csv"), "--out", str(tmp_path / "p.csv")]) == 0
    written = pacsv.read_csv(tmp_path / "p.csv")
    assert written.column_names == ["prediction", "p_blue", "p_green", "p_red"]
    assert set(written["prediction"].to_pylist()) <= {"red", "green", "blue"}
    assert math.isclose(sum(written[c][0].as_py() for c in written.column_names[1:]), 1, rel_tol=1e-5)


def test_serve_names_the_classes_in_the_order_of_each_rows_probabilities(tmp_path):
    """A client reads which probability is which class from the answer (and /metadata), not features.json."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from deepfm.serving.app import create_app

    estimator = Estimator(data={"task": "multiclass"}, model={"name": "fm", "embed_dim": 4}, training={"epochs": 1})
    estimator.fit(colours(300), out=tmp_path / "m", progress=False)
    rows = [{k: v for k, v in row.items() if k != "label"} for row in colours(5, seed=1).to_pylist()]
    with TestClient(create_app(tmp_path / "m", batching=False)) as client:
        answer = client.post("/predict", json={"rows": rows}).json()
        metadata = client.get("/metadata").json()
    assert answer["kind"] == "class probabilities"
    assert answer["classes"] == metadata["classes"] == estimator.encoder.task.classes
    np.testing.assert_allclose(answer["predictions"], estimator.predict(colours(5, seed=1)), rtol=1e-5)


@pytest.mark.parametrize("names, classes", [(["1.0", "2.0", "3.5"], ["1", "2", "3.5"]), (["01", "1", "2"], ["01", "1", "2"]),
                                            (["1", "1.0", "2"], ["1", "2"])])
def test_predict_writes_each_class_as_the_training_labels_wrote_it(tmp_path, names, classes):
    """A class is the text of its label, except that an integral decimal is its integer ('1.0' is the class '1', as
    a float column's 1.0 reads): in CSV output as that text, and in Parquet as a number only where no two classes
    spell the same number ('01' and '1' are two classes; then text)."""
    import pyarrow.parquet as pq

    from deepfm.cli import main

    table = colours(600)
    name_of = dict(zip(COLOURS, names))
    table = table.set_column(2, "label", pa.array([name_of[colour] for colour in table["label"].to_pylist()]))
    pacsv.write_csv(table, tmp_path / "train.csv")
    assert main(["train", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "m"), "--task", "multiclass",
                 "--model", "fm", "--epochs", "1", "--quiet"]) == 0
    for out in ("p.csv", "p.parquet"):
        assert main(["predict", str(tmp_path / "m"), str(tmp_path / "train.csv"), "--out", str(tmp_path / out)]) == 0
    written = pacsv.read_csv(tmp_path / "p.csv", convert_options=pacsv.ConvertOptions(column_types={"prediction": pa.string()}))
    assert set(written["prediction"].to_pylist()) <= set(classes) and [f"p_{c}" for c in classes] == written.column_names[1:]
    parquet = pq.read_table(tmp_path / "p.parquet")["prediction"]
    if len({float(c) for c in classes}) == len(classes):
        assert pa.types.is_integer(parquet.type) or parquet.type == pa.float64()  # int64 where every class is one
        assert set(parquet.to_pylist()) <= {float(c) for c in classes}
    else:
        assert parquet.type == pa.string() and set(parquet.to_pylist()) <= set(classes)


@pytest.mark.parametrize("written", ["2.0", "2.", " 2 "])
def test_an_integral_decimal_label_is_its_integer_class(write_table, written):
    """A test file that writes 2.0 (pandas does, for a column with a missing value) scores against training's 2."""
    train = write_table("train.csv", {"x": ["a", "b", "c"], "label": ["1", "2", "10"]})
    test = write_table("test.csv", {"x": ["a", "b"], "label": [written, "x"]})
    encoder = FeatureEncoder.fit([read_frame(train)], DataConfig(task="multiclass"))
    with pytest.raises(DataError) as caught:  # the next row's label is still a located error
        encoder.transform(read_frame(test))
    assert str(caught.value) == f"{test}:3:2: label 'x' is not one of the training classes ('1', '2', '10')"
    test = write_table("test2.csv", {"x": ["a"], "label": [written]})
    assert encoder.transform(read_frame(test)).labels.tolist() == [1.0]


def test_an_older_models_classes_that_spell_one_number_twice_read_labels_as_written(write_table):
    """Before '4.0' was the class '4', a model could hold both: its labels stay as written, each its own class."""
    task = MulticlassTask(["1", "1.0", "2"])
    assert task.classes == ["1", "1.0", "2"]
    path = write_table("old.csv", {"x": ["a", "b", "c"], "label": ["1.0", "1", "2"]})
    assert task.encode_labels(read_frame(path)).tolist() == [1.0, 0.0, 2.0]


def test_a_class_only_held_out_rows_hold_is_noted_as_untrained(tmp_path):
    """Its one row fell in the rows held out: the model got an output for it, class rate 0, without a word (a
    --valid file with such a class is an error; a multiclass tester's find)."""
    from deepfm.data.holdout import hashed_mask
    from deepfm.errors import DataWarning

    rows, seed = 400, 2026
    held = np.flatnonzero(hashed_mask(0, rows, 0.1, seed))
    labels = np.array(["a", "b"] * (rows // 2), dtype=object)
    labels[held[:2]] = "rare"
    table = pa.table({"user": [f"u{i % 13}" for i in range(rows)], "label": labels.tolist()})
    with pytest.warns(DataWarning, match=r"class\(es\) 'rare' of the label appear only in the rows held out for "
                                         r"validation: the model has an output for each but no training row"):
        estimator = Estimator(data={"task": "multiclass"}, model={"name": "fm", "embed_dim": 4},
                              training={"epochs": 1, "seed": seed}).fit(table, progress=False)
    assert "rare" in estimator.classes
