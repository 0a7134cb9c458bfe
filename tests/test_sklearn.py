"""The scikit-learn estimators follow scikit-learn's conventions and save the usual model directory."""

from __future__ import annotations

import json
import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepfm import Estimator
from deepfm.errors import DataError, ModelDirError
from deepfm.sklearn import DeepFMClassifier, DeepFMRegressor, FMClassifier, FMRegressor, sparse_frame

TINY = {"mlp": (8,), "embed_dim": 4, "batch_size": 64}

# scikit-learn's own checks. They feed float arrays (numeric fields here) and small samples.
# Expected to fail, and why:
EXPECTED_FAILURES = {
    # Minibatch training with shuffling: a row of weight 2 and the same row twice land in different
    # batches, so the two fits differ by more than the check's tolerance (weights are exact only in
    # expectation). Needs data.weight's effect on the loss (H-core) even to get that far.
    "check_sample_weight_equivalence_on_dense_data": "stochastic minibatch training: weights equal repeated rows "
                                                     "only in expectation",
    "check_sample_weight_equivalence_on_sparse_data": "the same, X sparse",
}
# Not run: check_array_api_input (scikit-learn skips it unless SCIPY_ARRAY_API is set; inputs become
# Arrow columns, not array-API arrays). Multiclass checks run as "refuses multiclass" (the tag says binary).


@parametrize_with_checks([DeepFMClassifier(epochs=2, **TINY), FMRegressor(epochs=20, **TINY)],
                         expected_failed_checks=lambda estimator: EXPECTED_FAILURES)
def test_scikit_learn_conventions(estimator, check):
    check(estimator)


