"""Per-model and per-task defaults: what the accuracy suite chose, and the user's settings always win."""

import dataclasses

import pytest

from deepfm import Estimator
from deepfm.config import build_config
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
from deepfm.data.encoders import IdCounts
from deepfm.defaults import (FREQUENT_IDS_PER_ROW, LONG_TAIL_IDS_PER_ROW, LONG_TAIL_MIN_COUNT, RARE_VALUE_RULE_ROWS,
                             SHAPE_DEFAULTS, TASK_DEFAULTS, rare_value_threshold,
                             describe_shape_rule, id_shape, with_task_defaults)


def test_fm_on_ratings_takes_the_regression_defaults():
    config = with_task_defaults(build_config({"model": {"name": "fm"}}), "regression")
    for key, value in TASK_DEFAULTS["fm"]["regression"].items():
        section = config.model if key in type(config.model).model_fields else config.training
        assert getattr(section, key) == value


def test_fm_on_clicks_and_on_ratings_differ_only_where_the_suite_showed_it():
    config = build_config({"model": {"name": "fm"}})
    clicks, ratings = with_task_defaults(config, "binary"), with_task_defaults(config, "regression")
    assert clicks.training.embed_l2 < ratings.training.embed_l2
    assert (clicks.model.embed_dim, clicks.training.optimizer, clicks.training.batch_size) == (64, "adagrad", 512)
    assert clicks.training.lr > ratings.training.lr
    assert (ratings.model.embed_dim, ratings.training.optimizer, ratings.training.embed_reg) == (64, "adagrad", "occurrences")


def test_fm_on_ratings_trains_up_to_80_epochs_and_every_other_model_and_task_keeps_20():
    fm = build_config({"model": {"name": "fm"}})
    assert with_task_defaults(fm, "regression").training.epochs == 80
    for task in ("binary", "multiclass", "ordinal"):
        assert with_task_defaults(fm, task).training.epochs == 20
    for model in ("lr", "fnn"):
        assert with_task_defaults(build_config({"model": {"name": model}}), "regression").training.epochs == 20


def test_the_users_epochs_win_over_fms_ratings_cap():
    config = build_config({"model": {"name": "fm"}, "training": {"epochs": 20}})
    assert with_task_defaults(config, "regression").training.epochs == 20


def test_models_without_task_defaults_are_unchanged():
    config = build_config({"model": {"name": "fnn"}})
    assert with_task_defaults(config, "regression") == config


def test_deepfm_on_ratings_trains_its_tables_as_fm_on_ratings_and_a_200_200_mlp_by_adam_with_dropout_half():
    fm = with_task_defaults(build_config({"model": {"name": "fm"}}), "regression")
    deepfm = with_task_defaults(build_config({"model": {"name": "deepfm"}}), "regression", RECURRING)
    for key in ("optimizer", "lr", "embed_reg", "embed_l2", "linear_l2", "lr_schedule", "patience", "epochs", "refit"):
        assert getattr(deepfm.training, key) == getattr(fm.training, key), key
    assert deepfm.model.embed_dim == fm.model.embed_dim == 64
    assert (deepfm.training.dense_optimizer, deepfm.training.dense_lr, deepfm.model.dropout) == ("adam", 1e-3, 0.5)
    assert deepfm.training.refit == "held-out" and deepfm.model.mlp == (200, 200)
    assert with_task_defaults(build_config({"model": {"name": "deepfm"}}), "binary", FREQUENT).model.mlp == (400, 400, 400)


def test_a_setting_the_user_chose_is_never_replaced_by_a_task_default():
    config = build_config({"model": {"name": "fm"}, "training": {"embed_l2": 0.5, "lr": 0.2}})
    resolved = with_task_defaults(config, "regression")
    assert resolved.training.embed_l2 == 0.5 and resolved.training.lr == 0.2


