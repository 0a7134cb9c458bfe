"""training.portfolio: where the defaults list several recipes, one model per recipe, validation keeps the best."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfm import Estimator, defaults
from deepfm.cli import main
from deepfm.data.encoders import IdCounts
from deepfm.errors import ConfigError, TrainingDiverged
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
from deepfm.portfolio import Chosen, paired_choice
from deepfm.recipes import DEEPFM_SEARCHED_RECIPE
from deepfm.tasks import BinaryTask, RegressionTask

TRAINING = {"epochs": 3, "batch_size": 64}
TINY_STEP = ("tiny step", {"lr": 1e-7})  # learns nothing in 3 epochs: validation must turn it down


@pytest.fixture
def clicks():
    train, _ = make_ctr_table(SyntheticSpec(rows=600, seed=0), part=0)
    valid, _ = make_ctr_table(SyntheticSpec(rows=300, seed=0), part=1)
    return train, valid


@pytest.fixture
def listed(monkeypatch):
    """``listed(candidates)``: FM on clicks gets ``candidates`` as its portfolio, whatever the ids' shape."""

    def use(*candidates):
        monkeypatch.setitem(defaults.PORTFOLIOS, "fm", {"binary": {shape: candidates for shape in defaults.SHAPE_BANDS}})

    return use


def fit(train, valid=None, log=None, out=None, resume=False, **training):
    return Estimator(model={"name": "fm", "embed_dim": 4}, training=TRAINING | training).fit(
        train, valid=valid, progress=False, log=log, out=out, resume=resume)


def test_validation_keeps_the_best_candidate_and_the_run_is_that_candidates(clicks, listed):
    listed(TINY_STEP, ("defaults", {}))
    estimator = fit(*clicks)
    assert estimator.metrics["portfolio_choice"] == "defaults"
    tiny, kept = estimator.metrics["portfolio"]
    assert tiny["name"] == "tiny step" and tiny["overrides"] == {"lr": 1e-7}
    assert kept["best_valid"]["auc"] > tiny["best_valid"]["auc"]
    assert estimator.metrics["best_valid"] == kept["best_valid"] and estimator.metrics["best_epoch"] == kept["best_epoch"]
    assert estimator.config.training.lr == defaults.TASK_DEFAULTS["fm"]["binary"]["lr"]
    assert {"name", "overrides", "best_valid", "best_epoch", "seconds"} <= set(tiny)


BLOWS_UP = ("blows up", {"optimizer": "sgd", "lr": 1e12})  # the loss turns NaN in the first epoch


def test_a_candidate_that_diverges_is_left_out_and_the_others_still_count(clicks, listed):
    listed(("defaults", {}), BLOWS_UP)
    estimator = fit(*clicks)
    assert estimator.metrics["portfolio_choice"] == "defaults"
    kept, failed = estimator.metrics["portfolio"]
    assert failed["name"] == "blows up" and failed["best_valid"] is None and "loss" in failed["failed"]
    assert "failed" not in kept


def test_a_portfolio_whose_every_candidate_diverges_fails_with_each_reason(clicks, listed):
    listed(BLOWS_UP, ("blows up too", BLOWS_UP[1]))
    with pytest.raises(TrainingDiverged, match="every recipe diverged: blows up: .*; blows up too: "):
        fit(*clicks)


@pytest.fixture
def ctrl_c_in_the_second_recipe(monkeypatch):
    """``Trainer.fit`` raises KeyboardInterrupt at its second call (a portfolio's second recipe), as Ctrl-C there;
    the fixture's value puts the real one back."""
    from deepfm.training import trainer

    original, fits = trainer.Trainer.fit, []

    def interrupt_the_second(self, *args, **kwargs):
        fits.append(1)
        if len(fits) == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "fit", interrupt_the_second)
    return lambda: monkeypatch.setattr(trainer.Trainer, "fit", original)


def test_an_interrupted_portfolio_run_says_it_can_be_resumed(clicks, listed, tmp_path, ctrl_c_in_the_second_recipe,
                                                             capsys):
    listed(("defaults", {}), ("larger step", {"lr": 0.3}))
    for name, table in zip(("train", "valid"), clicks):
        pq.write_table(table, tmp_path / f"{name}.parquet")
    code = main(["train", "--train", str(tmp_path / "train.parquet"), "--valid", str(tmp_path / "valid.parquet"),
                 "--model", "fm", "--embed-dim", "4", "--batch-size", "64", "--out", str(tmp_path / "run")])
    assert code == 130 and "resume with: deepfm train --train " in capsys.readouterr().err


