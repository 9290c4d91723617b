"""The rows ``adapt`` trains on: the data's training part plus extra labelled URIs, never the holdout."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from modelreuse.api.spec import DataSpec, Holdout
from modelreuse.api.tasks import AdaptTask
from modelreuse.runtime import data as data_io
from modelreuse.runtime.errors import WorkloadError

# Fewer rows than this cannot fill a training and a validation slice for any class.
MIN_TRAIN_ROWS = 20


@dataclass
class TrainingRows:
    """Inputs and class indices of the training rows, with where each row came from.

    ``origin`` holds, per row, the index of the URI it came from (0: data.uri, 1...: extra data) and
    ``row_index`` its 0-based position in that file, so a test can check the holdout never leaks in.
    """

    y: np.ndarray
    origin: np.ndarray
    row_index: np.ndarray
    features: np.ndarray | None = None
    texts: list[str] | None = None
    digests: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)


def _collect(spec: DataSpec, part: str, labels: list[str]):
    reader = data_io.DataReader(spec, labels=labels)
    feats, texts, ys, idx = [], [], [], []
    for batch in reader.batches(part):  # type: ignore[arg-type]
        ys.append(batch.y)
        idx.append(batch.row_index)
        if batch.features is not None:
            feats.append(batch.features)
        if batch.texts is not None:
            texts.extend(batch.texts)
    if reader.digest is None:  # a file with no rows of this part still gets a digest for the record
        from modelreuse.runtime.storage import sha256_of

        reader.digest = f"sha256:{sha256_of(spec.uri)}"
    y = np.concatenate(ys) if ys else np.zeros(0, dtype=np.int64)
    rows = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
    width = len(spec.features or [])
    x = np.concatenate(feats) if feats else (np.zeros((0, width), np.float32) if spec.features else None)
    return x, (texts if spec.text_column else None), y, rows, reader.digest


def load_rows(task: AdaptTask, labels: list[str]) -> TrainingRows:
    """Read the training rows of ``task.data`` and every row of ``task.extra_data``.

    The holdout is excluded by ``runtime.data``'s split, the same function the evaluator scores with.
    Extra data (captured feedback) must hold the same feature or text columns and the target.
    """
    sources = [(task.data, "train")]
    for uri in task.extra_data:
        # Feedback files are all training rows: their holdout is the main data's, by construction.
        extra = task.data.model_copy(update={"uri": uri, "format": None, "holdout": Holdout(fraction=1.0)})
        sources.append((extra, "all"))
    xs, texts, ys, origins, rows = [], [], [], [], []
    digests: dict[str, str] = {}
    counts: dict[str, int] = {}
    for k, (spec, part) in enumerate(sources):
        x, t, y, r, digest = _collect(spec, part, labels)
        digests[spec.uri] = digest
        counts[spec.uri] = int(len(y))
        ys.append(y)
        rows.append(r)
        origins.append(np.full(len(y), k, dtype=np.int64))
        if x is not None:
            xs.append(x)
        if t is not None:
            texts.extend(t)
    out = TrainingRows(
        y=np.concatenate(ys),
        origin=np.concatenate(origins),
        row_index=np.concatenate(rows),
        features=np.concatenate(xs) if xs else None,
        texts=texts if task.data.text_column else None,
        digests=digests,
        counts=counts,
    )
    if len(out) < MIN_TRAIN_ROWS:
        raise WorkloadError(
            "TooFewRows",
            f"Only {len(out)} labelled rows are left for training after holding out "
            f"{task.data.holdout.fraction:.0%} of {task.data.uri} for evaluation; adaptation needs at least "
            f"{MIN_TRAIN_ROWS}: add labelled rows, extra data, or lower data.holdout.fraction.",
        )
    return out


def digest_of(digests: dict[str, str]) -> str:
    """One digest for all the data trained on: the data file's own when there is only one."""
    if len(digests) == 1:
        return next(iter(digests.values()))
    joined = "\n".join(f"{uri} {d}" for uri, d in digests.items())
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()
