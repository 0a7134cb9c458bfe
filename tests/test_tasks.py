"""Task heads: labels, loss, link, metrics and selection, and how the training file decides the task."""

import math
import os

import numpy as np
import pytest
import torch

from deepfm.config import DataConfig
from deepfm.data.encoders import FeatureEncoder
from deepfm.data.readers import read_frame
from deepfm.errors import DataError
from deepfm.tasks import BinaryTask, RegressionTask, Task, task_from_dict


def fit(path, **data):
    return FeatureEncoder.fit([read_frame(path)], DataConfig(**data))


def error_of(call, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as caught:
        call(*args, **kwargs)
    return caught.value


# -- the head ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", [BinaryTask(label_mean=0.25, positive=">50K"), RegressionTask(label_mean=3.5),
                                  BinaryTask(label_mean=0.5, label_map={"-1": 0.0})])
def test_a_task_round_trips_through_its_dict(task):
    again = task_from_dict(task.to_dict())
    assert type(again) is type(task) and again.to_dict() == task.to_dict() and again.prior == task.prior


def test_a_task_equals_its_name():
    assert BinaryTask() == "binary" and RegressionTask() == "regression" and BinaryTask() != "regression"
    assert isinstance(task_from_dict({"task": "binary"}), Task)


def test_an_unknown_task_name_is_refused():
    with pytest.raises(ValueError, match="task must be one of"):
        task_from_dict({"task": "ranking"})


def test_the_prior_is_the_log_odds_of_the_rate_or_the_mean_rating():
    assert BinaryTask(label_mean=0.2).prior == pytest.approx(math.log(0.2 / 0.8))
    assert RegressionTask(label_mean=3.7).prior == pytest.approx(3.7)
    assert BinaryTask().prior == 0.0


def test_weighted_loss_is_the_weighted_mean_of_the_row_losses():
    logits, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    weights = torch.tensor([1.0, 3.0, 0.0])
    p = torch.sigmoid(logits)
    logloss = -(labels * p.log() + (1 - labels) * (1 - p).log())
    assert BinaryTask().loss(logits, labels, weights).item() == pytest.approx(float((logloss * weights).sum() / 4))
    assert BinaryTask().loss(logits, labels).item() == pytest.approx(float(logloss.mean()))
    ratings = torch.tensor([1.0, 2.0, 4.0])
    assert RegressionTask().loss(logits, ratings, weights).item() == pytest.approx(
        float((((logits - ratings) ** 2) * weights).sum() / 4))


def test_binary_auc_is_scored_on_logits_not_on_rounded_probabilities():
    # sigmoid of 18, 19 and 20 is 1.0 in float32: AUC from probabilities would tie them (0.5)
    labels = np.array([0, 1, 0, 1])
    logits = np.array([18.0, 19.0, 17.5, 20.0])
    assert BinaryTask().metrics(labels, logits)["auc"] == pytest.approx(1.0)
    probabilities = torch.sigmoid(torch.tensor(logits, dtype=torch.float32)).double().numpy()
    assert BinaryTask().metrics_of_predictions(labels, probabilities)["auc"] < 1.0  # the old way loses it


def test_weighted_metrics_count_each_row_by_its_weight():
    labels, logits = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 0.0])
    weights = np.array([1.0, 1.0, 2.0])
    metrics = RegressionTask().metrics(labels, logits, weights)
    assert metrics["rmse"] == pytest.approx(math.sqrt((0 + 1 + 2 * 16) / 4))
    assert metrics["mae"] == pytest.approx((0 + 1 + 2 * 4) / 4)


def test_selection_falls_back_to_logloss_when_auc_is_undefined():
    task = BinaryTask()
    best = {"auc": math.nan, "logloss": 0.40}
    assert task.is_better({"auc": math.nan, "logloss": 0.30}, best)
    assert not task.is_better({"auc": math.nan, "logloss": 0.50}, best)
    assert task.is_better({"auc": 0.80, "logloss": 0.60}, {"auc": 0.70, "logloss": 0.30})  # AUC decides when defined