def test_a_resumed_portfolio_logs_the_time_a_recipe_finished_before_the_interruption_took_when_it_ran(
        clicks, listed, tmp_path, ctrl_c_in_the_second_recipe, monkeypatch):
    import time

    from deepfm.training import trainer

    step = trainer.Trainer._step
    monkeypatch.setattr(trainer.Trainer, "_step", lambda self, batch: time.sleep(0.02) or step(self, batch))  # the
    listed(TINY_STEP, ("defaults", {}))  # first recipe takes measurable time (FM's step alone is under a millisecond)
    first: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        fit(*clicks, out=tmp_path / "run", log=first.append)
    ctrl_c_in_the_second_recipe()  # undone: the resumed run trains on
    ran = next(line for line in first if line.startswith("portfolio 1/2: tiny step: valid"))
    assert not ran.endswith(" 0.0 s"), ran
    resumed: list[str] = []
    estimator = fit(*clicks, out=tmp_path / "run", resume=True, log=resumed.append)
    said = [line for line in resumed if line.startswith("portfolio 1/2: tiny step: valid")]
    assert said == [ran + ", before the resume"], resumed  # the time it took then, not the resume's 0.0 s
    seconds = [recipe["seconds"] for recipe in estimator.metrics["portfolio"]]
    logged = float(ran.rsplit(", ", 1)[1].removesuffix(" s"))  # (the record keeps 3 decimals: 0.6496 is 0.650 there)
    assert abs(logged - seconds[0]) <= 0.05 + 1e-3 and seconds[1] > 0
    before = estimator.metrics["seconds_before_resume"]  # the run's seconds count the sessions before the resume
    assert before >= seconds[0] and estimator.metrics["seconds"] > before
    assert not next(line for line in resumed if line.startswith("portfolio 2/2")).endswith("before the resume")


def test_a_portfolio_checkpointed_by_an_older_version_resumes_and_makes_up_no_time(clicks, listed, tmp_path):
    from deepfm.training.checkpoint import _seal

    listed(TINY_STEP, ("defaults", {}))
    fit(*clicks, out=tmp_path / "run")  # every recipe's checkpoint is kept (the API does not remove them)
    for state in (tmp_path / "run" / "checkpoint").glob("portfolio-*/state.json"):
        saved = json.loads(state.read_text())
        saved["loop"].pop("seconds", None)  # as an older version wrote it
        state.write_text(json.dumps(saved))
        _seal(state.parent)
    lines: list[str] = []
    resumed = fit(*clicks, out=tmp_path / "run", resume=True, log=lines.append)
    said = [line for line in lines if line.startswith("portfolio ") and ": valid auc" in line]
    assert len(said) == 2 and all(line.endswith(", finished before the resume") for line in said), lines
    assert [recipe["seconds"] for recipe in resumed.metrics["portfolio"]] == [None, None]  # not known, not 0
    assert resumed.metrics["seconds_before_resume"] is None


def test_the_saved_model_is_the_kept_candidate_with_its_settings(clicks, listed, tmp_path):
    listed(("defaults", {}), ("larger step", {"lr": 0.3}))
    estimator = fit(*clicks)
    estimator.save(tmp_path / "model")
    loaded = Estimator.load(tmp_path / "model")
    kept = dict(defaults.portfolio("fm", "binary", RECURRING))[loaded.metrics["portfolio_choice"]]
    assert loaded.config.training.lr == kept.get("lr", defaults.TASK_DEFAULTS["fm"]["binary"]["lr"])
    np.testing.assert_allclose(loaded.predict(clicks[1]), estimator.predict(clicks[1]), rtol=1e-6)


def test_the_log_says_what_the_portfolio_does_before_its_first_recipe(clicks, listed):
    listed(("defaults", {}), ("larger step", {"lr": 0.3}))
    said = []
    fit(*clicks, log=said.append)
    first = next(i for i, line in enumerate(said) if line.startswith("portfolio"))
    assert said[first] == ("portfolio: 2 default recipes for this data (defaults, larger step); each trains with its "
                           "own early stopping, and the one best on the validation rows is kept")
    assert said[first + 1] == "portfolio 1/2: defaults (as configured)"


