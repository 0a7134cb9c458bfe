"""``deepfm compare``: one encoding for every model, seeds summarised, a report with tables and plots."""

from __future__ import annotations

import hashlib
import subprocess
import json
import re
from pathlib import Path

import pytest

import deepfm.api
import deepfm.experiments.report

from deepfm.cli import build_parser, config_from_args, main
from deepfm.data.encoders import FeatureEncoder
from deepfm.errors import ConfigError
from deepfm.experiments.compare import model_variants, parse_models, PAPER_ORDER
from deepfm.defaults import MODEL_DEFAULTS, TASK_DEFAULTS
from deepfm.experiments.studies import STUDIES
from deepfm.runtime import available_cores

TINY = ["--epochs", "2", "--mlp", "8", "--batch-size", "64", "--embed-dim", "3", "--quiet"]


@pytest.fixture
def ctr_files(ctr_csv):
    return [str(ctr_csv(f"{part}.csv", rows=200, part=i)) for i, part in enumerate(("train", "valid", "test"))]


def compare(files, out, *extra):
    train, valid, test = files
    return main(["compare", "--train", train, "--valid", valid, "--test", test, "--out", str(out), *TINY, *extra])


def test_compare_fits_the_encoder_once_and_reports_every_model_over_seeds(ctr_files, tmp_path, monkeypatch, capsys):
    fits = []
    original = deepfm.api.fit_and_encode  # the one reading pass that fits the encoder, as deepfm train's
    monkeypatch.setattr(deepfm.api, "fit_and_encode", lambda *a, **k: fits.append(1) or original(*a, **k))
    fit = FeatureEncoder.fit.__func__  # or any other fit
    monkeypatch.setattr(FeatureEncoder, "fit", classmethod(lambda cls, *a, **k: fits.append(1) or fit(cls, *a, **k)))
    assert compare(ctr_files, tmp_path / "r", "--models", "lr,fnn,pnn,deepfm", "--seeds", "2") == 0
    assert len(fits) == 1
    summary = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [v["label"] for v in summary["variants"]] == ["lr", "fnn", "pnn", "deepfm"]
    for variant in summary["variants"]:
        assert [run["seed"] for run in variant["runs"]] == [2026, 2027]
        assert [h["epoch"] for h in variant["runs"][0]["history"]] == [1, 2]
        aucs = [run["test"]["auc"] for run in variant["runs"]]
        assert variant["test"]["auc"]["mean"] == pytest.approx(sum(aucs) / 2)
        assert variant["parameters"] > 0 and set(variant["test"]) == {"auc", "logloss"}
    markdown = (tmp_path / "r" / "results.md").read_text()
    assert "| deepfm |" in markdown and " ± " in markdown
    assert re.search(r"Train time is wall time on \d+ usable CPU cores? \(threads: ", markdown)
    assert "shared 2-core" not in markdown  # the machine it ran on, not the one this project was written on
    cores = available_cores()  # the threads each model trained on, as its config says (LR: 1; the others: all)
    assert f"(threads: lr on 1; fnn, pnn, deepfm on {cores}) (FNN: FM pre-training included); on a fresh" in markdown
    settings = markdown.split("results.json holds every setting:", 1)[1]  # each model's own settings, where they differ
    assert "| model | k | tables: optimizer, lr, L2 | MLP | MLP step | batch, epochs, patience |" in settings
    deepfm_config = summary["variants"][-1]["config"]
    assert (f"| deepfm | {deepfm_config['model']['embed_dim']} | {deepfm_config['training']['optimizer']} "
            f"{deepfm_config['training']['lr']:g}, ") in settings and "| lr | — |" in settings
    for variant in summary["variants"]:  # the config as it ran: one recipe, the encoding's rare-value threshold
        assert variant["config"]["training"]["portfolio"] == "off" and variant["config"]["data"]["min_count"] >= 1
    assert (tmp_path / "r" / "validation_curves.png").stat().st_size > 0
    assert (tmp_path / "r" / "roc.png").stat().st_size > 0
    assert "| fnn |" in capsys.readouterr().out


