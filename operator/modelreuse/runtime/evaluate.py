"""``modelreuse evaluate``: score an inherited model on the holdout rows of the new domain's labelled data.

    modelreuse evaluate --model URI --data URI [--task JSON | --task-file F] [--report URI]
                        [--termination-log PATH]

The task is the ``source``, ``data`` and ``evaluation`` parts of a ModelReuse spec (camelCase, as in the
resource), validated by ``modelreuse.api.tasks.EvaluateTask``; ``--model`` and ``--data`` replace
``source.uri`` and ``data.uri``, and flags such as ``--features`` or ``--threshold`` fill in a task on a
laptop. The data is read once, in batches, and only the holdout rows are scored (memory does not grow with
the row count).

Output: one JSON result (at most 4 KiB) on stdout and at the termination-message path; with ``--report``,
``report.json`` (per-class table, confusion matrix, feature statistics, durations), ``report.md`` and
``feature-stats.json`` under the report URI (or ``X.json``, ``X.md``, ``X.stats.json`` when it ends in
``.json``). Progress goes to stderr. Bad input ends with a reason code, one sentence and a non-zero exit.
Python: ``evaluate(task, ...) -> report dict``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from modelreuse.api.spec import Device
from modelreuse.api.tasks import EvaluateTask, WorkloadResult
from modelreuse.runtime.errors import WorkloadError, invalid_task

HISTOGRAM_BINS = 10
REPORT_FORMAT = 1


# ---------------------------------------------------------------------------------------------------------
# Feature statistics: the reference the server's drift score compares live traffic with.


class FeatureStats:
    """Per-feature count, mean, std, min, max and a histogram, accumulated over batches.

    Mean and variance merge batch moments (Chan et al.), so they stay exact in float64 over any row count.
    The histogram has ``HISTOGRAM_BINS`` equal-width bins from ``lo`` with width ``width`` (the first
    batch's min and range: the edges must be fixed before the rest of the stream is seen) plus an underflow
    and an overflow bin. A value v falls in ``counts[1 + floor((v - lo) / width)]``, clipped to
    ``counts[0]`` below and ``counts[-1]`` at or beyond ``lo + bins * width``; ``edges`` lists
    ``lo + k * width`` for reading.
    """

    def __init__(self, names: list[str], bins: int = HISTOGRAM_BINS):
        self.names = list(names)
        self.bins = bins
        f = len(self.names)
        self.count = 0
        self.mean = np.zeros(f)
        self.m2 = np.zeros(f)
        self.min = np.full(f, np.inf)
        self.max = np.full(f, -np.inf)
        self.lo: np.ndarray | None = None
        self.width: np.ndarray | None = None
        self.counts = np.zeros((f, bins + 2), dtype=np.int64)

    def update(self, x: np.ndarray) -> None:
        n, f = x.shape
        if n == 0:
            return
        x64 = x.astype(np.float64, copy=False)
        mean_b = x64.mean(axis=0)
        m2_b = ((x64 - mean_b) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2_b + delta**2 * (self.count * n / total)
        self.count = total
        lo_b, hi_b = x64.min(axis=0), x64.max(axis=0)
        self.min = np.minimum(self.min, lo_b)
        self.max = np.maximum(self.max, hi_b)
        if self.lo is None:
            self.lo = lo_b
            span = hi_b - lo_b
            # A constant first batch still needs bins of some width; a relative one keeps large values apart.
            self.width = np.where(span > 0, span, np.maximum(np.abs(lo_b), 1.0)) / self.bins
            # The first batch's maximum belongs to the last regular bin, not to the overflow bin.
            self.width = np.nextafter(self.width, np.inf)
        index = np.floor((x64 - self.lo) / self.width)
        np.clip(index + 1, 0, self.bins + 1, out=index)
        flat = index.astype(np.int64) + np.arange(f, dtype=np.int64) * (self.bins + 2)
        self.counts += np.bincount(flat.ravel(), minlength=f * (self.bins + 2)).reshape(f, self.bins + 2)

    def to_dict(self) -> dict[str, Any]:
        std = np.sqrt(self.m2 / self.count) if self.count else np.zeros_like(self.m2)
        features = []
        for j, name in enumerate(self.names):
            features.append(
                {
                    "name": name,
                    "count": int(self.count),
                    "mean": float(self.mean[j]) if self.count else None,
                    "std": float(std[j]) if self.count else None,
                    "min": float(self.min[j]) if self.count else None,
                    "max": float(self.max[j]) if self.count else None,
                    "histogram": {
                        "lo": float(self.lo[j]) if self.lo is not None else None,
                        "width": float(self.width[j]) if self.width is not None else None,
                        "edges": [float(self.lo[j] + k * self.width[j]) for k in range(self.bins + 1)]
                        if self.lo is not None else [],
                        "counts": [int(c) for c in self.counts[j]],
                    },
                }
            )
        return {"format": 1, "bins": self.bins, "features": features}


# ---------------------------------------------------------------------------------------------------------
# The task


def load_task(task: EvaluateTask | dict[str, Any] | str) -> EvaluateTask:
    """An EvaluateTask from a model, a dict in wire form or a JSON string; InvalidTask when it is not one."""
    if isinstance(task, EvaluateTask):
        return task
    try:
        body = json.loads(task) if isinstance(task, str) else task
        return EvaluateTask.model_validate(body)
    except Exception as exc:
        raise invalid_task("evaluate", exc) from exc


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def task_from_args(args: argparse.Namespace) -> EvaluateTask:
    """The task from --task/--task-file, with the URIs and the convenience flags applied on top."""
    body: dict[str, Any] = {}
    if args.task and args.task_file:
        raise WorkloadError("InvalidTask", "Give the task either as --task or as --task-file, not both.")
    if args.task_file:
        try:
            with open(args.task_file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise WorkloadError("UnreadableUri", f"Cannot read the task file {args.task_file}: {exc.strerror}.") from exc
        args.task = text
    if args.task:
        try:
            body = json.loads(args.task)
        except ValueError as exc:
            raise WorkloadError("InvalidTask", f"The task is not valid JSON ({exc}); pass one JSON object.") from exc
        if not isinstance(body, dict):
            raise WorkloadError("InvalidTask", "The task must be a JSON object with source, data and evaluation.")
    flags = {
        "source.uri": args.model,
        "data.uri": args.data,
        "data.features": args.features.split(",") if args.features else None,
        "data.textColumn": args.text_column,
        "data.target": args.target,
        "source.labels": args.labels.split(",") if args.labels else None,
        "source.sha256": args.sha256,
        "data.holdout.fraction": args.holdout_fraction,
        "data.holdout.seed": args.holdout_seed,
        "evaluation.average": args.average,
        "evaluation.positiveLabel": args.positive_label,
        "evaluation.threshold": args.threshold,
    }
    for path, value in flags.items():
        if value is not None:
            _set(body, path, value)
    return load_task(body)


# ---------------------------------------------------------------------------------------------------------
# Scoring


def _labels_for(task: EvaluateTask, model: Any) -> list[str]:
    labels = list(task.source.labels)
    n = model.n_classes
    if not labels:
        if n is None:
            raise WorkloadError(
                "InvalidTask",
                f"The model at {model.uri} does not say how many classes it has; list them in source.labels.",
            )
        labels = [str(i) for i in range(n)]
    elif n is not None and n != len(labels):
        raise WorkloadError(
            "ModelOutputMismatch",
            f"The model at {model.uri} scores {n} classes but source.labels names {len(labels)}; "
            "list one label per model output, in output order.",
        )
    if task.evaluation.average == "binary" and task.evaluation.positive_label not in labels:
        raise WorkloadError(
            "InvalidTask",
            f"evaluation.positiveLabel {task.evaluation.positive_label!r} is not among the labels {labels}; "
            "pick one of them.",
        )
    return labels


def report_locations(report_uri: str) -> dict[str, str]:
    """Where the report JSON, the Markdown page and the feature statistics go for a report URI."""
    if report_uri.endswith(".json"):
        stem = report_uri[: -len(".json")]
        return {"json": report_uri, "markdown": stem + ".md", "stats": stem + ".stats.json"}
    base = report_uri.rstrip("/")
    return {"json": base + "/report.json", "markdown": base + "/report.md", "stats": base + "/feature-stats.json"}


def evaluate(
    task: EvaluateTask | dict[str, Any] | str,
    *,
    report_uri: str | None = None,
    batch_rows: int = 65536,
    device: Device = "auto",
    progress_interval: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Score the task's model on its holdout rows and return the full report (camelCase keys).

    Raises WorkloadError with a reason code on bad input. With ``report_uri`` the report is also written
    there (see ``report_locations``).
    """
    from modelreuse.runtime import metrics as metrics_mod
    from modelreuse.runtime.data import DataReader, prefetch
    from modelreuse.runtime.modelio import encode_texts, load_model, load_tokenizer
    from modelreuse.runtime.progress import Progress

    task = load_task(task)
    started_at = datetime.now(timezone.utc)
    t0 = clock()
    model = load_model(task.source, device=device)
    labels = _labels_for(task, model)
    tokenizer = None
    if task.data.text_column:
        model.check_text()
        tokenizer = load_tokenizer(task.source)
        stat_names = ["textLength"]
    else:
        features = list(task.data.features or [])
        model.check_features(features)
        model.bind(features)
        stat_names = features
    t_model = clock() - t0

    reader = DataReader(task.data, batch_rows=batch_rows, labels=labels)
    cm = metrics_mod.ConfusionMatrix(len(labels))
    stats = FeatureStats(stat_names)

    def read_share() -> float | None:
        done = reader.bytes_read
        return done / reader.bytes_total if done is not None and reader.bytes_total else None

    progress = Progress("evaluate", interval=progress_interval, fraction=read_share, clock=clock)
    t1 = clock()
    predict_seconds = 0.0
    for batch in prefetch(reader.batches("holdout")):
        tp = clock()
        if tokenizer is not None:
            encoded = encode_texts(tokenizer, batch.texts, [i.name for i in model.inputs])
            prediction = model.predict(encoded)
            stats.update(np.asarray([[len(t)] for t in batch.texts], dtype=np.float64))
        else:
            prediction = model.predict(batch.features)
            stats.update(batch.features)
        predict_seconds += clock() - tp
        classes = prediction.classes
        if classes.size and (classes.min() < 0 or classes.max() >= len(labels)):
            raise WorkloadError(
                "ModelOutputMismatch",
                f"The model at {model.uri} predicted class {int(classes.max())}, beyond the {len(labels)} labels "
                "of source.labels; list one label per model class.",
            )
        cm.update(batch.y, classes)
        progress.update(len(batch))
    progress.done()
    t_score = clock() - t1

    if reader.rows_read == 0:
        raise WorkloadError("EmptyData", f"The data at {task.data.uri} has no rows; point data.uri at labelled rows.")
    if cm.samples == 0:
        raise WorkloadError(
            "EmptyData",
            f"None of the {reader.rows_read} rows of {task.data.uri} fall in the holdout (fraction "
            f"{task.data.holdout.fraction}); raise data.holdout.fraction or add rows.",
        )

    ev = task.evaluation
    result = metrics_mod.compute(
        cm,
        labels,
        average=ev.average,
        positive_label=ev.positive_label,
        precision_weight=ev.score.precision_weight,
        recall_weight=ev.score.recall_weight,
    )
    total = clock() - t0
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "command": "evaluate",
        "startedAt": started_at.isoformat().replace("+00:00", "Z"),
        "task": task.to_json_dict(),
        "model": model.describe(),
        "data": {
            "uri": task.data.uri,
            "format": reader.format,
            "digest": reader.digest,
            "rowsRead": int(reader.rows_read),
            "rowsScored": int(cm.samples),
            "part": "holdout",
            "holdout": task.data.holdout.to_json_dict(),
        },
        "metrics": {
            **result.summary(),
            "precisionWeight": result.precision_weight,
            "recallWeight": result.recall_weight,
            "threshold": ev.threshold,
            "passed": bool(result.score >= ev.threshold),
            "zeroDivision": 0.0,
        },
        "labels": labels,
        "perClass": [
            {"label": c.label, "precision": c.precision, "recall": c.recall, "f1": c.f1, "support": c.support,
             "predicted": c.predicted}
            for c in result.per_class
        ],
        "confusionMatrix": result.confusion,
        "featureStats": stats.to_dict(),
        "durations": {
            "loadModelSeconds": round(t_model, 6),
            "scoreSeconds": round(t_score, 6),
            "predictSeconds": round(predict_seconds, 6),
            "totalSeconds": round(total, 6),
        },
        "rowsPerSecond": round(reader.rows_read / t_score, 1) if t_score > 0 else None,
    }
    if report_uri:
        report["reportUri"] = write_report(report, report_uri)
    return report