def test_fm_gradient_defaults_do_not_reach_the_sampling_and_als_solvers():
    from deepfm.config import build_config

    assert with_task_defaults(build_config({"model": {"name": "fm"}}), "regression").model.embed_dim == 64
    for solver in ("mcmc", "als"):
        config = with_task_defaults(build_config({"model": {"name": "fm"}, "training": {"solver": solver}}), "regression")
        assert config.model.embed_dim == 10 and config.training.optimizer == "adam"


# -- the data rule: the shape of the training ids ---------------------------------------------------

LONG_TAIL = IdCounts(rows=1_000, occurrences=26_000, distinct=900)  # ~1 new id per row, as a Criteo log
RECURRING = IdCounts(rows=50_000, occurrences=500_000, distinct=5_000)  # 0.1 per row, as Frappe
FREQUENT = IdCounts(rows=40_000, occurrences=320_000, distinct=100)  # 0.0025 per row (400 rows per id), as Adult


def test_the_shape_of_the_ids_is_a_long_tail_from_the_documented_ids_per_row():
    assert id_shape(LONG_TAIL) == "long tail"
    assert id_shape(RECURRING) == "recurring ids"
    at_the_cut = IdCounts(rows=1_000, occurrences=5_000, distinct=int(LONG_TAIL_IDS_PER_ROW * 1_000))
    assert id_shape(at_the_cut) == "long tail"
    assert id_shape(None) == "recurring ids", "a schema without counts (older models) keeps the task's defaults"


def test_the_rare_value_threshold_is_the_users_else_ten_on_a_long_tail_of_enough_rows_else_one():
    big_long_tail = IdCounts(rows=RARE_VALUE_RULE_ROWS, occurrences=26 * RARE_VALUE_RULE_ROWS, distinct=RARE_VALUE_RULE_ROWS)
    assert rare_value_threshold(None, big_long_tail) == LONG_TAIL_MIN_COUNT == 10
    assert rare_value_threshold(None, LONG_TAIL) == 1, "1,000 rows: fewer than the rule needs"
    assert rare_value_threshold(None, RECURRING) == rare_value_threshold(None, FREQUENT) == 1
    assert rare_value_threshold(1, big_long_tail) == 1 and rare_value_threshold(3, RECURRING) == 3


def test_ids_with_over_a_hundred_rows_each_are_frequent_ids():
    assert id_shape(FREQUENT) == "frequent ids"
    at_the_cut = IdCounts(rows=10_000, occurrences=50_000, distinct=int(FREQUENT_IDS_PER_ROW * 10_000))
    assert id_shape(at_the_cut) == "recurring ids"
    assert FREQUENT_IDS_PER_ROW < LONG_TAIL_IDS_PER_ROW


def test_fm_on_a_long_tail_starts_adagrads_accumulators_above_zero():
    config = build_config({"model": {"name": "fm"}})
    long_tail, recurring = (with_task_defaults(config, "binary", counts) for counts in (LONG_TAIL, RECURRING))
    assert long_tail.training.adagrad_init == SHAPE_DEFAULTS["fm"]["long tail"]["adagrad_init"] > 0
    assert recurring.training.adagrad_init == 0.0
    assert long_tail.training.optimizer == recurring.training.optimizer == "adagrad"
    assert long_tail.model.embed_dim == recurring.model.embed_dim, "only the accumulator start depends on the shape"


def test_the_users_adagrad_init_wins_over_the_data_rule():
    config = build_config({"model": {"name": "fm"}, "training": {"adagrad_init": 0.0}})
    assert with_task_defaults(config, "binary", LONG_TAIL).training.adagrad_init == 0.0


def test_models_without_a_data_rule_ignore_the_shape_of_the_ids():
    config = build_config({"model": {"name": "fnn"}})
    assert with_task_defaults(config, "binary", LONG_TAIL) == with_task_defaults(config, "binary", RECURRING)
    assert describe_shape_rule(config, LONG_TAIL, "binary") is None


