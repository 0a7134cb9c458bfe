"""The ``deepfm`` command line, run in-process through ``deepfm.cli.main`` (it returns the exit code)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import re
import signal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from deepfm import Estimator
from deepfm.cli import build_parser, main
from deepfm.config import TrainingConfig
from deepfm.data.synthetic import SyntheticSpec, make_ctr_table
from deepfm.errors import ConfigError, DataWarning

TINY = ["--epochs", "1", "--mlp", "16,16", "--batch-size", "64", "--embed-dim", "4"]
TRAIN_SUMMARY_KEYS = {"rows", "epochs", "seconds", "train_samples_per_s", "peak_rss_mb", "best_epoch", "best_valid"}


def train(train_path, out, *extra: str) -> int:
    return main(["train", "--train", str(train_path), "--out", str(out), *TINY, "--quiet", *extra])


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_predictions(path: Path) -> list[float]:
    table = pq.read_table(path) if path.suffix == ".parquet" else pacsv.read_csv(path)
    assert table.column_names == ["prediction"]
    return table.column("prediction").to_pylist()


@pytest.fixture(scope="module")
def ctr_model(tmp_path_factory):
    """A tiny DeepFM trained once for this module, with its train/valid/test CSVs."""
    root = tmp_path_factory.mktemp("ctr")
    spec = SyntheticSpec(rows=300, seed=5)
    paths = {}
    for part, name in enumerate(("train", "valid", "test")):
        paths[name] = root / f"{name}.csv"
        pacsv.write_csv(make_ctr_table(spec, part=part)[0], paths[name])
    paths["model"] = root / "model"
    code = main(["train", "--train", str(paths["train"]), "--valid", str(paths["valid"]), "--out", str(paths["model"]),
                 *TINY, "--quiet"])
    assert code == 0
    return paths


@pytest.fixture(scope="module")
def rating_model(tmp_path_factory):
    """A tiny FM trained on ratings (a regression task) once for this module."""
    import numpy as np

    root = tmp_path_factory.mktemp("ratings")
    rng = np.random.default_rng(0)
    n = 200
    user, item = rng.integers(0, 20, n), rng.integers(0, 15, n)
    rating = np.clip(np.round(3 + 0.1 * user - 0.1 * item + rng.normal(0, 0.5, n)), 1, 5)
    table = pa.table({"rating": rating, "user": [f"u{u}" for u in user], "item": [f"i{i}" for i in item]})
    data = root / "ratings.csv"
    pacsv.write_csv(table, data)
    model = root / "model"
    code = main(["train", "--train", str(data), "--out", str(model), "--label", "rating", "--model", "fm", *TINY, "--quiet"])
    assert code == 0
    return {"data": data, "model": model, "rows": n}


# -- train ------------------------------------------------------------------------------------


def test_train_json_prints_exactly_one_json_line_with_the_summary(ctr_csv, tmp_path, capsys):
    code = main(["train", "--train", str(ctr_csv("train.csv")), "--valid", str(ctr_csv("valid.csv", part=1)),
                 "--out", str(tmp_path / "model"), *TINY, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    summary = json.loads(out)
    assert TRAIN_SUMMARY_KEYS <= set(summary)


def test_train_json_summary_reports_the_run(ctr_csv, tmp_path, capsys):
    code = main(["train", "--train", str(ctr_csv("train.csv", rows=256)), "--valid", str(ctr_csv("valid.csv", part=1)),
                 "--out", str(tmp_path / "model"), *TINY, "--epochs", "2", "--patience", "0", "--json", "--quiet"])
    summary = json_lines(capsys.readouterr().out)[-1]
    assert code == 0
    assert summary["rows"] == 256
    assert summary["epochs"] == 2
    assert summary["best_epoch"] in (1, 2)
    assert set(summary["best_valid"]) == {"auc", "logloss"}
    assert summary["seconds"] >= 0 and summary["train_samples_per_s"] > 0 and summary["peak_rss_mb"] > 0
    saved = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert summary["valid_rows"] == saved["valid_rows"] > 0
    assert summary.get("portfolio_choice") == saved.get("portfolio_choice")


def test_train_without_json_prints_nothing_on_stdout(ctr_csv, tmp_path, capsys):
    code = main(["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "model"), *TINY])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out == ""
    assert "saved" in captured.err


def test_the_row_id_note_of_a_column_with_an_empty_header_names_a_flag_that_leaves_it_out(tmp_path, capsys):
    # pandas' to_csv writes its index as a first column with an empty header: --ignore '' leaves it out
    rows = [f"{i},{i % 2},u{i % 7},c{i % 3}" for i in range(1200)]
    (tmp_path / "indexed.csv").write_text(",label,user,city\n" + "\n".join(rows) + "\n")
    assert main(["train", "--train", str(tmp_path / "indexed.csv"), "--out", str(tmp_path / "a"), *TINY]) == 0
    assert "a row id? It tells the model nothing of other rows, and rows to predict bring new ones; --ignore '' (data.ignore) leaves it out" \
        in capsys.readouterr().err
    assert main(["train", "--train", str(tmp_path / "indexed.csv"), "--out", str(tmp_path / "b"), *TINY, "--ignore", ""]) == 0
    assert "a row id?" not in capsys.readouterr().err
    fields = json.loads((tmp_path / "b" / "features.json").read_text())["fields"]
    assert [field["name"] for field in fields] == ["user", "city"]


def test_train_writes_a_complete_model_directory(ctr_csv, tmp_path):
    assert train(ctr_csv(), tmp_path / "model") == 0
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"model.safetensors", "features.json", "config.json", "metrics.json", "manifest.json"} <= names


def test_a_finished_run_removes_its_checkpoint_unless_asked_to_keep_it(ctr_csv, tmp_path):
    assert train(ctr_csv(), tmp_path / "m") == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "features.json", "manifest.json", "metrics.json", "model.safetensors"]
    assert train(ctr_csv(), tmp_path / "kept", "--keep-checkpoint") == 0
    assert (tmp_path / "kept" / "checkpoint" / "state.json").is_file()
    assert (tmp_path / "kept" / "checkpoint-features.json").is_file()


def test_every_file_of_the_model_directory_gets_the_same_permissions(ctr_csv, tmp_path):
    assert train(ctr_csv(), tmp_path / "m") == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert set(modes.values()) == {modes["features.json"]}, modes


def test_training_into_a_directory_that_holds_files_exits_2_unless_overwrite(ctr_csv, tmp_path, capsys):
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert train(ctr_csv(), out) == 2
    assert capsys.readouterr().err == (f"--out {out}: the directory is not empty (notes.txt); --overwrite replaces it, "
                                       "or choose another --out\n")
    assert train(ctr_csv(), tmp_path / "model", "--keep-checkpoint") == 0
    assert train(ctr_csv(), tmp_path / "model") == 2
    assert "--resume continues its checkpoint" in capsys.readouterr().err
    assert train(ctr_csv(), tmp_path / "model", "--overwrite") == 0
    assert not (tmp_path / "model" / "checkpoint").exists()
    assert train(ctr_csv(), tmp_path / "new", "--resume") == 0  # a new --out without a checkpoint starts from scratch
    killed = tmp_path / "killed"  # kill -9 before the first checkpoint: the run's own files, no checkpoint
    killed.mkdir()
    (killed / "checkpoint-features.json").write_text("{}")
    (killed / "checkpoint-run.json").write_text("{}")
    capsys.readouterr()
    assert train(ctr_csv(), killed) == 2
    assert "it holds an interrupted run's files and no checkpoint: --resume starts that run again" in capsys.readouterr().err
    assert train(ctr_csv(), killed, "--resume") == 0


def test_resume_on_a_saved_model_without_a_checkpoint_is_refused_unless_overwrite(ctr_csv, tmp_path, capsys):
    model = tmp_path / "model"
    assert train(ctr_csv(), model) == 0  # finished: the checkpoint is removed, the model stays
    saved = (model / "model.safetensors").read_bytes()
    assert train(ctr_csv(), model, "--resume", "--seed", "9") == 2
    assert capsys.readouterr().err == (f"--resume: --out {model} holds a saved model and no checkpoint to resume; "
                                       "--overwrite trains again from scratch and replaces it, or choose another --out\n")
    assert (model / "model.safetensors").read_bytes() == saved  # not trained over
    assert train(ctr_csv(), model, "--resume", "--overwrite", "--seed", "9") == 0
    assert (model / "model.safetensors").read_bytes() != saved


def test_evaluating_a_model_beside_a_later_runs_checkpoint_says_which_model_it_is(ctr_csv, tmp_path, capsys):
    """`train --overwrite` keeps the old model until the new one is saved: interrupted, the directory holds both."""
    import os
    import shutil

    kept, model = tmp_path / "kept", tmp_path / "model"
    assert train(ctr_csv(), kept, "--keep-checkpoint") == 0
    assert train(ctr_csv(), model) == 0
    capsys.readouterr()
    assert main(["evaluate", str(kept), str(ctr_csv())]) == 0  # a finished run's kept checkpoint: nothing to say
    assert "checkpoint" not in capsys.readouterr().err
    shutil.copytree(kept / "checkpoint", model / "checkpoint")
    later = (model / "model.safetensors").stat().st_mtime + 5
    os.utime(model / "checkpoint", (later, later))
    assert main(["evaluate", str(model), str(ctr_csv())]) == 0
    assert (f"note: {model} also holds an interrupted training run's checkpoint; this is the model saved before that "
            "run started (the train command with --resume continues it)") in capsys.readouterr().err


def keep_checkpoint_of_one_epoch(train_path: Path, valid_path: Path, out: Path, *extra: str) -> None:
    """A run whose checkpoint is kept, as an interrupted run's would be."""
    assert train(train_path, out, "--keep-checkpoint", "--valid", str(valid_path), *extra) == 0
    assert (out / "checkpoint" / "state.json").exists()


@pytest.mark.parametrize("stream", [[], ["--stream"]])
def test_resume_on_other_data_is_refused_naming_the_file_that_differs(ctr_csv, tmp_path, capsys, stream):
    out, train_path, valid = tmp_path / "m", ctr_csv(), ctr_csv("valid.csv", part=1)
    keep_checkpoint_of_one_epoch(train_path, valid, out, *stream)
    other = ctr_csv("other.csv", rows=200, part=2)
    for data, differs in (
            (lambda: (other, valid), f"(train {train_path.resolve()} → {other.resolve()})"),  # another file
            (lambda: (train_path, ctr_csv("valid2.csv", part=2)), f"(valid {valid.resolve()} → "),  # another valid file
            (lambda: (ctr_csv(rows=250), valid), f"(train {train_path.resolve()} changed since (size 1")):  # rewritten
        data = data()
        code = main(["train", "--train", str(data[0]), "--valid", str(data[1]), "--out", str(out), *TINY, "--quiet",
                     "--resume", *stream])
        err = capsys.readouterr().err
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"{out / 'checkpoint'}: the checkpoint was written with other data (") and differs in err, err


def test_a_valid_file_named_like_a_pattern_is_read_as_named(ctr_csv, tmp_path):
    """``--train`` may be a glob pattern; ``--valid`` is one file, whatever characters its name holds."""
    valid = tmp_path / "v[1].csv"
    valid.write_bytes(ctr_csv("valid.csv", part=1).read_bytes())
    assert train(ctr_csv(), tmp_path / "m", "--valid", str(valid)) == 0