def test_a_tie_keeps_the_earlier_candidate(clicks, listed):
    listed(("defaults", {}), ("the same", {"optimizer": "adagrad"}))  # FM's click default already
    assert fit(*clicks).metrics["portfolio_choice"] == "defaults"


def test_a_tie_on_validation_auc_is_compared_row_by_row_and_said(clicks, listed):
    listed(("defaults", {}), ("the same", {"optimizer": "adagrad"}))
    said = []
    metrics = fit(*clicks, log=said.append).metrics
    assert metrics["portfolio_choice"] == "defaults"
    first, second = metrics["portfolio"]  # the comparison in metrics.json too, as the log says it
    assert "compared" not in first
    assert second["compared"] == {"against": "defaults", "rows": 300, "auc": [0.0, 0.0], "logloss": [0.0, 0.0],
                                  "replaced": False}
    assert ("portfolio: the same: valid AUC +0.00000 against defaults, standard error 0.00000 (paired on 300 rows): "
            "within it, so the lower valid logloss decides: defaults keeps its place, the same") in said
    assert ("portfolio: kept defaults (by valid auc; --portfolio off (training.portfolio) trains the first recipe, "
            "defaults, only)") in said  # the first recipe by its name ('long tail' on a small long tail)


def test_weighted_validation_rows_say_why_the_recipes_are_compared_without_the_standard_error(clicks, listed):
    listed(("defaults", {}), ("the same", {"optimizer": "adagrad"}))
    train, valid = (table.append_column("w", pa.array(np.linspace(0.5, 2.0, len(table)))) for table in clicks)
    said = []
    Estimator(data={"weight": "w"}, model={"name": "fm", "embed_dim": 4}, training=TRAINING).fit(
        train, valid=valid, progress=False, log=said.append)
    assert said.count("portfolio: the validation rows are weighted (--weight), so a later recipe is kept where its "
                      "weighted validation metric is better at all: the paired standard error is for unweighted rows") == 1
    assert not any("standard error 0." in line for line in said)


