"""training.refit: after validation chose the epochs, train again from the start on every row."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from deepfm import Estimator
from deepfm.data.holdout import hashed_mask
from deepfm.errors import ConfigError
from deepfm.models import model_for_run
from deepfm.training.trainer import Trainer


def ratings(rows: int, seed: int = 0) -> pa.Table:
    """Ratings of one user × item model (the same biases for every ``seed``; ``seed`` draws the rows)."""
    biases = np.random.default_rng(0)
    user_bias, item_bias = biases.normal(0, 1, 40), biases.normal(0, 1, 60)
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 40, rows), rng.integers(0, 60, rows)
    rating = np.clip(np.round(3 + user_bias[users] + item_bias[items] + rng.normal(0, 0.5, rows)), 1, 5)
    return pa.table({"user": users.astype(str), "item": items.astype(str), "label": rating})


TRAINING = {"epochs": 8, "patience": 2, "lr": 0.3, "batch_size": 64, "lr_schedule": "plateau"}


def fitted(table: pa.Table, valid: pa.Table | None = None, **training) -> Estimator:
    return Estimator(model={"name": "fm", "embed_dim": 4}, training=TRAINING | training).fit(table, valid=valid,
                                                                                             progress=False)


def fresh_model(estimator: Estimator) -> torch.nn.Module:
    torch.manual_seed(estimator.config.training.seed)
    encoder = estimator.encoder
    return model_for_run(estimator.config, encoder.num_features, encoder.num_fields, encoder.task,
                         [spec.size for spec in encoder.fields])


def test_replaying_a_runs_verdicts_on_its_rows_reproduces_its_model():
    train, valid = ratings(1500), ratings(300, seed=1)
    first = fitted(train, valid)
    verdicts = [record["improved"] for record in first.metrics["history"]]
    assert not all(verdicts), "the run should have had an epoch without improvement (a reload and a lower lr)"
    model = fresh_model(first)
    trainer = Trainer(model, first.encoder.task, first.config.training, progress=False)
    result = trainer.fit(first.encode(train, with_labels=True), replay=verdicts[: first.metrics["best_epoch"]])
    assert result.epochs_run == result.best_epoch == first.metrics["best_epoch"]
    for name, weights in first.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], weights, rtol=0, atol=0)


def test_refit_trains_on_training_and_validation_rows_for_the_chosen_epochs():
    train, valid = ratings(1500), ratings(300, seed=1)
    once, refitted = fitted(train, valid), fitted(train, valid, refit=True)
    assert refitted.metrics["best_epoch"] == once.metrics["best_epoch"]
    assert refitted.metrics["best_valid"] == once.metrics["best_valid"], "validation chose the epochs, as without refit"
    assert refitted.metrics["refit"] | {"seconds": 0, "train_samples_per_s": 0} == {
        "rows": 1800, "epochs": once.metrics["best_epoch"], "seconds": 0, "train_samples_per_s": 0}
    assert not np.allclose(refitted.predict(valid), once.predict(valid)), "the saved model is the refitted one"


def test_refit_with_only_improving_epochs_equals_training_on_all_rows_for_that_many_epochs():
    train, valid = ratings(1500), ratings(300, seed=1)
    refitted = fitted(train, valid, refit=True, epochs=3, lr=0.02)
    assert [r["improved"] for r in refitted.metrics["history"]] == [True, True, True]
    model = fresh_model(refitted)
    Trainer(model, refitted.encoder.task, refitted.config.training.model_copy(update={"epochs": 3}),
            progress=False).fit(refitted.encode(pa.concat_tables([train, valid]), with_labels=True))
    for name, weights in model.state_dict().items():
        torch.testing.assert_close(refitted.model.state_dict()[name], weights, rtol=0, atol=0)


def test_refit_of_held_out_rows_trains_on_the_whole_training_table():
    refitted = Estimator(model={"name": "fm", "embed_dim": 4}, data={"valid_fraction": 0.2},
                         training=TRAINING | {"refit": "held-out"}).fit(ratings(1500), progress=False)
    held = int(hashed_mask(0, 1500, 0.2, refitted.config.training.seed).sum())
    assert refitted.metrics["validation"]["rows"] == held and 250 < held < 350 and refitted.metrics["refit"]["rows"] == 1500


def test_refit_held_out_leaves_a_model_chosen_on_a_validation_file_as_it_is():
    train, valid = ratings(1500), ratings(300, seed=1)
    once, held_out_rule = fitted(train, valid), fitted(train, valid, refit="held-out")
    assert "refit" not in held_out_rule.metrics
    np.testing.assert_array_equal(held_out_rule.predict(valid), once.predict(valid))


def test_fm_on_ratings_refits_held_out_rows_by_default():
    table = ratings(1500)
    by_default = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 2}).fit(table, progress=False)
    assert by_default.config.training.refit == "held-out" and by_default.metrics["refit"]["rows"] == 1500
    with_a_file = Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 2}).fit(
        table, valid=ratings(300, seed=1), progress=False)
    assert "refit" not in with_a_file.metrics, "a validation file the user gave is never trained on by default"


def test_a_config_may_say_refit_true_or_false():
    from deepfm.config import build_config

    assert build_config({"training": {"refit": True}}).training.refit == "on"
    assert build_config({"training": {"refit": False}}).training.refit == "off"


def test_refit_without_validation_rows_says_so_and_keeps_the_model():
    lines: list[str] = []
    estimator = Estimator(model={"name": "fm", "embed_dim": 4}, data={"valid_fraction": 0},
                          training=TRAINING | {"refit": True, "epochs": 2}).fit(ratings(500), progress=False, log=lines.append)
    assert "refit" not in estimator.metrics
    assert any(line.startswith("refit: no validation rows") for line in lines)


def test_refit_refuses_a_solver_without_epochs():
    with pytest.raises(ConfigError, match="training.refit"):
        Estimator(model={"name": "fm", "embed_dim": 4}, training={"solver": "als", "sweeps": 2, "refit": True}).fit(
            ratings(500), valid=ratings(100, seed=1), progress=False)


@pytest.mark.parametrize("setting", [{"data": {"stream": "on"}}, {"training": {"solver": "als", "sweeps": 2}}])
def test_a_refit_the_run_cannot_do_is_refused_before_any_row_is_read(tmp_path, setting):
    # it was refused once every epoch had trained, leaving no model
    (tmp_path / "bad.csv").write_text("rating,user\n4,u1,extra\n")  # reading it would be a DataError
    config = {"model": {"name": "fm"}, "training": {"refit": True}}
    for section, values in setting.items():
        config[section] = config.get(section, {}) | values
    with pytest.raises(ConfigError, match=r"training.refit: needs gradient training on in-memory data in one process"):
        Estimator(**config).fit(tmp_path / "bad.csv", progress=False)


def test_the_train_command_refits_with_the_flag(tmp_path, capsys):
    from deepfm.cli import main

    import pyarrow.parquet as pq

    pq.write_table(ratings(600), tmp_path / "train.parquet")
    code = main(["train", "--train", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "model"), "--model", "fm",
                 "--embed-dim", "4", "--epochs", "2", "--refit", "--json"])
    assert code == 0
    saved = Estimator.load(tmp_path / "model")
    assert saved.config.training.refit == "on" and saved.metrics["refit"]["rows"] == 600
    out, err = capsys.readouterr()
    assert "refit: training again from the start on 600 rows" in err
    summary = json.loads(out.strip().splitlines()[-1])  # the first run's rows and validation, then the saved model's rows
    assert summary["rows"] < 600 and summary["refit"] == {"rows": 600, "epochs": saved.metrics["refit"]["epochs"]}
    # the line a run ends with (a new user read the score of the run before the refit as the saved model's own)
    assert main(["train", "--train", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "again"), "--model", "fm",
                 "--embed-dim", "4", "--epochs", "2", "--refit"]) == 0
    epochs = Estimator.load(tmp_path / "again").metrics["refit"]["epochs"]
    assert (f"; then refitted on 600 rows, the validation rows among them, for {epochs} epoch"
            f"{'s' if epochs != 1 else ''}: the validation score is from before the refit)") in capsys.readouterr().err


def test_the_verdicts_of_a_history_without_them_come_from_its_metrics():
    from deepfm.api import _verdicts
    from deepfm.tasks import as_task

    history = [{"valid": {"rmse": 1.0}}, {"valid": {"rmse": 0.9}}, {"valid": {"rmse": 0.95}}, {"valid": {"rmse": 0.92}},
               {"valid": {"rmse": 0.8}}]
    assert _verdicts(history, as_task("regression")) == [True, True, False, False, True]


def refitting() -> Estimator:
    return Estimator(model={"name": "fm", "embed_dim": 4}, training=TRAINING | {"refit": True})


def interrupt_the_refit(train: pa.Table, valid: pa.Table, out, monkeypatch) -> None:
    """A refitting run into ``out`` stopped by Ctrl-C in its refit's second epoch (1,800 rows in batches of 64: 29
    steps an epoch), the refit's first epoch checkpointed in ``checkpoint-refit``."""
    original, refit_steps = Trainer._step, []

    def ctrl_c_in_the_refits_second_epoch(self, batch):
        if self.checkpoint_dir is not None and self.checkpoint_dir.name == "checkpoint-refit":
            refit_steps.append(1)
            if len(refit_steps) == 40:
                raise KeyboardInterrupt
        return original(self, batch)

    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "_step", ctrl_c_in_the_refits_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            refitting().fit(train, valid, out=out, progress=False)
    assert (out / "checkpoint-refit").is_dir()


