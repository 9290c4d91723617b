"""Classification metrics from a confusion matrix accumulated over batches.

The numbers equal scikit-learn's ``precision_recall_fscore_support`` and ``accuracy_score`` on the same
predictions (the tests check within 1e-12), with these rules spelled out:

- Zero division: a ratio whose denominator is 0 (precision of a class never predicted, recall of a class
  absent from the truth, F1 of a class with neither) is ``zero_division``, 0.0 by default: scikit-learn's
  ``zero_division=0`` (and the value its default ``"warn"`` returns). 1.0 is accepted too.
- Which classes are averaged: ``macro`` and ``weighted`` average over the classes that occur in the truth
  or in the predictions, like scikit-learn called without ``labels=``; a class of the label set that never
  occurs in either is listed in the per-class table but does not drag the average down.
- ``binary`` reports the positive class alone (scikit-learn's ``average="binary", pos_label=...``; with
  more than two classes it equals ``labels=[pos], average="micro"``).
- ``micro`` pools the counts of all classes; for single-label data its precision and recall equal accuracy.
- F1 is computed from counts, ``2*tp / (2*tp + fp + fn)``, and averaged like precision and recall (so the
  macro F1 is the mean of the per-class F1, not the harmonic mean of macro precision and recall).
- The seed score is ``P = w1 * Precision + w2 * Recall`` over the averaged precision and recall.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

Average = Literal["binary", "micro", "macro", "weighted"]


class ConfusionMatrix:
    """A streaming confusion matrix: rows are true classes, columns predicted classes."""

    def __init__(self, n_classes: int):
        if n_classes < 1:
            raise ValueError("a confusion matrix needs at least one class")
        self.n_classes = int(n_classes)
        self.counts = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)

    def update(self, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        """Add one batch of true and predicted class indices (each in [0, n_classes))."""
        y_true = np.asarray(y_true, dtype=np.int64)
        y_pred = np.asarray(y_pred, dtype=np.int64)
        if y_true.shape != y_pred.shape:
            raise ValueError(f"{y_true.shape[0]} true labels but {y_pred.shape[0]} predictions")
        if y_true.size == 0:
            return
        c = self.n_classes
        if min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= c:
            raise ValueError(f"class indices must lie in [0, {c})")
        self.counts += np.bincount(y_true * c + y_pred, minlength=c * c).reshape(c, c)

    def merge(self, other: ConfusionMatrix) -> None:
        self.counts += other.counts

    @property
    def samples(self) -> int:
        return int(self.counts.sum())


def _divide(numerator: np.ndarray, denominator: np.ndarray, zero_division: float) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(numerator.shape, float(zero_division), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


@dataclass
class ClassMetrics:
    label: str
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


@dataclass
class Metrics:
    """Everything the evaluator reports; ``per_class`` lists every class of the label set."""

    average: str
    precision: float
    recall: float
    f1: float
    accuracy: float
    score: float
    samples: int
    per_class: list[ClassMetrics] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    precision_weight: float = 0.5
    recall_weight: float = 0.5

    def summary(self) -> dict[str, float | int | str]:
        return {
            "average": self.average,
            "score": self.score,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "accuracy": self.accuracy,
            "samples": self.samples,
        }


def per_class(counts: np.ndarray, zero_division: float = 0.0) -> tuple[np.ndarray, ...]:
    """Per-class (precision, recall, f1, support, predicted) arrays from a confusion matrix."""
    tp = np.diag(counts).astype(np.int64)
    true_sum = counts.sum(axis=1)
    pred_sum = counts.sum(axis=0)
    precision = _divide(tp, pred_sum, zero_division)
    recall = _divide(tp, true_sum, zero_division)
    f1 = _divide(2 * tp, true_sum + pred_sum, zero_division)
    return precision, recall, f1, true_sum, pred_sum


def compute(
    cm: ConfusionMatrix | np.ndarray,
    labels: Sequence[str],
    average: Average = "macro",
    positive_label: str | None = None,
    precision_weight: float = 0.5,
    recall_weight: float = 0.5,
    zero_division: float = 0.0,
) -> Metrics:
    """Averaged and per-class metrics and the seed score from a confusion matrix (rules: module docstring)."""
    if zero_division not in (0.0, 1.0):
        raise ValueError("zero_division must be 0.0 or 1.0")
    counts = np.asarray(cm.counts if isinstance(cm, ConfusionMatrix) else cm, dtype=np.int64)
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(f"a {counts.shape} confusion matrix does not fit {len(labels)} labels")
    total = int(counts.sum())
    precision, recall, f1, true_sum, pred_sum = per_class(counts, zero_division)
    tp = np.diag(counts)

    if average == "binary":
        if positive_label not in labels:
            raise ValueError(f"positive label {positive_label!r} is not among the labels {list(labels)}")
        k = list(labels).index(positive_label)
        avg_p, avg_r, avg_f = float(precision[k]), float(recall[k]), float(f1[k])
    elif average == "micro":
        tp_all, pred_all, true_all = tp.sum(), pred_sum.sum(), true_sum.sum()
        avg_p = float(_divide(tp_all, pred_all, zero_division))
        avg_r = float(_divide(tp_all, true_all, zero_division))
        avg_f = float(_divide(2 * tp_all, true_all + pred_all, zero_division))
    elif average in ("macro", "weighted"):
        present = (true_sum + pred_sum) > 0
        if not present.any():
            avg_p = avg_r = avg_f = float(zero_division)
        elif average == "macro":
            avg_p = float(np.average(precision[present]))
            avg_r = float(np.average(recall[present]))
            avg_f = float(np.average(f1[present]))
        else:
            weights = true_sum[present]
            if weights.sum() == 0:
                avg_p = avg_r = avg_f = float(zero_division)
            else:
                avg_p = float(np.average(precision[present], weights=weights))
                avg_r = float(np.average(recall[present], weights=weights))
                avg_f = float(np.average(f1[present], weights=weights))
    else:
        raise ValueError(f"unknown average {average!r}")

    accuracy = float(tp.sum() / total) if total else float(zero_division)
    return Metrics(
        average=average,
        precision=avg_p,
        recall=avg_r,
        f1=avg_f,
        accuracy=accuracy,
        score=float(precision_weight * avg_p + recall_weight * avg_r),
        samples=total,
        per_class=[
            ClassMetrics(str(lab), float(precision[i]), float(recall[i]), float(f1[i]), int(true_sum[i]), int(pred_sum[i]))
            for i, lab in enumerate(labels)
        ],
        confusion=counts.tolist(),
        precision_weight=float(precision_weight),
        recall_weight=float(recall_weight),
    )