def test_deepfm_on_clicks_with_recurring_ids_takes_k64_and_a_tenfold_table_step_with_the_mlps_kept():
    clicks = with_task_defaults(build_config({"model": {"name": "deepfm"}}), "binary", RECURRING)
    assert (clicks.model.embed_dim, clicks.training.optimizer) == (64, "adam")
    assert (clicks.training.lr, clicks.training.dense_lr) == (1e-2, 1e-3)
    assert (clicks.training.embed_reg, clicks.training.embed_l2) == ("occurrences", 1e-2)


def test_deepfm_on_clicks_with_recurring_ids_drops_half_the_units_of_a_200_200_mlp():
    clicks = with_task_defaults(build_config({"model": {"name": "deepfm"}}), "binary", RECURRING)
    assert clicks.model.dropout == 0.5
    assert (clicks.model.mlp, clicks.model.batch_norm, clicks.training.batch_size) == ((200, 200), True, 512)


def test_deepfm_keeps_the_papers_400_400_400_mlp_on_frequent_ids_a_long_tail_and_the_class_tasks():
    config = build_config({"model": {"name": "deepfm"}})
    for counts in (FREQUENT, LONG_TAIL):
        assert with_task_defaults(config, "binary", counts).model.mlp == (400, 400, 400)
    assert with_task_defaults(config, "multiclass", RECURRING).model.mlp == (400, 400, 400)
    given = build_config({"model": {"name": "deepfm", "mlp": (300, 300)}})
    for counts in (FREQUENT, RECURRING, LONG_TAIL):
        assert with_task_defaults(given, "binary", counts).model.mlp == (300, 300)


def test_deepfm_keeps_the_global_dropout_on_frequent_ids_a_long_tail_and_the_class_tasks():
    config = build_config({"model": {"name": "deepfm"}})
    global_dropout = build_config({}).model.dropout
    assert with_task_defaults(config, "binary", FREQUENT).model.dropout == global_dropout
    assert with_task_defaults(config, "binary", LONG_TAIL).model.dropout == global_dropout
    for task in ("multiclass", "ordinal"):
        assert with_task_defaults(config, task, RECURRING).model.dropout == global_dropout
    frequent = with_task_defaults(config, "binary", FREQUENT)
    assert (frequent.model.embed_dim, frequent.training.lr) == (64, 1e-2), "only the dropout depends on this band"
    assert "frequent ids" in describe_shape_rule(config, FREQUENT, "binary")


def test_the_users_dropout_wins_over_deepfms_rule():
    config = build_config({"model": {"name": "deepfm", "dropout": 0.1}})
    for counts in (FREQUENT, RECURRING, LONG_TAIL):
        assert with_task_defaults(config, "binary", counts).model.dropout == 0.1


def test_deepfm_on_a_long_tail_keeps_k10_and_one_step_for_tables_and_mlp():
    config = build_config({"model": {"name": "deepfm"}})
    long_tail = with_task_defaults(config, "binary", LONG_TAIL)
    assert (long_tail.model.embed_dim, long_tail.training.lr, long_tail.training.dense_lr) == (10, 1e-3, 1e-3)
    assert (long_tail.training.embed_reg, long_tail.training.embed_l2) == ("occurrences", 1e-2)
    assert "long tail" in describe_shape_rule(config, LONG_TAIL, "binary")


def test_deepfm_on_ratings_takes_its_recipe_whatever_the_shape_of_the_ids():
    """DeepFM's data rule was chosen on clicks; the ratings recipe won on rating samples in the long-tail band too (its
    AdaGrad tables at the long tail's step of 1e-3 would be a recipe nobody measured)."""
    config = build_config({"model": {"name": "deepfm"}})
    recurring = with_task_defaults(config, "regression", RECURRING)
    for counts in (LONG_TAIL, FREQUENT):
        assert with_task_defaults(config, "regression", counts) == recurring
    assert (recurring.training.optimizer, recurring.training.lr, recurring.model.dropout) == ("adagrad", 0.03, 0.5)
    assert describe_shape_rule(config, LONG_TAIL, "regression") is None, "no rule to tell of (every value its id)"
    assert "long tail" in describe_shape_rule(config, LONG_TAIL, "binary")


