"""Spec changes on the real API server: a change to deployment settings only rolls the Deployment (same
version, no evaluation Job), a change to what the evaluation depends on re-evaluates as a new version while
the old one keeps serving, and the new version is rolled out once it passes."""

from __future__ import annotations

import json

from operator_fixtures import GROUP, PLURAL, VERSION, evaluation, kube, operator, wait_for  # noqa: F401

NAME = "changes"


def patch_spec(kube, ns: str, spec: dict) -> int:
    obj = kube.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME, {"spec": spec})
    return obj["metadata"]["generation"]


def task_of(args: list[str]) -> dict:
    return json.loads(args[args.index("--task") + 1])


def reasons(kube, ns: str) -> list[str]:
    events = kube.core.list_namespaced_event(ns).items
    return [e.reason for e in sorted(events, key=lambda e: e.metadata.creation_timestamp)
            if e.involved_object.kind == "ModelReuse"]


def serve_v1(kube, ns: str) -> None:
    kube.create(ns, NAME, lambda s: s["deployment"].update(replicas=1))
    kube.finish_job(ns, f"{NAME}-eval-v1", evaluation(0.86))
    kube.wait_phase(ns, NAME, "Serving", timeout=90)


def test_deployment_only_change_rolls_the_same_version_without_re_evaluating(kube, operator):
    ns = kube.namespace("rollonly")
    serve_v1(kube, ns)
    before = kube.apps.read_namespaced_deployment(NAME, ns)
    generation = patch_spec(kube, ns, {"deployment": {"replicas": 2, "batching": {"maxBatchSize": 16}}})
    wait_for(lambda: kube.status(ns, NAME).get("observedGeneration") == generation, 30, "the change to be seen")
    wait_for(lambda: kube.apps.read_namespaced_deployment(NAME, ns).spec.replicas == 2, 30, "the Deployment update")
    status = kube.wait_phase(ns, NAME, "Serving", timeout=60)
    assert status["serving"]["version"] == 1 and status["replicas"] == {"desired": 2, "available": 2}
    assert kube.jobs(ns) == [f"{NAME}-eval-v1"]  # nothing re-evaluated
    dep = kube.apps.read_namespaced_deployment(NAME, ns)
    assert dep.spec.template.metadata.labels["modelreuse.io/version"] == "1"
    assert task_of(dep.spec.template.spec.containers[0].args)["batching"]["maxBatchSize"] == 16
    assert dep.metadata.generation > before.metadata.generation
    assert "Rolling" in wait_for(lambda: reasons(kube, ns) if "Rolling" in reasons(kube, ns) else None, 30, "Rolling")
    assert "SpecChanged" not in reasons(kube, ns)


def test_evaluation_change_re_evaluates_while_the_old_version_serves(kube, operator):
    ns = kube.namespace("reeval")
    serve_v1(kube, ns)
    generation = patch_spec(kube, ns, {"data": {"uri": "s3://data/bikeshare/winter.parquet"}})
    kube.wait_job(ns, f"{NAME}-eval-v2")
    status = kube.status(ns, NAME)
    assert status["phase"] == "Evaluating" and status["observedGeneration"] == generation
    assert status["serving"]["version"] == 1  # still serving while the new evaluation runs
    assert kube.condition(ns, NAME, "Evaluated")["status"] == "Unknown"
    job = kube.batch.read_namespaced_job(f"{NAME}-eval-v2", ns)
    assert task_of(job.spec.template.spec.containers[0].args)["data"]["uri"] == "s3://data/bikeshare/winter.parquet"
    kube.finish_job(ns, f"{NAME}-eval-v2", evaluation(0.91))
    wait_for(lambda: kube.status(ns, NAME).get("serving", {}).get("version") == 2, 60, "version 2 served")
    status = kube.wait_phase(ns, NAME, "Serving", timeout=60)
    assert status["evaluation"]["score"] == 0.91
    dep = kube.apps.read_namespaced_deployment(NAME, ns)
    assert dep.spec.template.metadata.labels["modelreuse.io/version"] == "2"
    assert "SpecChanged" in reasons(kube, ns)
    assert kube.jobs(ns) == [f"{NAME}-eval-v1", f"{NAME}-eval-v2"]