def test_a_gain_of_rounding_is_a_tie_that_keeps_the_earlier_epoch():
    """Two epochs that rank the validation rows alike: a new user's run kept the later one at a worse logloss."""
    task = BinaryTask()
    assert not task.is_better({"auc": 0.4444444444444445, "logloss": 0.60}, {"auc": 0.4444444444444444, "logloss": 0.55})
    assert task.is_better({"auc": 0.4444444445, "logloss": 0.60}, {"auc": 0.4444444444, "logloss": 0.55})
    assert not RegressionTask().is_better({"rmse": 0.9 - 1e-16}, {"rmse": 0.9})


def test_single_class_validation_scores_auc_nan_and_a_finite_logloss():
    metrics = BinaryTask().metrics(np.zeros(4), np.array([-3.0, -1.0, 0.0, 2.0]))
    assert math.isnan(metrics["auc"]) and math.isfinite(metrics["logloss"])


def test_binary_logloss_is_the_exact_cross_entropy_of_the_logits_however_confident():
    """A confident mistake costs its whole −log σ(−|z|) = |z| + log(1 + e^−|z|) (a probability clipped at
    1e-7 capped it at ~16.1), and sample weights average the rows' losses."""
    logits, labels = np.array([30.0, -30.0, 5.0, -5.0]), np.array([0.0, 1.0, 1.0, 0.0])
    wrong, right = 30 + np.log1p(np.exp(-30.0)), np.log1p(np.exp(-5.0))
    assert BinaryTask().metrics(labels, logits)["logloss"] == pytest.approx((2 * wrong + 2 * right) / 4, rel=1e-12)
    weights = np.array([1.0, 0.0, 0.0, 3.0])
    assert BinaryTask().metrics(labels, logits, weights)["logloss"] == pytest.approx((wrong + 3 * right) / 4, rel=1e-12)


# -- deciding the task on the whole training file (issue 11.4) --------------------------------------


def test_auto_task_is_binary_only_when_every_label_is_zero_or_one(write_table):
    path = write_table("train.csv", {"label": [0, 1] * 50, "city": ["a", "b"] * 50})
    assert fit(path).task == "binary"


def test_one_stray_label_in_a_binary_file_is_a_located_error_not_a_regression(write_table):
    labels = [0, 1] * 150
    labels[203] = 2
    path = write_table("train.csv", {"city": ["a"] * 300, "label": labels})
    error = error_of(fit, path)
    assert (error.line, error.column) == (205, 2)
    assert "label 2 in a file of 0/1 labels" in error.message and "--task" in error.message


def test_the_stray_label_is_found_in_a_later_chunk_of_a_streamed_file(write_table):
    from deepfm.data.stream import ChunkedFile, fit_streaming

    labels = [0, 1] * 500
    labels[990] = 7
    path = write_table("train.csv", {"city": ["a"] * 1000, "label": labels})
    file = ChunkedFile(path, chunk_bytes=1024)
    assert len(file.chunks()) > 3
    error = error_of(fit_streaming, file, DataConfig())
    assert error.line == 992 and "label 7" in error.message


def test_ratings_are_regression(write_table):
    path = write_table("train.csv", {"label": [1, 2, 3, 4, 5] * 20, "city": ["a", "b"] * 50})
    assert fit(path).task == "regression"


def test_real_valued_labels_are_regression(write_table):
    path = write_table("train.csv", {"label": [0.5 + i / 7 for i in range(100)], "city": ["a", "b"] * 50})
    assert fit(path).task == "regression"


# -- a binary task needs two classes (issue 11.2) ---------------------------------------------------


def test_a_positive_value_that_matches_no_label_lists_the_values_seen(write_table):
    path = write_table("train.csv", {"label": [">50K", "<=50K", "<=50K"], "city": ["a", "b", "c"]})
    error = error_of(fit, path, positive=">50k")
    assert "--positive '>50k' matches no label" in error.message and "'<=50K', '>50K'" in error.message