def clicks(rows: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """User and item ids plus a price; the click rate depends on the user and the item."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"user": [f"u{u}" for u in rng.integers(0, 12, rows)], "item": rng.integers(0, 8, rows),
                      "price": rng.normal(size=rows)})
    logit = 1.5 * (X["user"].str[1:].astype(int) % 2) + 1.5 * (X["item"] % 2) - 1.5
    return X, np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "click", "skip")


@pytest.fixture(scope="module")
def fitted() -> tuple[FMClassifier, pd.DataFrame, np.ndarray]:
    X, y = clicks()
    return FMClassifier(epochs=10, lr=0.05).fit(X, y), X, y


def test_labels_of_any_two_values_become_classes_in_sorted_order(fitted):
    clf, X, y = fitted
    assert clf.classes_.tolist() == ["click", "skip"]
    assert set(clf.predict(X)) <= {"click", "skip"}
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.predict(X).tolist() == clf.classes_[(proba[:, 1] >= 0.5).astype(int)].tolist()
    assert clf.score(X, y) > 0.65  # the ids explain the clicks


def test_a_dataframe_an_arrow_table_and_an_array_are_accepted_and_named(fitted):
    clf, X, _ = fitted
    assert clf.feature_names_in_.tolist() == ["user", "item", "price"] and clf.n_features_in_ == 3
    np.testing.assert_array_equal(clf.predict_proba(pa.Table.from_pandas(X, preserve_index=False)),
                                  clf.predict_proba(X))
    on_arrays = FMClassifier(epochs=1).fit(X.to_numpy(), fitted[2])
    assert not hasattr(on_arrays, "feature_names_in_") and on_arrays.n_features_in_ == 3
    assert [f.name for f in on_arrays.estimator_.encoder.fields] == ["x0", "x1", "x2"]


def test_columns_other_than_those_seen_in_fit_are_refused(fitted):
    clf, X, _ = fitted
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(X.rename(columns={"price": "cost"}))


def test_an_array_after_a_dataframe_is_read_by_position_with_scikit_learns_warning(fitted, tmp_path):
    """As scikit-learn's own estimators: an X without feature names (a 2-D array) after a fit on a DataFrame is taken
    column by column in the fit's order, with a warning; each column keeps the kind the fit gave it (item's integers
    stay ids, also as the floats 3.0 of a numeric array); another number of columns is an error naming the count."""
    clf, X, y = fitted
    warned = "X does not have valid feature names, but FMClassifier was fitted with feature names"
    with pytest.warns(UserWarning, match=warned):
        np.testing.assert_array_equal(clf.predict_proba(X.to_numpy()), clf.predict_proba(X))
    numbers = FMClassifier(epochs=1).fit(X[["item", "price"]], y)
    assert numbers.estimator_.encoder.layout == {"item": "categorical", "price": "numeric"}
    assert X[["item", "price"]].to_numpy().dtype == np.float64
    with pytest.warns(UserWarning, match=warned):
        np.testing.assert_array_equal(numbers.predict_proba(X[["item", "price"]].to_numpy()),
                                      numbers.predict_proba(X[["item", "price"]]))
    with pytest.raises(ValueError, match="X has 2 features, but FMClassifier is expecting 3 features"):
        clf.predict(X[["item", "price"]].to_numpy())
    clf.save(tmp_path / "clf")
    with pytest.warns(UserWarning, match=warned):
        np.testing.assert_array_equal(FMClassifier.load(tmp_path / "clf").predict_proba(X.to_numpy()),
                                      clf.predict_proba(X))
    unnamed = pd.DataFrame(X.to_numpy())  # column names 0, 1, 2: no feature names for scikit-learn
    on_unnamed = FMClassifier(epochs=1).fit(unnamed, y)
    np.testing.assert_array_equal(on_unnamed.predict_proba(X.to_numpy()), on_unnamed.predict_proba(unnamed))


def test_a_feature_named_label_stays_a_feature():
    X, y = clicks(120)
    clf = FMClassifier(epochs=1).fit(X.rename(columns={"price": "label"}), y)
    assert [f.name for f in clf.estimator_.encoder.fields] == ["user", "item", "label"]
    assert clf.predict_proba(X.rename(columns={"price": "label"})).shape == (120, 2)


def test_multiclass_labels_are_refused():
    X, _ = clicks(60)
    with pytest.raises(ValueError, match=r"Only binary classification is supported .*deepfm.Estimator\(data=\{'task': "
                                         "'multiclass'}\\) trains a model of more classes"):
        FMClassifier(epochs=1).fit(X, np.arange(60) % 3)


def test_each_class_sets_its_model_and_every_model_is_available_through_model():
    assert (DeepFMClassifier().model, FMClassifier().model, DeepFMRegressor().model, FMRegressor().model) == \
        ("deepfm", "fm", "deepfm", "fm")
    X, y = clicks(120)
    lr = FMClassifier(model="lr", epochs=1).fit(X, y)
    assert lr.estimator_.config.model.name == "lr"


def test_parameters_round_trip_through_get_params_set_params_and_clone():
    clf = DeepFMClassifier(epochs=3, lr=0.01, mlp=(16, 8))
    assert clf.get_params()["mlp"] == (16, 8) and clf.get_params()["lr"] == 0.01
    assert clf.set_params(lr=0.02, embed_dim=6) is clf and (clf.lr, clf.embed_dim) == (0.02, 6)
    copy = clone(clf)
    assert type(copy) is DeepFMClassifier and copy.get_params() == clf.get_params()


def test_a_parameter_left_at_none_takes_the_models_tuned_default():
    X, y = clicks(120)
    from deepfm.defaults import TASK_DEFAULTS

    assert FMClassifier(epochs=1).fit(X, y).estimator_.config.training.lr == TASK_DEFAULTS["fm"]["binary"]["lr"]
    assert FMClassifier(epochs=1, lr=0.002).fit(X, y).estimator_.config.training.lr == 0.002


def test_grid_search_over_two_parameters_in_a_pipeline_and_cross_validation():
    X, y = clicks(300)
    pipeline = make_pipeline(FunctionTransformer(lambda frame: frame.drop(columns=["price"])), FMClassifier(epochs=3))
    search = GridSearchCV(pipeline, {"fmclassifier__embed_dim": [2, 4], "fmclassifier__lr": [0.01, 0.05]}, cv=2,
                          scoring="roc_auc").fit(X, y)
    assert set(search.best_params_) == {"fmclassifier__embed_dim", "fmclassifier__lr"}
    assert len(search.cv_results_["mean_test_score"]) == 4
    assert search.predict_proba(X).shape == (len(X), 2)
    scores = cross_val_score(DeepFMClassifier(epochs=2, **TINY), X, y, cv=3)
    assert scores.shape == (3,) and ((0 <= scores) & (scores <= 1)).all()


def test_eval_set_is_the_validation_data_of_early_stopping():
    X, y = clicks(300)
    clf = FMClassifier(epochs=3, patience=1).fit(X[:200], y[:200], eval_set=[(X[200:], y[200:])])
    assert set(clf.estimator_.metrics["best_valid"]) == {"auc", "logloss"}


def test_regressors_predict_real_values_and_score_r2():
    X, _ = clicks(300)
    target = (X["item"] % 3).to_numpy(dtype=float) + 0.5 * X["price"].to_numpy()
    reg = FMRegressor(epochs=30).fit(X, target)
    assert reg.predict(X).dtype == np.float64 and reg.predict(X).shape == (300,)
    assert reg.score(X, target) > 0.5


def test_save_writes_the_model_directory_and_load_predicts_the_same(fitted, tmp_path):
    clf, X, y = fitted
    clf.save(tmp_path / "clf")
    loaded = FMClassifier.load(tmp_path / "clf")
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert loaded.get_params() == clf.get_params()
    assert loaded.classes_.tolist() == clf.classes_.tolist()
    assert loaded.feature_names_in_.tolist() == clf.feature_names_in_.tolist()
    as_estimator = Estimator.load(tmp_path / "clf")  # as deepfm evaluate/predict/serve read it
    np.testing.assert_allclose(as_estimator.predict(X), clf.predict_proba(X)[:, 1])
    labelled = X.assign(label=y)
    assert as_estimator.evaluate(labelled)["auc"] == pytest.approx(roc_auc_score(y == "skip", clf.predict_proba(X)[:, 1]))
    for other in (FMRegressor, DeepFMClassifier):
        with pytest.raises(ModelDirError, match=f"holds a FMClassifier, not a {other.__name__}; load it with FMClassifier.load"):
            other.load(tmp_path / "clf")


def test_the_commands_read_a_saved_classifiers_classes_as_its_labels(fitted, tmp_path, capsys):
    """deepfm evaluate reads a file labelled as y was (its classes' text), says which class is 1, and refuses a value
    that is neither class where it stands, as a model trained with --positive does."""
    from deepfm.cli import main

    clf, X, y = fitted
    clf.save(tmp_path / "clf")
    X.assign(label=y).to_csv(tmp_path / "rows.csv", index=False)
    assert main(["evaluate", str(tmp_path / "clf"), str(tmp_path / "rows.csv"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["auc"] == pytest.approx(roc_auc_score(y == "skip", clf.predict_proba(X)[:, 1]), abs=1e-6)
    assert (f"holds a deepfm.sklearn classifier of classes ['click', 'skip']: the column 'label' holds its classes "
            "('skip' is 1), and its prediction is the probability of 'skip'") in err
    X.assign(label=np.where(np.arange(len(y)) == 3, "maybe", y)).to_csv(tmp_path / "odd.csv", index=False)
    assert main(["evaluate", str(tmp_path / "clf"), str(tmp_path / "odd.csv")]) == 2
    assert "odd.csv:5:" in capsys.readouterr().err


def test_a_classifier_of_classes_0_and_1_or_booleans_reads_numeric_labels(tmp_path):
    X, y = clicks(200)
    for classes in (y == "skip").astype(int), y == "skip":
        clf = FMClassifier(epochs=2).fit(X, classes)
        assert clf.estimator_.encoder.task.positive is None
        assert clf.estimator_.evaluate(X.assign(label=(y == "skip").astype(int)))["rows"] == len(X)


def test_a_changed_sklearn_json_is_refused_like_any_file_of_the_directory(fitted, tmp_path):
    clf = fitted[0]
    clf.save(tmp_path / "clf")
    (tmp_path / "clf" / "sklearn.json").write_text("{}")
    with pytest.raises(ModelDirError, match="sklearn.json: checksum does not match"):
        FMClassifier.load(tmp_path / "clf")


def test_sample_weights_go_into_the_loss_not_into_the_features():
    # Each row twice, once per label: weights 9 for "click" and 1 for "skip" make the best
    # probability of a click 0.9 everywhere; unweighted it is 0.5.
    X, _ = clicks(200)
    X2 = pd.concat([X, X], ignore_index=True)
    y = np.array(["click"] * 200 + ["skip"] * 200)
    weights = np.array([9.0] * 200 + [1.0] * 200)
    clf = FMClassifier(model="lr", epochs=20, lr=0.05).fit(X2, y, sample_weight=weights)
    assert "__sample_weight__" not in [f.name for f in clf.estimator_.encoder.fields]
    assert clf.predict_proba(X)[:, 0].mean() == pytest.approx(0.9, abs=0.05)


def test_invalid_parameters_and_unusable_data_raise_value_errors_as_scikit_learn_expects():
    """scikit-learn's checks (and ``except ValueError`` in user code) expect a ValueError for an invalid parameter or
    unusable X; deepfm's ConfigError and DataError are ValueErrors as well as its own, which the CLI reports."""
    from deepfm.errors import ConfigError, DataError

    X, y = np.arange(20).reshape(10, 2), np.array([0, 1] * 5)
    with pytest.raises(ValueError) as bad_parameter:
        FMClassifier(lr=-1.0).fit(X, y)
    assert isinstance(bad_parameter.value, ConfigError)
    with pytest.raises(ValueError, match="1 sample") as one_row:  # a message scikit-learn's check_fit2d_1sample knows
        DeepFMRegressor(epochs=1).fit(X[:1], [1.0])
    assert isinstance(one_row.value, (ConfigError, DataError))
    with pytest.raises(ValueError, match=re.escape("y: 6 is not one of the classes seen in fit [0, 1]")):  # not np.int64(6)
        FMClassifier(epochs=1).fit(X, y, eval_set=[(X, np.full(10, 6))])
    with pytest.raises(ConfigError, match="^device tpu: not a torch device"):  # checked before any data is read
        FMClassifier(epochs=1, device="tpu").fit(X, y)
    frame = pd.DataFrame(X, columns=["a", "b"])
    for shape, no_rows_or_columns in (((0, 2), frame.iloc[:0]), ((10, 0), frame[[]]), ((0, 2), pa.Table.from_pandas(frame.iloc[:0]))):
        what = "sample" if shape[0] == 0 else "feature"
        with pytest.raises(ValueError, match=re.escape(f"Found array with 0 {what}(s) (shape={shape})")):
            FMClassifier(epochs=1).fit(no_rows_or_columns, y[:shape[0]])


def test_floats_of_whole_numbers_read_as_numbers_are_a_warning_without_verbose():
    # an OrdinalEncoder's codes are floats: read as numbers they fit worse than as ids, which the user may not know
    from sklearn.preprocessing import OrdinalEncoder

    from deepfm.errors import DataWarning

    rng = np.random.default_rng(0)
    X = OrdinalEncoder().fit_transform(np.stack([rng.choice(list("abcde"), 300), rng.choice(list("xyz"), 300)], axis=1))
    y = (X[:, 0] == 0).astype(int)
    with pytest.warns(DataWarning, match=r"all whole .* read as numbers: x0, x1 .*; categorical=\[\.\.\.\] names ids") as seen:
        FMClassifier(epochs=1).fit(X, y)
    assert seen[0].filename == __file__  # at the fit call, not inside the library
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        FMClassifier(epochs=1, categorical=["x0", "x1"]).fit(X, y)  # named: no warning


# -- sparse X: the FM paper's design matrix ----------------------------------------------------------------


def pairs(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two id columns (50 users, 30 items) whose click rate depends on each and on their pair."""
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 50, rows), rng.integers(0, 30, rows)
    logit = np.sin(users) + np.cos(items) + 0.5 * (users % 3 == items % 3)
    return np.column_stack([users, items]), (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)


def test_a_sparse_matrix_is_the_fm_papers_x_a_feature_per_non_zero_column_weighted_by_its_value():
    from scipy import sparse

    rng = np.random.default_rng(1)
    dense = np.where(rng.random((60, 9)) < 0.3, rng.choice([1.0, 0.5, -2.0, 1e-3], (60, 9)), 0.0)
    X = sparse.csr_matrix(dense)
    clf = FMClassifier(epochs=1, min_count=1, **TINY).fit(X, np.arange(60) % 2)
    bag = clf.estimator_.encode(sparse_frame(X), with_labels=False).bags[0]
    column_of_id: dict[int, int] = {}
    assert (dense == 0).all(axis=1).any()
    for r in range(60):
        ids, weights = bag.ids[bag.offsets[r]:bag.offsets[r + 1]], bag.weights[bag.offsets[r]:bag.offsets[r + 1]]
        columns = np.flatnonzero(dense[r])
        if not len(columns):  # a row without features holds the field's missing id, as an empty cell does
            column_of_id.setdefault(int(ids[0]), -1)
            assert len(ids) == 1 and column_of_id[int(ids[0])] == -1
            continue
        assert len(ids) == len(columns)
        for feature, weight, column in zip(ids, weights, columns):
            assert column_of_id.setdefault(int(feature), int(column)) == column  # one id per column, the same in every row
            assert weight == np.float32(dense[r, column])
    assert len(set(column_of_id.values())) == len(column_of_id)


@pytest.mark.parametrize("model", [FMClassifier, DeepFMClassifier])
def test_a_one_hot_encoder_pipeline_learns_as_the_id_columns_do(model):
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import OneHotEncoder

    X, y = pairs(3000)
    pipeline = make_pipeline(OneHotEncoder(handle_unknown="ignore"), model(epochs=5, random_state=0)).fit(X[:2000], y[:2000])
    assert pipeline[0].transform(X[:2]).format == "csr"  # OneHotEncoder's default: sparse output
    one_hot = roc_auc_score(y[2000:], pipeline.predict_proba(X[2000:])[:, 1])
    ids = roc_auc_score(y[2000:], model(epochs=5, random_state=0).fit(X[:2000], y[:2000]).predict_proba(X[2000:])[:, 1])
    assert one_hot > 0.65 and abs(one_hot - ids) < 0.02


def test_after_a_sparse_fit_the_same_rows_dense_predict_the_same_and_a_saved_model_too(tmp_path):
    from scipy import sparse

    X, y = pairs(400)
    one_hot = sparse.csr_matrix((np.ones(800), (np.repeat(np.arange(400), 2), (X + [0, 50]).ravel())), shape=(400, 80))
    clf = FMClassifier(epochs=3, **TINY).fit(one_hot, y)
    expected = clf.predict_proba(one_hot)
    np.testing.assert_allclose(clf.predict_proba(one_hot.toarray()), expected, rtol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(one_hot.tocsc()), expected, rtol=1e-6)
    np.testing.assert_allclose(FMClassifier.load(clf.save(str(tmp_path / "m"))).predict_proba(one_hot), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="X has 79 features"):
        clf.predict(one_hot[:, :79])


def test_a_classifier_of_classes_minus_1_and_1_reads_a_libfm_files_labels_as_numbers(tmp_path):
    """Number classes stay numbers (a libFM file writes +1 and 1 alike, and 0/1 too): only text classes are read as
    text, as --positive reads them."""
    from scipy import sparse
    from sklearn.datasets import dump_svmlight_file

    X, y = pairs(400)
    one_hot = sparse.csr_matrix((np.ones(800), (np.repeat(np.arange(400), 2), (X + [0, 50]).ravel())), shape=(400, 80))
    signs = np.where(y == y.max(), 1, -1)
    clf = FMClassifier(epochs=3, **TINY).fit(one_hot, signs)
    assert clf.estimator_.encoder.task.positive is None
    saved = Estimator.load(clf.save(str(tmp_path / "m")))
    expected = roc_auc_score(signs == 1, clf.predict_proba(one_hot)[:, 1])
    for name, labels in (("pm1.libfm", signs), ("01.libfm", (signs == 1).astype(int))):
        dump_svmlight_file(one_hot, labels, str(tmp_path / name), zero_based=True)
        text = (tmp_path / name).read_text()
        (tmp_path / name).write_text(text.replace("\n1 ", "\n+1 ") if name == "pm1.libfm" else text)
        assert saved.evaluate(str(tmp_path / name))["auc"] == pytest.approx(expected, abs=1e-6)


def test_a_sparse_matrix_after_a_dense_fit_is_refused_and_nan_in_a_sparse_one_too():
    from scipy import sparse

    X, y = pairs(200)
    clf = FMClassifier(epochs=1, **TINY).fit(X.astype(float), y)
    with pytest.raises(ValueError, match="toarray"):
        clf.predict(sparse.csr_matrix(X.astype(float)))
    bad = sparse.csr_matrix(np.eye(200, 5))
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FMClassifier(epochs=1, **TINY).fit(bad, y)


def test_a_sparse_x_keeps_every_column_its_own_id_however_rarely_it_occurs():
    from scipy import sparse

    n = 400  # columns 0 and 1 in every row; 2..801 each in one row, two a row
    rows = np.r_[np.arange(n), np.arange(n), np.arange(n), np.arange(n)]
    columns = np.r_[np.zeros(n), np.ones(n), 2 + np.arange(n), 2 + n + np.arange(n)]
    X = sparse.csr_matrix((np.ones(4 * n), (rows, columns)), shape=(n, 2 * n + 2))
    clf = FMClassifier(epochs=1, random_state=0, **TINY).fit(X, np.arange(n) % 2)
    bag = clf.estimator_.encode(sparse_frame(X[:1]), with_labels=False).bags[0]
    assert len(set(bag.ids.tolist())) == 4 and bag.weights.tolist() == [1.0] * 4  # not one rare id of weight 2


def test_a_dataframe_of_pandas_sparse_columns_is_its_sparse_matrix():
    from scipy import sparse

    X = sparse.random(200, 20, density=0.2, format="csr", random_state=0)
    y = np.arange(200) % 2
    frame = pd.DataFrame.sparse.from_spmatrix(X, columns=[f"c{i}" for i in range(20)])
    by_frame = FMClassifier(epochs=2, random_state=0, **TINY).fit(frame, y)
    by_matrix = FMClassifier(epochs=2, random_state=0, **TINY).fit(X, y)
    np.testing.assert_allclose(by_frame.predict_proba(X), by_matrix.predict_proba(X), rtol=1e-6)
    with pytest.raises(ValueError, match="some columns of the DataFrame are pandas sparse columns"):
        FMClassifier(epochs=1, **TINY).fit(frame.assign(dense=np.ones(200)), y)


def test_a_sparse_value_too_large_and_a_bad_eval_set_are_named_as_the_user_wrote_them():
    from scipy import sparse

    X = sparse.random(200, 20, density=0.2, format="lil", random_state=0)
    y = np.arange(200) % 2
    X[5, 7] = 1e20
    with pytest.raises(ValueError, match=r"X\[5, 7\] = 1e\+20: a value must be a finite number of magnitude at most"):
        FMClassifier(epochs=1, **TINY).fit(X, y)
    X[5, 7] = 1.0
    with pytest.raises(ValueError, match="^eval_set: X has 5 features"):
        FMClassifier(epochs=1, **TINY).fit(X, y, eval_set=[(X[:, :5], y)])


def test_scoring_a_libfm_file_with_a_model_fitted_on_a_sparse_matrix_notes_how_its_columns_are_numbered(tmp_path, capsys):
    from scipy import sparse

    from deepfm.cli import main

    X, y = pairs(300)
    one_hot = sparse.csr_matrix((np.ones(600), (np.repeat(np.arange(300), 2), (X + [0, 50]).ravel())), shape=(300, 80))
    FMClassifier(epochs=2, **TINY).fit(one_hot, y).save(str(tmp_path / "m"))
    rows = tmp_path / "rows.libfm"
    rows.write_text("".join(f"{label} {u}:1 {50 + i}:1\n" for label, (u, i) in zip(y, X)))
    assert main(["evaluate", str(tmp_path / "m"), str(rows)]) == 0
    assert "fitted on a sparse matrix, whose column numbers are its features" in capsys.readouterr().err


def test_a_new_users_python_api_edges_get_errors_that_name_them(fitted, tmp_path):
    """Each raised a raw Arrow or NumPy error, a misleading message, or an unusable saved parameter."""
    clf, X, y = fitted
    with pytest.raises(ValueError, match="^eval_set: Found input variables with inconsistent numbers of samples"):
        FMClassifier(epochs=1).fit(X, y, eval_set=[(X.iloc[:100], y[:50])])
    with pytest.raises(ValueError, match="^sample_weight: weights must be finite numbers ≥ 0, got -1"):
        FMClassifier(epochs=1).fit(X, y, sample_weight=-np.ones(len(y)))
    seeded = FMClassifier(epochs=1, mlp=(8, 4), random_state=np.random.RandomState(0)).fit(X, y)
    loaded = FMClassifier.load(seeded.save(str(tmp_path / "rs")))
    assert loaded.random_state is None and loaded.mlp == (8, 4)  # a spent RandomState's text would not seed a refit
    clone(loaded).fit(X, y)
    nothing = X.iloc[:2].copy()
    nothing["price"] = None  # a numeric column of None only: missing, as NaN is
    np.testing.assert_array_equal(clf.predict_proba(nothing), clf.predict_proba(X.iloc[:2].assign(price=np.nan)))
    with pytest.raises(DataError, match="no rows to evaluate"):
        clf.estimator_.evaluate(pd.concat([X, pd.Series(clf._encode_targets(y), name="label")], axis=1).iloc[:0])


def ratings(rows: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Ratings 1-5 of a user's and an item's bias."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"user": rng.integers(0, 30, rows), "item": rng.integers(0, 20, rows)})
    bias = rng.normal(size=30)[X["user"]] + rng.normal(size=20)[X["item"]]
    return X, np.clip(np.round(3 + bias + rng.normal(scale=0.3, size=rows)), 1, 5)


def test_solver_mcmc_fits_a_bayesian_fm_within_the_training_labels_range():
    X, y = ratings()
    regressor = FMRegressor(solver="mcmc", sweeps=40, categorical=("user", "item"))
    predicted = regressor.fit(X[:500], y[:500]).predict(X[500:])
    assert regressor.estimator_.config.training.solver == "mcmc"
    assert y[:500].min() <= predicted.min() and predicted.max() <= y[:500].max()  # each sample clipped, as libFM's
    assert np.sqrt(np.mean((predicted - y[500:]) ** 2)) < 0.6 * y[500:].std()
    assert clone(regressor).get_params()["solver"] == "mcmc"


def test_burn_in_and_samples_are_parameters_of_the_bayesian_fm_that_a_grid_can_search():
    """They had been reachable only through config={"training": {...}}: a grid over burn_in needed nested dicts."""
    X, y = ratings()
    regressor = FMRegressor(solver="mcmc", sweeps=12, burn_in=4, samples=3, categorical=("user", "item")).fit(X, y)
    training = regressor.estimator_.config.training
    assert (training.burn_in, training.samples, training.kept_samples) == (4, 3, 3)
    assert clone(regressor).get_params()["burn_in"] == 4
    with pytest.warns(UserWarning, match=r"solver='gradient'\) does not use samples, burn_in: they are ignored"):
        FMRegressor(burn_in=2, samples=3, epochs=1).fit(X, y)


def test_solver_mcmc_classifies_by_probit_and_refuses_a_model_other_than_fm():
    X, y = ratings()
    labels = np.where(y > 3, "high", "low")
    classifier = FMClassifier(solver="mcmc", config={"training": {"sweeps": 40}}, categorical=("user", "item"))
    assert classifier.fit(X[:500], labels[:500]).score(X[500:], labels[500:]) > 0.8
    with pytest.raises(ValueError, match=r"DeepFMRegressor\(solver='mcmc'\) fits model='fm' only \(model='deepfm'\); "
                                         r"use FMRegressor\(solver='mcmc'\)"):  # not the command's "--model fm"
        DeepFMRegressor(solver="mcmc").fit(X, y)
    with pytest.raises(ValueError, match=r"FMClassifier\(solver='als'\) fits regression tasks, not binary; "
                                         r"solver='mcmc' classifies"):
        FMClassifier(solver="als").fit(X, labels)


def test_an_estimator_pickled_before_a_parameter_existed_still_clones_and_refits(fitted):
    """A pickle of an FMClassifier written before ``solver=`` existed raised AttributeError in repr, get_params, clone
    and fit."""
    clf, X, y = fitted
    old = pickle.loads(pickle.dumps(clf))
    del old.__dict__["solver"]  # as such a pickle holds it
    restored = pickle.loads(pickle.dumps(old))
    assert restored.get_params()["solver"] is None and "FMClassifier(" in repr(restored)
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert clone(restored).set_params(epochs=1).fit(X, y).predict(X).shape == (len(X),)


def test_parameters_a_sweeping_solver_does_not_read_are_warned_of_not_silently_ignored():
    """A grid search over embed_l2 with solver='als' returned identical scores, unwarned (the command says it)."""
    X, y = ratings()
    with pytest.warns(UserWarning, match=r"FMRegressor\(solver='als'\) does not use lr, embed_l2: they are ignored"):
        FMRegressor(solver="als", lr=0.5, embed_l2=100.0, sweeps=2).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fitted = FMRegressor(solver="als", sweeps=2, als_l2=3.0).fit(X, y)
    assert (fitted.estimator_.config.training.sweeps, fitted.estimator_.config.training.als_l2) == (2, 3.0)
    with pytest.warns(UserWarning, match=r"solver='gradient'\) does not use sweeps: they are ignored \(solver='mcmc'"):
        FMRegressor(sweeps=5, epochs=1).fit(X, y)


def test_parameters_the_model_does_not_read_are_warned_of_once_in_this_apis_words():
    """FMRegressor(dropout=0.5) trained an FM, silently: the library's note went to the log, which is off."""
    X, y = ratings()
    with pytest.warns(UserWarning) as warned:
        FMRegressor(dropout=0.5, mlp=(8,), config={"model": {"batch_norm": False}}, epochs=1).fit(X, y)
    said = [str(w.message) for w in warned if "does not use" in str(w.message)]
    assert said == ["FMRegressor(model='fm') does not use mlp, dropout, config['model']['batch_norm']: they are ignored"]


def test_text_labels_with_a_missing_one_say_so_as_scikit_learn_does():
    """An income column with one NaN raised numpy's "'<' not supported between instances of 'float' and 'str'"."""
    X, y = clicks()
    y = y.astype(object)
    y[5] = np.nan
    with pytest.raises(ValueError, match=r"Input y contains NaN: row 5 \(and 0 more\) has no label"):
        FMClassifier(epochs=1).fit(X, y)
    y[5], y[9] = "click", None
    with pytest.raises(ValueError, match="row 9"):
        FMClassifier(epochs=1).fit(X, y)


def test_early_stopping_selects_by_the_metric_asked_and_says_which_epoch_it_kept():
    """select_by was reachable only through config=, and the epoch kept only through estimator_.metrics (a Kaggle
    user's probabilities were those of the best-AUC epoch, poorly calibrated)."""
    X, y = clicks()
    clf = FMClassifier(epochs=4, patience=4, select_by="logloss").fit(X[:300], y[:300], eval_set=[(X[300:], y[300:])])
    history = clf.estimator_.metrics["history"]
    best = min(history, key=lambda epoch: epoch["valid"]["logloss"])["epoch"]
    assert clf.estimator_.config.training.select_by == "logloss"
    assert (clf.n_iter_, clf.best_iteration_) == (len(history), best)
    assert clone(clf).get_params()["select_by"] == "logloss"


def test_fit_parameters_that_would_do_nothing_are_refused_or_warned_of():
    X, y = clicks()
    with pytest.warns(UserWarning, match=r"FMClassifier\(patience=3\) stops early on eval_set's rows, or on rows held "
                                         r"out .*; with neither, every epoch trains"):
        FMClassifier(epochs=1, patience=3).fit(X, y)
    with pytest.warns(UserWarning) as warned:  # a sampler has no early stopping: said once, not contradicted
        FMRegressor(solver="mcmc", sweeps=2, patience=3).fit(*ratings())
    assert [str(w.message).split(":")[0] for w in warned if "patience" in str(w.message)] == [
        "FMRegressor(solver='mcmc') does not use patience"]
    with pytest.warns(UserWarning, match=r"FMClassifier\(patience=2\) stops early"):  # set in config= too
        FMClassifier(epochs=1, config={"training": {"patience": 2}}).fit(X, y)
    with pytest.raises(ValueError, match=r"eval_set: one \(X_valid, y_valid\) pair, which early stopping selects on; "
                                         r"got 2"):
        FMClassifier(epochs=1).fit(X, y, eval_set=[(X, y), (X, y)])
    with pytest.raises(ValueError, match=r"eval_set: y: 7 is not one of the classes seen in fit"):
        FMClassifier(epochs=1).fit(X, y, eval_set=[(X, np.full(len(y), 7))])


@pytest.mark.parametrize("estimator, fit, said", [
    (FMClassifier(categorical=("nope",), epochs=1), {}, r"categorical names column 'nope', which is not in the table"),
    (DeepFMClassifier(batch_size=1, epochs=1), {},
     r"batch_size=2 or more, or config=\{'model': \{'batch_norm': False\}\}"),
    (FMRegressor(solver="mcmc", sweeps=2), {"sample_weight": True},
     r"solver mcmc: sample weights \(sample_weight\) are not supported; use solver='gradient'"),
    (FMClassifier(epochs=1, random_state=-1), {}, r"random_state: Input should be greater than or equal to 0"),
])
def test_the_librarys_errors_name_this_apis_parameters_not_the_commands_flags(estimator, fit, said):
    """A scikit-learn user was told "--batch-size 2 or more, or batch_norm = false in the [model] section" and "use
    --solver gradient" (a Kaggle user's list)."""
    X, y = clicks() if isinstance(estimator, FMClassifier | DeepFMClassifier) else ratings()
    with pytest.raises(ValueError, match=said) as raised:
        estimator.fit(X, y, sample_weight=np.ones(len(y)) if fit else None)
    assert "--" not in str(raised.value)


def test_flags_in_the_librarys_messages_read_as_parameters_or_config_entries():
    from deepfm.sklearn_words import in_estimator_words

    assert in_estimator_words("train again with a lower --lr (this run: 100000)") == (
        "train again with a lower lr (this run: 100000)")
    assert in_estimator_words("(--select-by, training.select_by); --portfolio off (training.portfolio) trains") == (
        "(select_by); config={'training': {'portfolio': 'off'}} trains")
    assert in_estimator_words('(--categorical u); data={"numeric": ["age", "hours"]} reads') == (
        "(categorical=('u',)); numeric=('age', 'hours') reads")
    assert in_estimator_words("give --out DIR") == "give --out DIR"  # a command's flag with no parameter or key
    assert in_estimator_words("as categories (--categorical 'work class')") == "as categories (categorical=('work class',))"
    assert in_estimator_words("use --solver gradient. --device cuda:1, --mlp 400,400,400 or --sweeps instead") == (
        "use solver='gradient'. device='cuda:1', mlp=(400, 400, 400) or sweeps instead")


def test_a_y_whose_index_differs_from_xs_is_warned_of_as_it_pairs_rows_by_position():
    X, y = clicks()
    shuffled = pd.Series(y, index=X.index[::-1])
    with pytest.warns(UserWarning, match=r"y's index holds X's labels in another order: rows pair by position") as warned:
        FMClassifier(epochs=1).fit(X, shuffled)
    assert [w.filename for w in warned] == [__file__]  # at the user's line, for a classifier too
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        FMClassifier(epochs=1).fit(X, pd.Series(y, index=X.index))
        FMClassifier(epochs=1).fit(X.reset_index(drop=True), pd.Series(y, index=X.index + 1000))  # a pipeline's reset