# ---------------------------------------------------------------------------------------------------------
# Report files


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a readable Markdown page."""
    m = report["metrics"]
    model, data = report["model"], report["data"]
    verdict = "passes" if m["passed"] else "does not pass"
    lines = [
        "# Evaluation report",
        "",
        f"The model **{verdict}** the gate: score {_fmt(m['score'])} against threshold {_fmt(m['threshold'])} "
        f"(P = {m['precisionWeight']:g} x precision + {m['recallWeight']:g} x recall, {m['average']} average).",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("score", "precision", "recall", "f1", "accuracy", "samples"):
        lines.append(f"| {key} | {_fmt(m[key])} |")
    lines += [
        "",
        "## Per class",
        "",
        "| label | precision | recall | f1 | support | predicted |",
        "|---|---|---|---|---|---|",
    ]
    for c in report["perClass"]:
        lines.append(
            f"| {c['label']} | {_fmt(c['precision'])} | {_fmt(c['recall'])} | {_fmt(c['f1'])} | {c['support']} | "
            f"{c['predicted']} |"
        )
    labels = report["labels"]
    lines += ["", "## Confusion matrix", "", "Rows are true labels, columns predicted labels.", ""]
    lines.append("| true \\ predicted | " + " | ".join(labels) + " |")
    lines.append("|---|" + "---|" * len(labels))
    for label, row in zip(labels, report["confusionMatrix"]):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    d = report["durations"]
    lines += [
        "",
        "## Inputs",
        "",
        f"- Model: `{model['uri']}` ({model['format']}, {model['provider']}), `{model['digest']}`",
        f"- Data: `{data['uri']}` ({data['format']}), `{data['digest']}`; {data['rowsRead']} rows read, "
        f"{data['rowsScored']} holdout rows scored (fraction {data['holdout'].get('fraction')}, seed "
        f"{data['holdout'].get('seed')})",
        f"- Durations: model load {d['loadModelSeconds']:.3f} s, scoring {d['scoreSeconds']:.3f} s, total "
        f"{d['totalSeconds']:.3f} s",
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], report_uri: str) -> str:
    """Write report.json, report.md and the feature statistics; returns the report JSON's URI."""
    from modelreuse.runtime import storage

    where = report_locations(report_uri)
    body = dict(report, reportUri=where["json"])
    try:
        storage.write_bytes(where["stats"], json.dumps(report["featureStats"], indent=2).encode())
        storage.write_bytes(where["markdown"], render_markdown(body).encode())
        storage.write_bytes(where["json"], json.dumps(body, indent=2).encode())
    except (OSError, ValueError, ImportError) as exc:
        raise WorkloadError(
            "UnwritableUri", f"Cannot write the report to {report_uri} ({exc}); check --report and its credentials."
        ) from exc
    return where["json"]