def test_a_positive_value_that_matches_every_label_is_an_error(write_table):
    path = write_table("train.csv", {"label": ["yes", "yes"], "city": ["a", "b"]})
    assert "matches every label" in error_of(fit, path, positive="yes").message


def test_a_binary_label_column_with_one_class_is_an_error(write_table):
    path = write_table("train.csv", {"label": [0, 0, 0], "city": ["a", "b", "c"]})
    assert "every training label is 0: a binary task needs both 0 and 1" in error_of(fit, path).message
    assert "a binary task needs both" in error_of(fit, path, task="binary").message


def test_ratings_under_the_binary_task_are_told_how_to_read_one_value_against_the_others(write_table):
    """A new user's --task binary on ratings 1-5 read 'every training label is 1, 2, 3, 4, 5'."""
    path = write_table("train.csv", {"label": [1, 2, 3, 4, 5], "city": ["a", "b", "c", "d", "e"]})
    assert error_of(fit, path, task="binary").message == (
        "the training labels are 1, 2, 3, 4, 5, not 0 and 1, which a binary task reads; --positive VALUE --one-vs-rest "
        "(data.positive, data.one_vs_rest) reads one value as 1 and every other as 0, or --task regression (data.task)")


def test_the_positive_value_makes_labels_one_and_others_zero(write_table):
    path = write_table("train.csv", {"label": [">50K", "<=50K", " >50K"], "city": ["a", "b", "c"]})
    encoder = fit(path, positive=">50K")
    assert encoder.transform(read_frame(path)).labels.tolist() == [1.0, 0.0, 1.0]


# -- --positive: the positive value and one negative value ------------------------------------------


def income_labels(rows: int, strays: dict[int, str]) -> dict[str, list[str]]:
    labels = [">50K" if i % 4 == 0 else "<=50K" for i in range(rows)]
    for row, value in strays.items():
        labels[row] = value
    return {"age": [str(20 + i % 50) for i in range(rows)], "label": labels}


def write_labels(write_table, tmp_path, name: str, columns: dict[str, list[str]]):
    """The columns as CSV, TSV or Parquet (by ``name``'s suffix); the label column is the 2nd."""
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(columns), tmp_path / name)
        return tmp_path / name
    return write_table(name, columns, delimiter="\t" if name.endswith(".tsv") else ",")


@pytest.mark.parametrize("name, line", [("train.csv", 20), ("train.tsv", 20), ("train.parquet", 19)])  # 19: no header
def test_a_third_label_value_with_positive_is_an_error_at_its_row(write_table, tmp_path, name, line):
    path = write_labels(write_table, tmp_path, name, income_labels(100, {18: "maybe"}))
    error = error_of(fit, path, positive=">50K")
    assert (error.path, error.line, error.column) == (str(path), line, 2)
    assert error.message.startswith("label 'maybe' is neither the positive value '>50K' nor the negative value "
                                    "'<=50K' (1 of 100 labels are neither")


def test_a_third_label_value_is_found_in_a_later_chunk_of_a_streamed_file(write_table):
    from deepfm.data.stream import ChunkedFile, fit_streaming

    path = write_table("train.csv", income_labels(1000, {990: ">50K."}))
    file = ChunkedFile(path, chunk_bytes=1024)
    assert len(file.chunks()) > 3
    error = error_of(fit_streaming, file, DataConfig(positive=">50K"))
    assert (error.line, error.column) == (992, 2) and "label '>50K.' is neither" in error.message


def test_one_vs_rest_reads_every_value_but_the_positive_one_as_zero(write_table):
    """``--positive 5 --one-vs-rest`` on ratings: 5 against 1-4, as ``--positive`` did before the two-value rule."""
    from deepfm.data.readers import read_frame as read

    path = write_table("train.csv", {"user": ["a", "b", "c", "d", "e"], "label": ["5", "3", "1", "5", "4"]})
    error = error_of(fit, path, positive="5")
    assert "add --one-vs-rest to read every value but the positive one as 0" in error.message
    encoder = fit(path, positive="5", one_vs_rest=True)
    assert encoder.task.negative is None
    assert encoder.task.encode_labels(read(path)).tolist() == [1, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="one_vs_rest: name the positive label value too"):
        DataConfig(one_vs_rest=True)
    for task in ("multiclass", "ordinal", "regression"):
        with pytest.raises(ValueError, match="one_vs_rest: a binary task's option"):
            DataConfig(positive="5", one_vs_rest=True, task=task)
        with pytest.raises(ValueError, match="positive: a binary task's option"):
            DataConfig(positive=">50K", task=task)  # was ignored without a word


