"""The generated CRD on a real kube-apiserver: samples apply and read back with the same defaults pydantic
fills, every invalid object is refused naming its field, printer columns and `kubectl explain` work, and a
status written through the status subresource keeps every field."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from catalogue import CATALOGUE, SAMPLES, Invalid, load_sample
from modelreuse.api import ModelReuseSpec, ModelReuseStatus

NAMESPACE = "crd-tests"


@pytest.fixture(scope="module")
def kubectl(cluster):
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)

    def run(*args: str, input: str | None = None, check: bool = True):
        return cluster.kubectl("-n", NAMESPACE, *args, input=input, check=check)

    return run


def _full_status() -> dict:
    """A status with every field set, as the operator writes it."""
    now = "2026-12-04T10:00:00Z"
    return ModelReuseStatus.model_validate(
        {
            "phase": "Serving",
            "observedGeneration": 3,
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": f"{t} message", "lastTransitionTime": now,
                 "observedGeneration": 3}
                for t, s, r in [
                    ("SourceVerified", "True", "DigestMatched"),
                    ("Evaluated", "True", "Scored"),
                    ("ThresholdMet", "True", "ScoreAboveThreshold"),
                    ("Ready", "True", "Serving"),
                    ("Retraining", "False", "Idle"),
                    ("Degraded", "False", "Healthy"),
                ]
            ],
            "evaluation": {"version": 2, "score": 0.86, "precision": 0.88, "recall": 0.84, "f1": 0.86,
                           "accuracy": 0.87, "samples": 2593, "modelDigest": "sha256:" + "a" * 64,
                           "dataDigest": "sha256:" + "b" * 64, "evaluatedAt": now},
            "serving": {"version": 2, "origin": "adaptation", "uri": "file:///artifacts/v2/model.onnx",
                        "digest": "sha256:" + "a" * 64, "score": 0.86, "since": now},
            "candidate": {"version": 3, "origin": "retraining", "uri": "file:///artifacts/v3/model.onnx"},
            "attempts": 1,
            "nextVersion": 4,
            "history": [
                {"version": 1, "origin": "source", "score": 0.62, "decision": "Rejected",
                 "reason": "BelowThreshold", "time": now},
                {"version": 2, "origin": "adaptation", "score": 0.86, "decision": "Promoted", "time": now},
            ],
            "lastRetrainingTime": now,
            "endpoint": "http://bikeshare-dc.crd-tests.svc:8080/v2/models/bikeshare-dc",
            "replicas": {"desired": 2, "available": 2},
        }
    ).to_json_dict()


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sample_applies_and_reads_back_with_pydantic_defaults(kubectl, sample):
    obj = yaml.safe_load(sample.read_text())
    obj["metadata"].pop("namespace", None)
    kubectl("apply", "--validate=strict", "-f", "-", input=json.dumps(obj))
    stored = json.loads(kubectl("get", "mr", obj["metadata"]["name"], "-o", "json").stdout)
    assert stored["spec"] == ModelReuseSpec.model_validate(obj["spec"]).to_json_dict()


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_invalid_object_is_refused_naming_the_field(kubectl, case: Invalid):
    obj = case.build()
    obj["metadata"].pop("namespace", None)
    result = kubectl("create", "--validate=strict", "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode != 0, f"{case.id} was accepted"
    assert case.field in result.stderr, result.stderr
    assert kubectl("get", "mr", obj["metadata"]["name"], check=False).returncode != 0


def test_status_round_trips_through_the_status_subresource(kubectl):
    obj = load_sample()
    obj["metadata"].update(name="status-round-trip")
    obj["metadata"].pop("namespace", None)
    kubectl("apply", "-f", "-", input=json.dumps(obj))
    status = _full_status()
    kubectl("patch", "mr", "status-round-trip", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))
    stored = json.loads(kubectl("get", "mr", "status-round-trip", "-o", "json").stdout)
    assert stored["status"] == status


def test_status_is_not_writable_through_the_main_resource(kubectl):
    obj = load_sample()
    obj["metadata"].update(name="status-ignored")
    obj["metadata"].pop("namespace", None)
    obj["status"] = {"phase": "Serving"}
    kubectl("apply", "-f", "-", input=json.dumps(obj))
    stored = json.loads(kubectl("get", "mr", "status-ignored", "-o", "json").stdout)
    assert stored.get("status", {}).get("phase") is None


def test_get_prints_the_printer_columns(kubectl):
    obj = load_sample()
    obj["metadata"].update(name="columns")
    obj["metadata"].pop("namespace", None)
    kubectl("apply", "-f", "-", input=json.dumps(obj))
    kubectl("patch", "mr", "columns", "--subresource=status", "--type=merge", "-p", json.dumps({"status": _full_status()}))
    lines = kubectl("get", "mr", "columns").stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "SCORE", "THRESHOLD", "VERSION", "READY", "AGE"]
    assert lines[1].split()[:6] == ["columns", "Serving", "0.86", "0.8", "2", "True"]


def test_explain_prints_the_field_descriptions(kubectl):
    deadline = time.monotonic() + 60
    while True:  # the OpenAPI document of a new CRD is published a moment after it is Established
        result = kubectl("explain", "modelreuse.spec.source", check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "The inherited model." in text
    assert "sha256" in text and "DigestMismatch" in text
    threshold = kubectl("explain", "modelreuse.spec.evaluation.threshold").stdout
    assert "deployed only if its score is at least this" in " ".join(threshold.split())
