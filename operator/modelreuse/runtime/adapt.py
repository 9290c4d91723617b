"""``modelreuse adapt``: fine-tune the inherited model on the new domain's training rows into a new ONNX
version.

Command line::

    modelreuse adapt --model URI --data URI --out URI (--task JSON | --task-file F)
                     [--extra-data URI ...] [--termination-log PATH] [--device auto|cpu|cuda]

The task is an ``AdaptTask`` (the operator's ``source``/``data``/``adaptation`` parts); ``--model`` and
``--data`` override its URIs, so they may be left out of it. Writes ``{out}/model.onnx``,
``{out}/model.onnx.sha256`` and ``{out}/metadata.json``, and prints a result JSON of at most 4 KiB, also
written to the termination-message path. Python: ``adapt(task, out) -> WorkloadResult``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

from modelreuse.api.tasks import AdaptTask, WorkloadResult
from modelreuse.runtime import storage
from modelreuse.runtime.errors import WorkloadError, invalid_task

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"


def _join(prefix: str, name: str) -> str:
    return prefix.rstrip("/") + "/" + name


def _labels(task: AdaptTask) -> list[str]:
    labels = list(task.source.labels)
    if not labels:
        raise WorkloadError(
            "InvalidTask",
            "source.labels is empty; list the model's class labels by output index so training targets map to them.",
        )
    extra = [label for label in task.extend_labels if label not in labels]
    if extra and task.adaptation.strategy != "head":
        raise WorkloadError(
            "UnsupportedStrategy",
            f"extendLabels adds {extra} but strategy {task.adaptation.strategy} keeps the source's output layer; "
            "use strategy head to train a new head with more labels.",
        )
    return labels + extra


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    from modelreuse import __version__

    return {
        "modelreuse": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def _write(uri: str, payload: bytes) -> None:
    try:
        storage.write_bytes(uri, payload)
    except (OSError, ValueError) as exc:
        raise WorkloadError("UnwritableUri", f"Cannot write {uri} ({exc}); check --out and its credentials.") from exc


def adapt(task: AdaptTask, out: str, *, device: str = "auto", clock: Callable[[], float] = time.monotonic) -> WorkloadResult:
    """Train on ``task``'s training rows and write the adapted model under ``out``; see the module docstring."""
    from modelreuse.runtime import modelio
    from modelreuse.runtime.training.loop import FitConfig, pick_device
    from modelreuse.runtime.training.rows import digest_of, load_rows

    start = clock()
    spec = task.adaptation
    if spec.strategy == "none":
        raise WorkloadError("UnsupportedStrategy", "adaptation.strategy is none; set it to head or full to adapt the model.")
    fmt = modelio.infer_format(task.source.uri, task.source.format)
    if spec.strategy == "full" and fmt == "onnx":
        raise WorkloadError(
            "UnsupportedStrategy",
            f"Strategy full fine-tunes TorchScript or torch.export models, but {task.source.uri} is ONNX; use "
            "strategy head, which adapts any ONNX model.",
        )
    if spec.strategy == "head" and fmt != "onnx":
        raise WorkloadError(
            "UnsupportedStrategy",
            f"Strategy head adapts ONNX models, but {task.source.uri} is {fmt}; use strategy full, or export the "
            "source to ONNX.",
        )
    labels = _labels(task)
    text = task.data.text_column is not None

    # Open the model before reading data, so a bad model fails fast and cheaply.
    model = None
    payload = b""
    tokenizer = None
    if spec.strategy == "head":
        payload = storage.read_bytes(task.source.uri)
        source_digest = storage.verify_sha256(task.source.uri, task.source.sha256, payload=payload)
        if text:
            tokenizer = modelio.load_tokenizer(task.source)
    else:
        model = modelio.load_model(task.source, device=device)  # type: ignore[arg-type]
        source_digest = model.digest
        if text:
            raise WorkloadError(
                "UnsupportedStrategy",
                "Strategy full fine-tunes torch models on numeric features; for a text model use strategy head.",
            )
        model.check_features(task.data.features or [])

    try:
        rows = load_rows(task, labels)
    except WorkloadError as exc:
        if exc.reason == "UnknownLabels" and spec.strategy == "head":
            raise WorkloadError(
                "UnknownLabels",
                exc.message.rstrip(".") + ", or list the new labels in extendLabels to train a head with them.",
            ) from exc
        raise

    train_device = pick_device(device) if model is None else model.device_name
    remaining = spec.max_seconds - (clock() - start)

    def deadline_check() -> None:
        if clock() - start > spec.max_seconds:
            raise WorkloadError(
                "TimeBudgetExceeded",
                f"Preparing {len(rows)} training rows took longer than adaptation.maxSeconds "
                f"({spec.max_seconds} s) before training began; raise maxSeconds or train on fewer rows.",
            )

    deadline_check()
    config = FitConfig(
        epochs=spec.epochs,
        learning_rate=spec.learning_rate,
        max_seconds=max(remaining, 0.0),
        seed=spec.seed,
        device=train_device,
        weight_decay=1e-4 if spec.strategy == "head" else 0.0,
    )
    details: dict[str, Any]
    if spec.strategy == "head":
        from modelreuse.runtime.training.head import adapt_head

        outcome = adapt_head(
            payload, rows, labels, config, tokenizer=tokenizer, feature_names=task.data.features,
            feature_output=task.feature_output or task.adaptation.feature_output, deadline_check=deadline_check,
            budget_left=lambda: spec.max_seconds - (clock() - start),
        )
        details = {
            "featureOutput": outcome.feature_output,
            "featureChosenBy": outcome.feature_source,
            "featureWidth": outcome.feature_width,
            "outputActivation": outcome.activation,
            "exportCheckMaxAbsDiff": outcome.check_max_abs_diff,
        }
    else:
        from modelreuse.runtime.training.full import adapt_full

        outcome = adapt_full(model, rows, labels, config, spec.trainable_layers)
        details = {
            "outputKind": outcome.output_kind,
            "trainableParameters": outcome.trainable,
            "frozenParameters": outcome.frozen,
            "exportCheckMaxAbsDiff": outcome.check_max_abs_diff,
        }
    model_bytes = outcome.model_bytes
    fit = outcome.fit
    digest = "sha256:" + hashlib.sha256(model_bytes).hexdigest()
    data_digest = digest_of(rows.digests)

    model_uri = _join(out, MODEL_FILE)
    metadata_uri = _join(out, METADATA_FILE)
    metadata = {
        "command": "adapt",
        "strategy": spec.strategy,
        "model": {"uri": model_uri, "sha256": digest.split(":", 1)[1], "labels": labels},
        "source": {"uri": task.source.uri, "format": fmt, "digest": source_digest, "labels": list(task.source.labels)},
        "data": {
            "uri": task.data.uri,
            "digest": data_digest,
            "files": [{"uri": u, "digest": d, "trainingRows": rows.counts[u]} for u, d in rows.digests.items()],
            "holdout": task.data.holdout.to_json_dict(),
            "features": task.data.features,
            "textColumn": task.data.text_column,
            "target": task.data.target,
        },
        "hyperParameters": {
            **spec.to_json_dict(),
            "batchSize": config.batch_size,
            "patience": config.patience,
            "weightDecay": config.weight_decay,
            "validationFraction": 0.15,
            "optimizer": "Adam",
            "classWeights": fit.class_weights,
            "device": train_device,
        },
        "strategyDetails": details,
        "training": {**fit.summary(), "curve": fit.curve},
        "versions": _versions(),
        "seconds": round(clock() - start, 3),
    }
    _write(model_uri, model_bytes)
    _write(model_uri + ".sha256", f"{digest.split(':', 1)[1]}  {MODEL_FILE}\n".encode())
    _write(metadata_uri, json.dumps(metadata, indent=2, sort_keys=True).encode())
    summary = fit.summary()
    return WorkloadResult(
        ok=True,
        command="adapt",
        reason="Succeeded",
        message=(
            f"Adapted with strategy {spec.strategy} on {len(rows)} rows in {summary['epochs_run']} epochs "
            f"(stopped by {summary['stopped']}); wrote {model_uri}."
        ),
        samples=len(rows),
        model_uri=model_uri,
        model_digest=digest,
        data_digest=data_digest,
        report_uri=metadata_uri,
        extra={
            "strategy": spec.strategy,
            "labels": labels,
            "epochsRun": summary["epochs_run"],
            "bestEpoch": summary["best_epoch"],
            "stopped": summary["stopped"],
            "validationAccuracy": summary["validation_accuracy"],
            "validationLoss": summary["validation_loss"],
            "seconds": metadata["seconds"],
        },
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="URI of the source model (overrides source.uri of the task)")
    parser.add_argument("--data", help="URI of the new domain's labelled data (overrides data.uri of the task)")
    parser.add_argument("--out", required=True, help="URI prefix the adapted model and its metadata are written under")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--task", help="the AdaptTask as JSON")
    group.add_argument("--task-file", help="a file holding the AdaptTask as JSON")
    parser.add_argument("--extra-data", action="append", default=[], help="extra labelled data URI (repeatable)")
    parser.add_argument("--termination-log", help="where the result JSON goes besides stdout")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where to train")


