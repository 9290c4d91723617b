"""Hand a workload's result back: one JSON object of at most 4 KiB to stdout and the termination-message
path, where the operator reads it from the pod status (as Tekton passes task results)."""

from __future__ import annotations

import json
import os
import sys

from modelreuse.api.tasks import DEFAULT_TERMINATION_LOG, RESULT_LIMIT_BYTES, WorkloadResult

TERMINATION_LOG_ENV = "MODELREUSE_TERMINATION_LOG"


def encode(result: WorkloadResult) -> str:
    """Compact JSON within the size limit; ``extra`` and then the message are shortened to fit."""
    body = result.to_json_dict()
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > RESULT_LIMIT_BYTES:
        body.pop("extra", None)
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    while len(text.encode()) > RESULT_LIMIT_BYTES and body.get("message"):
        body["message"] = body["message"][: max(0, len(body["message"]) - 256)]
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    return text


def termination_log_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG


def emit(result: WorkloadResult, termination_log: str | None = None) -> str:
    """Print the result and write it to the termination-message path (when that path is writable)."""
    text = encode(result)
    print(text, flush=True)
    path = termination_log_path(termination_log)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        print(f"modelreuse: could not write the result to {path}: {exc}", file=sys.stderr)
    return text
