import numpy as np
import pytest

from catsdogs.evaluation import metrics


def test_auc_of_perfect_random_and_inverted_scores():
    labels = np.array([0, 0, 1, 1])
    assert metrics.roc_auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert metrics.roc_auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert metrics.roc_auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5


def test_auc_equals_the_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300), 2)  # with ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert metrics.roc_auc(labels, scores) == pytest.approx(pairwise)


def test_roc_curve_runs_from_origin_to_one_and_its_area_is_the_auc():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) * 0.5 + labels * 0.3, 2)
    fpr, tpr, thresholds = metrics.roc_curve(labels, scores)
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thresholds) < 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.roc_auc(labels, scores))


def test_classification_summary_for_two_classes():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p_dog = np.array([0.1, 0.2, 0.7, 0.9, 0.8, 0.6, 0.4, 0.3])
    summary = metrics.classification(labels, np.stack([1 - p_dog, p_dog], axis=1), ["Cat", "Dog"])
    # dogs: tp=3 (0.9, 0.8, 0.6), fp=1 (0.7), fn=2
    assert summary["accuracy"] == pytest.approx(5 / 8, abs=1e-6)
    assert summary["precision"] == pytest.approx(3 / 4, abs=1e-6)
    assert summary["recall"] == pytest.approx(3 / 5, abs=1e-6)
    assert summary["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35, abs=1e-6)
    assert summary["per_class_accuracy"] == {"Cat": pytest.approx(2 / 3, abs=1e-6), "Dog": 0.6}
    assert summary["images"] == 8 and 0 <= summary["roc_auc"] <= 1


def test_classification_summary_for_three_classes_is_macro_averaged():
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    summary = metrics.classification(labels, probs, ["a", "b", "c"])
    assert summary["accuracy"] == 0.75
    assert summary["per_class_accuracy"] == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert summary["recall"] == pytest.approx(2.5 / 3, abs=1e-6)


def test_roc_curve_of_a_small_case_with_ties_point_by_point():
    # scores 0.9 (dog), 0.8 (dog), 0.8 (cat), 0.3 (cat), 0.3 (dog): the tied scores move together
    positive = np.array([1, 1, 0, 0, 1])
    fpr, tpr, thresholds = metrics.roc_curve(positive, np.array([0.9, 0.8, 0.8, 0.3, 0.3]))
    assert thresholds.tolist() == [np.inf, 0.9, 0.8, 0.3]
    np.testing.assert_allclose(fpr, [0, 0, 1 / 2, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1])


def test_auc_of_a_small_case_by_hand():
    # positives 0.9, 0.8, 0.3; negatives 0.8, 0.3: pairs won 2 + (1 + 0.5) + (0 + 0.5) = 4 of 6
    assert metrics.roc_auc(np.array([1, 1, 0, 0, 1]), np.array([0.9, 0.8, 0.8, 0.3, 0.3])) == pytest.approx(4 / 6)
    assert np.isnan(metrics.roc_auc(np.array([1, 1]), np.array([0.2, 0.4])))


def test_two_class_roc_auc_is_that_of_the_dog_probability():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p_dog = np.array([0.1, 0.2, 0.7, 0.9, 0.8, 0.6, 0.4, 0.3])
    # each dog against each cat: 0.9, 0.8 beat all 3; 0.6, 0.4, 0.3 beat 2 (not 0.7): 12 of 15 pairs
    summary = metrics.classification(labels, np.stack([1 - p_dog, p_dog], axis=1), ["Cat", "Dog"])
    assert summary["roc_auc"] == pytest.approx(12 / 15, abs=1e-6)


def test_macro_roc_auc_skips_a_class_absent_from_the_labels():
    labels = np.array([0, 1, 1, 0])  # no image of class c: its AUC is undefined, not 0 and not NaN overall
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.5, 0.4]])
    # a: positives 0.6, 0.1 vs negatives 0.2, 0.5 -> 2 of 4 pairs; b: 0.7, 0.4 vs 0.3, 0.5 -> 3 of 4
    summary = metrics.classification(labels, probs, ["a", "b", "c"])
    assert summary["roc_auc"] == pytest.approx((2 / 4 + 3 / 4) / 2, abs=1e-6)
    assert summary["per_class_accuracy"] == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert summary["accuracy"] == 0.5