# ---------------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model URI (replaces source.uri)")
    parser.add_argument("--data", help="labelled data URI (replaces data.uri)")
    parser.add_argument("--task", help="the task as JSON: source, data and evaluation, camelCase")
    parser.add_argument("--task-file", help="a file holding the task JSON")
    parser.add_argument("--report", help="URI for report.json, report.md and feature-stats.json (or X.json)")
    parser.add_argument("--termination-log", help="where the result JSON goes besides stdout "
                        "(default $MODELREUSE_TERMINATION_LOG or /dev/termination-log)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the model runs")
    parser.add_argument("--batch-rows", type=int, default=65536, help="rows per model call")
    parser.add_argument("--progress-interval", type=float, default=5.0, help="seconds between progress lines")
    laptop = parser.add_argument_group("task fields as flags (fill in or override the task)")
    laptop.add_argument("--features", help="comma-separated numeric feature columns")
    laptop.add_argument("--text-column", help="the text column, for a text model")
    laptop.add_argument("--target", help="the label column")
    laptop.add_argument("--labels", help="comma-separated class labels by model output index")
    laptop.add_argument("--sha256", help="expected sha256 of the model file")
    laptop.add_argument("--holdout-fraction", type=float, help="share of rows scored, in (0, 1]")
    laptop.add_argument("--holdout-seed", type=int, help="seed of the holdout split")
    laptop.add_argument("--average", choices=["binary", "micro", "macro", "weighted"])
    laptop.add_argument("--positive-label", help="positive class for --average binary")
    laptop.add_argument("--threshold", type=float, help="the gate's threshold on the score")


