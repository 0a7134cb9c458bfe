"""benchmarks/run.py's table: what each row is divided by (no timing here)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def load_run():
    spec = importlib.util.spec_from_file_location("benchmark_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deepfm_row(speed: float, width: int | None = None) -> dict:
    row = {"train_samples_per_s": speed, "predict_samples_per_s": 1.0, "file_to_model_s": 1.0, "peak_rss_mb": 1.0}
    return row | ({"mlp_input_width": width} if width else {})


def test_a_deepfm_row_is_divided_by_the_bare_mlp_over_its_own_input_width():
    """At k 64 the one-hot defaults' MLP reads 640 inputs, not fields × 10 = 100: its × ceiling divides by
    the 640-wide bare MLP of the same run; a row over fields × 10 keeps the shape's ceiling."""
    run = load_run()
    results = {"bare MLP (ceiling) · onehot": {"train_samples_per_s": 30_000.0},
               "bare MLP 640 wide (ceiling) · onehot": {"train_samples_per_s": 20_000.0},
               "deepfm DeepFM defaults · onehot": deepfm_row(15_000.0, 640),
               "deepfm DeepFM stripped · onehot": deepfm_row(24_000.0, 100)}
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[2] for line in run.table(results).splitlines()
            if line.startswith("| deepfm")}
    assert rows == {"deepfm DeepFM defaults · onehot": "0.75", "deepfm DeepFM stripped · onehot": "0.80"}


def test_a_deepfm_row_of_another_mlp_is_divided_by_the_bare_mlp_of_its_own_sizes():
    """Where ids recur the defaults train a 200-200 MLP: the row's × ceiling divides by the bare 640→200→200→1 of the
    same run, not by the 400-400-400 one (which it would beat with less work)."""
    run = load_run()
    results = {"bare MLP 640 wide (ceiling) · onehot": {"train_samples_per_s": 20_000.0},
               "bare MLP 640 wide, 200-200 (ceiling) · onehot": {"train_samples_per_s": 50_000.0},
               "deepfm DeepFM defaults · onehot": deepfm_row(40_000.0, 640) | {"mlp": "200-200"}}
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[2] for line in run.table(results).splitlines()
            if line.startswith("| deepfm")}
    assert rows == {"deepfm DeepFM defaults · onehot": "0.80"}
    assert run.own_ceiling(640.0, "bf16", "onehot", "200-200") == "bare MLP 640 wide, 200-200 bf16 (ceiling) · onehot"


def test_a_bf16_row_over_another_width_is_divided_by_the_bf16_bare_mlp_of_that_width_also_after_a_median():
    """With --repeat 2 a row's width is the median of its rounds (640.0, a float): the same ceiling is found;
    a bf16 row is divided by the bf16 bare MLP of its own width, not by the fp32 one or the shape's bf16 one."""
    run = load_run()
    results = {"bare MLP bf16 (ceiling) · onehot": {"train_samples_per_s": 90_000.0},
               "bare MLP 640 wide (ceiling) · onehot": {"train_samples_per_s": 20_000.0},
               "bare MLP 640 wide bf16 (ceiling) · onehot": {"train_samples_per_s": 40_000.0},
               "deepfm DeepFM defaults · onehot": run.median_of([deepfm_row(15_000.0, 640), deepfm_row(15_000.0, 640)]),
               "deepfm DeepFM defaults bf16 · onehot": deepfm_row(30_000.0, 640)}
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[2] for line in run.table(results).splitlines()
            if line.startswith("| deepfm")}
    assert rows == {"deepfm DeepFM defaults · onehot": "0.75", "deepfm DeepFM defaults bf16 · onehot": "0.75"}


def test_the_table_shows_the_time_beside_training_where_a_row_has_it():
    """File → model less the training loop's own time (reading, encoding and set-up), where a row has it."""
    run = load_run()
    results = {"deepfm DeepFM defaults · criteo": deepfm_row(40_000.0) | {"file_to_model_s": 30.0, "beside_training_s": 4.375},
               "bare MLP (ceiling) · criteo": {"train_samples_per_s": 50_000.0}}
    header, _, deepfm, bare = run.table(results).splitlines()[:4]
    column = [cell.strip() for cell in header.strip("|").split("|")].index("beside training (s)")
    assert [cell.strip() for cell in deepfm.strip("|").split("|")][column] == "4.38"
    assert [cell.strip() for cell in bare.strip("|").split("|")][column] == "—"


