"""The rows ``adapt`` trains on: the data's training part plus extra labelled URIs, never the holdout."""

from __future__ import annotations

import hashlib
import json
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


_CAPTURE_SUFFIXES = (".jsonl", ".parquet")


def _capture_files(uri: str) -> list[str] | None:
    """The part files under a capture prefix, or None when ``uri`` is not a folder."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
        if not fs.isdir(path):
            return None
        found = sorted(p for p in fs.find(path) if p.endswith(_CAPTURE_SUFFIXES))
    except (OSError, ValueError) as exc:
        raise WorkloadError("UnreadableUri", f"Cannot list the extra data at {uri} ({exc}); check the URI.") from exc
    protocol = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    return [protocol + p if protocol and not p.startswith(protocol) else p for p in found]


def _capture_records(uri: str) -> list[dict] | None:
    """The records of a data-capture part file (``modelreuse serve``), or None for a plain table."""
    from modelreuse.runtime.storage import read_bytes

    payload = read_bytes(uri)
    if uri.endswith(".parquet"):
        import io

        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(payload))
        if not {"kind", "id", "inputs", "labels"} <= set(table.column_names):
            return None
        records = []
        for row in table.to_pylist():
            for key in ("inputs", "outputs", "labels"):
                if row.get(key) is not None:
                    row[key] = json.loads(row[key])
            records.append(row)
        return records
    lines = [line for line in payload.decode("utf-8").splitlines() if line.strip()]
    if not lines:
        return []
    try:
        first = json.loads(lines[0])
    except ValueError:
        return None
    if not (isinstance(first, dict) and "kind" in first and ("inputs" in first or "labels" in first)):
        return None
    return [json.loads(line) for line in lines]


def _from_capture(records: list[dict], spec: DataSpec, labels: list[str], uri: str):
    """Rows of the captured inference requests that received feedback: inputs joined to labels by id."""
    inputs = {r["id"]: r["inputs"] for r in records if r.get("kind") == "inference"}
    feats, texts, ys = [], [], []
    index = {label: i for i, label in enumerate(labels)}
    width = len(spec.features or [])
    for record in records:
        if record.get("kind") != "feedback" or record.get("id") not in inputs:
            continue
        tensors = inputs[record["id"]]
        truth = [str(v) for v in record.get("labels") or []]
        unknown = sorted({v for v in truth if v not in index})
        if unknown:
            raise WorkloadError(
                "UnknownLabels",
                f"Captured feedback in {uri} holds labels {unknown} outside {labels}; extend the labels or drop "
                "that feedback.",
            )
        value = next(iter(tensors.values()))
        if spec.text_column:
            rows_in = [v if isinstance(v, str) else bytes(v).decode() for v in np.asarray(value, dtype=object).reshape(-1)]
        else:
            rows_in = np.asarray(value, dtype=np.float32).reshape(-1, width) if width else None
        if rows_in is None or len(rows_in) != len(truth):
            raise WorkloadError(
                "InvalidData",
                f"A captured request in {uri} has {0 if rows_in is None else len(rows_in)} rows but its feedback "
                f"has {len(truth)} labels; capture and feedback must describe the same rows.",
            )
        ys.append(np.asarray([index[v] for v in truth], dtype=np.int64))
        if spec.text_column:
            texts.extend(rows_in)
        else:
            feats.append(rows_in)
    y = np.concatenate(ys) if ys else np.zeros(0, dtype=np.int64)
    x = None
    if not spec.text_column:
        x = np.concatenate(feats) if feats else np.zeros((0, width), np.float32)
        if not np.all(np.isfinite(x)):
            raise WorkloadError(
                "InvalidFeatures", f"Captured requests in {uri} hold NaN or infinite features; drop those records."
            )
    return x, (texts if spec.text_column else None), y


def _read_extra(spec: DataSpec, labels: list[str]):
    """Extra labelled data: a capture prefix or part file of ``modelreuse serve``, or a plain table."""
    import hashlib as _hashlib

    files = _capture_files(spec.uri)
    parts = files if files is not None else [spec.uri]
    xs, texts, ys = [], [], []
    digest = _hashlib.sha256()
    plain = []
    for part in parts:
        records = _capture_records(part) if part.endswith(_CAPTURE_SUFFIXES) else None
        if records is None:
            plain.append(part)
            continue
        from modelreuse.runtime.storage import sha256_of

        digest.update(sha256_of(part).encode())
        x, t, y = _from_capture(records, spec, labels, part)
        xs.append(x)
        texts.extend(t or [])
        ys.append(y)
    for part in plain:
        x, t, y, _, d = _collect(spec.model_copy(update={"uri": part}), "all", labels)
        digest.update(d.encode())
        xs.append(x)
        texts.extend(t or [])
        ys.append(y)
    y = np.concatenate(ys) if ys else np.zeros(0, dtype=np.int64)
    x = None if spec.text_column else (np.concatenate(xs) if xs else np.zeros((0, len(spec.features or [])), np.float32))
    return x, (texts if spec.text_column else None), y, np.arange(len(y), dtype=np.int64), f"sha256:{digest.hexdigest()}"


def load_rows(task: AdaptTask, labels: list[str]) -> TrainingRows:
    """Read the training rows of ``task.data`` and every row of ``task.extra_data``.

    The holdout is excluded by ``runtime.data``'s split, the same function the evaluator scores with.
    Extra data is captured feedback (a ``modelreuse serve`` capture prefix or part file: inference records
    joined to feedback records by request id) or a table with the same feature or text columns and target.
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
        x, t, y, r, digest = _collect(spec, part, labels) if k == 0 else _read_extra(spec, labels)
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
