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


def test_two_class_summary_keeps_its_keys_in_order_and_adds_macro_and_per_class_after_them():
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p_dog = np.array([0.1, 0.2, 0.7, 0.9, 0.8, 0.6, 0.4, 0.3])
    summary = metrics.classification(labels, np.stack([1 - p_dog, p_dog], axis=1), ["Cat", "Dog"])
    assert list(summary) == ["accuracy", "precision", "recall", "f1", "roc_auc", "images", "per_class_accuracy",
                             "loss", "macro", "per_class_precision", "per_class_f1", "per_class_roc_auc"]
    assert summary["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.3, 0.9, 0.8, 0.6, 0.4, 0.3])), abs=1e-6)
    # cats: tp=2, predicted 4 (0.1, 0.2, 0.4, 0.3) -> precision 1/2, recall 2/3; dogs 3/4 and 3/5
    assert summary["per_class_precision"] == {"Cat": 0.5, "Dog": 0.75}
    assert summary["macro"]["precision"] == pytest.approx((0.5 + 0.75) / 2, abs=1e-6)
    assert summary["macro"]["recall"] == pytest.approx((2 / 3 + 3 / 5) / 2, abs=1e-6)
    assert summary["per_class_f1"]["Cat"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), abs=1e-6)
    assert summary["per_class_f1"]["Dog"] == summary["f1"]
    # one-vs-rest for two classes: each class's AUC is the same number
    assert summary["per_class_roc_auc"] == {"Cat": summary["roc_auc"], "Dog": summary["roc_auc"]}
    assert summary["macro"]["roc_auc"] == summary["roc_auc"]


def test_three_class_summary_per_class_and_macro_by_hand():
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    summary = metrics.classification(labels, probs, ["a", "b", "c"])
    # predicted a, b, c, a: a precision 1/2, b 1, c 1; recall 1, 1, 1/2
    assert summary["per_class_precision"] == {"a": 0.5, "b": 1.0, "c": 1.0}
    two_thirds = pytest.approx(2 / 3, abs=1e-6)
    assert summary["per_class_f1"] == {"a": two_thirds, "b": 1.0, "c": two_thirds}
    assert summary["macro"]["precision"] == summary["precision"] == pytest.approx(2.5 / 3, abs=1e-6)
    assert summary["macro"]["f1"] == summary["f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3, abs=1e-6)
    # a: 0.8 against 0.2, 0.1, 0.6 -> 1; b: 0.7 against 0.1, 0.1, 0.2 -> 1; c: 0.8, 0.2 against 0.1, 0.1 -> 1
    assert summary["per_class_roc_auc"] == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert summary["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.8, 0.2])), abs=1e-6)


def test_a_class_absent_from_the_labels_has_a_null_auc_not_nan():
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.5, 0.4]])
    summary = metrics.classification(labels, probs, ["a", "b", "c"])
    assert summary["per_class_roc_auc"] == {"a": 0.5, "b": 0.75, "c": None}
    assert summary["macro"]["roc_auc"] == pytest.approx(0.625, abs=1e-6)


def test_macro_roc_curve_by_hand_and_its_area_is_the_macro_auc():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.2, 0.7, 0.1],
                      [0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6]])
    fpr, tpr = metrics.macro_roc_curve(labels, probs)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    summary = metrics.classification(labels, probs, ["a", "b", "c"])
    assert np.trapezoid(tpr, fpr) == pytest.approx(summary["roc_auc"])
    aucs = [metrics.roc_auc(labels == c, probs[:, c]) for c in range(3)]
    assert np.trapezoid(tpr, fpr) == pytest.approx(np.mean(aucs)) and len(set(aucs)) > 1


def test_macro_roc_curve_skips_a_class_absent_from_the_labels():
    labels = np.array([0, 1, 1, 0])
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.5, 0.4]])
    fpr, tpr = metrics.macro_roc_curve(labels, probs)
    assert np.trapezoid(tpr, fpr) == pytest.approx((0.5 + 0.75) / 2)