def result_from_report(report: dict[str, Any]) -> WorkloadResult:
    m = report["metrics"]
    return WorkloadResult(
        ok=True,
        command="evaluate",
        reason="Succeeded",
        message=f"score {m['score']:.4f} {'>=' if m['passed'] else '<'} threshold {m['threshold']:g} "
        f"on {m['samples']} holdout rows",
        score=m["score"],
        precision=m["precision"],
        recall=m["recall"],
        f1=m["f1"],
        accuracy=m["accuracy"],
        samples=m["samples"],
        model_uri=report["model"]["uri"],
        model_digest=report["model"]["digest"],
        data_digest=report["data"]["digest"],
        report_uri=report.get("reportUri"),
        extra={"threshold": m["threshold"], "passed": m["passed"], "average": m["average"],
               "rowsRead": report["data"]["rowsRead"]},
    )


def run(args: argparse.Namespace) -> int:
    """Run the command; the result JSON is always emitted, the exit code tells success or the reason."""
    from modelreuse.runtime.result import emit

    try:
        task = task_from_args(args)
        report = evaluate(
            task,
            report_uri=args.report,
            batch_rows=args.batch_rows,
            device=args.device,
            progress_interval=args.progress_interval,
        )
    except WorkloadError as exc:
        print(f"modelreuse evaluate: {exc.reason}: {exc.message}", file=sys.stderr)
        emit(WorkloadResult(ok=False, command="evaluate", reason=exc.reason, message=exc.message),
             args.termination_log)
        return exc.exit_code
    except Exception as exc:  # an unexpected crash still reports, then exits 1 with its traceback on stderr
        traceback.print_exc()
        emit(WorkloadResult(ok=False, command="evaluate", reason="InternalError",
                            message=f"evaluate failed unexpectedly ({type(exc).__name__}: {exc}); please report it."),
             args.termination_log)
        return 1
    emit(result_from_report(report), args.termination_log)
    return 0