def test_deepctr_torch_matched_gets_the_embedding_width_and_dropout_deepfm_chose_on_the_shape():
    """On one-hot data deepfm's data rule picks k 64 and dropout 0.5: the matched peer trains that model, not k 10;
    after a failed deepfm row there is no model to match (the peer does not run)."""
    run = load_run()
    args = ("deepctr", "data/onehot", "matched", "no")
    assert run.matched_to({"embed_dim": 64, "dropout": 0.5}, args) == ("deepctr", "data/onehot", "matched:64:0.5", "no")
    assert run.matched_to({"embed_dim": 64, "dropout": 0.5, "mlp": "200-200"}, args) == (
        "deepctr", "data/onehot", "matched:64:0.5:200-200", "no")
    assert run.matched_to({"error": "killed"}, args) is None


def test_selecting_a_matched_peer_row_also_runs_the_deepfm_row_it_is_matched_to():
    run = load_run()
    jobs = {name: () for name in ("bare MLP (ceiling) · onehot", "deepfm DeepFM defaults · onehot",
                                  "deepfm DeepFM defaults bf16 · onehot", "DeepCTR-Torch DeepFM defaults · onehot",
                                  "DeepCTR-Torch DeepFM matched · onehot", "deepfm DeepFM defaults · criteo")}
    chosen = list(run.selected(jobs, ["DeepCTR-Torch DeepFM matched"]))
    assert "deepfm DeepFM defaults · onehot" in chosen and "deepfm DeepFM defaults bf16 · onehot" not in chosen
    assert chosen == ["deepfm DeepFM defaults · onehot", "DeepCTR-Torch DeepFM matched · onehot"]


def test_the_peers_settings_name_the_deepctr_model_they_build(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))  # peers.py sets it
    monkeypatch.syspath_prepend(str(RUN.parent))
    before = sys.modules.get("common")
    spec = importlib.util.spec_from_file_location("benchmark_peers", RUN.parent / "peers.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:  # benchmarks/common.py is no module of the tests'
        if before is None:
            sys.modules.pop("common", None)
        else:
            sys.modules["common"] = before
    paper = (400, 400, 400)
    assert module.matched_model("defaults") == (10, paper, {})
    assert module.matched_model("matched") == (10, paper, {"dnn_dropout": 0.2, "dnn_use_bn": True})
    assert module.matched_model("matched:64:0.5") == (64, paper, {"dnn_dropout": 0.5, "dnn_use_bn": True})
    assert module.matched_model("matched:64:0.5:200-200") == (64, (200, 200), {"dnn_dropout": 0.5, "dnn_use_bn": True})
    for bad in ("matched:64", "matched:64:0.5:wide"):
        with pytest.raises(ValueError, match="matched:K:DROPOUT"):
            module.matched_model(bad)


def test_the_interleaved_row_shows_the_step_against_the_bare_mlp_measured_in_its_own_process():
    """profile_step.py --ceiling times both steps alternately in one process: its ratio is shown as measured, not
    divided by the bare-MLP row of another process."""
    run = load_run()
    results = {"bare MLP (ceiling) · longtail": {"train_samples_per_s": 100_000.0},
               "deepfm DeepFM defaults, step × bare MLP interleaved · longtail": {
                   "train_samples_per_s": 48_000.0, "step_vs_ceiling_wall": 0.714, "step_vs_ceiling_cpu": 0.752,
                   "mlp_input_width": 390}}
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[2] for line in run.table(results).splitlines()
            if line.startswith("| deepfm")}
    assert rows == {"deepfm DeepFM defaults, step × bare MLP interleaved · longtail": "0.71 (0.75 CPU)"}


def test_the_interleaved_rows_run_only_when_asked_for():
    run = load_run()
    jobs = run.shape_jobs("longtail", Path("data"))
    assert "interleaved" not in " ".join(run.selected(jobs, ["deepfm DeepFM defaults ·"]))
    chosen = run.selected(jobs, ["interleaved"])
    assert list(chosen) == ["deepfm DeepFM defaults, step × bare MLP interleaved · longtail"]
    assert chosen["deepfm DeepFM defaults, step × bare MLP interleaved · longtail"][2] == (
        "data/longtail", "--categorical", "--setting", "defaults", "--ceiling", "--steps", "20", "--json")


def test_an_interleaved_row_over_another_width_starts_no_bare_mlp_process_of_that_width(monkeypatch):
    run = load_run()
    ran = []

    def fake(title, python, script, *args):
        ran.append(title)
        return {"train_samples_per_s": 1.0, "mlp_input_width": 640, "step_vs_ceiling_wall": 0.9, "step_vs_ceiling_cpu": 1.0}

    monkeypatch.setattr(run, "run_logged", fake)
    run.measure(1, Path("data"), None, None, only=["interleaved"], shapes=("onehot",))
    assert ran == ["[1/1] deepfm DeepFM defaults, step × bare MLP interleaved · onehot"]
