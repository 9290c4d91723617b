"""Reduce Jobs, pods, Deployments and Services as the API server returns them to the few facts the core
reads (modelreuse.controller.observed). Plain functions on dicts, kept small for the in-memory indices."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

from modelreuse.api.base import KIND
from modelreuse.controller import children as ch
from modelreuse.controller.observed import DeploymentObservation, JobObservation, Observed
from modelreuse.controller.triggers import RETRAIN_ANNOTATION, decode_request, parse_time

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def owner_uid(body: Mapping[str, Any]) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("controller"):
            return ref.get("uid")
    return None


def _condition(body: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for c in (body.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def job_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the index keeps of a Job."""
    failed = _condition(body, "Failed")
    complete = _condition(body, "Complete")
    status = body.get("status") or {}
    return {
        "name": body["metadata"]["name"],
        "uid": owner_uid(body),
        "complete": complete is not None,
        "failed": failed is not None,
        "failure_reason": (failed or {}).get("reason"),
        "failure_message": (failed or {}).get("message"),
        "finished": status.get("completionTime") or (failed or {}).get("lastTransitionTime"),
    }


def pod_summary(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The workload container's terminated state of a Job pod, or None while it runs."""
    status = body.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") != ch.WORKLOAD_CONTAINER:
            continue
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return {
                "exit_code": term.get("exitCode"),
                "message": term.get("message"),
                "reason": term.get("reason"),
                "finished": term.get("finishedAt"),
            }
    if status.get("phase") in ("Succeeded", "Failed"):
        return {"exit_code": 0 if status["phase"] == "Succeeded" else 1, "message": None,
                "reason": status.get("reason"), "finished": None}
    return None


def deployment_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {})
    version = (meta.get("labels") or {}).get(ch.VERSION_LABEL)
    return {
        "name": meta["name"],
        "uid": owner_uid(body),
        "version": int(version) if version and version.isdigit() else None,
        "spec_hash": (meta.get("annotations") or {}).get(ch.SPEC_HASH_ANNOTATION),
        "generation": meta.get("generation") or 0,
        "observed_generation": status.get("observedGeneration") or 0,
        "replicas": spec.get("replicas", 1),
        "updated_replicas": status.get("updatedReplicas") or 0,
        "available_replicas": status.get("availableReplicas") or 0,
        "progress_deadline_exceeded": progressing.get("reason") == "ProgressDeadlineExceeded"
        and progressing.get("status") == "False",
    }


def _time(text: str | None) -> datetime | None:
    try:
        return parse_time(text)
    except ValueError:
        return None


def job_observation(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any] | None]) -> JobObservation:
    """A Job and its pods' terminated states as one observation (the latest finished pod wins)."""
    finished = [p for p in pods if p]
    pod = max(finished, key=lambda p: p.get("finished") or "", default=None)
    exit_code = pod.get("exit_code") if pod else None
    message = pod.get("message") if pod else None
    succeeded = bool(job.get("complete")) or exit_code == 0
    failed = bool(job.get("failed")) or (exit_code is not None and exit_code != 0)
    return JobObservation(
        name=job["name"],
        succeeded=succeeded and not failed,
        failed=failed,
        termination_message=message,
        exit_code=exit_code,
        failure_reason=job.get("failure_reason") if failed else None,
        failure_message=job.get("failure_message") if failed else None,
        finished_at=_time((pod or {}).get("finished")) or _time(job.get("finished")),
    )


def observe(
    body: Mapping[str, Any],
    jobs: Iterable[Mapping[str, Any]],
    pods_by_job: Mapping[str, Iterable[Mapping[str, Any] | None]],
    deployments: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
) -> Observed:
    """The Observed of one ModelReuse from index contents, keeping only children it owns (same uid)."""
    uid = body["metadata"].get("uid")
    own = lambda s: s.get("uid") == uid  # noqa: E731
    job_obs = {j["name"]: job_observation(j, pods_by_job.get(j["name"], ())) for j in jobs if own(j)}
    dep = next((d for d in deployments if own(d)), None)
    dep_obs = None
    if dep is not None:
        dep_obs = DeploymentObservation(**{k: v for k, v in dep.items() if k != "uid"})
    annotations = body["metadata"].get("annotations") or {}
    return Observed(
        jobs=job_obs,
        deployment=dep_obs,
        service=any(own(s) for s in services),
        retrain_request=decode_request(annotations.get(RETRAIN_ANNOTATION)),
    )
