"""The binary metrics of p_dog against true labels, checked on four predictions worked out by hand:

    image   true   p_dog   predicted   -log(p of the true class)
    a       cat    0.2     cat         -log(0.8)
    b       cat    0.6     dog         -log(0.4)
    c       dog    0.6     dog         -log(0.6)
    d       dog    0.9     dog         -log(0.9)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from catsdogs_batch.metrics import (
    accuracy,
    confusion_matrix,
    expected_calibration_error,
    log_loss,
    per_class,
    predicted_labels,
    reliability_bins,
    roc_auc,
    roc_curve,
)

TRUE = [0, 0, 1, 1]
P_DOG = [0.2, 0.6, 0.6, 0.9]


def test_accuracy_log_loss_and_counts():
    assert accuracy(TRUE, P_DOG) == 0.75  # b is wrong
    assert log_loss(TRUE, P_DOG) == pytest.approx(-(math.log(0.8) + math.log(0.4) + math.log(0.6) + math.log(0.9)) / 4)
    assert confusion_matrix(TRUE, P_DOG) == [[1, 1], [0, 2]]  # rows true cat/dog, columns predicted
    assert per_class(TRUE, P_DOG) == {
        "cat": {"precision": 1.0, "recall": 0.5, "support": 2},  # a of a; a of a, b
        "dog": {"precision": pytest.approx(2 / 3), "recall": 1.0, "support": 2},  # c, d of b, c, d; c, d of c, d
    }


def test_roc_auc_counts_dog_cat_pairs_and_the_curve_encloses_it():
    # (dog, cat) pairs: (c, a) 1, (c, b) tied 1/2, (d, a) 1, (d, b) 1 -> 3.5 of 4
    assert roc_auc(TRUE, P_DOG) == 0.875
    # thresholds 0.9 (d), 0.6 (b, c), 0.2 (a), after the start at (0, 0)
    fpr, tpr = roc_curve(TRUE, P_DOG)
    assert fpr.tolist() == [0, 0, 0.5, 1] and tpr.tolist() == [0, 0.5, 1, 1]
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.875)


def test_reliability_bins_and_expected_calibration_error():
    bins = reliability_bins(TRUE, P_DOG)
    assert [(b["low"], b["high"]) for b in bins[:2]] == [(0.0, 0.1), (0.1, 0.2)]
    used = {round(b["low"], 1): (b["count"], b["mean_p_dog"], b["fraction_dog"]) for b in bins if b["count"]}
    assert used == {0.2: (1, 0.2, 0.0), 0.6: (2, 0.6, 0.5), 0.9: (1, 0.9, 1.0)}
    assert all(b["mean_p_dog"] is None and b["fraction_dog"] is None for b in bins if not b["count"])
    # images weigh their bin's gap |mean p_dog - fraction of dogs|: (1 * 0.2 + 2 * 0.1 + 1 * 0.1) / 4
    assert expected_calibration_error(TRUE, P_DOG) == pytest.approx(0.125)


def test_bin_edges_belong_to_the_bin_above_and_1_to_the_last():
    counts = [b["count"] for b in reliability_bins([0, 1, 1], [0.1, 0.5, 1.0])]
    assert counts == [0, 1, 0, 0, 0, 1, 0, 0, 0, 1]


def test_the_engine_threshold_calls_0_5_a_dog():
    assert predicted_labels([0.4999, 0.5, 1.0]).tolist() == [0, 1, 1]
    assert accuracy([1], [0.5]) == 1.0


def test_a_certain_mistake_costs_a_finite_log_loss_and_undefined_values_are_none():
    assert log_loss([0], [1.0]) == pytest.approx(-math.log(1e-7))  # p clipped to [1e-7, 1 - 1e-7]
    assert log_loss([1], [1.0]) == pytest.approx(-math.log(1 - 1e-7))
    assert roc_auc([1, 1], [0.3, 0.8]) is None  # needs both classes
    assert per_class([0], [1.0])["dog"] == {"precision": 0.0, "recall": None, "support": 0}


def test_labels_may_be_floats_in_a_column_like_the_training_arrays():
    labels = np.array([[0.0], [0.0], [1.0], [1.0]], dtype=np.float32)
    p_dog = np.array(P_DOG, dtype=np.float32)
    assert accuracy(labels, p_dog) == 0.75
    assert log_loss(labels, p_dog) == pytest.approx(log_loss(TRUE, P_DOG))
