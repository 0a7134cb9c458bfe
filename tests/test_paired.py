"""deepfm.paired: two models' metrics on the same rows, and the sampling error of their difference."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deepfm.paired import auc_difference, auc_standard_error, mean_difference


@pytest.fixture
def rows():
    rng = np.random.default_rng(0)
    labels = rng.random(400) < 0.3
    signal = labels + rng.normal(0, 1.0, 400)
    return labels, signal + rng.normal(0, 0.5, 400), signal + rng.normal(0, 0.5, 400)


def delong_by_pairs(labels, scores):
    """Each positive's share of negatives below it and each negative's share of positives above it, pair by pair."""
    positives, negatives = scores[labels], scores[~labels]
    kernel = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
    return kernel.mean(axis=1), kernel.mean(axis=0)


def test_the_auc_is_scikit_learns_and_its_standard_error_delongs_pair_by_pair(rows):
    labels, scores, _ = rows
    scores = np.round(scores, 1)  # ties count one half
    auc, error = auc_standard_error(labels, scores)
    above, below = delong_by_pairs(labels, scores)
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert error == pytest.approx(np.sqrt(above.var(ddof=1) / len(above) + below.var(ddof=1) / len(below)), rel=1e-9)


def test_the_difference_of_two_aucs_has_the_standard_error_of_the_paired_components(rows):
    labels, scores, others = rows
    gap, error = auc_difference(labels, scores, others)
    (a_above, a_below), (b_above, b_below) = delong_by_pairs(labels, scores), delong_by_pairs(labels, others)
    assert gap == pytest.approx(roc_auc_score(labels, scores) - roc_auc_score(labels, others), abs=1e-12)
    expected = np.sqrt((a_above - b_above).var(ddof=1) / len(a_above) + (a_below - b_below).var(ddof=1) / len(a_below))
    assert error == pytest.approx(expected, rel=1e-9)
    assert error < auc_standard_error(labels, scores)[1]  # the two share the rows' noise: pairing removes it


def test_one_model_against_itself_or_a_monotone_copy_differs_by_nothing(rows):
    labels, scores, _ = rows
    assert auc_difference(labels, scores, scores) == (0.0, 0.0)
    assert auc_difference(labels, 3 * scores + 1, scores) == (pytest.approx(0.0, abs=1e-15), pytest.approx(0.0, abs=1e-15))


def test_a_mean_difference_is_the_mean_and_standard_error_of_the_rows_gaps():
    gap, error = mean_difference(np.array([1.0, 2.0, 4.0]), np.array([0.0, 1.0, 1.0]))
    assert gap == pytest.approx(5 / 3) and error == pytest.approx(np.std([1.0, 1.0, 3.0], ddof=1) / np.sqrt(3))


def test_one_class_has_no_auc():
    with pytest.raises(ValueError, match="positive and negative"):
        auc_standard_error(np.ones(5), np.arange(5.0))