def test_compare_reads_a_glob_pattern_of_training_files_as_deepfm_train_does(ctr_files, tmp_path):
    """``--train 'day_*.csv'`` trains deepfm train; compare refused it as a file not found."""
    train, valid, test = ctr_files
    days = tmp_path / "days"
    days.mkdir()
    lines = Path(train).read_text().splitlines(keepends=True)
    (days / "day_1.csv").write_text("".join(lines[:101]))
    (days / "day_2.csv").write_text(lines[0] + "".join(lines[101:]))
    assert compare([str(days / "day_*.csv"), valid, test], tmp_path / "r", "--models", "lr") == 0
    summary = json.loads((tmp_path / "r" / "results.json").read_text())
    assert summary["rows"]["train"] == len(lines) - 1
    assert [f["path"] for f in summary["files"]["train"]] == [str(days / "day_1.csv"), str(days / "day_2.csv")]


@pytest.mark.parametrize("solver", ["mcmc", "als"])
def test_compare_refuses_a_sweeping_solver_as_such_not_as_a_model_it_cannot_fit(ctr_files, tmp_path, capsys, solver):
    """A config's solver = "mcmc" with --models fm was told 'fits model fm only (model.name is deepfm); use --model fm'."""
    config = tmp_path / "run.toml"
    config.write_text(f'[training]\nsolver = "{solver}"\n')
    assert compare(ctr_files, tmp_path / "r", "--models", "fm", "--config", str(config)) == 2
    assert capsys.readouterr().err.startswith(f"training.solver '{solver}': compare and tune train by gradient")


def test_a_report_names_the_commit_it_ran_from_and_the_cpu(tmp_path):
    """Figures moved from commit to commit under one version number (0.1.0): a reader could not tell which code."""
    from deepfm.experiments.report import cpu_model, git_commit

    source = Path(deepfm.api.__file__).parent
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # run from a checkout, as the tests are
        assert git_commit()["commit"] == head.stdout.strip() and isinstance(git_commit()["uncommitted_changes"], bool)
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Some CPU @ 2.00GHz\nflags\t: avx\n")
    assert cpu_model(str(tmp_path / "cpuinfo")) == "Some CPU @ 2.00GHz"


