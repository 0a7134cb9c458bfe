"""Per-model and per-task defaults: what the accuracy suite chose, and the user's settings always win."""

from deepfm.config import build_config
from deepfm.defaults import TASK_DEFAULTS, with_task_defaults


def test_fm_on_ratings_takes_the_regression_defaults():
    config = with_task_defaults(build_config({"model": {"name": "fm"}}), "regression")
    for key, value in TASK_DEFAULTS["fm"]["regression"].items():
        section = config.model if key in type(config.model).model_fields else config.training
        assert getattr(section, key) == value


def test_fm_on_clicks_and_on_ratings_differ_only_where_the_suite_showed_it():
    config = build_config({"model": {"name": "fm"}})
    clicks, ratings = with_task_defaults(config, "binary"), with_task_defaults(config, "regression")
    assert clicks.training.embed_l2 < ratings.training.embed_l2
    assert (clicks.model.embed_dim, clicks.training.optimizer, clicks.training.batch_size) == (10, "adam", 4096)
    assert (ratings.model.embed_dim, ratings.training.optimizer, ratings.training.embed_reg) == (64, "adagrad", "occurrences")


def test_models_without_task_defaults_are_unchanged():
    config = build_config({"model": {"name": "deepfm"}})
    assert with_task_defaults(config, "regression") == config


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