def test_an_interrupted_refit_resumes_from_its_own_checkpoint_to_the_model_of_a_run_alone(tmp_path, monkeypatch):
    """The refit checkpoints beside the run's checkpoint (``checkpoint-refit``); --resume continues it there."""
    train, valid = ratings(1500), ratings(300, seed=1)
    alone = fitted(train, valid, refit=True)
    assert alone.metrics["refit"]["epochs"] >= 2
    interrupt_the_refit(train, valid, tmp_path / "run", monkeypatch)
    lines: list[str] = []
    resumed = refitting().fit(train, valid, out=tmp_path / "run", resume=True, progress=False, log=lines.append)
    assert any(line.startswith("refit: continuing on 1,800 rows") for line in lines)
    assert any(line.startswith("resumed from") and "checkpoint-refit" in line for line in lines)
    for name, weights in alone.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], weights, rtol=0, atol=0, msg=name)
    assert resumed.metrics["seconds_before_resume"] > resumed.result.seconds  # the run's, and the refit's first epoch


def test_a_damaged_refit_checkpoint_says_to_delete_it_not_to_train_the_whole_run_again(tmp_path, monkeypatch):
    from deepfm.errors import CheckpointError

    train, valid = ratings(1500), ratings(300, seed=1)
    interrupt_the_refit(train, valid, tmp_path / "run", monkeypatch)
    (tmp_path / "run" / "checkpoint-refit" / "model.safetensors").write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match=f"Delete {tmp_path / 'run' / 'checkpoint-refit'} and resume: the refit "
                                              "trains again from the start"):
        refitting().fit(train, valid, out=tmp_path / "run", resume=True, progress=False)