def test_the_users_lr_wins_over_deepfms_rule_and_the_mlp_keeps_its_default_step():
    config = build_config({"model": {"name": "deepfm"}, "training": {"lr": 0.05}})
    for counts in (LONG_TAIL, RECURRING):
        chosen = with_task_defaults(config, "binary", counts)
        assert (chosen.training.lr, chosen.training.dense_lr) == (0.05, 1e-3)


def test_the_log_line_names_the_statistic_and_the_branch():
    line = describe_shape_rule(build_config({"model": {"name": "fm"}}), LONG_TAIL, "binary")
    assert "0.9 per row" in line and "long tail" in line and "adagrad_init 0.01" in line


def test_the_log_line_says_which_settings_the_user_gave_rather_than_calling_them_defaults():
    given = build_config({"model": {"name": "fm"}, "training": {"adagrad_init": 0.0}, "data": {"min_count": 5}})
    counted = dataclasses.replace(LONG_TAIL, min_count=5, kept=300)  # as the encoder counts with min_count 5
    line = describe_shape_rule(given, counted, "binary")
    assert ("fm defaults for it (deepfm.defaults): adagrad_init as you set it; values seen fewer than 5 times share "
            "their field's rare id (data.min_count 5 as you set it)") in line
    assert "as you set" not in describe_shape_rule(build_config({"model": {"name": "fm"}}), LONG_TAIL, "binary")


@pytest.mark.parametrize("training, said", [({}, "adagrad_init 0.01;"), ({"adagrad_init": 0.0}, "adagrad_init as you set it;")])
def test_a_runs_log_says_which_setting_the_rule_made_and_which_the_user_gave(training, said):
    table, _ = make_ctr_table(SyntheticSpec(rows=600, categorical=6, numeric=1, vocabulary=200_000, seed=4))
    lines: list[str] = []
    Estimator(model={"name": "fm"}, training={"epochs": 1, **training}, data={"valid_fraction": 0}).fit(
        table, progress=False, log=lines.append)
    [line] = [line for line in lines if "ids per row" in line]
    assert f"fm defaults for it (deepfm.defaults): {said} every value keeps its own id (data.min_count 1)" in line, line


@pytest.mark.parametrize("vocabulary, shape, accumulator", [(200_000, "long tail", 0.01), (40, "recurring ids", 0.0)])
def test_a_run_applies_the_rule_of_its_training_ids_and_records_the_branch(vocabulary, shape, accumulator):
    table, _ = make_ctr_table(SyntheticSpec(rows=600, categorical=6, numeric=1, vocabulary=vocabulary, seed=4))
    estimator = Estimator(model={"name": "fm"}, training={"epochs": 1}, data={"valid_fraction": 0})
    lines: list[str] = []
    estimator.fit(table, progress=False, log=lines.append)
    assert estimator.config.training.adagrad_init == accumulator
    assert estimator.metrics["ids"]["shape"] == shape
    assert estimator.metrics["ids"]["rows"] == 600
    assert any(shape in line and "ids per row" in line for line in lines)


def test_an_estimator_from_a_config_and_more_settings_leaves_the_configs_unset_keys_to_the_defaults():
    from deepfm import Estimator
    from deepfm.config import build_config

    estimator = Estimator(build_config({"model": {"name": "fm"}, "training": {"epochs": 4}}), training={"seed": 3})
    assert {"epochs", "seed"} <= estimator.config.training.model_fields_set
    assert "lr" not in estimator.config.training.model_fields_set  # the task's defaults may still set it
    assert estimator.config.model.name == "fm" and estimator.config.training.epochs == 4


