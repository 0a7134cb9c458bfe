"""benchmarks/accuracy_stats.py (a test AUC's sampling error) and benchmarks/reference_frappe.py (an
independent FM/DeepFM written from the papers, for same-split reference figures)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from accuracy_stats import auc_standard_error, spread  # noqa: E402

import reference_frappe  # noqa: E402


def test_delong_error_of_a_hand_computed_case():
    """Positives 0.9, 0.4; negatives 0.5, 0.1: AUC 3/4; the structural components are (1, ½) for the
    positives and (½, 1) for the negatives, each with sample variance ⅛, so se = √(⅛/2 + ⅛/2)."""
    auc, se = auc_standard_error(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1]))
    assert auc == pytest.approx(0.75)
    assert se == pytest.approx(np.sqrt(0.125))


def test_delong_auc_counts_ties_one_half_as_the_empirical_auc_does():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.random(2000) < 0.3
    scores = np.round(labels + rng.normal(size=2000), 1)  # many ties
    auc, se = auc_standard_error(labels, scores)
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert 0.005 < se < 0.03


def test_spread_is_mean_and_sample_sd():
    assert spread([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0, "n": 3, "min": 1.0, "max": 3.0}


def test_the_reference_does_not_import_deepfm():
    source = (BENCHMARKS / "reference_frappe.py").read_text()
    assert "import deepfm" not in source and "from deepfm" not in source


def test_the_reference_fm_pairwise_term_is_the_sum_over_pairs_of_fields():
    torch.manual_seed(0)
    model = reference_frappe.FM(rows=20, k=4)
    torch.nn.init.normal_(model.w.weight)
    torch.nn.init.normal_(model.v.weight)
    ids = torch.tensor([[1, 5, 9], [2, 3, 19]])
    logit, penalty = model(ids)
    for row, fields in enumerate(ids):
        v, w = model.v.weight[fields], model.w.weight[fields].squeeze(-1)
        pairs = sum(v[i] @ v[j] for i in range(3) for j in range(i + 1, 3))
        assert logit[row].item() == pytest.approx((model.bias + w.sum() + pairs).item(), rel=1e-5)
    expected = np.mean([(model.v.weight[f].pow(2).sum() + model.w.weight[f].pow(2).sum()).item() for f in ids])
    assert penalty.item() == pytest.approx(expected, rel=1e-5), "L2 per occurrence: a mean over the batch"


def _libfm(path: Path, ids: np.ndarray, labels: np.ndarray) -> None:
    path.write_text("".join(f"{int(y)} " + " ".join(f"{i}:1" for i in row) + "\n" for row, y in zip(ids, labels)))


@pytest.fixture()
def tiny_frappe(tmp_path):
    """Three fields of 10 ids each (global ids 0-29); the label depends on the pair of fields 0 and 1."""
    rng = np.random.default_rng(1)
    for name, rows in (("train", 600), ("valid", 200), ("test", 200)):
        ids = rng.integers(0, 10, size=(rows, 3)) + np.array([0, 10, 20])
        labels = ((ids[:, 0] + ids[:, 1]) % 2 == 0) ^ (rng.random(rows) < 0.1)
        _libfm(tmp_path / f"{name}.libfm", ids, labels)
    return tmp_path


@pytest.mark.parametrize("model", ["fm", "deepfm"])
def test_the_reference_learns_and_reads_test_only_when_asked(tiny_frappe, model, capsys):
    flags = ["--data", str(tiny_frappe), "--model", model, "--max-epochs", "4", "--k", "4", "--mlp", "8"]
    result = reference_frappe.main(["run", *flags])
    assert "test_auc" not in result
    assert len(result["valid_auc_by_epoch"]) >= 1 and result["valid_auc"] > 0.7
    scored = reference_frappe.main(["run", *flags, "--test"])
    assert scored["valid_auc"] == pytest.approx(result["valid_auc"], abs=1e-12), "seeded: the same run"
    assert scored["test_auc"] > 0.7 and 0 < scored["test_auc_se"] < 0.1


def test_the_hybrid_optimiser_steps_the_fm_weights_by_adagrad_and_the_mlp_by_adam():
    recipe = reference_frappe.Recipe(model="deepfm", optimizer="hybrid", lr=0.1, dense_lr=1e-3, k=4, mlp="8")
    model = reference_frappe.build(recipe, rows=30, fields=3)
    optimizer = reference_frappe.optimizer_for(recipe, model)
    adagrad, adam = optimizer.parts
    assert isinstance(adagrad, torch.optim.Adagrad) and adagrad.param_groups[0]["lr"] == 0.1
    assert {id(p) for p in adagrad.param_groups[0]["params"]} == {id(model.bias), id(model.w.weight), id(model.v.weight)}
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 1e-3
    assert {id(p) for p in adam.param_groups[0]["params"]} == {id(p) for p in model.mlp.parameters()}
    with pytest.raises(ValueError, match="DeepFM only"):
        reference_frappe.optimizer_for(reference_frappe.Recipe(optimizer="hybrid"), reference_frappe.build(
            reference_frappe.Recipe(k=4), rows=30, fields=3))


def test_the_reference_search_runs_its_first_trial_as_the_recipe_and_reads_no_test(tiny_frappe):
    pytest.importorskip("optuna")  # the tune extra (.[dev] installs it)
    result = reference_frappe.main(["search", "--data", str(tiny_frappe), "--model", "deepfm", "--optimizer", "hybrid",
                                    "--max-epochs", "3", "--k", "16", "--mlp", "200,200", "--trials", "3"])
    first = result["trials"][0]
    assert first["params"]["optimizer"] == "hybrid" and first["params"]["dense_lr"] == 1e-3
    assert len(result["trials"]) == 3 and "test_auc" not in result["best"]