def test_what_a_run_killed_before_its_first_checkpoint_left_is_not_resumed(ctr_csv, tmp_path, capsys):
    """A run killed (not interrupted) before its first checkpoint leaves its encoders and record: --resume with
    other settings starts afresh instead of citing a checkpoint that does not exist, or reusing those encoders."""
    out, train_path, valid = tmp_path / "m", ctr_csv(), ctr_csv("valid.csv", part=1)
    keep_checkpoint_of_one_epoch(train_path, valid, out)
    for path in out.iterdir():  # all but what the killed run had written
        if path.name not in ("checkpoint-run.json", "checkpoint-features.json"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert (out / "checkpoint-run.json").exists() and (out / "checkpoint-features.json").exists()
    other = ctr_csv("other.csv", rows=200, part=2)
    assert train(other, out, "--valid", str(valid), "--resume", "--seed", "7") == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["rows"] == 200


def test_resume_with_another_seed_or_model_setting_is_refused_in_one_readable_line(ctr_csv, tmp_path, capsys):
    out, train_path, valid = tmp_path / "m", ctr_csv(), str(ctr_csv("valid.csv", part=1))
    keep_checkpoint_of_one_epoch(train_path, valid, out)
    assert train(train_path, out, "--valid", valid, "--resume", "--seed", "7", "--embed-dim", "8") == 2
    assert capsys.readouterr().err == (f"{out / 'checkpoint'}: the checkpoint was written with other model settings and "
                                       "training settings (embed_dim 4 → 8; seed 2026 → 7); resume with the same data "
                                       "and settings, or train into a new --out; a setting left unset takes this version's "
                                       "default, which may not be the one the run started with: give the checkpoint's value "
                                       "(the first of each pair) to resume\n")
    (out / "checkpoint-run.json").unlink()  # a checkpoint of an older version: the trainer's check still holds
    assert train(train_path, out, "--valid", valid, "--resume", "--embed-dim", "8") == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "state_dict" not in err and "size mismatch" not in err, err
    assert "the checkpoint was written with other model or optimiser settings (" in err and " → " in err
    assert train(train_path, out, "--valid", valid, "--resume") == 0  # the same command resumes


def test_resume_takes_a_flag_that_states_a_setting_the_run_trained_with_from_its_tasks_defaults(ctr_csv, tmp_path, capsys):
    out, train_path, valid = tmp_path / "m", ctr_csv(), str(ctr_csv("valid.csv", part=1))
    keep_checkpoint_of_one_epoch(train_path, valid, out, "--model", "fm")
    optimizer = json.loads((out / "config.json").read_text())["run"]["training"]["optimizer"]
    assert optimizer != TrainingConfig().optimizer, "FM's optimizer on clicks comes from the task's defaults"
    resumed = train(train_path, out, "--valid", valid, "--model", "fm", "--resume", "--optimizer", optimizer)
    assert resumed == 0, capsys.readouterr().err
    keep_checkpoint_of_one_epoch(train_path, valid, out, "--model", "fm", "--overwrite")
    assert train(train_path, out, "--valid", valid, "--model", "fm", "--resume", "--optimizer", TrainingConfig().optimizer) == 2
    assert f"(optimizer {optimizer} → {TrainingConfig().optimizer})" in capsys.readouterr().err


def test_resume_with_another_data_setting_is_refused_before_the_data_is_read(ctr_csv, tmp_path, capsys, monkeypatch):
    from deepfm.api import Estimator

    out, train_path, valid = tmp_path / "m", ctr_csv(), str(ctr_csv("valid.csv", part=1))
    keep_checkpoint_of_one_epoch(train_path, valid, out)
    monkeypatch.setattr(Estimator, "_training_data", lambda *a, **k: pytest.fail("the data was read"))
    assert train(train_path, out, "--valid", valid, "--resume", "--min-count", "3") == 2
    assert "the checkpoint was written with other data settings (min_count None → 3)" in capsys.readouterr().err


def test_an_older_versions_record_is_still_compared_on_the_settings_as_given(ctr_csv, tmp_path, capsys):
    out, train_path, valid = tmp_path / "m", ctr_csv(), str(ctr_csv("valid.csv", part=1))
    keep_checkpoint_of_one_epoch(train_path, valid, out)
    from deepfm.api import run_record
    from deepfm.cli import config_from_args

    given = config_from_args(build_parser().parse_args(
        ["train", "--train", str(train_path), "--out", str(out), *TINY, "--valid", valid]))
    record = json.loads((out / "checkpoint-run.json").read_text())
    del record["trained_with"]  # versions before the task's defaults were applied recorded the settings as given
    record["settings"] = run_record(given, str(train_path), valid)["trained_with"]
    (out / "checkpoint-run.json").write_text(json.dumps(record))
    assert train(train_path, out, "--valid", valid, "--resume", "--seed", "7") == 2
    assert "(seed 2026 → 7)" in capsys.readouterr().err
    assert train(train_path, out, "--valid", valid, "--resume") == 0, capsys.readouterr().err


def test_a_checkpoint_that_held_out_rows_by_an_older_rule_is_not_resumed(ctr_csv, tmp_path, capsys):
    """Versions before held out other rows in memory (a permutation) and counted them in the vocabularies:
    resuming such a run would train on rows it had validated on, so its record without the rule is refused."""
    out, train_path = tmp_path / "m", ctr_csv()
    assert train(train_path, out, "--keep-checkpoint") == 0
    record = json.loads((out / "checkpoint-run.json").read_text())
    assert record["trained_with"]["data"]["held_out_by"].startswith("position hash")
    del record["trained_with"]["data"]["held_out_by"]
    (out / "checkpoint-run.json").write_text(json.dumps(record))
    assert train(train_path, out, "--resume") == 2
    assert "held-out rows: an older version's → position hash" in capsys.readouterr().err
    record["trained_with"]["data"]["held_out_by"] = "position hash, not counted by the encoders"  # the hash from 0
    (out / "checkpoint-run.json").write_text(json.dumps(record))
    assert train(train_path, out, "--resume") == 2
    assert "held_out_by position hash, not counted by the encoders → position hash from 1" in capsys.readouterr().err


def test_resuming_a_run_with_a_valid_file_without_it_names_that_and_no_older_version(ctr_csv, tmp_path, capsys):
    out, train_path = tmp_path / "m", ctr_csv()
    assert train(train_path, out, "--valid", str(ctr_csv("valid.csv", part=1)), "--keep-checkpoint") == 0
    capsys.readouterr()
    assert train(train_path, out, "--resume") == 2
    error = capsys.readouterr().err
    assert "valid_fraction 0.0 → 0.1" in error and "older version" not in error, error


def test_the_end_of_training_line_prints_metric_value_pairs_as_the_epoch_log_does(ctr_csv, tmp_path, capsys):
    assert main(["train", "--train", str(ctr_csv()), "--valid", str(ctr_csv("valid.csv", part=1)),
                 "--out", str(tmp_path / "m"), *TINY]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(rf"saved {re.escape(str(tmp_path / 'm'))} \(best epoch 1: valid auc \d\.\d{{5}}  "
                        r"valid logloss \d+\.\d{5}\)", last), last


def help_text(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*command, "--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_the_help_of_a_configured_command_names_each_options_config_key(capsys):
    """A new user of the Python API could not tell that --task is data.task: train, tune and compare name each
    option's key; predict's options are no config keys."""
    for command in ("train", "tune", "compare"):
        text = help_text(capsys, command)
        assert "[data.task]" in text and "[training.epochs]" in text and "[model.embed_dim]" in text, command
    assert "default 20; FM 80 (regression), DeepFM 80 (regression) [training.epochs]" in help_text(capsys, "train")
    assert "--categorical CATEGORICAL as in deepfm train [data.categorical]" in help_text(capsys, "compare")
    assert "--batch-norm {on,off} batch norm after each hidden layer (default on) [model.batch_norm]" in help_text(
        capsys, "train")  # as the flag takes it, not True
    assert "[data." not in help_text(capsys, "predict")


def test_train_help_shows_the_config_defaults_and_the_models_own(capsys):
    text = help_text(capsys, "train")
    for shown in ("--epochs EPOCHS default 20", "--batch-size BATCH_SIZE rows a step; where it is not set, LR and FM on "
                  "clicks and ratings take a smaller power of two (down to 32) on under 8,192 (LR) or 32,768 (FM) training "
                  "rows, as the log says (default 512;",
                  "learning rate: the tables', and the MLP's unless --dense-lr sets that, or DeepFM's own on clicks and "
                  "ratings (see --dense-lr) (default 0.001; LR 0.01, FM 0.1 (binary) / 0.03 (multiclass, regression, ordinal), "
                  "DeepFM 0.01 (binary) / 0.03 (regression), DeepFM 0.001 (long tail: ≥ 0.3 distinct ids per training row, "
                  "not regression))",
                  "k, the embedding width (default 10; FM 64 (binary, regression) / 10 (multiclass, ordinal), "
                  "DeepFM 64 (binary, regression), DeepFM 10 (long tail: ≥ 0.3 distinct ids per training row, not regression))",
                  "(default 0.0; FM 0.01 (long tail: ≥ 0.3 distinct ids per training row))",
                  "--dropout DROPOUT default 0.2", "(0: never stop early) (default 2; FM 3 (regression), DeepFM 3 (regression))",
                  "(default 400,400,400; DeepFM 200,200 (binary, regression), DeepFM 400,400,400 (long tail: ≥ 0.3 distinct "
                  "ids per training row, not regression), DeepFM 400,400,400 (frequent ids: < 0.01 distinct ids per training "
                  "row, not regression))",
                  "--nproc", "(default 1)"):
        assert shown in text


def test_train_help_lists_every_model(capsys):
    from deepfm.models import MODELS

    text = help_text(capsys, "train")
    model_help = text[text.rindex("--model MODEL") + len("--model MODEL"):text.index("--no-pretrain fnn")]
    assert {name.strip() for name in model_help.split(";")[0].split("|")} == set(MODELS), model_help
    assert "(default deepfm)" in model_help


def test_serve_help_shows_the_port_and_limits(capsys):
    text = help_text(capsys, "serve")
    assert "--port PORT default 8000" in text
    assert "rows per request before 413 (default" in text


def test_tune_help_offers_only_what_tune_takes():
    import contextlib
    import io

    for flag in ("--solver", "--sweeps", "--burn-in", "--samples", "--als-l2"):
        with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
            main(["tune", flag, "1"])  # argparse: unrecognised
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["tune"].format_help().split())
    assert "--resume" not in text and "--solver" not in text
    assert "--solver" in " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())


def test_help_and_version_answer_without_loading_torch_or_pyarrow():
    import subprocess
    import sys

    code = ("import sys; from deepfm.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pyarrow', 'numba') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_train_with_multi_valued_column(write_table, tmp_path, capsys):
    rows = 120
    path = write_table("train.csv", {
        "label": [i % 2 for i in range(rows)],
        "tags": ["a|b:0.5" if i % 2 else ("c" if i % 3 else None) for i in range(rows)],
        "city": [f"c{i % 4}" for i in range(rows)],
    })
    code = train(path, tmp_path / "model", "--multi", "tags", "--json", "--valid-fraction", "0")
    assert code == 0
    assert json_lines(capsys.readouterr().out)[-1]["rows"] == rows
    features = json.loads((tmp_path / "model" / "features.json").read_text())
    assert {f["name"]: f["kind"] for f in features["fields"]} == {"city": "categorical", "tags": "multi"}


def test_train_and_evaluate_a_libfm_file(write_text, tmp_path, capsys):
    lines = [f"{i % 2} {i % 5}:1 {10 + i % 7}:1 {20 + i % 3}:1" for i in range(100)]
    path = write_text("train.libfm", "\n".join(lines) + "\n")
    assert train(path, tmp_path / "model") == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "model"), str(path), "--json"]) == 0
    assert json_lines(capsys.readouterr().out)[-1]["rows"] == 100