def test_the_negative_value_is_the_more_frequent_other_value_even_after_a_stray_first_row(write_table):
    path = write_table("train.csv", income_labels(100, {1: "<=50K."}))
    error = error_of(fit, path, positive=">50K")
    assert error.line == 3 and "label '<=50K.' is neither" in error.message and "negative value '<=50K'" in error.message


def test_the_negative_value_is_saved_and_evaluation_labels_outside_the_two_are_located_errors(write_table):
    from deepfm.data.encoders import FeatureEncoder

    encoder = fit(write_table("train.csv", income_labels(100, {})), positive=">50K")
    assert encoder.to_dict()["negative"] == "<=50K"
    restored = FeatureEncoder.from_dict(encoder.to_dict())
    test = write_table("test.csv", income_labels(10, {3: ">50K."}))
    error = error_of(restored.transform, read_frame(test))
    assert (error.path, error.line, error.column) == (str(test), 5, 2)
    assert error.message == ("label '>50K.' is neither the positive value '>50K' nor the negative value '<=50K' of "
                             "the training labels")
    clean = write_table("clean.csv", income_labels(8, {}))
    assert restored.transform(read_frame(clean)).labels.tolist() == [1, 0, 0, 0, 1, 0, 0, 0]


def test_a_model_saved_without_a_negative_value_reads_every_other_value_as_zero_as_before(write_table):
    from deepfm.data.encoders import FeatureEncoder

    saved = fit(write_table("train.csv", income_labels(100, {})), positive=">50K").to_dict()
    saved.pop("negative", None)  # features.json of an older version
    restored = FeatureEncoder.from_dict(saved)
    assert restored.task.negative is None
    test = write_table("test.csv", income_labels(4, {1: ">50K."}))
    assert restored.transform(read_frame(test)).labels.tolist() == [1, 0, 0, 0]


def test_an_undefined_auc_reads_as_undefined_in_logs_not_nan():
    from deepfm.tasks import metric_text
    from deepfm.training.trainer import _describe

    assert metric_text("auc", math.nan) == "auc undefined (one class)"
    assert metric_text("logloss", 0.25) == "logloss 0.25000" and metric_text("auc", 0.9, ".6g") == "auc 0.9"
    record = {"epoch": 1, "train_loss": 0.5, "valid": {"auc": math.nan, "logloss": 0.2}}
    assert _describe(record) == "epoch 1: train loss 0.50000  valid auc undefined (one class)  valid logloss 0.20000"


# -- text labels (issue 11.5) -----------------------------------------------------------------------


def test_text_labels_without_positive_suggest_it_with_the_values_seen(write_table):
    path = write_table("train.csv", {"label": ["click", "no", "no", "click"], "city": ["a", "b", "c", "d"]})
    error = error_of(fit, path)
    assert (error.line, error.column) == (2, 1)
    assert error.message == ("the label must be a number, got 'click'; for text labels name the value that means 1 "
                             "with --positive VALUE (data.positive), or use --task multiclass (values seen: 'click', 'no')")


def test_text_labels_given_to_a_trained_model_say_it_reads_numbers_not_how_to_train(write_table):
    """``evaluate`` takes no --positive or --task: the message names what the model reads instead."""
    train = write_table("train.csv", {"label": [4.0, 3.5, 1.0, 5.0], "city": ["a", "b", "c", "d"]})
    encoder = fit(train, task="regression")
    scored = write_table("scored.csv", {"label": ["4", "x", "2", "x"], "city": ["a", "b", "c", "d"]})
    error = error_of(encoder.transform, read_frame(scored))
    assert (error.line, error.column) == (3, 1)
    assert error.message == "the label must be a number, got 'x': the model reads numeric labels (values seen: 'x', '4', '2')"


