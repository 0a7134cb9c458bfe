"""``deepfm tune``: an Optuna search on validation rows that leaves a model directory, its trials and a config."""

from __future__ import annotations

import json
import tomllib
import sys
from typing import get_args

import numpy as np
import pytest

from deepfm.data.holdout import hashed_mask
from deepfm.cli import main
from deepfm.config import TrainingConfig, build_config
from deepfm.data.encoders import IdCounts
from deepfm.defaults import with_task_defaults
from deepfm.experiments.tune import drawn_settings, search_space, settings_of, toml_text

pytest.importorskip("optuna")

SMALL = ["--epochs", "4", "--mlp", "16", "--quiet"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A DeepFM tuned once for this module: 8 trials on 500 synthetic rows, 50 of them held out."""
    from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
    import pyarrow.csv as pacsv

    root = tmp_path_factory.mktemp("tune")
    train, valid = root / "train.csv", root / "valid.csv"
    pacsv.write_csv(make_ctr_table(SyntheticSpec(rows=500, seed=4), part=0)[0], train)
    pacsv.write_csv(make_ctr_table(SyntheticSpec(rows=200, seed=4), part=1)[0], valid)
    out = root / "out"
    assert main(["tune", "--train", str(train), "--model", "deepfm", "--trials", "8", "--out", str(out), *SMALL]) == 0
    return {"train": train, "valid": valid, "out": out, "root": root}


def test_tune_writes_a_model_directory_that_evaluate_and_predict_read(tuned, capsys):
    assert main(["evaluate", str(tuned["out"]), str(tuned["valid"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == 200 and 0.0 <= result["auc"] <= 1.0
    predictions = tuned["root"] / "p.csv"
    assert main(["predict", str(tuned["out"]), str(tuned["valid"]), "--out", str(predictions)]) == 0
    assert len(predictions.read_text().splitlines()) == 201


def test_tune_json_records_every_trial_its_params_metric_and_state(tuned):
    summary = json.loads((tuned["out"] / "tune.json").read_text())
    assert summary["metric"] == "auc" and summary["direction"] == "maximize"
    assert (summary["trials_asked"], summary["timeout"], summary["interrupted"]) == (8, None, False)
    assert {"deepfm", "torch", "numpy", "cpu"} <= set(summary["versions"])  # what the trials ran on
    held = int(hashed_mask(0, 500, 0.1, seed=2026).sum())
    assert summary["validation"]["rows"] == held and 30 < held < 70, "no --valid: the held-out tenth of the training rows"
    trials = summary["trials"]
    assert [t["number"] for t in trials] == list(range(8))
    assert {t["state"] for t in trials} <= {"complete", "pruned", "fail"}
    for trial in trials:
        searched = {"optimizer", "lr", "dense_optimizer", "dense_lr", "embed_reg", "embed_l2", "embed_dim", "batch_size", "lr_schedule",
                    "dropout", "batch_norm", "weight_decay"}  # --mlp was given: not searched
        g0 = {"adagrad_init"} if trial["settings"]["optimizer"] == "adagrad" else set()  # this data is a long tail
        assert set(trial["settings"]) == searched | g0
        assert len(trial["per_epoch"]) >= 1, "each epoch's validation metric is reported to the pruner"
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["auc"])
    assert summary["best_trial"] == best["number"] and summary["best_value"] == best["auc"]
    metrics = json.loads((tuned["out"] / "metrics.json").read_text())
    assert metrics["best_valid"]["auc"] == best["auc"], "the model directory is the best trial's"


@pytest.mark.parametrize("model", ["fm", "deepfm"])
def test_the_first_trial_is_what_train_runs_with_the_defaults(tmp_path, ctr_csv, model):
    """Trial 0 is the task's defaults (deepfm.defaults: FM on clicks is AdaGrad, k 64, L2 per
    occurrence), so the search is never worse than them on validation."""
    train, valid = str(ctr_csv()), str(ctr_csv("v.csv", rows=100, part=1))
    flags = ["--train", train, "--valid", valid, "--model", model, "--threads", "1", *SMALL]
    assert main(["tune", *flags, "--trials", "1", "--out", str(tmp_path / "tuned")]) == 0
    assert main(["train", *flags, "--out", str(tmp_path / "trained")]) == 0
    first = json.loads((tmp_path / "tuned" / "tune.json").read_text())["trials"][0]
    trained = json.loads((tmp_path / "trained" / "config.json").read_text())["run"]
    settings = trained["model"] | trained["training"]
    assert first["settings"], "trial 0 records the settings it ran with"
    from deepfm.training.optim import PAIRED_DENSE_OPTIMIZER

    settings["dense_optimizer"] = settings["dense_optimizer"] or PAIRED_DENSE_OPTIMIZER[settings["optimizer"]]  # as it trains
    for key, value in first["settings"].items():
        assert value == settings[key], f"{key}: trial 0 ran {value}, train runs {settings[key]}"
    tuned = json.loads((tmp_path / "tuned" / "metrics.json").read_text())
    assert tuned["best_valid"]["auc"] == pytest.approx(json.loads((tmp_path / "trained" / "metrics.json").read_text())
                                                       ["best_valid"]["auc"], abs=1e-9)


def test_on_clicks_the_second_trial_is_the_all_adagrad_recipe_where_it_differs(tuned):
    from deepfm.experiments.tune import CLICK_RECIPE

    trials = json.loads((tuned["out"] / "tune.json").read_text())["trials"]
    assert trials[0]["settings"]["optimizer"] == "adam", "DeepFM's defaults"
    recipe = {key: value for key, value in CLICK_RECIPE.items() if key not in ("dense_optimizer", "dense_lr")}  # searched
    # where the defaults set a step apart
    assert {key: trials[1]["settings"][key] for key in recipe} == recipe


def test_fm_on_clicks_also_starts_from_the_region_the_frappe_searches_found():
    """FM's click defaults are the all-AdaGrad recipe itself, so its second trial is the best region two
    independent 600-s searches on Frappe's validation split agreed on (deepfm tune and
    benchmarks/reference_frappe.py: AdaGrad lr 0.08-0.17, L2 6e-4-2e-3 per occurrence, k 128, batch 256)."""
    from deepfm.experiments.tune import FM_SEARCHED_RECIPE, first_trials

    defaults = with_task_defaults(build_config({"model": {"name": "fm"}}), "binary",
                                  IdCounts(rows=100_000, occurrences=1_000_000, distinct=3_000))
    dims = search_space(defaults)
    trials = first_trials(dims, defaults, "binary")
    assert len(trials) == 2 and trials[0]["embed_dim"] == 64, "trial 0: the defaults"
    assert trials[1] == {"optimizer": "adagrad", "lr_adagrad": FM_SEARCHED_RECIPE["lr"], "embed_reg": "occurrences",
                         "embed_l2_occurrences": FM_SEARCHED_RECIPE["embed_l2"], "embed_dim": 128, "batch_size": 256,
                         "lr_schedule": "none"}
    ratings = with_task_defaults(build_config({"model": {"name": "fm"}}), "regression",
                                 IdCounts(rows=100_000, occurrences=1_000_000, distinct=3_000))
    assert len(first_trials(search_space(ratings), ratings, "regression")) == 1, "a click recipe: clicks only"


def test_deepfm_on_clicks_also_starts_from_the_region_its_frappe_search_found():
    """DeepFM's third trial on clicks is the best of a 600-s deepfm tune on Frappe's validation split
    (all-AdaGrad, the MLP at a tenth of the tables' step, L2 2e-3 per occurrence, batch 256, MLP 200-200,
    dropout 0.39, no batch norm: valid 0.9565 against the defaults' 0.9503 and the recipe's 0.9523)."""
    from deepfm.experiments.tune import DEEPFM_SEARCHED_RECIPE, first_trials

    defaults = with_task_defaults(build_config({"model": {"name": "deepfm"}}), "binary",
                                  IdCounts(rows=100_000, occurrences=1_000_000, distinct=3_000))
    trials = first_trials(search_space(defaults), defaults, "binary")
    assert len(trials) == 3
    recipe = trials[2]
    assert recipe["optimizer"] == "adagrad" and recipe["lr_adagrad"] == DEEPFM_SEARCHED_RECIPE["lr"]
    assert recipe["dense_optimizer"] == "adagrad" and recipe["dense_lr_adagrad"] == DEEPFM_SEARCHED_RECIPE["dense_lr"]
    assert recipe["embed_l2_occurrences"] == DEEPFM_SEARCHED_RECIPE["embed_l2"] and recipe["batch_size"] == 256
    assert recipe["mlp"] == "200,200" and recipe["batch_norm"] is False and recipe["dropout"] == DEEPFM_SEARCHED_RECIPE["dropout"]


def test_where_the_defaults_step_the_mlp_apart_trials_search_its_optimizer_and_step():
    """DeepFM on recurring click ids steps the MLP at dense_lr 1e-3 (deepfm.defaults): the space keeps
    that step in trial 0, searches the MLP's optimiser (the hybrid: AdaGrad tables, Adam MLP) and its
    step on that optimiser's range, and the all-AdaGrad recipe (trial 1) steps the MLP by AdaGrad at the
    recipe's lr, not at Adam's 1e-3."""
    from deepfm.experiments.tune import CLICK_RECIPE, first_trials

    defaults = with_task_defaults(build_config({"model": {"name": "deepfm"}}), "binary",
                                  IdCounts(rows=100_000, occurrences=1_000_000, distinct=3_000))
    assert defaults.training.dense_lr == 1e-3
    dims = search_space(defaults)
    assert {"adam", "adagrad"} <= set(next(d for d in dims if d.key == "dense_optimizer").space)
    ranges = {d.when[1]: d.space for d in dims if d.key == "dense_lr"}
    assert ranges[("adam",)][0] <= 1e-3 <= ranges[("adam",)][1] < 0.1 <= ranges[("adagrad",)][1]
    trial0, trial1 = first_trials(dims, defaults, "binary")[:2]
    assert trial0["dense_optimizer"] == "adam" and trial0["dense_lr_adam"] == 1e-3
    assert trial1["optimizer"] == "adagrad" and trial1["dense_optimizer"] == "adagrad"
    assert trial1["dense_lr_adagrad"] == CLICK_RECIPE["lr"]
    ratings = with_task_defaults(build_config({"model": {"name": "deepfm"}}), "regression",
                                 IdCounts(rows=100_000, occurrences=1_000_000, distinct=3_000))
    assert ratings.training.dense_lr == 1e-3 and "dense_optimizer" in {d.key for d in search_space(ratings)}
    classes = with_task_defaults(build_config({"model": {"name": "deepfm"}}), "multiclass",
                                 IdCounts(rows=100_000, occurrences=1_000_000, distinct=3_000))
    assert classes.training.dense_lr is None
    assert not {"dense_optimizer", "dense_lr"} & {d.key for d in search_space(classes)}, "the MLP follows lr, as in the defaults"


def test_best_toml_leaves_out_what_the_model_and_its_solver_do_not_read(tuned, capsys):
    """An FM's best.toml held model.mlp, model.dropout, ... and sweeps, samples: training from it said each is not
    applied (a new user's case)."""
    out = tuned["root"] / "fm"
    assert main(["tune", "--train", str(tuned["train"]), "--model", "fm", "--trials", "2", "--out", str(out),
                 "--epochs", "2", "--quiet"]) == 0
    assert "mlp" not in (out / "best.toml").read_text() and "sweeps" not in (out / "best.toml").read_text()
    capsys.readouterr()
    assert main(["train", "--config", str(out / "best.toml"), "--out", str(tuned["root"] / "fm-again")]) == 0
    assert "does not use" not in capsys.readouterr().err


def test_train_with_best_toml_reproduces_the_best_trial(tuned, capsys):
    again = tuned["root"] / "again"
    assert main(["train", "--config", str(tuned["out"] / "best.toml"), "--out", str(again), "--quiet"]) == 0
    best = json.loads((tuned["out"] / "metrics.json").read_text())
    reproduced = json.loads((again / "metrics.json").read_text())
    assert reproduced["best_epoch"] == best["best_epoch"]
    assert reproduced["best_valid"]["auc"] == pytest.approx(best["best_valid"]["auc"], abs=1e-9)
    capsys.readouterr()
    assert main(["predict", str(again), str(tuned["valid"]), "--out", "-"]) == 0
    first = capsys.readouterr().out
    assert main(["predict", str(tuned["out"]), str(tuned["valid"]), "--out", "-"]) == 0
    np.testing.assert_allclose(np.loadtxt(first.splitlines()[1:]), np.loadtxt(capsys.readouterr().out.splitlines()[1:]),
                               atol=1e-6)


def test_a_setting_given_as_a_flag_is_fixed_not_searched(tmp_path, ctr_csv):
    out = tmp_path / "out"
    assert main(["tune", "--train", str(ctr_csv()), "--valid", str(ctr_csv("v.csv", rows=100, part=1)), "--model", "fm",
                 "--optimizer", "adagrad", "--embed-dim", "6", "--trials", "3", "--out", str(out), *SMALL]) == 0
    summary = json.loads((out / "tune.json").read_text())
    assert summary["validation"] == {"source": "file", "path": str(tmp_path / "v.csv")}
    assert all(set(t["settings"]) <= {"lr", "embed_reg", "embed_l2", "batch_size", "lr_schedule", "adagrad_init"} for t in summary["trials"])
    assert all(t["settings"]["lr"] >= 1e-2 for t in summary["trials"]), "lr on AdaGrad's range"
    best = (out / "best.toml").read_text()
    assert 'optimizer = "adagrad"' in best and "embed_dim = 6" in best


@pytest.mark.parametrize("long_tail", [False, True])
@pytest.mark.parametrize("task", ["binary", "regression", "multiclass"])
@pytest.mark.parametrize("model", ["fm", "deepfm"])
def test_the_search_space_holds_the_defaults_train_runs(model, task, long_tail):
    defaults = with_task_defaults(build_config({"model": {"name": model}}), task,
                                  IdCounts(rows=1000, occurrences=10_000, distinct=3000 if long_tail else 30))
    values = settings_of(defaults)  # the MLP's optimiser as it trains when unset
    dims = search_space(defaults, long_tail)
    assert {d.key for d in dims} >= {"optimizer", "lr", "embed_reg", "embed_l2", "embed_dim", "batch_size"}
    assert set(dims[0].space) <= set(get_args(TrainingConfig.model_fields["optimizer"].annotation))
    for dim in dims:
        if dim.applies(values):
            assert dim.holds(values[dim.key]), f"{dim.name}: the default {values[dim.key]} is inside the space"
    with_mlp = {"mlp", "dropout", "batch_norm", "weight_decay"}
    assert with_mlp <= {d.key for d in dims} if model == "deepfm" else not with_mlp & {d.key for d in dims}
    assert ("adagrad_init" in {d.key for d in dims}) == long_tail, "G0 matters on a long tail only"


def test_the_learning_rate_range_depends_on_the_optimizer():
    import optuna

    defaults = build_config({"model": {"name": "fm"}})
    dims = search_space(defaults)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    drawn = []
    study.optimize(lambda trial: drawn.append(drawn_settings(trial, dims, defaults.training.model_dump())) or 0.0,
                   n_trials=60)
    by_optimizer = {}
    for settings in drawn:
        by_optimizer.setdefault(settings["training", "optimizer"], []).append(settings["training", "lr"])
    assert set(by_optimizer) == {"adam", "adagrad", "rowwise_adagrad"}
    assert all(1e-4 <= lr <= 3e-2 for lr in by_optimizer["adam"])
    assert all(1e-2 <= lr <= 0.5 for lr in by_optimizer["adagrad"] + by_optimizer["rowwise_adagrad"])
    assert max(by_optimizer["adagrad"] + by_optimizer["rowwise_adagrad"]) > 3e-2 > max(by_optimizer["adam"])


def test_the_embedding_l2_range_depends_on_its_form():
    deepfm = search_space(build_config({"model": {"name": "deepfm"}}))
    ranges = {d.when[1]: d.space for d in deepfm if d.key == "embed_l2"}
    assert ranges[("occurrences",)][1] <= 0.1 < ranges[("rows",)][1]


def test_models_with_an_mlp_search_no_optimizer_that_gives_it_an_adagrad_sized_adam_step():
    assert "rowwise_adagrad" not in search_space(build_config({"model": {"name": "deepfm"}}))[0].space
    assert "rowwise_adagrad" in search_space(build_config({"model": {"name": "fm"}}))[0].space


def _trial_with_curve(study, curve, end: str = "complete"):
    """A trial that reports ``curve`` (epoch 1, 2, ...) and asks the pruner after each epoch; told
    pruned where the pruner stops it, else ``end`` (complete, pruned, or left running); returns the
    epoch the pruner stopped it at (None: it did not)."""
    import optuna

    trial = study.ask()
    for epoch, value in enumerate(curve, start=1):
        trial.report(value, epoch)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return epoch
    if end == "complete":
        study.tell(trial, max(curve))
    elif end == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return None


def test_the_pruner_ranks_a_trial_among_every_trial_at_that_epoch_not_only_the_survivors():
    """Frappe's quiet 600-s FM search (benchmarks/README.md): 412 of 441 trials were pruned at epoch 2
    because a trial had to beat the median of the *completed* trials there, and those were the fast
    starters that survived; the best trial (0.9519 at epoch 2, 0.9552 at epoch 20: in the top 8% of every
    trial at epoch 2, yet no better than the survivors' median) would itself have been pruned. A slow
    starter that leads most trials at its epoch goes on."""
    import optuna

    from deepfm.experiments.tune import pruner

    study = optuna.create_study(direction="maximize", pruner=pruner(optuna))
    for _ in range(5):  # the fast starters that survive and complete
        _trial_with_curve(study, [0.946, 0.952, 0.953, 0.9535, 0.954, 0.954, 0.954])
    for _ in range(20):  # the bulk, stopped at epoch 2
        _trial_with_curve(study, [0.93, 0.94], end="pruned")
    slow_starter = [0.9465, 0.9519, 0.9528, 0.9540, 0.9541, 0.9544, 0.9545]
    assert _trial_with_curve(study, slow_starter, end="running") is None, \
        "a slow starter in the top third of every trial at each epoch goes on"
    assert _trial_with_curve(study, [0.90, 0.93, 0.94], end="running") == 2, "a trial among the worst at epoch 2 stops there"


def test_the_pruner_never_stops_a_trial_in_its_first_epoch():
    import optuna

    from deepfm.experiments.tune import pruner

    study = optuna.create_study(direction="maximize", pruner=pruner(optuna))
    for value in (0.90, 0.91, 0.92, 0.93, 0.94, 0.95):
        _trial_with_curve(study, [value, value, value])
    assert _trial_with_curve(study, [0.5, 0.5], end="running") == 2, \
        "epoch 1 is warm-up; at epoch 2 it is below every other trial"


def test_trials_run_with_one_thread_unless_threads_is_given(tuned, tmp_path, ctr_csv):
    """best.toml leaves the trials' one thread and their device to the machine that trains from it (a
    many-core machine would train on one core), saying what they were; a --threads the user gave stays."""
    tuned_toml = (tuned["out"] / "best.toml").read_text()
    settings = tomllib.loads(tuned_toml)["training"]
    assert "threads" not in settings and "device" not in settings
    assert '# the trials ran with device = "cpu", threads = 1; the training machine chooses its own' in tuned_toml
    out = tmp_path / "out"
    assert main(["tune", "--train", str(ctr_csv()), "--model", "fm", "--threads", "2", "--trials", "1",
                 "--out", str(out), *SMALL]) == 0
    fixed = (out / "best.toml").read_text()
    assert tomllib.loads(fixed)["training"]["threads"] == 2 and "# the trials ran with device = \"cpu\";" in fixed


def test_best_toml_is_a_config_file(tmp_path):
    from deepfm.config import load_config_file

    config = build_config({"model": {"name": "deepfm", "mlp": (8, 4)}, "data": {"categorical": ("a", "b")},
                           "training": {"lr": 3e-3}})
    path = tmp_path / "c.toml"
    path.write_text(toml_text({k: v for k, v in config.to_json_dict().items() if k != "out"}))
    assert build_config(load_config_file(path)) == config


def test_best_toml_names_the_data_files_by_absolute_path_so_it_reproduces_from_any_directory(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from deepfm.config import load_config_file
    from deepfm.experiments.tune import best_toml

    monkeypatch.chdir(tmp_path)
    best = build_config({"data": {"train": "train.csv", "valid": "sub/valid.csv"}, "out": "o"})
    text = best_toml(best, SimpleNamespace(best_number=0, trials=[None], metric="auc"),
                     {"best_value": 0.5, "refit": None, "interrupted": False})
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "best.toml").write_text(text)
    monkeypatch.chdir(tmp_path / "elsewhere")
    data = build_config(load_config_file("best.toml")).data
    assert (data.train, data.valid) == (str(tmp_path / "train.csv"), str(tmp_path / "sub" / "valid.csv"))


@pytest.mark.parametrize("solver", ["mcmc", "als"])
def test_tune_refuses_the_sweeping_solvers_first(tmp_path, ctr_csv, capsys, solver):
    """Not "give --valid": the solver is why (mcmc/als no longer hold rows out by default)."""
    config = tmp_path / "run.toml"
    config.write_text(f'[training]\nsolver = "{solver}"\n')  # tune has no --solver flag; a config file may set it
    assert main(["tune", "--train", str(ctr_csv()), "--model", "fm", "--config", str(config), "--task", "regression",
                 "--out", str(tmp_path / "o"), "--trials", "1"]) == 2
    assert capsys.readouterr().err.startswith(f"training.solver '{solver}': compare and tune train by gradient")


def test_without_optuna_tune_names_the_extra_to_install(tmp_path, ctr_csv, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    assert main(["tune", "--train", str(ctr_csv()), "--out", str(tmp_path / "o"), "--trials", "1"]) == 2
    assert "pip install 'deepfm[tune]'" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--trials", "0"], ["--timeout", "0"]])
def test_trials_and_timeout_must_be_positive(tmp_path, ctr_csv, flag, capsys):
    assert main(["tune", "--train", str(ctr_csv()), "--out", str(tmp_path / "o"), *flag]) == 2
    assert flag[0] in capsys.readouterr().err


def test_a_trial_the_pruner_stops_ends_after_that_epoch(tmp_path, ctr_csv, monkeypatch):
    import optuna

    class AllButTheFirst(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.number > 0

    monkeypatch.setattr(optuna.pruners, "SuccessiveHalvingPruner", lambda **_: AllButTheFirst())
    out = tmp_path / "out"
    assert main(["tune", "--train", str(ctr_csv()), "--model", "fm", "--trials", "3", "--out", str(out), *SMALL,
                 "--patience", "0"]) == 0  # (the complete trial runs every epoch)
    trials = json.loads((out / "tune.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["complete", "pruned", "pruned"]
    assert [len(t["per_epoch"]) for t in trials] == [4, 1, 1]


def test_ctrl_c_in_the_refit_saves_the_best_trials_own_model(tmp_path, ctr_csv, monkeypatch, capsys):
    """A second Ctrl-C, in the refit after an interrupted search, lost the whole search: nothing was saved."""
    import deepfm.api as api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "refit_model", interrupted)
    out = tmp_path / "out"
    assert main(["tune", "--train", str(ctr_csv()), "--model", "fm", "--trials", "2", "--out", str(out),
                 "--epochs", "2", "--refit", "on"]) == 130  # saved, and said to be cut short, as train's Ctrl-C
    assert "interrupted: the refit stops; the saved model is the best trial's" in capsys.readouterr().err
    summary = json.loads((out / "tune.json").read_text())
    assert summary["refit"] is None and len(summary["trials"]) == 2 and (out / "best.toml").exists()
    assert summary["interrupted"] and "the search was interrupted" in (out / "best.toml").read_text()
    assert main(["evaluate", str(out), str(ctr_csv())]) == 0


def test_ctrl_c_ends_the_search_as_its_timeout_would_and_saves_the_best_finished_trial(tmp_path, ctr_csv, monkeypatch,
                                                                                        capfd):
    """Ctrl-C in trial 2 (the third): the two finished trials are kept, the best refitted and saved, no traceback
    (it was Optuna's traceback and no tune.json)."""
    import deepfm.experiments.compare as compare

    real, calls = compare.train_one, []

    import logging

    shown = []

    def interrupted_in_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:  # what Optuna's study logs for this trial, through its handler
                logger = logging.getLogger("optuna.study._optimize")
                for record in (logger.makeRecord(logger.name, logging.WARNING, __file__, 0, "Trial 2 failed", (),
                                                 sys.exc_info()),
                               logger.makeRecord(logger.name, logging.WARNING, __file__, 0,  # its second line
                                                 "Trial 2 failed with value None.", (), None)):
                    shown.extend(bool(h.filter(record)) for h in logging.getLogger("optuna").handlers)
                raise
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "train_one", interrupted_in_the_third)
    out = tmp_path / "out"
    assert main(["tune", "--train", str(ctr_csv()), "--model", "fm", "--trials", "5", "--out", str(out),
                 "--epochs", "2", "--refit", "off", "--json"]) == 130  # cut short, not finished, to a scheduler
    captured = capfd.readouterr()
    err = captured.err  # Optuna's handler writes to the process's stderr, not to sys.stderr as captured
    assert json.loads(captured.out.strip().splitlines()[-1])["interrupted"] is True
    assert "interrupted: the search stops after 2 trials" in err and "Traceback" not in err, err
    summary = json.loads((out / "tune.json").read_text())
    assert len(summary["trials"]) == 2 and summary["trials_asked"] == 5 and summary["interrupted"]
    assert shown and not any(shown), "Optuna's handler would print the interrupted trial's traceback and value"


def test_a_schedulers_sigterm_ends_the_search_as_ctrl_c_does_saving_the_best(ctr_csv, tmp_path, monkeypatch, capsys):
    """SIGTERM killed tune at once: exit 143, nothing said, no --out, 20 finished trials lost (a pipeline tester's
    find); train handled it. Now the search stops as on Ctrl-C, keeps the best and exits 128 + 15."""
    import os
    import signal

    from deepfm.experiments import compare

    real, calls = compare.train_one, []

    def terminated_in_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler sends it
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "train_one", terminated_in_the_third)
    out = tmp_path / "out"
    assert main(["tune", "--train", str(ctr_csv()), "--model", "fm", "--trials", "5", "--out", str(out),
                 "--epochs", "2", "--refit", "off", "--quiet"]) == 128 + signal.SIGTERM
    summary = json.loads((out / "tune.json").read_text())
    assert summary["interrupted"] and summary["signal"] == signal.SIGTERM and len(summary["trials"]) == 2
    assert (out / "model.safetensors").exists()