def test_label_option_with_a_libfm_file_exits_2_instead_of_being_ignored(write_text, tmp_path, capsys):
    path = write_text("train.libfm", "1 0:1 5:1\n0 1:1 6:1\n")
    assert train(path, tmp_path / "model", "--label", "click") == 2
    error = capsys.readouterr().err
    assert "--label click" in error and "libfm file" in error and "Traceback" not in error
    assert not (tmp_path / "model").exists()


# -- evaluate ---------------------------------------------------------------------------------


def test_evaluate_json_prints_rows_auc_and_logloss_for_a_binary_model(ctr_model, capsys):
    code = main(["evaluate", str(ctr_model["model"]), str(ctr_model["test"]), "--json"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert list(result) == ["rows", "auc", "logloss"]
    assert result["rows"] == 300
    assert 0.0 <= result["auc"] <= 1.0
    assert result["logloss"] > 0


def test_evaluate_label_reads_the_label_from_a_column_named_otherwise_than_in_training(ctr_model, tmp_path, capsys):
    """A model fitted by deepfm.sklearn names its label 'label': Adult's file names it 'income', and evaluate had no
    way to say so (renaming the header was the only one)."""
    table = pacsv.read_csv(ctr_model["test"])
    renamed = tmp_path / "renamed.csv"
    pacsv.write_csv(table.rename_columns(["clicked" if name == "label" else name for name in table.column_names]), renamed)
    assert main(["evaluate", str(ctr_model["model"]), str(ctr_model["test"]), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(ctr_model["model"]), str(renamed), "--json"]) == 2
    assert "unless its --label names this file's" in capsys.readouterr().err
    assert main(["evaluate", str(ctr_model["model"]), str(renamed), "--json", "--label", "clicked"]) == 0
    assert json.loads(capsys.readouterr().out) == expected


def strict_json(line: str) -> dict:
    """``line`` parsed as JSON proper, which has no NaN or Infinity."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_evaluate_json_gives_null_for_an_auc_undefined_on_one_class(ctr_model, tmp_path, capsys):
    import pyarrow.compute as pc

    table = pacsv.read_csv(ctr_model["test"])
    path = tmp_path / "positives.csv"
    pacsv.write_csv(table.filter(pc.equal(table["label"], 1)), path)
    assert main(["evaluate", str(ctr_model["model"]), str(path), "--json"]) == 0
    result = strict_json(capsys.readouterr().out)
    assert result["auc"] is None and result["logloss"] > 0


def test_evaluate_json_prints_rows_rmse_and_mae_for_a_regression_model(rating_model, capsys):
    code = main(["evaluate", str(rating_model["model"]), str(rating_model["data"]), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert list(result) == ["rows", "rmse", "mae"]
    assert result["rows"] == rating_model["rows"]
    assert result["rmse"] >= result["mae"] >= 0


def test_evaluate_without_json_prints_one_readable_line(ctr_model, capsys):
    code = main(["evaluate", str(ctr_model["model"]), str(ctr_model["test"])])
    out = capsys.readouterr().out
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    assert out.startswith("rows 300  auc ")
    assert "logloss" in out


def test_evaluate_is_reproducible(ctr_model, capsys):
    main(["evaluate", str(ctr_model["model"]), str(ctr_model["test"]), "--json"])
    main(["evaluate", str(ctr_model["model"]), str(ctr_model["test"]), "--json"])
    first, second = json_lines(capsys.readouterr().out)
    assert first == second


def test_evaluate_with_a_format_override(ctr_model, tmp_path, capsys):
    table = pacsv.read_csv(ctr_model["test"])
    tsv = tmp_path / "test.data"
    pacsv.write_csv(table, tsv, pacsv.WriteOptions(delimiter="\t"))
    assert main(["evaluate", str(ctr_model["model"]), str(tsv), "--format", "tsv", "--json"]) == 0
    assert json_lines(capsys.readouterr().out)[-1]["rows"] == 300


# -- predict ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["predictions.csv", "predictions.parquet"])
def test_predict_writes_one_probability_per_input_row(ctr_model, tmp_path, name):
    out = tmp_path / name
    assert main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", str(out)]) == 0
    predictions = read_predictions(out)
    assert len(predictions) == 300
    assert all(0.0 <= p <= 1.0 for p in predictions)


def test_predict_csv_and_parquet_agree(ctr_model, tmp_path):
    main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", str(tmp_path / "p.csv")])
    main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", str(tmp_path / "p.parquet")])
    assert read_predictions(tmp_path / "p.csv") == pytest.approx(read_predictions(tmp_path / "p.parquet"))


def test_predict_keeps_the_input_row_order(ctr_model, tmp_path):
    table = pacsv.read_csv(ctr_model["test"])
    reversed_path = tmp_path / "reversed.csv"
    pacsv.write_csv(table.take(list(range(len(table) - 1, -1, -1))), reversed_path)
    main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", str(tmp_path / "a.csv")])
    main(["predict", str(ctr_model["model"]), str(reversed_path), "--out", str(tmp_path / "b.csv")])
    assert read_predictions(tmp_path / "b.csv") == pytest.approx(read_predictions(tmp_path / "a.csv")[::-1])


def test_predict_needs_no_label_column(ctr_model, tmp_path):
    unlabelled = tmp_path / "unlabelled.csv"
    pacsv.write_csv(pacsv.read_csv(ctr_model["test"]).drop(["label"]), unlabelled)
    assert main(["predict", str(ctr_model["model"]), str(unlabelled), "--out", str(tmp_path / "p.csv")]) == 0
    assert len(read_predictions(tmp_path / "p.csv")) == 300


def test_predict_regression_writes_ratings(rating_model, tmp_path):
    out = tmp_path / "ratings.parquet"
    assert main(["predict", str(rating_model["model"]), str(rating_model["data"]), "--out", str(out)]) == 0
    assert len(read_predictions(out)) == rating_model["rows"]


@pytest.mark.parametrize("name", ["p.tsv", "p.csv.gz", "p.TSV.GZ"])
def test_predict_writes_tsv_and_gzipped_files_by_their_names_as_the_readers_read_them(ctr_model, tmp_path, name):
    main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", str(tmp_path / "p.csv")])
    assert main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", str(tmp_path / name)]) == 0
    delimiter = "\t" if ".tsv" in name.lower() else ","
    text = gzip.open(tmp_path / name) if name.lower().endswith(".gz") else open(tmp_path / name, "rb")
    with text:
        table = pacsv.read_csv(text, parse_options=pacsv.ParseOptions(delimiter=delimiter))
    assert table.column_names == ["prediction"]
    assert table.column("prediction").to_pylist() == read_predictions(tmp_path / "p.csv")


def test_predict_to_tsv_quotes_a_value_only_for_a_tab_not_for_a_comma(ctr_model, tmp_path):
    table = pacsv.read_csv(ctr_model["test"]).slice(0, 2)
    for cities, written in ((["paris, fr", "rome"], ["paris, fr", "rome"]), (["a\tb", "rome"], ['"a\tb"', '"rome"'])):
        rows = tmp_path / "rows.csv"
        pacsv.write_csv(table.append_column("city", pa.array(cities)), rows)
        assert main(["predict", str(ctr_model["model"]), str(rows), "--out", str(tmp_path / "p.tsv"), "--keep", "city"]) == 0
        lines = (tmp_path / "p.tsv").read_text().splitlines()
        assert lines[0] == "city\tprediction"
        assert [line.rsplit("\t", 1)[0] for line in lines[1:]] == written


@pytest.mark.parametrize("name", ["p.json", "p.parquet.gz", "p.gz"])
def test_predict_to_an_unsupported_file_type_exits_2(ctr_model, tmp_path, capsys, name):
    code = main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", str(tmp_path / name)])
    assert code == 2
    assert "use a .csv, .tsv or .parquet file name (.txt is written as CSV and .tab as TSV" in capsys.readouterr().err
    assert not (tmp_path / name).exists()


def test_predict_to_dev_null_says_to_send_stdout_there(ctr_model, capsys):
    assert main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", os.devnull]) == 2
    assert capsys.readouterr().err.endswith(f"leave out --out and send the CSV on stdout there: deepfm predict MODEL DATA > "
                                            f"{os.devnull}\n")


def test_predict_refuses_to_write_its_predictions_over_the_file_it_scores(ctr_model, tmp_path, capsys):
    """A new user's predict same.csv --out same.csv replaced the 20,000 rows by their predictions, exit 0."""
    scored = tmp_path / "same.csv"
    shutil.copy(ctr_model["test"], scored)
    before = scored.read_bytes()
    for out in (str(scored), os.path.join(str(tmp_path), ".", "same.csv")):
        assert main(["predict", str(ctr_model["model"]), str(scored), "--out", out]) == 2
        assert f"--out {out}: that is the file being scored, whose rows the predictions would replace" in (
            capsys.readouterr().err)
    assert main(["predict", str(ctr_model["model"]), str(tmp_path / "sam*.csv"), "--out", str(scored)]) == 2
    assert scored.read_bytes() == before


def test_predict_into_a_folder_that_does_not_exist_creates_it_as_export_does(ctr_model, tmp_path):
    out = tmp_path / "new" / "deeper" / "p.parquet"
    assert main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", str(out)]) == 0
    assert len(read_predictions(out)) == 300


def test_predict_to_a_place_it_cannot_write_exits_2_before_reading_the_rows(ctr_model, tmp_path, capsys, monkeypatch):
    from deepfm.api import Estimator

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    (tmp_path / "d.csv").mkdir()
    monkeypatch.setattr(Estimator, "read", lambda *a, **k: pytest.fail("read the rows before checking --out"))
    for out in (blocker / "p.csv", blocker / "sub" / "p.csv", tmp_path / "d.csv"):  # under a file; a folder itself
        code = main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", str(out)])
        error = capsys.readouterr().err
        assert code == 2 and f"--out {out}" in error and "Traceback" not in error, error


def test_predict_creates_no_folder_when_the_model_cannot_be_loaded(ctr_model, tmp_path):
    out = tmp_path / "results" / "p.csv"
    assert main(["predict", str(tmp_path / "no_model"), str(ctr_model["test"]), "--out", str(out)]) == 2
    assert not (tmp_path / "results").exists()


def test_predict_without_out_writes_csv_to_stdout_and_out_dash_does_too(ctr_model, tmp_path, capsys):
    main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", str(tmp_path / "p.csv")])
    expected = read_predictions(tmp_path / "p.csv")
    capsys.readouterr()
    for dash in ([], ["--out", "-"]):
        assert main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), *dash]) == 0
        captured = capsys.readouterr()
        table = pacsv.read_csv(pa.py_buffer(captured.out.encode()))
        assert table.column_names == ["prediction"]
        assert table.column("prediction").to_pylist() == pytest.approx(expected)
        assert captured.err == ""  # stdout is the data; nothing else to say


def checkout_env() -> dict[str, str]:
    """The environment of a new Python process that imports deepfm from this checkout."""
    import deepfm

    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(deepfm.__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}


