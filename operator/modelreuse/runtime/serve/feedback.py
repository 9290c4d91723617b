"""Ground-truth labels for earlier predictions, by request id, and the rolling live accuracy.

The server remembers the predicted class of the last ``capacity`` requests; feedback for an id it still
remembers is scored row by row into a window of the last ``window`` labelled rows.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FeedbackOutcome:
    rows: int = 0
    correct: int = 0
    unknown_ids: list[str] = field(default_factory=list)


class FeedbackError(ValueError):
    """Feedback the server cannot use: a reason code and a sentence for the caller."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class FeedbackStore:
    def __init__(self, labels: list[str], capacity: int = 100_000, window: int = 1000):
        self.labels = list(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.capacity = capacity
        self._predictions: OrderedDict[str, np.ndarray] = OrderedDict()
        self._window: deque[bool] = deque(maxlen=window)
        self._correct = 0

    def remember(self, request_id: str, predicted: np.ndarray) -> None:
        """Keep a request's predicted class indices (one per row) until ``capacity`` newer ones arrive."""
        store = self._predictions
        store[request_id] = predicted
        if len(store) > self.capacity:
            store.popitem(last=False)

    def _class_index(self, value) -> int:
        if isinstance(value, str):
            index = self.index.get(value)
            if index is None:
                known = ", ".join(self.labels) if self.labels else "class indices (the model has no labels)"
                raise FeedbackError("UnknownLabels", f"Label {value!r} is not one of the model's labels: {known}.")
            return index
        if type(value) is int and value >= 0:
            return value
        raise FeedbackError("InvalidFeedback", f"A label must be a class name or a class index, got {value!r}.")

    def parse(self, doc) -> list[tuple[str, list[int]]]:
        """``{"id", "labels"|"label"}`` or ``{"feedback": [...]}`` -> [(id, class indices)]; raises FeedbackError."""
        if not isinstance(doc, dict):
            raise FeedbackError("InvalidFeedback", 'Send {"id": "<request id>", "labels": [...]} or {"feedback": [...]}.')
        items = doc["feedback"] if "feedback" in doc else [doc]
        if not isinstance(items, list) or not items:
            raise FeedbackError("InvalidFeedback", "'feedback' must be a non-empty list of {id, labels} objects.")
        out = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
                raise FeedbackError("InvalidFeedback", "Every feedback item needs the string 'id' of an earlier inference request.")
            if "labels" in item:
                labels = item["labels"]
            elif "label" in item:
                labels = [item["label"]]
            else:
                raise FeedbackError("InvalidFeedback", f"Feedback for {item['id']!r} needs 'labels' (one per row) or 'label'.")
            if not isinstance(labels, list) or not labels:
                raise FeedbackError("InvalidFeedback", f"'labels' of {item['id']!r} must be a non-empty list.")
            out.append((item["id"], [self._class_index(v) for v in labels]))
        return out

    def record(self, items: list[tuple[str, list[int]]]) -> FeedbackOutcome:
        """Score parsed feedback against the remembered predictions; raises on a row-count mismatch."""
        outcome = FeedbackOutcome()
        for request_id, truth in items:
            predicted = self._predictions.get(request_id)
            if predicted is None:
                outcome.unknown_ids.append(request_id)
                continue
            if len(truth) != len(predicted):
                raise FeedbackError(
                    "InvalidFeedback",
                    f"Request {request_id!r} predicted {len(predicted)} rows but the feedback has {len(truth)} labels.",
                )
        for request_id, truth in items:
            predicted = self._predictions.get(request_id)
            if predicted is None:
                continue
            for want, got in zip(truth, predicted.tolist()):
                hit = want == got
                if len(self._window) == self._window.maxlen and self._window[0]:
                    self._correct -= 1
                self._window.append(hit)
                self._correct += hit
                outcome.rows += 1
                outcome.correct += hit
        return outcome

    def accuracy(self) -> tuple[float | None, int]:
        n = len(self._window)
        return (self._correct / n if n else None), n
