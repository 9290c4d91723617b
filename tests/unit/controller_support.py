"""Helpers for the pure-core tests: a sample object, observed children, and applying a Plan's status patch
the way the API server applies a JSON merge patch."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from catalogue import load_sample
from modelreuse.api.resource import ModelReuse
from modelreuse.controller import children as ch
from modelreuse.controller.lifecycle import Plan, apply_merge_patch, reconcile
from modelreuse.controller.observed import DeploymentObservation, JobObservation, Observed
from modelreuse.settings import Settings

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
SETTINGS = Settings(runtime_image="registry.example/modelreuse/runtime:test",
                    artifacts_uri="s3://artifacts", result_grace_seconds=30)


def sample(**spec_changes: Any) -> dict[str, Any]:
    body = load_sample("bikeshare")
    body["metadata"].update({"uid": "uid-1", "generation": 1, "namespace": "ml"})
    for path, value in spec_changes.items():
        node = body["spec"]
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return body


apply_merge = apply_merge_patch


def result(command: str = "evaluate", ok: bool = True, score: float | None = None, **kw: Any) -> str:
    body: dict[str, Any] = {"ok": ok, "command": command}
    if score is not None:
        body.update(score=score, precision=score, recall=score, f1=score, accuracy=score, samples=100,
                    model_digest="sha256:" + "a" * 64, data_digest="sha256:" + "b" * 64)
    body.update(kw)
    return json.dumps(body)


def done(name: str, message: str, exit_code: int = 0, at: datetime = T0) -> JobObservation:
    return JobObservation(name=name, succeeded=exit_code == 0, failed=exit_code != 0,
                          termination_message=message, exit_code=exit_code, finished_at=at)


def running(name: str) -> JobObservation:
    return JobObservation(name=name)


def deployment_for(body: dict, plan_or_manifest: dict, available: int | None = None,
                   exceeded: bool = False) -> DeploymentObservation:
    """What the Deployment controller reports for a manifest the operator applied."""
    spec = plan_or_manifest["spec"]
    ready = spec["replicas"] if available is None else available
    return DeploymentObservation(
        name=plan_or_manifest["metadata"]["name"],
        version=int(plan_or_manifest["metadata"]["labels"][ch.VERSION_LABEL]),
        spec_hash=plan_or_manifest["metadata"]["annotations"][ch.SPEC_HASH_ANNOTATION],
        generation=1, observed_generation=1, replicas=spec["replicas"],
        updated_replicas=ready, available_replicas=ready, progress_deadline_exceeded=exceeded,
    )


class World:
    """An object plus the children the 'cluster' holds, stepped through reconciles."""

    def __init__(self, body: dict[str, Any], settings: Settings = SETTINGS):
        self.body = body
        self.settings = settings
        self.jobs: dict[str, JobObservation] = {}
        self.deployment: DeploymentObservation | None = None
        self.service = False
        self.applied: list[dict[str, Any]] = []
        self.request = None
        self.now = T0

    @property
    def status(self) -> dict[str, Any]:
        return self.body.get("status") or {}

    def observed(self) -> Observed:
        return Observed(jobs=dict(self.jobs), deployment=self.deployment, service=self.service,
                        retrain_request=self.request)

    def step(self, advance: float = 1.0) -> Plan:
        self.now = self.now + timedelta(seconds=advance)
        plan = reconcile(ModelReuse.from_dict(self.body), self.observed(), self.now, self.settings)
        for child in plan.apply:
            self.applied.append(child)
            kind, name = child["kind"], child["metadata"]["name"]
            if kind == "Job":
                self.jobs.setdefault(name, running(name))
            elif kind == "Service":
                self.service = True
        if plan.status:
            self.body["status"] = apply_merge(self.status, plan.status)
        return plan

    def last(self, kind: str) -> dict[str, Any]:
        return [c for c in self.applied if c["kind"] == kind][-1]

    def cond(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == type_)