def deepfm_process(*args: str, **popen: object):
    """``python -m deepfm ARGS`` in a new process, from this checkout, stderr piped, stdout buffered as a user's
    is (not PYTHONUNBUFFERED)."""
    import subprocess
    import sys

    env = checkout_env()
    env.pop("PYTHONUNBUFFERED", None)
    return subprocess.Popen([sys.executable, "-m", "deepfm", *args], stderr=subprocess.PIPE, env=env, **popen)


needs_sigpipe = pytest.mark.skipif(not hasattr(signal, "SIGPIPE"), reason="Windows has no SIGPIPE")


@needs_sigpipe
def test_predicting_into_head_ends_as_sigpipe_ends_unix_tools(ctr_model, tmp_path):
    import subprocess

    rows = tmp_path / "many.csv"  # far more than a pipe holds: the command still writes when head has gone
    pacsv.write_csv(make_ctr_table(SyntheticSpec(rows=20_000, seed=5), part=2)[0], rows)
    process = deepfm_process("predict", str(ctr_model["model"]), str(rows), stdout=subprocess.PIPE)
    head = subprocess.run(["head", "-n", "1"], stdin=process.stdout, capture_output=True)
    process.stdout.close()  # our copy of the read end: once head has gone, no one reads
    error = process.stderr.read().decode()
    assert head.stdout == b"prediction\n"
    assert process.wait() == -signal.SIGPIPE  # killed by SIGPIPE, as coreutils are: a shell reports 141
    assert error == ""  # no traceback, no error text


@needs_sigpipe
@pytest.mark.parametrize("command", [["predict", "{model}", "{test}"], ["evaluate", "{model}", "{test}", "--json"],
                                     ["train", "--help"], ["--version"]])