def test_a_kept_epoch_whose_logloss_is_worse_than_the_click_rate_is_noted_as_overconfident():
    """Early stopping keeps the best AUC; where that epoch's validation logloss is worse than predicting the training
    click rate for every row, the log says its probabilities are not to be read as such (a new user's 5k-row run:
    logloss 0.883 against 0.680)."""
    import numpy as np

    from deepfm.api import overconfidence_note
    from deepfm.data.batch import EncodedData
    from deepfm.tasks import BinaryTask

    labels = np.array([1, 0, 0] * 100, dtype=np.float32)
    valid = EncodedData(ids=np.zeros((300, 1), np.int32), values=None, labels=labels)
    task = BinaryTask(label_mean=1 / 3)
    constant = -np.mean(labels * np.log(1 / 3) + (1 - labels) * np.log(2 / 3))
    note = overconfidence_note(task, {"auc": 0.62, "logloss": 0.91}, valid)
    assert note is not None and f"worse than {constant:.4f}" in note and "not as probabilities" in note
    assert overconfidence_note(task, {"auc": 0.62, "logloss": 0.60}, valid) is None
    assert overconfidence_note(task, {"auc": 0.62, "logloss": 0.91}, None) is None


def test_a_regression_worse_than_its_training_mean_says_so():
    """A step too large diverges without a NaN on ratings: RMSE 3e12 was saved without a word."""
    from deepfm.api import below_the_mean_note
    from deepfm.data.batch import EncodedData

    labels = np.array([1, 3, 5] * 100, dtype=np.float32)
    valid = EncodedData(ids=np.zeros((300, 1), np.int32), values=None, labels=labels)
    task = RegressionTask(label_mean=3.0)
    constant = float(np.sqrt(np.mean((labels - 3.0) ** 2)))
    note = below_the_mean_note(task, {"rmse": 3e12, "mae": 1e12}, valid)
    assert note is not None and f"worse than {constant:.4g} for the training mean" in note and "lower --lr" in note
    assert below_the_mean_note(task, {"rmse": 1.2, "mae": 0.9}, valid) is None
    assert below_the_mean_note(BinaryTask(), {"auc": 0.5, "logloss": 9.0}, valid) is None


def run_python(code: str) -> None:
    """``code`` in a fresh interpreter (nothing imported yet), which must exit 0."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_metrics_a_fit_will_validate_with_load_on_a_thread():
    """A fit that validates starts importing scikit-learn's metrics (~1 s) before it reads its data."""
    run_python("import sys, threading; from deepfm.tasks import load_metrics_ahead; assert 'sklearn.metrics' not in "
               "sys.modules; load_metrics_ahead(); [t.join() for t in threading.enumerate() "
               "if t.name == 'deepfm-metrics-import']; assert 'sklearn.metrics' in sys.modules")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork: POSIX")
def test_a_fork_while_the_metrics_load_waits_for_them_and_its_child_imports_them():
    """A child forked mid-import would inherit import locks held by a thread it does not have, and hang."""
    run_python("import os, signal, sys\nfrom deepfm.tasks import load_metrics_ahead\nload_metrics_ahead()\n"
               "pid = os.fork()\nif pid == 0:\n    signal.alarm(30)\n    from sklearn.metrics import roc_auc_score\n"
               "    os._exit(0)\nsys.exit(os.waitpid(pid, 0)[1] != 0)")


def test_the_auc_of_rows_whose_one_class_has_all_the_weight_is_undefined_without_sklearn_s_warning():
    import warnings

    labels, logits = np.array([0.0, 1.0, 0.0, 1.0]), np.array([-1.0, 1.0, 0.5, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's UndefinedMetricWarning each epoch, beside the log's own words
        metrics = BinaryTask().metrics(labels, logits, np.array([1.0, 0.0, 1.0, 0.0]))
    assert math.isnan(metrics["auc"]) and np.isfinite(metrics["logloss"])