def counted(rows: int) -> IdCounts:
    return IdCounts(rows=rows, occurrences=10 * rows, distinct=rows // 10)


@pytest.mark.parametrize("model, rows, batch", [
    ("fm", 400, 32), ("fm", 4_095, 32), ("fm", 4_096, 64), ("fm", 8_000, 64), ("fm", 16_000, 128), ("fm", 32_000, 256),
    ("fm", 32_768, 512), ("fm", 1_000_000, 512),
    ("lr", 400, 32), ("lr", 1_023, 32), ("lr", 1_024, 64), ("lr", 4_000, 128), ("lr", 8_000, 256), ("lr", 8_192, 512)])
@pytest.mark.parametrize("task", ["binary", "regression"])
def test_lr_and_fm_on_a_small_sample_take_a_batch_that_makes_enough_steps_an_epoch(model, rows, batch, task):
    """FM: the largest power of two at most rows / 64 (at least 32); LR: rows / 16; never above the task's 512."""
    config = with_task_defaults(build_config({"model": {"name": model}}), task, counted(rows))
    assert config.training.batch_size == batch


@pytest.mark.parametrize("model, task", [("deepfm", "binary"), ("deepfm", "regression"), ("fm", "multiclass"),
                                         ("fm", "ordinal")])
def test_deepfm_and_the_class_tasks_keep_their_batch_on_a_small_sample(model, task):
    config = build_config({"model": {"name": model}})
    assert with_task_defaults(config, task, counted(400)).training.batch_size == with_task_defaults(config, task).training.batch_size


def test_the_users_batch_wins_over_the_small_sample_rule_and_the_log_says_when_the_rule_set_it():
    from deepfm.defaults import describe_small_sample

    given = build_config({"model": {"name": "fm"}, "training": {"batch_size": 512}})
    assert with_task_defaults(given, "binary", counted(400)).training.batch_size == 512
    assert describe_small_sample(given, "binary", counted(400)) is None
    said = describe_small_sample(build_config({"model": {"name": "fm"}}), "binary", counted(8_000))
    assert said.startswith("small sample: 8,000 training rows, so batches of 64 rather than 512")


def test_a_small_run_trains_at_the_small_sample_batch_and_records_it():
    table, _ = make_ctr_table(SyntheticSpec(rows=900, categorical=6, numeric=1, vocabulary=40, seed=4))
    lines: list[str] = []
    estimator = Estimator(model={"name": "fm"}, training={"epochs": 1}, data={"valid_fraction": 0})
    estimator.fit(table, progress=False, log=lines.append)
    assert estimator.config.training.batch_size == 32
    assert any(line.startswith("small sample: 900 training rows, so batches of 32") for line in lines)


def test_a_second_fit_starts_from_the_settings_given_not_from_those_the_first_fit_chose_for_its_data():
    small, _ = make_ctr_table(SyntheticSpec(rows=900, categorical=6, numeric=1, vocabulary=200_000, seed=4))
    large, _ = make_ctr_table(SyntheticSpec(rows=5_000, categorical=6, numeric=1, vocabulary=40, seed=5))
    settings = {"model": {"name": "fm"}, "training": {"epochs": 1}, "data": {"valid_fraction": 0}}
    again = Estimator(**settings).fit(small, progress=False)
    assert again.config.training.batch_size == 32 and again.config.training.adagrad_init == 0.01  # the small long tail's
    again.fit(large, progress=False)
    fresh = Estimator(**settings).fit(large, progress=False)
    assert again.config == fresh.config and again.config.training.batch_size == 64  # (5,000 rows: 64, recurring: 0)
    assert (again.predict(large) == fresh.predict(large)).all()
    chosen = Estimator(**settings).fit(small, progress=False)
    chosen.config = build_config({**settings, "training": {"epochs": 1, "batch_size": 128}})  # set anew: it stands
    assert chosen.fit(large, progress=False).config.training.batch_size == 128