@pytest.fixture
def scored():
    """(labels, true logits) of 4,000 validation rows; ``chosen(logits)``: a kept candidate scored so."""
    rng = np.random.default_rng(1)
    logits = rng.normal(-1.0, 1.5, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    return labels, logits


def kept_with(labels, logits, name="defaults"):
    return Chosen(config=None, model=None, result=None, name=name, tried=[], scores=(labels, logits))


BINARY = BinaryTask()


def test_a_later_recipe_as_good_on_auc_but_overconfident_is_not_kept(scored):
    labels, logits = scored
    replaces, why = paired_choice(BINARY, kept_with(labels, logits), "overconfident", (labels, 4 * logits))
    assert not replaces  # the same ranking (the same AUC), worse probabilities
    assert why.startswith("portfolio: overconfident: valid AUC +0.00000 against defaults, standard error")
    assert why.endswith("within it, so the lower valid logloss decides: defaults keeps its place, lower by "
                        f"{np.mean(np.logaddexp(0, -(2 * labels - 1) * 4 * logits) - np.logaddexp(0, -(2 * labels - 1) * logits)):.5f}")
    assert paired_choice(BINARY, kept_with(labels, 4 * logits), "calibrated", (labels, logits))[0]


def test_a_later_recipe_better_by_more_than_the_standard_error_is_kept_whatever_its_logloss(scored):
    labels, logits = scored
    noisy = logits + np.random.default_rng(2).normal(0, 2.0, len(logits))
    replaces, why = paired_choice(BINARY, kept_with(labels, noisy), "sharper", (labels, 10 * logits))
    assert replaces and why.endswith("(paired on 4,000 rows): sharper replaces it") and "valid AUC +0.1" in why
    replaces, why = paired_choice(BINARY, kept_with(labels, logits), "noisy", (labels, noisy))
    assert not replaces and why.endswith("(paired on 4,000 rows): defaults keeps its place") and "valid AUC -0.1" in why


def test_selecting_by_logloss_the_higher_auc_breaks_a_tie_on_logloss(scored):
    labels, logits = scored
    by_logloss = BINARY.selecting("logloss")
    replaces, why = paired_choice(by_logloss, kept_with(labels, logits), "the same", (labels, logits.copy()))
    assert not replaces and why.endswith("within it, so the higher valid AUC decides: defaults keeps its place, the same")


def test_selecting_by_logloss_a_lower_logloss_beyond_the_standard_error_replaces_and_is_said_as_lower(scored):
    labels, logits = scored
    by_logloss = BINARY.selecting("logloss")
    replaces, why = paired_choice(by_logloss, kept_with(labels, 4 * logits), "calibrated", (labels, logits))
    assert replaces and why.startswith("portfolio: calibrated: valid logloss -0.") and why.endswith("calibrated replaces it")
    replaces, why = paired_choice(by_logloss, kept_with(labels, logits), "overconfident", (labels, 4 * logits))
    assert not replaces and "valid logloss +0." in why and why.endswith("defaults keeps its place")


def test_without_paired_scores_the_rule_gives_way_to_the_strict_comparison(scored):
    labels, logits = scored
    assert paired_choice(BINARY, kept_with(labels, logits), "weighted", None) == (False, None)
    assert paired_choice(RegressionTask(), kept_with(labels, logits), "ratings", (labels, logits)) == (False, None)
    assert paired_choice(BINARY, kept_with(np.ones(4), np.zeros(4)), "one class", (np.ones(4), np.zeros(4))) == (False, None)
    one_positive = np.array([1.0, 0, 0, 0, 0])  # its AUC's standard error is not defined (a variance of one value)
    assert paired_choice(BINARY, kept_with(one_positive, np.arange(5.0)), "x", (one_positive, -np.arange(5.0))) == (
        False, None)
    assert paired_choice(BINARY, kept_with(labels, logits), "other rows", (labels[::-1].copy(), logits)) == (False, None)


def test_off_trains_the_defaults_only(clicks, listed):
    listed(TINY_STEP, ("defaults", {}))
    estimator = fit(*clicks, portfolio="off")
    assert "portfolio" not in estimator.metrics
    assert estimator.config.training.lr == defaults.TASK_DEFAULTS["fm"]["binary"]["lr"]


def test_a_key_the_user_set_that_a_candidate_sets_turns_it_off_and_says_so(clicks, listed):
    listed(("defaults", {}), ("larger step", {"lr": 0.3}))
    said = []
    estimator = fit(*clicks, log=said.append, lr=0.05)
    assert "portfolio" not in estimator.metrics and estimator.config.training.lr == 0.05
    assert any("not run (set by you: lr)" in line for line in said)


def test_without_validation_rows_the_defaults_train_once(clicks, listed):
    listed(TINY_STEP, ("defaults", {}))
    estimator = Estimator(model={"name": "fm", "embed_dim": 4}, training=TRAINING,
                          data={"valid_fraction": 0}).fit(clicks[0], progress=False)
    assert "portfolio" not in estimator.metrics


def test_streamed_training_data_trains_the_defaults_once(ctr_csv, listed):
    listed(("defaults", {}), ("larger step", {"lr": 0.3}))
    said = []
    estimator = Estimator(model={"name": "fm", "embed_dim": 4}, training=TRAINING, data={"stream": "on"}).fit(
        ctr_csv(rows=400), valid=ctr_csv("valid.csv", part=1), progress=False, log=said.append)
    assert "portfolio" not in estimator.metrics
    assert any("streamed training data" in line for line in said)


def test_a_resumed_portfolio_continues_each_candidates_checkpoint_and_keeps_the_same_one(clicks, listed, tmp_path):
    listed(TINY_STEP, ("defaults", {}))
    first = fit(*clicks)
    Estimator(model={"name": "fm", "embed_dim": 4}, training=TRAINING).fit(*clicks, out=tmp_path / "run", progress=False)
    assert {"portfolio-1", "portfolio-2"} <= {p.name for p in (tmp_path / "run" / "checkpoint").iterdir()}
    resumed = Estimator(model={"name": "fm", "embed_dim": 4}, training=TRAINING).fit(
        *clicks, out=tmp_path / "run", resume=True, progress=False)
    assert resumed.metrics["portfolio_choice"] == first.metrics["portfolio_choice"] == "defaults"
    np.testing.assert_allclose(resumed.predict(clicks[1]), first.predict(clicks[1]), rtol=1e-6)


RECURRING, FREQUENT = IdCounts(50_000, 500_000, 5_000), IdCounts(50_000, 500_000, 100)  # 0.1 and 0.002 ids per row
SMALL_LONG_TAIL, LONG_TAIL = IdCounts(15_000, 150_000, 4_877), IdCounts(1_000_000, 26_000_000, 978_044)


def test_deepfm_and_fm_on_clicks_list_the_defaults_first_and_nothing_on_a_long_tail_or_ratings():
    for model in ("fm", "deepfm"):
        for counts in (RECURRING, FREQUENT):
            candidates = defaults.portfolio(model, "binary", counts)
            assert candidates[0] == ("defaults", {}) and len(candidates) >= 2
        assert defaults.portfolio(model, "binary", LONG_TAIL) == (("defaults", {}),)
        assert defaults.portfolio(model, "regression", RECURRING) == (("defaults", {}),)
    assert ("searched", DEEPFM_SEARCHED_RECIPE) in defaults.portfolio("deepfm", "binary", RECURRING)


def test_a_small_sample_past_the_long_tail_cut_lets_validation_choose_the_branch():
    """From 2k to SMALL_LONG_TAIL_ROWS rows a long tail may be a small sample of ids that recur (Frappe's 15k rows:
    0.33 ids per row): the long tail's settings first, then the task's own with every value its own id."""
    assert defaults.id_shape(SMALL_LONG_TAIL) == "long tail"
    assert defaults.portfolio("fm", "binary", SMALL_LONG_TAIL) == (
        ("long tail", {}), ("recurring ids", {"adagrad_init": 0.0, "min_count": 1}))
    (_, first), (_, recurring) = defaults.portfolio("deepfm", "binary", SMALL_LONG_TAIL)
    assert first == {} and recurring == {"embed_dim": 64, "lr": 1e-2, "dropout": 0.5, "min_count": 1}
    assert defaults.portfolio("lr", "binary", SMALL_LONG_TAIL) == (("long tail", {}), ("recurring ids", {"min_count": 1}))
    under_the_rule = IdCounts(3_000, 30_000, 2_000)  # under 10k rows every value keeps its id in either branch
    assert defaults.rare_value_threshold(None, under_the_rule) == 1
    assert defaults.portfolio("fm", "binary", under_the_rule) == (("long tail", {}), ("recurring ids", {"adagrad_init": 0.0}))
    assert defaults.portfolio("lr", "binary", under_the_rule) == (("defaults", {}),), "the same model twice"
    tiny = IdCounts(1_500, 15_000, 2_000)  # under 2,000 rows (tests, tiny demos): one recipe
    assert defaults.id_shape(tiny) == "long tail" and defaults.portfolio("fm", "binary", tiny) == (("defaults", {}),)
    assert defaults.portfolio("fm", "regression", SMALL_LONG_TAIL) == (("defaults", {}),)


def item_clicks(rows: int, items: int, seed: int):
    """Clicks decided by an item id seen ~rows/items times (under the rare-value rule's 10), beside two fields of
    noise: a long tail by ids per row whose every id recurs, and whose item ids hold all the signal."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    item = rng.integers(0, items, rows)
    clicked = (np.random.default_rng(99).random(items) < 0.5)[item] ^ (rng.random(rows) < 0.1)
    return pa.table({"label": clicked.astype(np.int64), "item": [f"i{v}" for v in item],
                     "day": [f"d{v}" for v in rng.integers(0, 7, rows)], "slot": [f"s{v}" for v in rng.integers(0, 5, rows)]})


def test_on_such_a_sample_the_kept_branch_brings_its_own_encoders_and_rows(tmp_path):
    train, valid = item_clicks(12_000, 4_000, 0), item_clicks(3_000, 4_000, 1)
    est = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 2}).fit(
        train, valid=valid, progress=False, out=tmp_path / "m")
    assert est.metrics["ids"]["shape"] == "long tail" and est.metrics["ids"]["rows"] == 12_000
    long_tail, recurring = est.metrics["portfolio"]
    assert recurring["best_valid"]["auc"] > long_tail["best_valid"]["auc"] + 0.1  # the rare id hides every item
    assert est.metrics["portfolio_choice"] == "recurring ids"
    assert est.config.data.min_count == 1 and est.config.training.adagrad_init == 0.0
    assert est.encoder.id_counts.min_count == 1 and est.metrics["ids"]["kept"] == est.metrics["ids"]["distinct"]
    assert est.model.embedding.weight.shape[0] == est.encoder.num_features
    loaded = Estimator.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(valid), est.predict(valid), rtol=1e-6)
    assert loaded.evaluate(valid)["auc"] == pytest.approx(recurring["best_valid"]["auc"], abs=1e-6)


def test_such_a_portfolio_resumed_refits_the_branch_encoders_and_keeps_the_same_one(tmp_path):
    train, valid = item_clicks(12_000, 4_000, 0), item_clicks(3_000, 4_000, 1)

    def run(**how):
        return Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 2}).fit(
            train, valid=valid, progress=False, out=tmp_path / "run", **how)

    first = run()
    resumed = run(resume=True)
    assert resumed.metrics["portfolio_choice"] == first.metrics["portfolio_choice"] == "recurring ids"
    assert resumed.encoder.to_dict() == first.encoder.to_dict()
    np.testing.assert_allclose(resumed.predict(valid), first.predict(valid), rtol=1e-6)


def test_under_the_rare_value_rule_lr_trains_once_where_both_branches_are_the_same_model():
    est = Estimator(model={"name": "lr"}, training={"epochs": 1}).fit(
        item_clicks(3_000, 4_000, 0), valid=item_clicks(1_000, 4_000, 1), progress=False)
    assert est.metrics["ids"]["shape"] == "long tail" and "portfolio" not in est.metrics


def test_a_min_count_the_user_set_keeps_such_a_sample_to_one_branch():
    log = []
    est = Estimator(model={"name": "fm", "embed_dim": 4}, data={"min_count": 10}, training={"epochs": 1}).fit(
        item_clicks(12_000, 4_000, 0), valid=item_clicks(3_000, 4_000, 1), progress=False, log=log.append)
    assert "portfolio" not in est.metrics
    assert any("not run (set by you: min_count)" in line for line in log)


def test_a_users_mlp_sets_both_branches_of_a_small_long_tail_sample_and_validation_still_chooses():
    """The recurring branch keeps the long tail's MLP (as the small samples were measured), so --mlp, which it does not
    override, leaves both branches to validation (the 200-200 MLP in that branch had turned the portfolio off)."""
    from deepfm.config import build_config
    from deepfm.portfolio import candidates_for

    sample = IdCounts(20_000, 200_000, 40_000)
    candidates, why = candidates_for(build_config({"model": {"mlp": "100,100"}}), "binary", sample, True, 1, True)
    assert [name for name, _ in candidates] == ["long tail", "recurring ids"] and why is None


def test_the_cli_flag_turns_it_off_and_metrics_json_records_the_choice(ctr_csv, listed, tmp_path):
    listed(("defaults", {}), ("larger step", {"lr": 0.3}))
    train, valid = ctr_csv(rows=400), ctr_csv("valid.csv", part=1)
    common = ["--model", "fm", "--embed-dim", "4", "--epochs", "2", "--batch-size", "64", "--quiet"]
    assert main(["train", "--train", str(train), "--valid", str(valid), "--out", str(tmp_path / "auto"), *common]) == 0
    assert main(["train", "--train", str(train), "--valid", str(valid), "--out", str(tmp_path / "off"), *common,
                 "--portfolio", "off"]) == 0
    auto = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert [c["name"] for c in auto["portfolio"]] == ["defaults", "larger step"] and "portfolio_choice" in auto
    assert "portfolio" not in json.loads((tmp_path / "off" / "metrics.json").read_text())


def test_a_refit_trains_the_kept_candidate_again_on_every_row(clicks, listed):
    listed(TINY_STEP, ("defaults", {}))
    estimator = Estimator(model={"name": "fm", "embed_dim": 4}, training=TRAINING | {"refit": "held-out"}).fit(
        clicks[0], progress=False)  # validation rows held out of the training rows
    assert estimator.metrics["portfolio_choice"] == "defaults" and estimator.metrics["refit"]["rows"] == len(clicks[0])
    assert estimator.config.training.lr == defaults.TASK_DEFAULTS["fm"]["binary"]["lr"]


def test_tune_trials_train_one_recipe_each_trial_0_the_defaults(ctr_csv, listed, tmp_path):
    pytest.importorskip("optuna")
    listed(("defaults", {}), ("larger step", {"lr": 0.3}))
    flags = ["--train", str(ctr_csv(rows=400)), "--valid", str(ctr_csv("valid.csv", part=1)), "--model", "fm",
             "--embed-dim", "4", "--batch-size", "64", "--quiet"]
    assert main(["tune", *flags, "--trials", "1", "--refit", "off", "--out", str(tmp_path / "tuned")]) == 0
    trial = json.loads((tmp_path / "tuned" / "tune.json").read_text())["trials"][0]
    assert trial["settings"]["lr"] == defaults.TASK_DEFAULTS["fm"]["binary"]["lr"]
    assert "portfolio" not in json.loads((tmp_path / "tuned" / "metrics.json").read_text())


def test_resuming_a_run_of_one_recipe_continues_it_without_a_portfolio(clicks, listed, tmp_path):
    listed(("defaults", {}), ("larger step", {"lr": 0.3}))
    first = fit(*clicks, out=tmp_path / "run", portfolio="off")
    resumed = fit(*clicks, out=tmp_path / "run", resume=True)
    assert "portfolio" not in resumed.metrics
    assert resumed.config.training.portfolio == "off", "what the saved config.json says it trained with"
    np.testing.assert_allclose(resumed.predict(clicks[1]), first.predict(clicks[1]), rtol=1e-6)


def test_a_portfolio_run_resumed_with_other_data_or_seed_is_refused(clicks, listed, tmp_path):
    listed(("defaults", {}), ("larger step", {"lr": 0.3}))
    fit(*clicks, out=tmp_path / "run")  # every recipe's checkpoint is kept (the API does not remove them)
    with pytest.raises(ConfigError, match=r"other training settings \(seed 2026 → 3\)"):
        fit(*clicks, out=tmp_path / "run", resume=True, seed=3)
    with pytest.raises(ConfigError, match=r"other data \(train data in memory \(600 rows.* → data in memory \(300 rows"):
        fit(clicks[0].slice(0, 300), clicks[1], out=tmp_path / "run", resume=True)
    fit(*clicks, out=tmp_path / "run", resume=True)  # the same data and settings resume


def test_a_recipe_the_interrupted_portfolio_had_not_begun_is_said_to_start_afresh(clicks, listed, tmp_path):
    import shutil

    listed(("defaults", {}), ("larger step", {"lr": 0.3}))
    first = fit(*clicks, out=tmp_path / "run")
    for path in (tmp_path / "run" / "checkpoint").glob("portfolio-2*"):  # killed before recipe 2 checkpointed
        shutil.rmtree(path)
    lines: list[str] = []
    resumed = fit(*clicks, out=tmp_path / "run", resume=True, log=lines.append)
    assert "resume: recipe 2 had not begun; training it from the start" in lines, lines
    assert not any("no checkpoint in" in line for line in lines)
    np.testing.assert_allclose(resumed.predict(clicks[1]), first.predict(clicks[1]), rtol=1e-6)


def test_a_portfolio_checkpoint_is_not_resumed_without_its_portfolio(clicks, listed, tmp_path):
    listed(("defaults", {}), ("larger step", {"lr": 0.3}))
    fit(*clicks, out=tmp_path / "run")
    with pytest.raises(ConfigError, match="holds a portfolio run .*portfolio-1, portfolio-2"):
        fit(*clicks, out=tmp_path / "run", resume=True, portfolio="off")


def test_the_users_epochs_bound_every_candidate_and_do_not_turn_the_portfolio_off(clicks, listed):
    listed(("defaults", {}), ("longer, larger step", {"lr": 0.3, "epochs": 40}))
    estimator = fit(*clicks)  # TRAINING sets epochs 3
    defaults_run, longer = estimator.metrics["portfolio"]
    assert longer["overrides"] == {"lr": 0.3} and estimator.config.training.epochs == 3
    assert estimator.metrics["epochs"] <= 3