def test_every_command_writing_into_a_closed_pipe_ends_as_sigpipe_ends_unix_tools(ctr_model, command):
    import subprocess

    args = [part.format(model=ctr_model["model"], test=ctr_model["test"]) for part in command]
    process = deepfm_process(*args, stdout=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the command writes, as after `| head -0`
    error = process.stderr.read().decode()
    assert process.wait() == -signal.SIGPIPE
    assert error == ""


@pytest.mark.skipif(os.name == "nt", reason="POSIX descriptors")
@pytest.mark.parametrize("command", [["--version"], ["train", "--help"]], ids=["version", "help"])
def test_a_command_without_stdout_writes_its_text_to_stderr_as_argparse_does(command):
    """``deepfm --version >&-``: no stdout at all (sys.stdout is None), so argparse writes to stderr; no traceback."""
    import os
    import subprocess

    process = deepfm_process(*command, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    error = process.stderr.read().decode()
    assert process.wait() == 0
    assert "Traceback" not in error and ("deepfm" in error or "usage:" in error)


def test_predict_keep_copies_input_columns_beside_the_prediction_in_the_order_given(ctr_model, tmp_path):
    table = pacsv.read_csv(ctr_model["test"])
    ids = [f"row-{i}" for i in range(len(table))]
    with_ids = tmp_path / "with_ids.csv"
    pacsv.write_csv(table.append_column("id", pa.array(ids)), with_ids)
    out = tmp_path / "p.parquet"
    assert main(["predict", str(ctr_model["model"]), str(with_ids), "--out", str(out), "--keep", "id,label"]) == 0
    kept = pq.read_table(out)
    assert kept.column_names == ["id", "label", "prediction"]
    assert kept.column("id").to_pylist() == ids
    assert [str(v) for v in kept.column("label").to_pylist()] == [str(v) for v in table.column("label").to_pylist()]
    main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--out", str(tmp_path / "plain.csv")])
    assert kept.column("prediction").to_pylist() == pytest.approx(read_predictions(tmp_path / "plain.csv"))


def test_predict_keep_from_csv_into_parquet_types_numbers_as_pandas_reads_them(ctr_model, tmp_path):
    """An integer id column joins back onto the requests (int64 on both sides); ids with a leading zero or too
    long for int64 stay text, a column of decimals is float64, unless one of its values is an integer float64
    rounds (17 digits beside a 0.5: 2,811 of 3,000 such ids lost digits)."""
    table = pacsv.read_csv(ctr_model["test"])
    rows = len(table)
    columns = {"id": [100_000 + i for i in range(rows)], "zip": [f"{i:05d}" for i in range(rows)],
               "big": [str(10**19 + i) for i in range(rows)], "price": [0.5 + i for i in range(rows)],
               "phone": [f"+1555{i:07d}" for i in range(rows)],
               "mixed": ["0.5"] + [str(10**17 + 13 * i) for i in range(1, rows)]}
    with_ids = tmp_path / "requests.csv"
    pacsv.write_csv(pa.table({**{n: table[n] for n in table.column_names}, **columns}), with_ids)
    out = tmp_path / "scored.parquet"
    assert main(["predict", str(ctr_model["model"]), str(with_ids), "--out", str(out), "--keep", "id,zip,big,price,phone,mixed"]) == 0
    scored = pq.read_table(out)
    assert [scored.schema.field(n).type for n in ("id", "zip", "big", "price", "phone", "mixed")] == [
        pa.int64(), pa.string(), pa.string(), pa.float64(), pa.string(), pa.string()]  # a signed number such as a phone stays text
    assert scored["mixed"].to_pylist() == columns["mixed"]
    assert scored["id"].to_pylist() == columns["id"] and scored["zip"].to_pylist() == columns["zip"]
    assert scored["big"].to_pylist() == columns["big"] and scored["price"].to_pylist() == columns["price"]
    assert main(["predict", str(ctr_model["model"]), str(with_ids), "--out", str(tmp_path / "s.csv"), "--keep", "zip"]) == 0
    assert (tmp_path / "s.csv").read_text().splitlines()[1].startswith("00000,")  # CSV out: the text as it came


def test_predict_csv_quotes_only_the_values_that_need_it(ctr_model, tmp_path):
    table = pacsv.read_csv(ctr_model["test"])
    ids = [f"row-{i}" for i in range(len(table))]
    plain, awkward = tmp_path / "plain_ids.csv", tmp_path / "awkward_ids.csv"
    pacsv.write_csv(table.append_column("id", pa.array(ids)), plain)
    pacsv.write_csv(table.append_column("id", pa.array(['a "b", c'] + ids[1:])), awkward)
    assert main(["predict", str(ctr_model["model"]), str(plain), "--out", str(tmp_path / "p.csv"), "--keep", "id"]) == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "id,prediction"
    assert all(line.startswith(f"{i},") for i, line in zip(ids, lines[1:]))
    assert main(["predict", str(ctr_model["model"]), str(awkward), "--out", str(tmp_path / "q.csv"), "--keep", "id"]) == 0
    assert (tmp_path / "q.csv").read_text().splitlines()[1].startswith('"a ""b"", c",')
    assert pacsv.read_csv(tmp_path / "q.csv").column("id").to_pylist() == ['a "b", c'] + ids[1:]


@pytest.mark.parametrize("column", [pa.array(["row,1", "row 2"]).dictionary_encode(), pa.array([b"x,y", b'"z'], pa.binary()),
                                    pa.array(["a", ""]), pa.array(["a\nb", None])], ids=["dictionary", "binary", "empty", "newline"])
def test_predict_csv_round_trips_every_kept_column_and_name(column, tmp_path):
    from deepfm.outputs import write_csv

    table = pa.table({'odd "name",\r': column, "prediction": [0.25, 0.5]})
    with (tmp_path / "p.csv").open("wb") as file:
        write_csv(table, file)
    back = pacsv.read_csv(tmp_path / "p.csv", convert_options=pacsv.ConvertOptions(
        column_types={table.column_names[0]: column.type.value_type if pa.types.is_dictionary(column.type) else column.type},
        strings_can_be_null=True, quoted_strings_can_be_null=False))
    assert back.column_names == table.column_names
    expected = column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column
    assert back.column(0).to_pylist() == expected.to_pylist() and back.column(1).to_pylist() == [0.25, 0.5]


def test_predict_keep_of_a_column_the_file_lacks_exits_2_listing_the_columns(ctr_model, tmp_path, capsys):
    assert main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--keep", "id"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{ctr_model['test']}:1: --keep id: no such column (columns: label, ")
    assert main(["predict", str(ctr_model["model"]), str(ctr_model["test"]), "--keep", "c2"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("; did you mean 'C2'?")  # as --categorical and --ignore suggest


# -- configuration files ----------------------------------------------------------------------


def toml_config(path: Path, train_path: Path, out: Path, epochs: int = 1, model: str = "deepfm") -> Path:
    path.write_text(f"""
out = "{out}"

[data]
train = "{train_path}"

[model]
name = "{model}"
embed_dim = 4
mlp = [16, 16]

[training]
epochs = {epochs}
batch_size = 64
""")
    return path


def yaml_config(path: Path, train_path: Path, out: Path, epochs: int = 1, model: str = "deepfm") -> Path:
    path.write_text(f"""
out: "{out}"
data:
  train: "{train_path}"
model:
  name: {model}
  embed_dim: 4
  mlp: [16, 16]
training:
  epochs: {epochs}
  batch_size: 64
""")
    return path


def saved_run(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())["run"]


@pytest.mark.parametrize("write_config", [toml_config, yaml_config], ids=["toml", "yaml"])
def test_config_file_alone_drives_a_run(write_config, ctr_csv, tmp_path, capsys):
    config = write_config(tmp_path / f"run.{'toml' if write_config is toml_config else 'yaml'}",
                          ctr_csv(), tmp_path / "model", epochs=2, model="fm")
    code = main(["train", "--config", str(config), "--json", "--quiet"])
    assert code == 0
    assert json_lines(capsys.readouterr().out)[-1]["epochs"] == 2
    run = saved_run(tmp_path / "model")
    assert run["model"]["name"] == "fm"
    assert run["model"]["embed_dim"] == 4
    assert run["training"]["batch_size"] == 64


@pytest.mark.parametrize("write_config", [toml_config, yaml_config], ids=["toml", "yaml"])
def test_flags_override_the_config_file(write_config, ctr_csv, tmp_path, capsys):
    config = write_config(tmp_path / f"run.{'toml' if write_config is toml_config else 'yml'}",
                          ctr_csv(), tmp_path / "from-config", epochs=1, model="fm")
    code = main(["train", "--config", str(config), "--epochs", "2", "--model", "lr", "--out", str(tmp_path / "from-flag"),
                 "--precision", "bf16", "--json", "--quiet"])
    assert code == 0
    assert json_lines(capsys.readouterr().out)[-1]["epochs"] == 2
    assert not (tmp_path / "from-config").exists()
    run = saved_run(tmp_path / "from-flag")
    assert run["model"]["name"] == "lr"
    assert run["training"]["precision"] == "bf16"
    assert run["model"]["embed_dim"] == 4  # not overridden: still from the file


def test_dense_optimizer_and_dense_lr_flags_reach_the_saved_config(ctr_csv, tmp_path, capsys):
    code = main(["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "model"), "--epochs", "1",
                 "--optimizer", "adagrad", "--dense-optimizer", "adam", "--dense-lr", "0.002", "--quiet"])
    assert code == 0
    training = saved_run(tmp_path / "model")["training"]
    assert (training["optimizer"], training["dense_optimizer"], training["dense_lr"]) == ("adagrad", "adam", 0.002)


def test_invalid_value_in_a_config_file_exits_2_naming_the_key(ctr_csv, tmp_path, capsys):
    config = toml_config(tmp_path / "run.toml", ctr_csv(), tmp_path / "model", epochs=0)
    code = main(["train", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2
    line = 1 + config.read_text().splitlines().index("epochs = 0")
    assert f"{config}:{line}: training.epochs:" in err
    assert "Traceback" not in err
    assert not (tmp_path / "model").exists()


def test_invalid_value_in_a_yaml_config_exits_2_naming_the_key(ctr_csv, tmp_path, capsys):
    config = yaml_config(tmp_path / "run.yaml", ctr_csv(), tmp_path / "model")
    config.write_text(config.read_text().replace("name: deepfm", "name: transformer"))
    assert main(["train", "--config", str(config)]) == 2
    assert "model.name:" in capsys.readouterr().err


def test_unknown_key_in_a_config_file_exits_2_naming_it(ctr_csv, tmp_path, capsys):
    config = toml_config(tmp_path / "run.toml", ctr_csv(), tmp_path / "model")
    config.write_text(config.read_text().replace("embed_dim = 4", "embed_dim = 4\ndepth = 3"))
    assert main(["train", "--config", str(config)]) == 2
    assert "model.depth:" in capsys.readouterr().err


def test_a_misspelt_key_in_a_config_file_suggests_the_setting_meant(ctr_csv, tmp_path, capsys):
    config = toml_config(tmp_path / "run.toml", ctr_csv(), tmp_path / "model")
    config.write_text(config.read_text().replace("embed_dim = 4", "embed_dims = 4"))
    assert main(["train", "--config", str(config)]) == 2
    assert "model.embed_dims: Extra inputs are not permitted (did you mean model.embed_dim?)" in capsys.readouterr().err


def test_a_key_in_another_section_names_the_section_it_belongs_to(ctr_csv, tmp_path, capsys):
    config = toml_config(tmp_path / "run.toml", ctr_csv(), tmp_path / "model")
    config.write_text(config.read_text().replace("embed_dim = 4", "embed_dim = 4\nepochs = 3"))
    assert main(["train", "--config", str(config)]) == 2
    assert "model.epochs: Extra inputs are not permitted (epochs is a key of the training section: training.epochs)" in (
        capsys.readouterr().err)
    with pytest.raises(ConfigError, match=r"training.task: .* \(task is a key of the data section: data.task\)"):
        Estimator(training={"task": "multiclass"})
    with pytest.raises(ConfigError, match=r"model.train: .* \(train is a key of the data section: data.train\)"):
        Estimator(model={"train": "x.csv"})  # not model.pretrain, a close key of its own section


@pytest.mark.parametrize(("name", "said"), [("ffm", "ffm (field-aware FM) is not built here: a libFFM file's fields group"),
                                           ("xDeepFM", "xDeepFM is not built here; the models are lr, fm, deepfm and")])
def test_a_model_of_the_field_this_library_does_not_build_is_named_as_such(name, said):
    with pytest.raises(ConfigError, match=re.escape(said)):
        Estimator(model={"name": name})


def test_a_value_outside_a_settings_choices_suggests_the_choice_meant(ctr_csv, tmp_path, capsys):
    """``--model DeepFM`` listed the models and left the reader to spot the case (a new user's run)."""
    assert train(ctr_csv(), tmp_path / "model", "--model", "DeepFM") == 2
    assert capsys.readouterr().err.rstrip().endswith("or 'fm_dnn' (did you mean 'deepfm'?)")
    config = toml_config(tmp_path / "run.toml", ctr_csv(), tmp_path / "model")
    config.write_text(config.read_text() + '\n[training]\noptimizer = "Adagrad"\n' if "[training]" not in
                      config.read_text() else config.read_text().replace("[training]", '[training]\noptimizer = "Adagrad"'))
    assert main(["train", "--config", str(config)]) == 2
    assert capsys.readouterr().err.rstrip().endswith("or 'rowwise_adagrad' (did you mean 'adagrad'?)")


def test_a_bad_value_in_a_config_file_is_named_at_its_line(ctr_csv, tmp_path, capsys):
    for config in (toml_config(tmp_path / "run.toml", ctr_csv(), tmp_path / "model"),
                   yaml_config(tmp_path / "run.yaml", ctr_csv(), tmp_path / "model")):
        text = config.read_text()
        config.write_text(text.replace("embed_dim = 4", "embed_dim = \"four\"").replace("embed_dim: 4", "embed_dim: four"))
        line = 1 + next(n for n, row in enumerate(config.read_text().splitlines()) if "four" in row)
        assert main(["train", "--config", str(config)]) == 2
        assert f"{config}:{line}: model.embed_dim: Input should be a valid integer" in capsys.readouterr().err


def test_a_bad_value_a_flag_gives_is_not_put_on_the_config_files_line(ctr_csv, tmp_path, capsys):
    config = toml_config(tmp_path / "run.toml", ctr_csv(), tmp_path / "model")
    config.write_text(config.read_text().replace("embed_dim = 4", "embed_dim = 4\ndropout = 0.1"))
    assert main(["train", "--config", str(config), "--dropout", "1.5"]) == 2
    assert f"{config}: model.dropout:" in capsys.readouterr().err


def test_options_the_chosen_model_does_not_read_are_named_and_the_rare_value_rules_min_count_is_saved(
        ctr_csv, tmp_path, capsys):
    """A new user's run: ``--model lr --mlp 32 --dropout 0.5`` trained silently and config.json recorded them as if
    applied; and config.json said min_count null where the data rule had applied 10 (metrics.json's ids)."""
    out = tmp_path / "model"
    assert main(["train", "--train", str(ctr_csv(rows=600)), "--out", str(out), "--model", "lr", "--mlp", "32",
                 "--dropout", "0.5", "--epochs", "1"]) == 0
    assert "model lr does not use model.mlp, model.dropout: they are not applied" in capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())["run"]["data"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert saved["min_count"] is not None and saved["min_count"] == metrics["ids"]["min_count"]
    assert main(["train", "--train", str(ctr_csv(rows=600)), "--out", str(tmp_path / "fm"), "--model", "fm",
                 "--embed-dim", "4", "--epochs", "1"]) == 0
    assert "does not use" not in capsys.readouterr().err
    assert main(["train", "--train", str(ctr_csv(rows=600)), "--out", str(tmp_path / "quiet"), "--model", "lr",
                 "--dropout", "0.5", "--epochs", "1", "--quiet"]) == 0  # --quiet had dropped the note with the log
    assert "note: model lr does not use model.dropout: it is not applied" in capsys.readouterr().err


def test_invalid_flag_value_exits_2_naming_the_key(ctr_csv, tmp_path, capsys):
    code = main(["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "model"), "--dropout", "1.5"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model.dropout:" in err
    assert "Traceback" not in err


def test_non_integer_mlp_width_exits_2_naming_the_key(ctr_csv, tmp_path, capsys):
    code = main(["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "model"), "--mlp", "16,wide"])
    assert code == 2
    assert "model.mlp" in capsys.readouterr().err


@pytest.mark.parametrize("flags, key", [
    (["--mlp=-400"], "model.mlp"), (["--mlp", "400,-400"], "model.mlp"), (["--mlp="], "model.mlp"),
    (["--seed", "-1"], "training.seed"), (["--lr", "inf"], "training.lr"), (["--embed-l2", "nan"], "training.embed_l2"),
])
def test_a_sign_an_empty_width_a_negative_seed_or_a_non_finite_number_exits_2_before_anything_is_written(
        flags, key, ctr_csv, tmp_path, capsys):
    """A new user's runs: "-400" was read as a separator (MLP [400]), a negative seed crashed in NumPy after the run's
    first files were written (blocking the folder), lr inf passed and ended in a NaN loss."""
    out = tmp_path / "model"
    assert main(["train", "--train", str(ctr_csv()), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert f"{key}:" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("flags", [["--multi", "C1", "--numeric", "C1"], ["--ignore", "C1", "--categorical", "C1"],
                                   ["--weight", "C1", "--categorical", "C1"], ["--numeric", "C1", "--categorical", "C1"]])
def test_a_column_named_by_two_kind_options_exits_2_naming_both(flags, ctr_csv, tmp_path, capsys):
    """A new user's '--multi user --numeric user' trained user as multi-valued without a word. Refused when a run
    reads its data: a model saved before the rule, whose config.json names a column twice, still loads."""
    from deepfm.config import DataConfig

    assert main(["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "m"), *flags]) == 2
    err = capsys.readouterr().err
    assert "column 'C1' is named by --" in err and "name it once" in err and "Traceback" not in err
    assert DataConfig(ignore=("C1",), categorical=("C1",)).columns_named_twice() == {"C1": ["categorical", "ignore"]}


def test_an_out_that_cannot_be_made_is_refused_before_training_or_a_search(ctr_csv, tmp_path, capsys):
    """A new user's --out under a file: the trials and the refit ran, then a NotADirectoryError traceback."""
    (tmp_path / "a.csv").write_text("x")
    for command in (["train"], ["tune", "--valid", str(ctr_csv()), "--trials", "1"]):
        code = main([*command, "--train", str(ctr_csv()), "--out", str(tmp_path / "a.csv" / "run")])
        assert code == 2 and f"cannot be made, {tmp_path / 'a.csv'} is a file" in capsys.readouterr().err


def test_serve_refuses_a_port_out_of_range(capsys):
    """Port 99999 was taken modulo 65536: the server listened on 34463 while its log said 99999."""
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "somewhere", "--port", "99999"])
    assert stopped.value.code == 2 and "99999 is not a port (0-65535)" in capsys.readouterr().err


def test_the_papers_dashed_mlp_widths_are_read_as_layers(ctr_csv, tmp_path):
    from deepfm.config import ModelConfig

    assert ModelConfig(mlp="400-400-400").mlp == (400, 400, 400) == ModelConfig(mlp=" 400, 400,400").mlp


def test_unparseable_config_file_exits_2(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("[training\nepochs = 1\n")
    assert main(["train", "--config", str(config)]) == 2
    assert capsys.readouterr().err.startswith(f"{config}:1:10: cannot parse: ")  # path:line:column, as a data error
    yaml_config = tmp_path / "run.yaml"
    yaml_config.write_text("data:\n  train: [a\n  b: 1\n")
    assert main(["train", "--config", str(yaml_config)]) == 2
    assert capsys.readouterr().err == (f"{yaml_config}:3:4: cannot parse: expected ',' or ']', but got ':' (while "
                                       "parsing a flow sequence)\n")


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_train_without_a_training_file_exits_2(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "model")]) == 2
    assert "--train" in capsys.readouterr().err


# -- bad data ---------------------------------------------------------------------------------


def test_ragged_training_file_exits_2_with_the_location_and_no_traceback(write_text, tmp_path, capsys):
    path = write_text("train.csv", "label,a,b\n1,x,1.5\n0,y\n")
    code = train(path, tmp_path / "model")
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"{path}:3:3: expected 3 fields, found 2: every row needs a field, empty or not, for each column\n"


def test_non_numeric_value_in_a_numeric_flagged_column_exits_2_with_the_location(write_table, tmp_path, capsys):
    path = write_table("train.csv", {"label": [1, 0, 1], "price": ["1", "2", "three"], "city": ["a", "b", "c"]})
    code = train(path, tmp_path / "model", "--numeric", "price")
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"{path}:4:2: column 'price' must be a number, got 'three': fix the value, or train with the column "
                   "as categories (--categorical price)\n")


def test_non_binary_label_exits_2_with_the_location(write_table, tmp_path, capsys):
    path = write_table("train.csv", {"label": [1, 0, 3], "city": ["a", "b", "c"]})
    code = train(path, tmp_path / "model", "--task", "binary")
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"{path}:4:1: binary labels must be 0 or 1")
    assert "Traceback" not in err


def test_bad_libfm_token_exits_2_with_the_character_column(write_text, tmp_path, capsys):
    path = write_text("train.libfm", "1 0:1 5:1\n0 1:1 6\n")
    assert train(path, tmp_path / "model") == 2
    assert capsys.readouterr().err == f"{path}:2:7: expected idx:value, got '6'\n"


def test_empty_training_file_exits_2(write_text, tmp_path, capsys):
    path = write_text("train.csv", "")
    assert train(path, tmp_path / "model") == 2
    assert capsys.readouterr().err == f"{path}:1: file is empty\n"


def test_missing_training_file_exits_2(tmp_path, capsys):
    assert train(tmp_path / "nope.csv", tmp_path / "model") == 2
    assert capsys.readouterr().err == f"{tmp_path / 'nope.csv'}: --train file not found\n"


def test_a_relative_path_in_a_config_file_that_is_not_found_says_where_it_was_read_from(tmp_path, capsys, monkeypatch):
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "run.toml"
    config.write_text('out = "m"\n[data]\ntrain = "frappe/train.csv"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (f"frappe/train.csv: --train file not found (data.train of {config}: a relative "
                                       f"path there is read from the folder you run in, {tmp_path}, as a flag's is, not "
                                       "from the config file's folder)\n")
    assert main(["train", "--config", str(config), "--train", "other.csv"]) == 2  # a flag's: the plain message
    assert capsys.readouterr().err == "other.csv: --train file not found\n"
    here = tmp_path / "run.toml"  # a config file in the folder you run in: the two readings are one
    here.write_text(config.read_text())
    assert main(["train", "--config", "run.toml"]) == 2
    assert capsys.readouterr().err == "frappe/train.csv: --train file not found\n"



def cut_gzip(source: Path, tmp_path: Path) -> Path:
    """``source`` gzipped, with the second half of the compressed bytes lost."""
    data = gzip.compress(source.read_bytes())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("stream", ["off", "on"])
def test_training_on_a_truncated_gzip_file_exits_2_naming_it(ctr_csv, tmp_path, capsys, stream):
    path = cut_gzip(ctr_csv(rows=2000), tmp_path)
    assert train(path, tmp_path / "model", "--stream", stream) == 2
    assert re.fullmatch(rf"{re.escape(str(path))}:\d+: truncated or corrupt gzip file, unreadable from this line on "
                        r"\(.+\)\n", capsys.readouterr().err)


def test_a_gzip_file_whose_check_fails_at_its_end_says_the_damage_may_lie_before(ctr_csv, tmp_path, capsys):
    """Damage mid-file that still decompresses (as other text) is found only by the check at the end: the line named
    had read as the first damaged one (a scale tester's file, damaged 24,000 lines before it)."""
    data = bytearray(gzip.compress(ctr_csv(rows=2000).read_bytes(), compresslevel=0))  # stored blocks: bytes as they are
    middle = len(data) // 2
    data[middle : middle + 40] = bytes(ord("7") if chr(b).isdigit() else b for b in data[middle : middle + 40])
    path = tmp_path / "damaged.csv.gz"
    path.write_bytes(bytes(data))
    assert train(path, tmp_path / "model") == 2
    assert re.fullmatch(rf"{re.escape(str(path))}:\d+: corrupt gzip file: its check failed where its data ends, at this "
                        r"line \(CRC check failed .+\); the damage may lie anywhere before it, .+\n",
                        capsys.readouterr().err)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_predicting_or_evaluating_a_truncated_gzip_file_exits_2_naming_it(ctr_model, tmp_path, capsys, command):
    path = cut_gzip(ctr_model["test"], tmp_path)
    assert main([command, str(ctr_model["model"]), str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:")  # the line where the data breaks off


@pytest.mark.parametrize("stream", ["off", "on"])
def test_training_on_a_corrupt_parquet_file_exits_2_naming_it(ctr_csv, tmp_path, capsys, stream):
    path = tmp_path / "bad.parquet"
    pq.write_table(pacsv.read_csv(ctr_csv()), path)
    path.write_bytes(path.read_bytes()[:300])
    assert train(path, tmp_path / "model", "--stream", stream) == 2
    assert capsys.readouterr().err.startswith(f"{path}: cannot read Parquet: ")


def test_a_directory_given_as_the_data_file_exits_2(ctr_model, ctr_csv, tmp_path, capsys):
    assert train(tmp_path, tmp_path / "model") == 2
    assert capsys.readouterr().err.startswith(f"{tmp_path}: is a directory, not a data file")
    assert train(ctr_csv(), tmp_path / "model", "--valid", str(tmp_path)) == 2
    assert capsys.readouterr().err.startswith(f"{tmp_path}: is a directory, not a data file")
    for command in ("predict", "evaluate"):
        assert main([command, str(ctr_model["model"]), str(tmp_path)]) == 2
        assert capsys.readouterr().err.startswith(f"{tmp_path}: is a directory, not a data file")
    parts = tmp_path / "spark-output"  # a folder of parts: how to read them
    parts.mkdir()
    for name in ("part-0.csv.gz", "part-1.csv.gz", "_SUCCESS", ".part-0.csv.gz.crc"):
        (parts / name).write_bytes(b"")
    assert train(parts, tmp_path / "model") == 2
    assert capsys.readouterr().err == (f"{parts}: is a directory, not a data file; its files are read as a quoted "
                                       f"pattern: '{parts}/*.csv.gz'\n")



def test_device_that_is_not_a_torch_device_exits_2_before_reading_data(tmp_path, capsys):
    path = tmp_path / "never_read.csv"
    path.write_text("not,read\n")
    assert train(path, tmp_path / "model", "--device", "banana") == 2
    assert capsys.readouterr().err == "--device banana: not a torch device (cpu, cuda, cuda:N, mps or auto)\n"


def test_cuda_device_without_cuda_exits_2(ctr_csv, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train(ctr_csv(), tmp_path / "model", "--device", "cuda") == 2
    assert capsys.readouterr().err == "--device cuda: this torch has no CUDA (torch.cuda.is_available() is False)\n"
    config = tmp_path / "gpu.toml"
    config.write_text('[training]\ndevice = "cuda:0"\n')
    assert train(ctr_csv(), tmp_path / "model", "--config", str(config)) == 2
    assert capsys.readouterr().err.startswith("training.device cuda:0: this torch has no CUDA")
    assert main(["compare", "--train", str(ctr_csv()), "--valid", str(ctr_csv()), "--test", str(ctr_csv()),
                 "--out", str(tmp_path / "report"), "--device", "cuda"]) == 2
    assert capsys.readouterr().err.startswith("--device cuda: this torch has no CUDA")
    assert main(["compare", "--train", str(ctr_csv()), "--valid", str(ctr_csv()), "--test", str(ctr_csv()),
                 "--out", str(tmp_path / "report"), "--config", str(config)]) == 2  # (torch's AssertionError before)
    assert capsys.readouterr().err.startswith("training.device cuda:0: this torch has no CUDA")


def test_unknown_column_flag_exits_2(ctr_csv, tmp_path, capsys):
    path = ctr_csv()
    assert train(path, tmp_path / "model", "--categorical", "C99") == 2
    assert capsys.readouterr().err.startswith(f"{path}:1: --categorical (data.categorical) names column 'C99'")


def test_select_by_a_metric_of_another_task_exits_2_before_training(ctr_csv, tmp_path, capsys):
    assert train(ctr_csv(), tmp_path / "model", "--select-by", "rmse") == 2
    assert "select_by rmse: a binary model is scored by auc, logloss" in capsys.readouterr().err
    assert not (tmp_path / "model" / "model.safetensors").exists()


def test_evaluating_a_file_that_lacks_a_model_column_exits_2(ctr_model, tmp_path, capsys):
    path = tmp_path / "no_c2.csv"
    pacsv.write_csv(pacsv.read_csv(ctr_model["test"]).drop(["C2"]), path)
    assert main(["evaluate", str(ctr_model["model"]), str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{path}:1: column 'C2' is required by the model but not in the file\n"


def test_evaluating_a_file_without_labels_exits_2(ctr_model, tmp_path, capsys):
    path = tmp_path / "unlabelled.csv"
    pacsv.write_csv(pacsv.read_csv(ctr_model["test"]).drop(["label"]), path)
    assert main(["evaluate", str(ctr_model["model"]), str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:1: no label column 'label'")


def test_predicting_on_a_ragged_file_exits_2_with_the_location(ctr_model, write_text, tmp_path, capsys):
    header = pacsv.read_csv(ctr_model["test"]).column_names
    path = write_text("bad.csv", ",".join(header) + "\n" + ",".join(["1"] * len(header)) + "\n" + "1,2\n")
    assert main(["predict", str(ctr_model["model"]), str(path), "--out", str(tmp_path / "p.csv")]) == 2
    assert capsys.readouterr().err == (f"{path}:3:3: expected {len(header)} fields, found 2: every row needs a field, "
                                       "empty or not, for each column\n")
    assert not (tmp_path / "p.csv").exists()


def test_evaluating_with_a_directory_that_is_not_a_model_exits_2(ctr_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty"), str(ctr_model["test"])]) == 2
    assert "not a deepfm model directory" in capsys.readouterr().err


def test_empty_libfm_training_file_exits_2_without_a_traceback(write_text, tmp_path, capsys):
    path = write_text("train.libfm", "")
    assert train(path, tmp_path / "model") == 2
    assert capsys.readouterr().err == f"{path}:1: file is empty\n"


def test_interrupted_train_says_whether_there_is_a_checkpoint_to_resume(ctr_csv, tmp_path, capsys, monkeypatch):
    from deepfm.api import Estimator

    def interrupt(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Estimator, "fit", interrupt)
    assert train(ctr_csv(), tmp_path / "fresh") == 130
    assert "before the first checkpoint: nothing to resume" in capsys.readouterr().err
    (tmp_path / "saved" / "checkpoint").mkdir(parents=True)
    (tmp_path / "saved" / "checkpoint" / "state.json").write_text("{}")
    assert train(ctr_csv(), tmp_path / "saved", "--resume") == 130
    assert "interrupted; resume with: deepfm train --train " in capsys.readouterr().err


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_ends_training_as_ctrl_c_does_with_the_signals_exit_status(number, ctr_csv, tmp_path, capsys,
                                                                                   monkeypatch):
    """A job scheduler's stop (Slurm, Kubernetes, docker stop: SIGTERM) left the run's first files in --out, which then
    refused the same command, and said nothing of resuming."""
    from deepfm.training.trainer import Trainer

    step, handler = Trainer._step, signal.getsignal(number)

    def stopped(self, batch):
        os.kill(os.getpid(), number)
        return step(self, batch)

    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "_step", stopped)
        assert train(ctr_csv(), tmp_path / "new") == 128 + number
        assert "interrupted before the first checkpoint: nothing to resume" in capsys.readouterr().err
        assert not (tmp_path / "new").exists()
    with monkeypatch.context() as patched:  # past a checkpoint
        patched.setattr(Trainer, "_step", stopped)
        patched.setattr("deepfm.resumable.checkpoint_saved", lambda out: True)
        assert train(ctr_csv(), tmp_path / "other") == 128 + number
    assert "interrupted; resume with: deepfm train --train " in capsys.readouterr().err
    assert signal.getsignal(number) is handler, "the command's handler only while it runs"


def test_train_and_predict_run_from_a_thread_that_cannot_take_signal_handlers(ctr_csv, tmp_path):
    """A reviewer's: signal.signal outside the main thread raises ValueError (a notebook's or a server's worker)."""
    import threading

    codes = []
    thread = threading.Thread(target=lambda: codes.extend([train(ctr_csv(), tmp_path / "m"), main(
        ["predict", str(tmp_path / "m"), str(ctr_csv()), "--out", str(tmp_path / "p.csv")])]))
    thread.start()
    thread.join()
    assert codes == [0, 0]


def test_an_interrupt_before_the_first_checkpoint_leaves_out_as_it_found_it(ctr_csv, tmp_path, capsys, monkeypatch):
    from deepfm.training.trainer import Trainer

    def interrupt(self, batch):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "_step", interrupt)
        assert train(ctr_csv(), tmp_path / "new") == 130
        assert "nothing to resume" in capsys.readouterr().err
        assert not (tmp_path / "new").exists()  # it made the directory: it removes it
        assert train(ctr_csv(), tmp_path / "model") == 130
    assert train(ctr_csv(), tmp_path / "model") == 0  # the same command runs again
    before = sorted(p.name for p in (tmp_path / "model").iterdir())
    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "_step", interrupt)
        assert train(ctr_csv(), tmp_path / "model", "--overwrite") == 130
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == before  # the saved model, nothing of the run


def test_an_interrupt_after_a_checkpoint_prints_the_command_that_resumes(ctr_csv, tmp_path, capsys, monkeypatch):
    from deepfm.training.trainer import Trainer

    original, calls = Trainer._step, {"n": 0}

    def interrupt_in_epoch_2(self, batch):
        calls["n"] += 1
        if calls["n"] > 5:  # 300 rows in batches of 64: epoch 1 is 5 steps
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_step", interrupt_in_epoch_2)
    out = tmp_path / "my model"
    assert train(ctr_csv(), out, "--epochs", "2") == 130
    command = capsys.readouterr().err.splitlines()[-1]
    assert command == (f"interrupted; resume with: deepfm train --train {ctr_csv()} --out '{out}' {' '.join(TINY)} "
                       "--quiet --epochs 2 --resume")
    calls["n"] = 0
    monkeypatch.setenv("RANK", "0")  # rank 0 of a torchrun started by hand (of one rank here): torchrun's command line
    monkeypatch.setenv("WORLD_SIZE", "1")  # (torchrun sets both)
    assert train(ctr_csv(), tmp_path / "ranked", "--epochs", "2") == 130
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        "interrupted; resume with: the same torchrun command, its deepfm part: deepfm train --train ")


def test_train_without_validation_reports_the_last_epoch(ctr_csv, tmp_path, capsys):
    assert main(["train", "--train", str(ctr_csv()), "--out", str(tmp_path / "m"), "--valid-fraction", "0", *TINY]) == 0
    assert "(last epoch 1, no validation (--valid-fraction 0))" in capsys.readouterr().err


def test_a_sweeping_solver_reports_its_sweeps_not_a_best_epoch(rating_model, tmp_path, capsys):
    args = ["train", "--train", str(rating_model["data"]), "--label", "rating", "--model", "fm", "--solver", "als",
            "--sweeps", "3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == f"saved {tmp_path / 'a'} (3 sweeps, no validation)"
    assert main([*args, "--out", str(tmp_path / "b"), "--valid-fraction", "0.2"]) == 0
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"saved {tmp_path / 'b'} (3 sweeps: valid rmse ")


def test_weight_names_the_weight_column_in_the_run_config(write_table, tmp_path):
    rows = 64
    path = write_table("train.csv", {"label": [i % 2 for i in range(rows)], "city": [f"c{i % 4}" for i in range(rows)],
                                     "w": [1.0 + i % 3 for i in range(rows)]})
    assert train(path, tmp_path / "model", "--weight", "w") == 0
    assert saved_run(tmp_path / "model")["data"]["weight"] == "w"  # its effect on loss and metrics: H-core


# -- --positive: text labels hold the positive value and one negative value --------------------------


def write_income(write_table, name: str, labels: list[str]) -> Path:
    return write_table(name, {"job": [f"j{i % 7}" for i in range(len(labels))], "income": labels})


def test_evaluating_labels_other_than_the_two_of_training_exits_2_naming_both(write_table, tmp_path, capsys):
    train_path = write_income(write_table, "train.csv", [">50K", "<=50K", "<=50K", "<=50K"] * 25)
    assert train(train_path, tmp_path / "model", "--label", "income", "--positive", ">50K") == 0
    test = write_income(write_table, "test.csv", [">50K.", "<=50K.", "<=50K.", "<=50K."] * 5)  # UCI's adult.test
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "model"), str(test), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"{test}:2:2: label '>50K.' is neither the positive value '>50K' nor the negative value "
                            "'<=50K' of the training labels\n")


def test_training_on_a_third_label_value_with_positive_exits_2_at_its_row(write_table, tmp_path, capsys):
    labels = [">50K", "<=50K", "<=50K", "<=50K"] * 25
    labels[18] = "maybe"
    path = write_income(write_table, "train.csv", labels)
    assert train(path, tmp_path / "model", "--label", "income", "--positive", ">50K") == 2
    assert capsys.readouterr().err.startswith(f"{path}:20:2: label 'maybe' is neither the positive value '>50K' "
                                              "nor the negative value '<=50K'")


def test_evaluate_says_auc_is_undefined_when_the_labels_hold_one_class(ctr_model, tmp_path, capsys):
    import pyarrow.compute as pc

    path = tmp_path / "negatives.csv"
    table = pacsv.read_csv(ctr_model["test"])
    pacsv.write_csv(table.filter(pc.equal(table["label"], 0)), path)
    assert main(["evaluate", str(ctr_model["model"]), str(path)]) == 0
    out = capsys.readouterr().out
    assert "  auc undefined (one class)  logloss " in out and "nan" not in out


def test_predict_prints_a_data_warning_as_a_note(tmp_path, capsys):
    import pandas as pd

    from deepfm import Estimator

    frame = pd.DataFrame({"label": [0, 1] * 100, "flag": [True, False, False, True] * 50, "user": [f"u{i % 9}" for i in range(200)]})
    Estimator(model={"name": "fm", "embed_dim": 4}, training={"epochs": 1}).fit(frame, out=tmp_path / "m", progress=False)
    frame.drop(columns="label").to_csv(tmp_path / "rows.csv", index=False)
    assert main(["predict", str(tmp_path / "m"), str(tmp_path / "rows.csv"), "--out", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert f"note: {tmp_path / 'rows.csv'}: column 'flag': 100% of these rows' values were not seen in training" in err


def test_a_model_trained_on_criteo_files_by_hand_reads_a_csv_by_its_own_format(criteo_row, write_criteo, tmp_path,
                                                                                 capsys):
    """--format criteo at training is the training files' format: a CSV with a header to evaluate is read as CSV, with
    a note ('expected 40 fields, found 1' before); tab-separated rows without the label (Kaggle's test.txt) stay Criteo."""
    from deepfm.data.formats import CRITEO_COLUMNS

    rows = [criteo_row(i % 2, seed=i) for i in range(300)]
    train = write_criteo("day_0", rows)
    assert main(["train", "--train", str(train), "--format", "criteo", "--model", "lr", "--epochs", "1",
                 "--out", str(tmp_path / "m"), "--quiet"]) == 0
    as_csv = tmp_path / "rows.csv"
    as_csv.write_text(",".join(CRITEO_COLUMNS) + "\n" + "\n".join(",".join("" if v is None else str(v) for v in row)
                                                                 for row in rows) + "\n")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "m"), str(as_csv), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["rows"] == 300
    assert f"note: {as_csv} reads as csv (its name and first line), not as the criteo files" in captured.err
    as_tsv = tmp_path / "rows.tsv"  # tab-separated with Criteo's names as a header: its header was read as a row
    as_tsv.write_text(as_csv.read_text().replace(",", "\t"))
    assert main(["evaluate", str(tmp_path / "m"), str(as_tsv), "--json"]) == 0
    captured_tsv = capsys.readouterr()
    assert json.loads(captured_tsv.out) == json.loads(captured.out)
    assert f"note: {as_tsv} reads as tsv (its name and first line), not as the criteo files" in captured_tsv.err
    unlabelled = tmp_path / "test.txt"
    unlabelled.write_text("\n".join("\t".join("" if v is None else str(v) for v in row[1:]) for row in rows[:5]) + "\n")
    assert main(["predict", str(tmp_path / "m"), str(unlabelled), "--out", str(tmp_path / "p.csv")]) == 0
    assert "note:" not in capsys.readouterr().err and len(pacsv.read_csv(tmp_path / "p.csv")) == 5
    from deepfm import Estimator  # the Python API reads them so too (it took the Parquet file for Criteo rows)

    as_parquet = tmp_path / "rows.parquet"
    pq.write_table(pacsv.read_csv(as_csv), as_parquet)
    model = Estimator.load(tmp_path / "m")
    with pytest.warns(DataWarning, match=f"{as_parquet} reads as parquet .*, not as the criteo files the model was") as seen:
        scores = model.predict(as_parquet)
    assert seen[0].filename == __file__  # the caller's line, however deep in the library the reading noticed it
    with pytest.warns(DataWarning, match="reads as csv"):
        np.testing.assert_allclose(scores, model.predict(as_csv))


def test_a_format_set_by_hand_at_training_gives_way_to_a_parquet_file_and_a_format_given_to_predict_holds(tmp_path,
                                                                                                         capsys):
    """A model of --format csv with a multi-valued field read a Parquet file's columns as CSV ('name it .parquet');
    predict --format csv on a CSV named .parquet was read as Parquet (a reviewer's two cases)."""
    rows = tmp_path / "train.csv"
    rows.write_text("label,user,tags\n" + "".join(f"{i % 2},u{i % 7},a|b{i % 3}\n" for i in range(120)))
    assert main(["train", "--train", str(rows), "--format", "csv", "--multi", "tags", "--model", "fm", "--epochs", "1",
                 "--out", str(tmp_path / "m"), "--quiet"]) == 0
    pq.write_table(pacsv.read_csv(rows), tmp_path / "rows.parquet")
    assert main(["predict", str(tmp_path / "m"), str(tmp_path / "rows.parquet"), "--out", str(tmp_path / "p.csv")]) == 0
    assert "reads as parquet" in capsys.readouterr().err and len(pacsv.read_csv(tmp_path / "p.csv")) == 120
    named_wrong = tmp_path / "rows-as-csv.parquet"
    shutil.copy(rows, named_wrong)
    assert main(["predict", str(tmp_path / "m"), str(named_wrong), "--format", "csv", "--out", str(tmp_path / "q.csv")]) == 0
    assert "note:" not in capsys.readouterr().err
    assert pacsv.read_csv(tmp_path / "q.csv").column(0).to_pylist() == pacsv.read_csv(tmp_path / "p.csv").column(0).to_pylist()


def test_a_model_trained_on_criteo_files_found_by_their_first_line_scores_rows_without_the_label(
        criteo_row, write_criteo, tmp_path):
    """Without --format the training file reads as Criteo (40 tab-separated fields, 0 or 1 first). Kaggle's test.txt
    (39 fields, no header) is scored as Criteo rows for a model of Criteo's features, not read as a TSV whose first
    row is a header ('duplicate column names in the header'); a CSV or Parquet file with a header is read as itself."""
    from deepfm import Estimator
    from deepfm.data.formats import CRITEO_COLUMNS

    rows = [criteo_row(i % 2, seed=i) for i in range(300)]
    assert main(["train", "--train", str(write_criteo("day_0", rows)), "--model", "lr", "--epochs", "1",
                 "--out", str(tmp_path / "m"), "--quiet"]) == 0
    unlabelled = tmp_path / "test.txt"
    unlabelled.write_text("\n".join("\t".join("" if v is None else str(v) for v in row[1:]) for row in rows[:5]) + "\n")
    assert main(["predict", str(tmp_path / "m"), str(unlabelled), "--out", str(tmp_path / "p.csv")]) == 0
    assert len(pacsv.read_csv(tmp_path / "p.csv")) == 5
    as_csv = tmp_path / "rows.csv"
    as_csv.write_text(",".join(CRITEO_COLUMNS) + "\n" + "\n".join(",".join("" if v is None else str(v) for v in row)
                                                                 for row in rows) + "\n")
    pq.write_table(pacsv.read_csv(as_csv), tmp_path / "rows.parquet")
    model = Estimator.load(tmp_path / "m")
    assert model.evaluate(as_csv)["rows"] == model.evaluate(tmp_path / "rows.parquet")["rows"] == 300
    assert len(model.predict(unlabelled)) == 5


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_missing_model_directory_or_data_file_is_said_before_torch_loads(tmp_path, command):
    """Importing torch takes seconds (3-28 s on a new user's busy machine): a mistyped path is said at once."""
    import subprocess
    import sys

    model = tmp_path / "model"
    model.mkdir()
    for args, said in (([str(tmp_path / "nosuch"), "rows.csv"], "not a model directory (it does not exist)"),
                       ([str(model), str(tmp_path / "rows.csv")], "file not found")):
        script = (f"import sys; from deepfm.cli import main; code = main({[command, *args]!r}); "
                  "print(code, 'torch' in sys.modules)")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=checkout_env())
        assert result.stdout.split() == ["2", "False"] and said in result.stderr, result.stderr


def test_a_model_trained_on_parquet_by_hand_reads_an_unnamed_parquet_file(ctr_csv, tmp_path, capsys):
    """Spark writes part-00000 files: --format parquet at training reads them at evaluate too, without a word."""
    table = pacsv.read_csv(ctr_csv())
    part = tmp_path / "part-00000"
    pq.write_table(table, part)
    assert main(["train", "--train", str(part), "--format", "parquet", "--model", "lr", "--epochs", "1",
                 "--out", str(tmp_path / "m"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "m"), str(part), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["rows"] == len(table) and "note:" not in captured.err


def test_the_multi_separator_the_readme_names_is_a_flag(write_text, tmp_path):
    """README: `--multi` cells 'separated by | (--multi-separator)': the flag did not exist (unrecognized arguments)."""
    from deepfm.cli import config_from_args

    path = write_text("tags.csv", "label,tags\n1,a;b\n0,b\n1,a;c\n0,c\n")
    args = build_parser().parse_args(["train", "--train", str(path), "--multi", "tags", "--multi-separator", ";",
                                      "--out", str(tmp_path / "m")])
    assert config_from_args(args).data.multi_separator == ";"
    assert main(["train", "--train", str(path), "--multi", "tags", "--multi-separator", ";", "--model", "lr",
                 "--epochs", "1", "--out", str(tmp_path / "m"), "--quiet"]) == 0
    features = json.loads((tmp_path / "m" / "features.json").read_text())
    assert sorted(features["fields"][0]["vocabulary"]) == ["a", "b", "c"]


@pytest.mark.parametrize(("argv", "suggestion"), [
    (["trian", "--train", "x.csv"], "did you mean 'train'?"),
    (["train", "--train", "x.csv", "--epoch", "3"], "did you mean '--epochs'?"),
    (["predict", "m", "x.csv", "--fromat", "csv"], "did you mean '--format'?"),
    # libFM's options, as a libFM user types them: deepfm's for each (close names had suggested --overwrite, --model)
    (["train", "--train", "x.csv", "--learn-rate", "0.01"], "libFM's -learn_rate is --lr"),
    (["train", "--train", "x.csv", "-learn_rate", "0.01"], "libFM's -learn_rate is --lr"),
    (["train", "--train", "x.csv", "--method", "mcmc"], "libFM's -method is --solver (sgd: gradient, with --optimizer sgd; als; mcmc)"),
    (["train", "--train", "x.csv", "-dim", "1,1,8"], "libFM's -dim is --embed-dim (its '1,1,8' is --embed-dim 8: w0 and w are always on)"),
    (["train", "--train", "x.csv", "--regular", "0,0,0.01"], "libFM's -regular is --embed-l2 and --linear-l2 (--als-l2 with "
                                                              "--solver als; mcmc needs none)"),
])
def test_a_mistyped_command_or_option_exits_2_with_the_closest_name(argv, suggestion, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(suggestion)


@pytest.mark.parametrize(("argv", "hint"), [
    (["evaluate", "--model", "m", "--data", "x.csv"], "--model is an option of deepfm train and deepfm tune, not of deepfm evaluate"),
    (["predict", "m", "x.csv", "--epochs", "3"], "--epochs is an option of deepfm train, deepfm tune and deepfm compare, "
                                                 "not of deepfm predict"),
    (["--json", "evaluate", "m", "x.csv"], "--json is an option of deepfm evaluate: give it after 'evaluate'"),
])
def test_another_subcommands_option_is_named_as_theirs_under_this_subcommands_usage(argv, hint, capsys):
    """``deepfm evaluate --model m --data x.csv`` was answered from the top-level usage with "did you mean
    '--model'?": evaluate takes its model directory and file as arguments, which its own usage shows."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    command = next(word for word in argv if not word.startswith("-"))
    assert stop.value.code == 2 and err.startswith(f"usage: deepfm {command} ") and err.rstrip().endswith(hint)


def test_a_pattern_the_shell_expanded_is_told_to_be_quoted(tmp_path, capsys):
    """``--train parts/day_*.csv`` unquoted: the shell hands deepfm every file, and argparse said only "unrecognized
    arguments: parts/day_2.csv parts/day_3.csv" (a new user's case)."""
    files = [tmp_path / f"day_{i}.csv" for i in (1, 2, 3)]
    for file in files:
        file.write_text("label,user\n1,a\n")
    for argv, given in ((["train", "--train", *map(str, files), "--out", str(tmp_path / "m")], "--train"),
                        (["evaluate", str(tmp_path), *map(str, files)], "the data path")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        assert capsys.readouterr().err.rstrip().endswith(
            f"unrecognized arguments: {files[1]} {files[2]}; {given} takes one file or a quoted pattern, and a pattern "
            f"the shell expands reaches deepfm as its files one by one: quote it ({'--train ' if given == '--train' else ''}"
            "'data/day_*.csv')")
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path), str(files[0]), "extra"])  # not a file: no such hint
    assert "quote it" not in capsys.readouterr().err


def test_an_abbreviated_option_is_not_taken_for_the_whole_name(capsys):
    """Abbreviations would break when a later release adds an option that shares the prefix."""
    with pytest.raises(SystemExit):
        main(["train", "--train", "x.csv", "--epoch", "3"])
    assert "unrecognized arguments: --epoch 3" in capsys.readouterr().err


def test_a_run_that_diverges_before_its_first_checkpoint_leaves_out_as_it_was(ctr_csv, tmp_path, capsys):
    """The error says to train again with a lower --lr: the same command must then run (its --out was refused)."""
    out = tmp_path / "m"
    args = ["train", "--train", str(ctr_csv("train.csv")), "--out", str(out), "--model", "fm", "--portfolio", "off",
            "--epochs", "2", "--quiet"]
    assert main([*args, "--lr", "1e30"]) == 2
    assert "the model diverged" in capsys.readouterr().err
    assert not out.exists()
    assert main([*args, "--lr", "0.05"]) == 0


def test_demo_refuses_an_out_that_is_a_file_before_it_trains(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert main(["demo", "--out", str(tmp_path / "a_file")]) == 2
    assert f"--out {tmp_path / 'a_file'}: is a file, not a directory" in capsys.readouterr().err


def test_select_by_help_names_the_metrics_each_task_reports(capsys):
    """The choices list every task's metrics; a new user took accuracy for a binary one (it is refused there)."""
    from deepfm.tasks import TASKS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    said = help_text.split("--select-by {auto,auc,logloss,accuracy,rmse,mae} ")[1].split(" --seed")[0]
    for name, task in TASKS.items():
        listed = said.split(f"{name}: ")[1].split(";")[0].replace("those and", "").replace(",", " ").replace(")", " ").split()
        assert set(task.metric_names) <= set(listed) | ({"accuracy", "logloss", "auc"} if name == "ordinal" else set())


def test_a_full_disk_is_one_line_and_exit_1_and_leaves_no_half_written_checkpoint(ctr_csv, tmp_path, capsys,
                                                                                    monkeypatch):
    """It was safetensors' traceback (exit 1) and a checkpoint/portfolio-1.tmp/ left on the full disk (a pipeline
    tester's find)."""
    from safetensors import SafetensorError

    import deepfm.training.checkpoint as checkpoint

    def full(tensors, path):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                              'space left on device" })')

    monkeypatch.setattr(checkpoint, "save_file", full)
    out = tmp_path / "model"
    assert train(ctr_csv(rows=600), out, "--model", "fm", "--epochs", "1", "--quiet") == 1
    err = capsys.readouterr().err
    assert err.endswith("checkpoint.tmp: No space left on device\n") and "Traceback" not in err, err
    assert not out.exists() or not list(out.rglob("*.tmp"))


def test_a_rank_variable_of_a_schedulers_own_does_not_silence_train(ctr_csv, tmp_path, capsys, monkeypatch):
    """RANK=1 without torchrun's WORLD_SIZE: train printed nothing, not even --json's line, and left its checkpoint
    beside the model (a pipeline tester's find: some schedulers export RANK)."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "model"
    assert train(ctr_csv(rows=600), out, "--model", "fm", "--epochs", "1", "--json") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs"] == 1
    assert not (out / "checkpoint").exists() and not (out / "checkpoint-run.json").exists()


def test_a_second_train_into_an_out_that_a_running_train_holds_is_refused(ctr_csv, tmp_path, capsys):
    """Two jobs into one --out both exited 0, the last save winning, their checkpoints mixed (a pipeline tester's
    find). The running one holds --out/.deepfm-train.lock (an flock the OS releases if it dies)."""
    import fcntl

    from deepfm.cli import RUN_LOCK

    out = tmp_path / "model"
    out.mkdir()
    with open(out / RUN_LOCK, "a+") as held:  # as the running train holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        assert train(ctr_csv(rows=600), out, "--model", "fm", "--epochs", "1", "--overwrite") == 2
        assert capsys.readouterr().err == (f"--out {out}: another deepfm train is writing there (process 4242); wait "
                                           "for it to end, or train into another --out\n")
    assert train(ctr_csv(rows=600), out, "--model", "fm", "--epochs", "1", "--quiet") == 0  # a lock file left behind
    assert not (out / RUN_LOCK).exists() and (out / "model.safetensors").exists()  # is not a file of the run's
