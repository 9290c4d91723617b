"""Invalid ModelReuse objects, each with the field its error must name.

The same catalogue runs twice: against the pydantic models (tests/unit) and against a real kube-apiserver
(tests/integration), so the CRD's schema and CEL rules and the workloads' validators cannot drift apart.
"""

from __future__ import annotations

import copy
import pathlib
import re
from dataclasses import dataclass
from typing import Any, Callable

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
CRD_FILE = ROOT / "crds" / "modelreuse.io_modelreuses.yaml"


def load_sample(name: str = "bikeshare") -> dict[str, Any]:
    path = next(p for p in SAMPLES if name in p.name)
    return yaml.safe_load(path.read_text())


@dataclass(frozen=True)
class Invalid:
    id: str
    change: Callable[[dict[str, Any]], None]
    field: str  # the path the error must name, as the API server writes it (spec.x.y or spec.x[0].y)

    def build(self, name: str | None = None) -> dict[str, Any]:
        obj = copy.deepcopy(load_sample())
        obj["metadata"]["name"] = name or f"bad-{self.id}"
        self.change(obj["spec"])
        return obj


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    keys = path.split(".")

    def change(spec: dict[str, Any]) -> None:
        node = spec
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    keys = path.split(".")

    def change(spec: dict[str, Any]) -> None:
        node = spec
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return change


def _both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        for c in changes:
            c(spec)

    return change


CATALOGUE: list[Invalid] = [
    Invalid("missing-source", _delete("source"), "spec.source"),
    Invalid("empty-source-uri", _set("source.uri", ""), "spec.source.uri"),
    Invalid("unknown-format", _set("source.format", "pickle"), "spec.source.format"),
    Invalid("bad-sha256", _set("source.sha256", "not-a-digest"), "spec.source.sha256"),
    Invalid("duplicate-labels", _set("source.labels", ["low", "low"]), "spec.source.labels[1]"),
    Invalid("threshold-above-one", _set("evaluation.threshold", 1.7), "spec.evaluation.threshold"),
    Invalid("threshold-negative", _set("evaluation.threshold", -0.1), "spec.evaluation.threshold"),
    Invalid("missing-threshold", _delete("evaluation.threshold"), "spec.evaluation.threshold"),
    Invalid(
        "negative-weight",
        _set("evaluation.score", {"precisionWeight": -0.5, "recallWeight": 1.5}),
        "spec.evaluation.score.precisionWeight",
    ),
    Invalid(
        "weights-not-summing-to-one",
        _set("evaluation.score", {"precisionWeight": 0.6, "recallWeight": 0.6}),
        "spec.evaluation.score",
    ),
    Invalid("unknown-average", _set("evaluation.average", "harmonic"), "spec.evaluation.average"),
    Invalid("binary-without-positive-label", _set("evaluation.average", "binary"), "spec.evaluation"),
    Invalid("features-and-text-column", _set("data.textColumn", "text"), "spec.data"),
    Invalid("neither-features-nor-text-column", _delete("data.features"), "spec.data"),
    Invalid("empty-features", _set("data.features", []), "spec.data.features"),
    Invalid("missing-target", _delete("data.target"), "spec.data.target"),
    Invalid("unknown-data-format", _set("data.format", "xlsx"), "spec.data.format"),
    Invalid("holdout-fraction-zero", _set("data.holdout.fraction", 0), "spec.data.holdout.fraction"),
    Invalid("holdout-fraction-above-one", _set("data.holdout.fraction", 1.5), "spec.data.holdout.fraction"),
    Invalid("negative-replicas", _set("deployment.replicas", -1), "spec.deployment.replicas"),
    Invalid("negative-max-attempts", _set("adaptation.maxAttempts", -1), "spec.adaptation.maxAttempts"),
    Invalid("unknown-strategy", _set("adaptation.strategy", "magic"), "spec.adaptation.strategy"),
    Invalid("zero-epochs", _set("adaptation.epochs", 0), "spec.adaptation.epochs"),
    Invalid(
        "toleration-operator",
        _set("deployment.tolerations", [{"key": "k", "operator": "Maybe"}]),
        "spec.deployment.tolerations[0].operator",
    ),
    Invalid(
        "capture-without-uri",
        _both(_delete("deployment.dataCapture.uri"), _set("deployment.dataCapture.sampleRate", 0.5)),
        "spec.deployment.dataCapture",
    ),
    Invalid("capture-rate-above-one", _set("deployment.dataCapture.sampleRate", 2), "spec.deployment.dataCapture.sampleRate"),
    Invalid("bad-cooldown", _set("retraining.cooldown", "soon"), "spec.retraining.cooldown"),
    Invalid("bad-trigger-duration", _set("retraining.prometheus", [{"query": "up", "below": 1, "for": "ten minutes"}]), "spec.retraining.prometheus[0].for"),
    Invalid("min-improvement-above-one", _set("retraining.minImprovement", 2), "spec.retraining.minImprovement"),
    Invalid("unknown-field", _set("source.colour", "blue"), "spec.source.colour"),
]


def pydantic_path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location written as the API server writes field paths."""
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def normalise(path: str) -> str:
    return re.sub(r"\[(\d+)\]", r".\1", path)
