"""Metrics from a streamed confusion matrix equal scikit-learn's on real predictions, zero division included."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.tree import DecisionTreeClassifier

from modelreuse.runtime.metrics import ConfusionMatrix, compute

TOL = 1e-12


def _real_predictions(loader, model, train_rows: int):
    """Train on the first rows of a bundled set, predict the rest: real, imperfect predictions."""
    x, y = loader(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    model.fit(x[:train_rows], y[:train_rows])
    return y[train_rows:], model.predict(x[train_rows:])


CASES = {
    "wine-logistic": lambda: _real_predictions(
        load_wine, make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), 60
    ),
    "digits-shallow-tree": lambda: _real_predictions(load_digits, DecisionTreeClassifier(max_depth=3, random_state=0), 300),
    "breast-cancer-tree": lambda: _real_predictions(load_breast_cancer, DecisionTreeClassifier(max_depth=1, random_state=0), 50),
}


def _streamed(y_true, y_pred, n_classes, batch=37):
    cm = ConfusionMatrix(n_classes)
    for start in range(0, len(y_true), batch):
        cm.update(y_true[start : start + batch], y_pred[start : start + batch])
    return cm


def _sklearn(y_true, y_pred, average, zero_division, pos_label=1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {"pos_label": pos_label} if average == "binary" else {}
        return precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=zero_division, **kwargs)


def _assert_matches(y_true, y_pred, n_classes, averages, zero_division=0.0):
    labels = [f"class{i}" for i in range(n_classes)]
    cm = _streamed(y_true, y_pred, n_classes)
    assert cm.samples == len(y_true)
    for average in averages:
        got = compute(cm, labels, average, positive_label="class1", zero_division=zero_division)
        p, r, f, _ = _sklearn(y_true, y_pred, average, zero_division)
        assert abs(got.precision - p) <= TOL, average
        assert abs(got.recall - r) <= TOL, average
        assert abs(got.f1 - f) <= TOL, average
        assert abs(got.accuracy - accuracy_score(y_true, y_pred)) <= TOL
    # Per class, over the whole label set (sklearn given labels=range(n_classes)).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, s = precision_recall_fscore_support(
            y_true, y_pred, labels=list(range(n_classes)), average=None, zero_division=zero_division
        )
    got = compute(cm, labels, "macro", zero_division=zero_division)
    np.testing.assert_allclose([c.precision for c in got.per_class], p, rtol=0, atol=TOL)
    np.testing.assert_allclose([c.recall for c in got.per_class], r, rtol=0, atol=TOL)
    np.testing.assert_allclose([c.f1 for c in got.per_class], f, rtol=0, atol=TOL)
    assert [c.support for c in got.per_class] == list(s)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_metrics_equal_sklearn_on_real_predictions(case, zero_division):
    y_true, y_pred = CASES[case]()
    n_classes = int(max(y_true.max(), y_pred.max())) + 1
    averages = ["micro", "macro", "weighted"] + (["binary"] if n_classes == 2 else [])
    _assert_matches(y_true, y_pred, n_classes, averages, zero_division)


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_zero_division_cases_equal_sklearn(zero_division):
    y_true, y_pred = CASES["wine-logistic"]()
    # Class 2 is never predicted (its precision divides by zero) ...
    never_predicted = np.where(y_pred == 2, 0, y_pred)
    _assert_matches(y_true, never_predicted, 3, ["micro", "macro", "weighted"], zero_division)
    # ... class 2 never occurs in the truth but is predicted (its recall divides by zero) ...
    keep = y_true != 2
    _assert_matches(y_true[keep], y_pred[keep], 3, ["micro", "macro", "weighted"], zero_division)
    # ... and every row predicted as one class.
    _assert_matches(y_true, np.zeros_like(y_pred), 3, ["micro", "macro", "weighted"], zero_division)
    # Binary with the positive class never predicted nor present.
    bin_true = (y_true == 0).astype(int)
    _assert_matches(np.zeros_like(bin_true), np.zeros_like(bin_true), 2, ["binary", "micro", "macro"], zero_division)


def test_label_that_never_occurs_is_listed_but_not_averaged():
    y_true, y_pred = CASES["wine-logistic"]()
    cm = _streamed(y_true, y_pred, 4)  # a fourth label in the model's set, absent from truth and predictions
    got = compute(cm, ["a", "b", "c", "unused"], "macro")
    p, r, f, _ = _sklearn(y_true, y_pred, "macro", 0.0)
    assert abs(got.precision - p) <= TOL and abs(got.recall - r) <= TOL and abs(got.f1 - f) <= TOL
    assert got.per_class[3].support == 0 and got.per_class[3].precision == 0.0


def test_seed_score_weights_precision_and_recall():
    y_true, y_pred = CASES["digits-shallow-tree"]()
    cm = _streamed(y_true, y_pred, 10)
    labels = [str(i) for i in range(10)]
    for w1 in (0.0, 0.3, 0.5, 1.0):
        got = compute(cm, labels, "weighted", precision_weight=w1, recall_weight=1 - w1)
        p, r, _, _ = _sklearn(y_true, y_pred, "weighted", 0.0)
        assert abs(got.score - (w1 * p + (1 - w1) * r)) <= TOL


def test_streaming_equals_one_batch_and_merges():
    y_true, y_pred = CASES["digits-shallow-tree"]()
    whole = ConfusionMatrix(10)
    whole.update(y_true, y_pred)
    halves = [ConfusionMatrix(10), ConfusionMatrix(10)]
    halves[0].update(y_true[:500], y_pred[:500])
    halves[1].update(y_true[500:], y_pred[500:])
    halves[0].merge(halves[1])
    assert np.array_equal(whole.counts, halves[0].counts)
    assert np.array_equal(whole.counts, _streamed(y_true, y_pred, 10, batch=1).counts)


def test_confusion_matrix_refuses_out_of_range_classes():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError):
        cm.update(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError):
        cm.update(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError):
        compute(cm, ["a", "b"], "binary", positive_label="c")