def test_a_repository_that_merely_holds_the_installed_package_is_not_named_as_its_commit(tmp_path):
    """deepfm installed in a virtual environment inside a user's own repository: that repository's HEAD is not deepfm's."""
    import importlib.util

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "notes.txt").write_text("the user's own work\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "notes.txt"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=u", "-c", "user.email=u@example.org", "commit", "-q",
                    "-m", "theirs"], check=True)
    (tmp_path / "site").mkdir()
    copy = tmp_path / "site" / "report.py"
    copy.write_text(Path(deepfm.experiments.report.__file__).read_text())
    spec = importlib.util.spec_from_file_location("installed_report", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.git_commit() == {}


def test_results_json_names_each_data_file_by_its_sha256(ctr_files, tmp_path):
    """A reader of a report can check that their copy of the data is the one its figures came from."""
    assert compare(ctr_files, tmp_path / "r", "--models", "lr") == 0
    files = json.loads((tmp_path / "r" / "results.json").read_text())["files"]
    for split, path in zip(("train", "valid", "test"), ctr_files):
        content = Path(path).read_bytes()
        assert files[split] == [{"path": str(Path(path).resolve()), "bytes": len(content),
                                 "sha256": hashlib.sha256(content).hexdigest()}]


@pytest.mark.parametrize("model", ["fnn", "deepfm"])
def test_compare_trains_the_model_deepfm_train_trains_from_the_same_seed(model, ctr_files, tmp_path, capsys):
    """compare's FNN drew its pre-training FM from the seed itself, train's after the FNN's weights: two models (a
    new user's Frappe test AUC 0.9379 in compare, 0.9383 from train)."""
    train, valid, test = ctr_files
    assert compare(ctr_files, tmp_path / "r", "--models", model) == 0
    compared = json.loads((tmp_path / "r" / "results.json").read_text())["variants"][0]["runs"][0]["test"]
    assert main(["train", "--train", train, "--valid", valid, "--model", model, "--portfolio", "off",
                 "--out", str(tmp_path / "m"), *TINY]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "m"), test, "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["auc"] == pytest.approx(compared["auc"], abs=1e-6)
    assert evaluated["logloss"] == pytest.approx(compared["logloss"], abs=1e-5)


def test_a_models_config_in_results_json_trains_it_again_with_deepfm_train(ctr_files, tmp_path, capsys):
    """It lacked the data files, held keys the model does not read (train said each was not applied) and could not be
    given as .json (a new user's case)."""
    train, valid, test = ctr_files
    assert compare(ctr_files, tmp_path / "r", "--models", "fm") == 0
    variant = json.loads((tmp_path / "r" / "results.json").read_text())["variants"][0]
    assert variant["config"]["data"]["train"] == str(Path(train).resolve()) and "mlp" not in variant["config"]["model"]
    (tmp_path / "fm.json").write_text(json.dumps(variant["config"]))
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "fm.json"), "--out", str(tmp_path / "m")]) == 0
    said = capsys.readouterr().err
    assert "not applied" not in said and "does not use" not in said and "portfolio" not in said  # as it trained
    assert main(["evaluate", str(tmp_path / "m"), test, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["auc"] == pytest.approx(variant["runs"][0]["test"]["auc"], abs=1e-6)


def test_each_model_trains_with_the_defaults_deepfm_train_gives_it_for_the_task(ctr_files, tmp_path):
    assert compare(ctr_files, tmp_path / "r", "--models", "lr,fm") == 0
    lr, fm = (v["config"] for v in json.loads((tmp_path / "r" / "results.json").read_text())["variants"])
    clicks = TASK_DEFAULTS["fm"]["binary"]  # known once the data is read: binary labels
    assert {key: fm["training"][key] for key in ("optimizer", "lr", "embed_reg", "embed_l2")} == {
        key: clicks[key] for key in ("optimizer", "lr", "embed_reg", "embed_l2")}
    assert fm["model"]["embed_dim"] == 3  # a flag (TINY's) wins
    assert (lr["training"]["lr"], lr["training"]["embed_l2"]) == (1e-2, 1e-4)
    assert compare(ctr_files, tmp_path / "s", "--models", "fm", "--lr", "0.002") == 0
    assert json.loads((tmp_path / "s" / "results.json").read_text())["variants"][0]["config"]["training"]["lr"] == 0.002


def test_each_model_trains_on_its_own_threads_whatever_the_order(ctr_files, tmp_path, monkeypatch):
    """LR and FM on one thread, DeepFM on all: the first model's count was set once for every model."""
    import torch

    import deepfm.experiments.compare as compare_module
    from deepfm.runtime import available_cores

    real, seen = compare_module.train_one, []

    def recording(config, *args, **kwargs):
        seen.append((config.model.name, torch.get_num_threads()))
        return real(config, *args, **kwargs)

    monkeypatch.setattr(compare_module, "train_one", recording)
    assert compare(ctr_files, tmp_path / "r", "--models", "lr,deepfm,fm") == 0
    assert seen == [("lr", 1), ("deepfm", available_cores()), ("fm", 1)]


def test_the_processs_start_up_costs_are_loaded_before_the_first_models_clock_starts(ctr_files, tmp_path, monkeypatch):
    """scikit-learn's metrics and numba's CPU target load once a process: inside the first model's time they made
    LR, first on Frappe, 2.9 s against 0.3 s for its second seed."""
    import deepfm.experiments.compare as compare_module

    real_train, real_load, seen = compare_module.train_one, compare_module.load_start_up_costs, []
    monkeypatch.setattr(compare_module, "train_one",
                        lambda config, *args, **kwargs: seen.append(config.model.name) or real_train(config, *args, **kwargs))
    monkeypatch.setattr(compare_module, "load_start_up_costs", lambda: seen.append("start-up") or real_load())
    assert compare(ctr_files, tmp_path / "r", "--models", "lr,fm") == 0
    assert seen == ["start-up", "lr", "fm"]


def test_batch_size_1_is_refused_before_any_model_trains_where_one_has_batch_norm_and_trains_lr_and_fm(ctr_files, tmp_path,
                                                                                                       capsys):
    """A re-checking user's compare --batch-size 1 trained LR and FM, then DeepFM's batch norm failed with a traceback."""
    assert compare(ctr_files, tmp_path / "bn", "--models", "lr,deepfm", "--batch-size", "1") == 2
    err = capsys.readouterr().err
    assert "training.batch_size 1: deepfm's batch norm needs at least 2 rows a batch" in err and "lr: seed" not in err
    assert compare(ctr_files, tmp_path / "ok", "--models", "lr,fm", "--batch-size", "1", "--epochs", "1") == 0


def test_the_report_says_the_threads_each_model_trained_on(ctr_files, tmp_path):
    """A researcher's --threads 1 ran Wide&Deep on one thread while the report said 'the others all'."""
    assert compare(ctr_files, tmp_path / "t", "--models", "lr,wide_deep", "--threads", "1", "--epochs", "1") == 0
    assert "(threads: lr, wide_deep on 1);" in (tmp_path / "t" / "results.md").read_text()


def test_the_papers_mlp_form_is_set_by_flags_and_a_flag_a_model_does_not_read_is_said(ctr_files, tmp_path, capsys):
    """A researcher could not turn batch norm off or set tanh without a config file, and --mlp given to LR and FM was
    dropped without a word (train says it)."""
    train, valid, test = ctr_files
    assert main(["compare", "--train", train, "--valid", valid, "--test", test, "--out", str(tmp_path / "p"), "--models",
                 "lr,deepfm", "--batch-norm", "off", "--activation", "tanh", "--mlp", "16", "--epochs", "1",
                 "--embed-reg", "rows"]) == 0
    summary = json.loads((tmp_path / "p" / "results.json").read_text())
    assert {"deepfm", "torch", "python", "numpy", "pyarrow", "numba", "scikit-learn", "cpu"} <= set(summary["versions"])
    variants = summary["variants"]
    assert variants[1]["config"]["model"]["batch_norm"] is False and variants[1]["config"]["model"]["activation"] == "tanh"
    assert variants[1]["config"]["training"]["embed_reg"] == "rows"  # DeepFM's own form where ids recur: occurrences
    assert "lr: model lr does not use model.mlp, model.activation, model.batch_norm: they are not applied" in (
        capsys.readouterr().err)
    assert main(["compare", "--train", train, "--valid", valid, "--test", test, "--out", str(tmp_path / "q"), "--models",
                 "lr", "--mlp", "16", "--epochs", "1", "--quiet"]) == 0  # --quiet had hidden it with the log
    assert "note: lr: model lr does not use model.mlp: it is not applied" in capsys.readouterr().err
    args = build_parser().parse_args(["train", "--train", train, "--out", str(tmp_path / "o"), "--batch-norm", "off"])
    assert config_from_args(args).model.batch_norm is False
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--train", "x.csv", "--batch-norm", "maybe"])


def test_compare_on_a_rating_file_reports_rmse_and_mae_without_roc(write_table, tmp_path):
    rows = 120
    columns = {"label": [1 + (i * 7) % 5 for i in range(rows)], "user": [f"u{i % 9}" for i in range(rows)],
               "item": [f"i{i % 13}" for i in range(rows)]}
    files = [str(write_table(f"{name}.csv", columns)) for name in ("train", "valid", "test")]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "roc.png").write_bytes(b"an earlier binary report's plot")
    assert compare(files, tmp_path / "r", "--models", "fm,wide_deep", "--task", "regression", "--overwrite") == 0
    summary = json.loads((tmp_path / "r" / "results.json").read_text())
    assert summary["task"] == "regression"
    fm, wide_deep = (v["config"]["training"] for v in summary["variants"])
    assert fm["lr_schedule"] == "plateau", "FM's own recipe on ratings"
    assert [fm[key] for key in ("epochs", "patience", "batch_size")] == [
        wide_deep[key] for key in ("epochs", "patience", "batch_size")], "one budget for every model"
    assert set(summary["variants"][0]["test"]) == {"rmse", "mae"}
    assert not (tmp_path / "r" / "roc.png").exists()  # nor an earlier report's, --overwrite kept (a new user's case)
    assert "test rmse" in (tmp_path / "r" / "results.md").read_text()


def test_study_varies_one_deepfm_setting_and_keeps_the_rest(ctr_files, tmp_path):
    assert compare(ctr_files, tmp_path / "r", "--study", "dropout", "--epochs", "1", "--precision", "bf16") == 0
    variants = json.loads((tmp_path / "r" / "results.json").read_text())["variants"]
    assert [v["label"] for v in variants] == [label for label, _ in STUDIES["dropout"]]
    assert {v["config"]["model"]["name"] for v in variants} == {"deepfm"}
    assert {v["config"]["training"]["precision"] for v in variants} == {"bf16"}
    assert [v["config"]["model"]["dropout"] for v in variants] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    rest = [{**v["config"], "model": {**v["config"]["model"], "dropout": None}} for v in variants]
    assert all(r == rest[0] for r in rest)
    markdown = (tmp_path / "r" / "results.md").read_text()
    assert "| setting | test auc |" in markdown and "| model |" not in markdown  # its rows are settings, not models
    assert f"on {available_cores()}); on a fresh install" in markdown and "FNN" not in markdown


def test_a_flag_for_the_setting_a_study_varies_is_refused(ctr_files, tmp_path, capsys):
    """--study dropout --dropout 0.3 trained every variant at the study's rates, the flag dropped without a word."""
    assert compare(ctr_files, tmp_path / "r", "--study", "dropout", "--dropout", "0.3") == 2
    assert "--study dropout varies model.dropout: leave out --dropout" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_shape_study_keeps_layers_and_total_neurons():
    shapes = [change["mlp"] for _, change in STUDIES["shape"]]
    assert {len(s) for s in shapes} == {3} and {sum(s) for s in shapes} == {1200}


def test_all_is_the_papers_nine_models_and_unknown_names_are_errors(ctr_files, tmp_path, capsys):
    assert parse_models("all") == PAPER_ORDER and len(PAPER_ORDER) == 9
    assert compare(ctr_files, tmp_path / "r", "--models", "deepfm,xgboost") == 2
    assert "xgboost" in capsys.readouterr().err
    assert compare(ctr_files, tmp_path / "r", "--models", "lr,DeepFM") == 2  # a new user's case
    assert capsys.readouterr().err.rstrip().endswith("(did you mean --models lr,deepfm?)")
    assert compare(ctr_files, tmp_path / "r2", "--models", "lr,fm,lr") == 2  # two rows no one could tell apart
    assert "--models: lr named twice" in capsys.readouterr().err
    with pytest.raises(ConfigError) as error:  # not 'did you mean --models fm,fm', which is then refused (a new user's)
        parse_models("fm,dfm")
    assert "did you mean" not in str(error.value)
    with pytest.raises(ConfigError, match="did you mean --models lr,fm,deepfm"):
        parse_models("lr,fm,DeepFm")


def test_flags_win_over_tuned_per_model_defaults(monkeypatch):
    monkeypatch.setitem(MODEL_DEFAULTS, "fm", {"training": {"lr": 0.05, "embed_l2": 1e-4}})
    fm, deepfm = model_variants(("fm", "deepfm"), {}, {"training": {"lr": 0.002}})
    assert fm.config.training.lr == 0.002 and fm.config.training.embed_l2 == 1e-4
    assert deepfm.config.training.embed_l2 != 1e-4


@pytest.mark.parametrize("name", ["fnn", "ipnn", "opnn", "pnn", "wide_deep", "fm_dnn"])
def test_train_selects_each_paper_model_and_the_model_directory_reloads(name, ctr_files, tmp_path, capsys):
    train, valid, test = ctr_files
    out = tmp_path / name
    args = ["train", "--train", train, "--valid", valid, "--out", str(out), "--model", name, *TINY]
    assert main(args[:-1]) == 0  # not quiet: FNN says it pre-trains
    assert json.loads((out / "config.json").read_text())["run"]["model"]["name"] == name
    assert ("FNN stage 1" in capsys.readouterr().err) == (name == "fnn")
    assert main(["evaluate", str(out), test, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 200


def test_train_no_pretrain_skips_fnns_fm_stage(ctr_files, tmp_path, capsys):
    train, valid, _ = ctr_files
    args = ["train", "--train", train, "--valid", valid, "--out", str(tmp_path / "m"), "--model", "fnn", "--no-pretrain"]
    assert main(args + TINY[:-1]) == 0
    assert "FNN stage 1" not in capsys.readouterr().err


def test_train_uses_the_tuned_per_model_defaults_unless_a_flag_sets_them(ctr_files, tmp_path):
    train, valid, _ = ctr_files

    def trained_lr(*extra: str) -> float:
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        assert main(["train", "--train", train, "--valid", valid, "--out", str(out), "--model", "fm", *TINY, *extra]) == 0
        return json.loads((out / "config.json").read_text())["run"]["training"]["lr"]

    assert trained_lr() == TASK_DEFAULTS["fm"]["binary"]["lr"]  # FM's step depends on the task (deepfm.defaults)
    assert trained_lr("--lr", "0.002") == 0.002


@pytest.mark.parametrize("out", ["a_file", "a_file/below"])
def test_an_out_that_cannot_be_written_is_refused_before_any_model_trains(out, ctr_files, tmp_path, capsys, monkeypatch):
    import deepfm.experiments.compare as compare_module

    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(compare_module, "train_one", lambda *args, **kwargs: pytest.fail("trained before the check"))
    assert compare(ctr_files, tmp_path / out, "--models", "lr") == 2
    assert f"--out {tmp_path / out}: " in capsys.readouterr().err


def test_ctrl_c_reports_the_runs_that_finished(ctr_files, tmp_path, monkeypatch):
    """Ctrl-C during compare left no --out at all, the finished models' results lost with the rest."""
    import deepfm.experiments.compare as compare_module

    real, calls = compare_module.train_one, []

    def interrupted_in_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(compare_module, "train_one", interrupted_in_the_third)
    assert compare(ctr_files, tmp_path / "r", "--models", "lr,fm", "--seeds", "2") == 130  # as interrupted
    summary = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [(v["label"], len(v["runs"])) for v in summary["variants"]] == [("lr", 2)]
    assert "(interrupted: 2 of 4 runs)" in (tmp_path / "r" / "results.md").read_text()


def test_an_out_that_holds_other_files_is_refused_and_an_earlier_report_is_replaced_only_with_overwrite(
        ctr_files, tmp_path, capsys, monkeypatch):
    """compare wrote its results into a model directory without a word (train refuses a non-empty --out), and replaced
    an earlier compare's report without one (a new user lost one so)."""
    import deepfm.experiments.compare as compare_module

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"")
    assert compare(ctr_files, model_dir, "--models", "lr") == 2
    assert "the directory holds other files (model.safetensors)" in capsys.readouterr().err
    assert compare(ctr_files, tmp_path / "r", "--models", "lr") == 0
    with monkeypatch.context() as patched:
        patched.setattr(compare_module, "train_one", lambda *args, **kwargs: pytest.fail("trained before the check"))
        assert compare(ctr_files, tmp_path / "r", "--models", "fm") == 2
    assert "holds an earlier compare's report (results.json, results.md" in capsys.readouterr().err
    assert [v["label"] for v in json.loads((tmp_path / "r" / "results.json").read_text())["variants"]] == ["lr"]
    assert compare(ctr_files, tmp_path / "r", "--models", "fm", "--overwrite") == 0
    assert [v["label"] for v in json.loads((tmp_path / "r" / "results.json").read_text())["variants"]] == ["fm"]


def test_without_a_valid_file_every_model_validates_on_the_rows_train_holds_out(ctr_files, tmp_path, capsys, monkeypatch):
    """compare required --valid where train holds out a tenth of the training rows (a new user's surprise): without it,
    the same rows are held out of the training file, left out of the encoder, and every model stops early on them."""
    from deepfm import Estimator
    import deepfm.experiments.compare as compare_module

    train, _, test = ctr_files
    assert main(["compare", "--train", train, "--test", test, "--out", str(tmp_path / "r"), "--models", "lr,fm",
                 *TINY[:-1]]) == 0
    summary = json.loads((tmp_path / "r" / "results.json").read_text())
    estimator = Estimator(data={"valid_fraction": 0.1})
    rows, held, holdout = estimator._training_data(train, None, hold_out=True)
    assert summary["rows"]["train"] == len(rows) and summary["rows"]["valid"] == len(held) == holdout.rows > 0
    assert summary["valid_held_out"]["fraction"] == 0.1
    assert "held out of the training file" in (tmp_path / "r" / "results.md").read_text()
    [said] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("validation: no --valid file, so")]
    assert said.endswith("--valid FILE validates on a file instead") and "--valid-fraction 0" not in said  # (refused)
    monkeypatch.setattr(compare_module, "train_one", lambda *args, **kwargs: pytest.fail("trained without validation"))
    assert main(["compare", "--train", train, "--test", test, "--out", str(tmp_path / "r0"), "--models", "lr",
                 "--valid-fraction", "0", *TINY]) == 2
    assert "--valid-fraction 0: compare keeps each model's best epoch by its validation rows; give --valid" in (
        capsys.readouterr().err)


def test_compare_reads_text_labels_with_positive_as_train_does(tmp_path):
    """Adult's income could not be compared: the text-label error sent the user to --positive, which compare refused
    (a multiclass tester's find)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    users = rng.integers(0, 20, 900)
    table = pa.table({"user": users.astype(str), "income": np.where((users % 2 == 0) ^ (rng.random(900) < 0.1),
                                                                     ">50K", "<=50K")})
    pacsv.write_csv(table.slice(0, 700), tmp_path / "train.csv")
    pacsv.write_csv(table.slice(700), tmp_path / "test.csv")
    assert main(["compare", "--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"), "--label",
                 "income", "--positive", ">50K", "--models", "lr", "--epochs", "2", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    result = json.loads((tmp_path / "r" / "results.json").read_text())["variants"][0]
    assert result["config"]["data"]["positive"] == ">50K" and result["test"]["auc"]["mean"] > 0.8
