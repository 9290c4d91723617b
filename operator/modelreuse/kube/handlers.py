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
INDEX_NAMES = ("mr_jobs", "mr_pods", "mr_deployments", "mr_services", "mr_bodies")
ALIAS = "alias"  # an mr_bodies key (ALIAS, namespace, label value) maps a child label value to the object's name


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
        # No on.create/on.update handlers read a diff base: do not build one (a deep copy of every body of
        # every watched kind on every event, a quarter of the operator's CPU in a burst of new objects).
        settings.persistence.diffbase_storage = NoDiffBase()
        state["indices"] = _indices(kwargs)
        try:
            await state["kube"].warm_up()
        except Exception as exc:  # noqa: BLE001 - the first real call reports a real problem
            logger.warning("could not open API connections ahead of time: %s", str(exc).splitlines()[0][:200])

    # -- indices of the children: what the reconciler reads instead of the API server. A change the core
    # acts on pokes the owner right from the indexer (kopf runs indexers on every event; a separate event
    # handler per kind would double kopf's work per event): a finished Job, a terminated pod, any Deployment
    # change. A Job or pod merely appearing changes nothing; a lost Service is recreated by the resync.
    @kopf.index("batch", "v1", "jobs", labels=MANAGED, id="mr_jobs", registry=registry)
    async def mr_jobs(body, namespace, labels, **_):
        key = _owner_key(namespace, labels)
        if key is None:
            return {}
        summary = job_summary(body)
        if summary["complete"] or summary["failed"]:
            poke_owner(namespace, labels)
        return {key: summary}

    @kopf.index("", "v1", "pods", labels=MANAGED, id="mr_pods", registry=registry)
    async def mr_pods(body, namespace, labels, **_):
        job = labels.get(JOB_NAME_LABEL) or labels.get("job-name")
        if not job:
            return {}
        summary = pod_summary(body)
        if summary is not None or (body.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            poke_owner(namespace, labels)
        return {(namespace, job): summary}

    @kopf.index("apps", "v1", "deployments", labels=MANAGED, id="mr_deployments", registry=registry)
    async def mr_deployments(body, namespace, labels, **_):
        key = _owner_key(namespace, labels)
        if key is None:
            return {}
        poke_owner(namespace, labels)
        return {key: deployment_summary(body)}

    @kopf.index("", "v1", "services", labels=MANAGED, id="mr_services", registry=registry)
    async def mr_services(body, namespace, labels, name, **_):
        key = _owner_key(namespace, labels)
        return {key: {"name": name, "uid": owner_uid(body)}} if key else {}

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
            return objects(bodies_index)

        state["resync"] = asyncio.get_running_loop().create_task(
            state["reconciler"].resync_forever(bodies, lambda: indices))

    @kopf.on.cleanup(registry=registry)
    async def stop_resync(**_: Any) -> None:
        if "resync" in state:
            state["resync"].cancel()

    # One indexer for the object itself (kopf runs every indexer on every event, so one is cheaper than
    # several): its body, which the resync and pokes reconcile from and the webhook and poller read their
    # triggers from, plus an alias entry from the label value children carry to the name when the name is
    # too long for a label.
    @kopf.index(*MR, id="mr_bodies", registry=registry)
    async def mr_bodies(body, namespace, name, **_):
        # managedFields are most of an object's bytes and never read.
        meta = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
        out: dict[Any, Any] = {(namespace, name): {**{k: v for k, v in body.items() if k != "metadata"}, "metadata": meta}}
        label = ch.child_name(name)
        if label != name:
            out[(ALIAS, namespace, label)] = name
        return out

    # -- children: a change pokes the owner (from the indexers above)
    def poke_owner(namespace: str, labels: dict[str, str]) -> None:
        key = _owner_key(namespace, labels)
        indices = state.get("indices")
        if key is None or indices is None or "reconciler" not in state:
            return
        index = indices.get("mr_bodies")
        if index is None:
            return
        real = next(iter(index.get((ALIAS, *key), ())), None)
        if real is not None:
            state["reconciler"].poke((namespace, real), indices)
        elif key in index:
            state["reconciler"].poke(key, indices)


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base storage that keeps nothing, for an operator with only event handlers and indices."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def objects(index: Any) -> list[tuple[tuple[str, str], dict[str, Any]]]:
    """((namespace, name), body) of every object in the mr_bodies index."""
    if index is None:
        return []
    return [(key, next(iter(store))) for key, store in list(index.items()) if len(key) == 2 and len(store)]


def trigger_info(body: dict[str, Any]) -> dict[str, Any]:
    """What the alert webhook and the Prometheus poller read of an object."""
    rt = (body.get("spec") or {}).get("retraining") or {}
    status = body.get("status") or {}
    return {
        "alerts": tuple(rt.get("alerts") or ()),
        "prometheus": list(rt.get("prometheus") or ()),
        "cooldown": rt.get("cooldown") or "1h",
        "lastRetrainingTime": status.get("lastRetrainingTime"),
        "phase": status.get("phase") or "Pending",
    }


def make_state(settings: Settings) -> dict[str, Any]:
    metrics = OperatorMetrics()
    kube = Kube(concurrency=settings.api_concurrency, status_concurrency=settings.api_status_concurrency)
    state: dict[str, Any] = {"settings": settings, "metrics": metrics, "kube": kube}
    state["reconciler"] = Reconciler(settings, kube, metrics)
    return state


