"""Runs the pure core for one object: read (the body at hand, or a fresh GET when it is older than this
operator's last write), decide, apply children, patch status, post events. One object is reconciled by one
coroutine at a time."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import kopf
from pydantic import ValidationError

from modelreuse.api.resource import ModelReuse
from modelreuse.api.status import ModelReuseStatus
from modelreuse.controller import reconcile
from modelreuse.controller.conditions import rfc3339
from modelreuse.kube.client import Kube
from modelreuse.kube.metrics import OperatorMetrics
from modelreuse.kube.observe import observe
from modelreuse.settings import Settings

log = logging.getLogger("modelreuse.operator")
Key = tuple[str, str]
_STATUS_FIELDS = set(ModelReuseStatus.model_fields) | {f.alias for f in ModelReuseStatus.model_fields.values() if f.alias}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def clean(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict of the object with status keys other than ours dropped (kopf may leave its own)."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in body.items()}
    status = dict(out.get("status") or {})
    out["status"] = {k: v for k, v in status.items() if k in _STATUS_FIELDS}
    return out


class Reconciler:
    def __init__(self, settings: Settings, kube: Kube, metrics: OperatorMetrics,
                 clock: Callable[[], datetime] = _now):
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self.clock = clock
        self._locks: dict[Key, asyncio.Lock] = {}
        self._pending: set[Key] = set()
        self._tasks: set[asyncio.Task] = set()
        # resourceVersion of each object after this process's last status write ("" when unknown).
        self._written: dict[Key, str] = {}

    def _lock(self, key: Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def forget(self, key: Key) -> None:
        self._locks.pop(key, None)
        self._written.pop(key, None)

    def poke(self, key: Key, indices: Mapping[str, Any]) -> None:
        """A child changed: reconcile its owner soon (several pokes in a burst make one reconcile)."""
        if key in self._pending:
            return
        self._pending.add(key)
        task = asyncio.get_running_loop().create_task(self._poked(key, indices))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resync_forever(self, bodies: Callable[[], list[tuple[Key, Mapping[str, Any]]]],
                             indices: Callable[[], Mapping[str, Any]]) -> None:
        """Reconcile every object once per ``resync_seconds``, spread over the interval: deadlines and
        grace periods advance with the clock even when nothing in the cluster changes. One task for all
        objects (a kopf timer per object costs memory with thousands of them)."""
        interval = self.settings.resync_seconds
        while True:
            items = bodies()
            if not items:
                await asyncio.sleep(interval)
                continue
            pause = interval / len(items)
            for key, _ in items:
                await asyncio.sleep(pause)
                current = indices()
                body = _first(current.get("mr_bodies"), key)
                if body is None:  # deleted meanwhile
                    continue
                try:
                    # The index body when it is as new as this operator's last write, else a fresh GET.
                    await self.reconcile(key, body, current, trigger="resync")
                except Exception as exc:  # noqa: BLE001 - the next round tries again
                    log.warning("resync of %s/%s failed: %s", *key, str(exc).splitlines()[0][:300])

    async def _poked(self, key: Key, indices: Mapping[str, Any]) -> None:
        await asyncio.sleep(0.05)
        self._pending.discard(key)
        try:
            await self.reconcile(key, _first(indices.get("mr_bodies"), key), indices, trigger="child")
        except Exception:  # noqa: BLE001 - the next event or the resync timer retries
            log.exception("reconcile of %s/%s after a child change failed", *key)

    async def reconcile(self, key: Key, body: Mapping[str, Any] | None, indices: Mapping[str, Any],
                        trigger: str) -> None:
        """Reconcile ``key`` from ``body`` when it is known to be current, else from a fresh GET.

        Status always goes through the API (never kopf's ``patch``), so this process knows the
        resourceVersion its own last write produced. A body handed in by a watch event or the index was
        captured before this lock was taken: if a reconcile of ours patched the object meanwhile, a plan
        made from that older status would write its conditions back (seen once as a lost RolledBack). Such
        a body differs from the recorded resourceVersion and is replaced by a GET; a body with the recorded
        version, or of an object this process never wrote, is as new as anything it knows.
        """
        async with self._lock(key):
            if trigger == "object" and body is not None and self._is_echo(key, body):
                # The watch event of this process's own last status write: the reconcile that wrote it left
                # nothing to do but wait for a child or the clock (pokes and the resync come for those).
                return
            if body is None or not self._current(key, body):
                body = await self.kube.get_modelreuse(*key)
                self.metrics.reads.inc()
                if body is None:
                    self._written.pop(key, None)
                    return
            if body["metadata"].get("deletionTimestamp"):
                return
            self.metrics.reconciles.labels(trigger).inc()
            with self.metrics.duration.time():
                try:
                    await self._reconcile(key, clean(body), indices)
                except Exception as exc:
                    self.metrics.errors.labels(type(exc).__name__).inc()
                    raise

    def _is_echo(self, key: Key, body: Mapping[str, Any]) -> bool:
        written = self._written.get(key)
        return bool(written) and body["metadata"].get("resourceVersion") == written

    def _current(self, key: Key, body: Mapping[str, Any]) -> bool:
        written = self._written.get(key)
        return written is None or body["metadata"].get("resourceVersion") == written

    async def _patch_status(self, key: Key, status: dict[str, Any]) -> None:
        try:
            rv = await self.kube.patch_status(*key, status)
        except Exception:
            self._written[key] = ""  # unknown now: the next reconcile reads the object
            raise
        self._written[key] = rv or ""

    async def _reconcile(self, key: Key, body: dict[str, Any], indices: Mapping[str, Any]) -> None:
        now = self.clock()
        try:
            obj = ModelReuse.from_dict(body)
        except ValidationError as exc:
            await self._invalid(key, body, exc, now)
            return
        observed = observed_from_indices(body, indices)
        plan = reconcile(obj, observed, now, self.settings)
        log.debug("reconcile %s/%s: observed %s -> phase %s, apply %s, status %s", *key, observed, plan.phase,
                  [c["metadata"]["name"] for c in plan.apply], sorted(plan.status))
        failed = None
        for child in plan.apply:
            try:
                outcome = await self.kube.apply(child)
            except Exception as exc:  # noqa: BLE001 - one refused child must not hold back the others or status
                outcome, failed = "error", exc
                log.warning("applying %s %s/%s failed: %s", child["kind"], key[0], child["metadata"]["name"],
                            str(exc).splitlines()[0][:300])
            self.metrics.applied.labels(child["kind"], outcome).inc()
        if plan.status:
            await self._patch_status(key, plan.status)
        for ev in plan.events:
            self.metrics.events.labels(ev.type, ev.reason).inc()
            kopf.event(body, type=ev.type, reason=ev.reason, message=ev.message[:1024])
        if failed is not None:
            raise failed  # counted as a reconcile error; the next event or resync tries again

    async def _invalid(self, key: Key, body: dict[str, Any], exc: ValidationError, now) -> None:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"The object does not validate at {where}: {first['msg']}. Fix the spec and apply it again."
        status = body.get("status") or {}
        if status.get("phase") == "Failed" and any(c.get("reason") == "InvalidSpec" for c in status.get("conditions", [])):
            return
        new = {"phase": "Failed", "observedGeneration": body["metadata"].get("generation"),
               "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": message,
                               "lastTransitionTime": rfc3339(now)}]}
        await self._patch_status(key, new)
        kopf.event(body, type="Warning", reason="InvalidSpec", message=message[:1024])


def _first(index: Any, key: Any) -> Any:
    store = _store(index, key)
    return store[0] if store else None


def _store(index: Any, key: Any) -> list[Any]:
    if index is None:
        return []
    try:
        return list(index.get(key, ()))
    except TypeError:
        return []


def observed_from_indices(body: Mapping[str, Any], indices: Mapping[str, Any]):
    """Gather one object's children from the kopf indices (no API reads)."""
    from modelreuse.controller.children import child_name

    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    key = (ns, child_name(name))
    jobs = _store(indices.get("mr_jobs"), key)
    pods_by_job = {j["name"]: _store(indices.get("mr_pods"), (ns, j["name"])) for j in jobs}
    return observe(body, jobs, pods_by_job, _store(indices.get("mr_deployments"), key),
                   _store(indices.get("mr_services"), key))