def parse_task(args: argparse.Namespace) -> AdaptTask:
    """The AdaptTask from --task/--task-file with the URIs of --model, --data and --extra-data applied."""
    from pydantic import ValidationError

    if args.task is None and args.task_file is None:
        raise WorkloadError(
            "InvalidTask",
            "No task was given; pass --task or --task-file with data.target and data.features or data.textColumn.",
        )
    try:
        text = args.task if args.task is not None else open(args.task_file, encoding="utf-8").read()
        document = json.loads(text)
    except OSError as exc:
        raise WorkloadError("InvalidTask", f"Cannot read the task file {args.task_file} ({exc}); check --task-file.") from exc
    except ValueError as exc:
        raise WorkloadError("InvalidTask", f"The task is not valid JSON ({exc}); pass one JSON object.") from exc
    if not isinstance(document, dict):
        raise WorkloadError("InvalidTask", "The task must be one JSON object with source, data and adaptation.")
    if args.model:
        document.setdefault("source", {})["uri"] = args.model
    if args.data:
        document.setdefault("data", {})["uri"] = args.data
    if args.extra_data:
        document["extraData"] = list(document.get("extraData", [])) + list(args.extra_data)
    try:
        return AdaptTask.model_validate(document)
    except ValidationError as exc:
        raise invalid_task("adapt", exc) from exc


def run(args: argparse.Namespace) -> int:
    from modelreuse.runtime.result import emit

    try:
        task = parse_task(args)
        result = adapt(task, args.out, device=args.device)
    except WorkloadError as exc:
        emit(WorkloadResult(ok=False, command="adapt", reason=exc.reason, message=exc.message), args.termination_log)
        return exc.exit_code
    except Exception as exc:  # an unexpected crash still reports a result the operator can read
        emit(
            WorkloadResult(ok=False, command="adapt", reason="InternalError",
                           message=f"adapt crashed: {type(exc).__name__}: {str(exc)[:500]}"),
            args.termination_log,
        )
        import traceback

        traceback.print_exc(file=sys.stderr)
        return 1
    emit(result, args.termination_log)
    return 0
