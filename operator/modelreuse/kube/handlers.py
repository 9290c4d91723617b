"""Thin kopf registrations: they read (indices) and call the Reconciler, which writes through the API.

``register(registry, settings)`` wires everything into a registry, so the resync interval and filters come
from the settings rather than import-time constants.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from modelreuse.api.base import GROUP, PLURAL, VERSION
from modelreuse.controller import children as ch
from modelreuse.kube.client import Kube
from modelreuse.kube.metrics import OperatorMetrics
from modelreuse.kube.observe import JOB_NAME_LABEL, deployment_summary, job_summary, owner_uid, pod_summary
from modelreuse.kube.reconciler import Reconciler
from modelreuse.settings import Settings

MR = (GROUP, VERSION, PLURAL)
MANAGED = {"app.kubernetes.io/managed-by": ch.MANAGED_BY}
INDEX_NAMES = ("mr_jobs", "mr_pods", "mr_deployments", "mr_services", "mr_names", "mr_triggers", "mr_bodies")


def _indices(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in INDEX_NAMES if k in kwargs}


def _owner_key(namespace: str, labels: dict[str, str]) -> tuple[str, str] | None:
    value = labels.get(ch.NAME_LABEL)
    return (namespace, value) if value else None


def register(registry: kopf.OperatorRegistry, settings: Settings, state: dict[str, Any]) -> None:
    """Register every handler of the operator into ``registry``. ``state`` receives the shared objects
    (reconciler, metrics, kube) once the operator starts."""

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> Any:
        # The same credentials the API client loaded (in-cluster, or the kubeconfig given).
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **kwargs: Any) -> None:
        settings.watching.server_timeout = state["settings"].watch_server_timeout
        settings.watching.client_timeout = state["settings"].watch_client_timeout
        settings.watching.connect_timeout = 30
        settings.posting.level = logging.WARNING  # our own Events say what happened; no handler chatter
        settings.persistence.finalizer = "modelreuse.io/operator"
        settings.batching.worker_limit = None
        state["indices"] = _indices(kwargs)

    # -- indices: what the reconciler reads instead of the API server
    @kopf.index("batch", "v1", "jobs", labels=MANAGED, id="mr_jobs", registry=registry)
    async def mr_jobs(body, namespace, labels, **_):
        key = _owner_key(namespace, labels)
        return {key: job_summary(body)} if key else {}

    @kopf.index("", "v1", "pods", labels=MANAGED, id="mr_pods", registry=registry)
    async def mr_pods(body, namespace, labels, **_):
        job = labels.get(JOB_NAME_LABEL) or labels.get("job-name")
        return {(namespace, job): pod_summary(body)} if job else {}

    @kopf.index("apps", "v1", "deployments", labels=MANAGED, id="mr_deployments", registry=registry)
    async def mr_deployments(body, namespace, labels, **_):
        key = _owner_key(namespace, labels)
        return {key: deployment_summary(body)} if key else {}

    @kopf.index("", "v1", "services", labels=MANAGED, id="mr_services", registry=registry)
    async def mr_services(body, namespace, labels, name, **_):
        key = _owner_key(namespace, labels)
        return {key: {"name": name, "uid": owner_uid(body)}} if key else {}

    @kopf.index(*MR, id="mr_names", registry=registry)
    async def mr_names(namespace, name, **_):
        return {(namespace, ch.child_name(name)): name}

    @kopf.index(*MR, id="mr_triggers", registry=registry)
    async def mr_triggers(namespace, name, spec, status, **_):
        rt = spec.get("retraining") or {}
        return {(namespace, name): {
            "alerts": tuple(rt.get("alerts") or ()),
            "prometheus": list(rt.get("prometheus") or ()),
            "cooldown": rt.get("cooldown") or "1h",
            "lastRetrainingTime": status.get("lastRetrainingTime"),
            "phase": status.get("phase") or "Pending",
        }}

    # -- the object itself: every watch event (including the initial listing after a restart) reconciles
    @kopf.on.event(*MR, registry=registry)
    async def modelreuse_event(event, body, namespace, name, **kwargs):
        if "resync" not in state:
            start_resync(kwargs)
        if event.get("type") == "DELETED":
            state["reconciler"].forget((namespace, name))
            return
        await state["reconciler"].reconcile((namespace, name), body, _indices(kwargs), trigger="object")

    def start_resync(kwargs: dict[str, Any]) -> None:
        # Started from a resource handler, not at startup: the task inherits the context kopf.event needs.
        indices = _indices(kwargs)
        bodies_index = kwargs["mr_bodies"]

        def bodies():
            return [(key, next(iter(store))) for key, store in list(bodies_index.items()) if len(store)]


        state["resync"] = asyncio.get_running_loop().create_task(
            state["reconciler"].resync_forever(bodies, lambda: indices))

    @kopf.on.cleanup(registry=registry)
    async def stop_resync(**_: Any) -> None:
        if "resync" in state:
            state["resync"].cancel()

    @kopf.index(*MR, id="mr_bodies", registry=registry)
    async def mr_bodies(body, namespace, name, **_):
        # What the resync reconciles from; managedFields are most of an object's bytes and never read.
        meta = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
        return {(namespace, name): {**{k: v for k, v in body.items() if k != "metadata"}, "metadata": meta}}

    # -- children: a change pokes the owner
    def poke_owner(namespace: str, labels: dict[str, str], kwargs: dict[str, Any]) -> None:
        key = _owner_key(namespace, labels)
        if key is None or "reconciler" not in state:
            return
        names = kwargs.get("mr_names")
        real = next(iter(names.get(key, ())), None) if names is not None else None
        if real is not None:
            state["reconciler"].poke((namespace, real), _indices(kwargs))

    # Only changes the core acts on poke the owner: a finished Job, a terminated pod, any Deployment change.
    # (A Job or pod merely appearing changes nothing; a lost Service is recreated by the resync.)
    @kopf.on.event("batch", "v1", "jobs", labels=MANAGED, registry=registry)
    async def job_event(namespace, labels, status, **kwargs):
        if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in status.get("conditions") or []):
            poke_owner(namespace, labels, kwargs)

    @kopf.on.event("", "v1", "pods", labels=MANAGED, registry=registry)
    async def pod_event(namespace, labels, status, **kwargs):
        if status.get("phase") in ("Succeeded", "Failed") or any(
            (cs.get("state") or {}).get("terminated") for cs in status.get("containerStatuses") or []
        ):
            poke_owner(namespace, labels, kwargs)

    @kopf.on.event("apps", "v1", "deployments", labels=MANAGED, registry=registry)
    async def deployment_event(namespace, labels, **kwargs):
        poke_owner(namespace, labels, kwargs)


def make_state(settings: Settings) -> dict[str, Any]:
    metrics = OperatorMetrics()
    kube = Kube()
    state: dict[str, Any] = {"settings": settings, "metrics": metrics, "kube": kube}
    state["reconciler"] = Reconciler(settings, kube, metrics)
    return state


