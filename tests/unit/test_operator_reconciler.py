"""The reconciler's read rule: a body at hand is used when nothing this process wrote can be newer than it,
and replaced by a GET when this process's last status write produced a different resourceVersion."""

from __future__ import annotations

import asyncio
import copy

import kopf
import pytest

from controller_support import SETTINGS, sample
from modelreuse.kube.metrics import OperatorMetrics
from modelreuse.kube.reconciler import Reconciler

KEY = ("ml", "bikeshare-dc")


class FakeApi:
    """The API server as far as the reconciler sees it: one object, a resourceVersion per write."""

    def __init__(self, body: dict):
        self.body = copy.deepcopy(body)
        self.body["metadata"]["resourceVersion"] = "1"
        self.gets = 0
        self.applied: list[str] = []

    def _bump(self) -> str:
        rv = str(int(self.body["metadata"]["resourceVersion"]) + 1)
        self.body["metadata"]["resourceVersion"] = rv
        return rv

    async def get_modelreuse(self, namespace: str, name: str):
        self.gets += 1
        return copy.deepcopy(self.body)

    async def apply(self, manifest: dict) -> str:
        self.applied.append(manifest["metadata"]["name"])
        return "created"

    async def patch_status(self, namespace: str, name: str, patch: dict) -> str:
        from modelreuse.controller.lifecycle import apply_merge_patch

        self.body["status"] = apply_merge_patch(self.body.get("status") or {}, patch)
        return self._bump()


@pytest.fixture(autouse=True)
def no_event_posting(monkeypatch):
    monkeypatch.setattr(kopf, "event", lambda *a, **k: None)


def run(coro):
    return asyncio.run(coro)


def test_a_body_of_an_object_never_written_is_used_as_is():
    api = FakeApi(sample())
    rec = Reconciler(SETTINGS, api, OperatorMetrics())
    run(rec.reconcile(KEY, copy.deepcopy(api.body), {}, trigger="object"))
    assert api.gets == 0
    assert api.applied == ["bikeshare-dc-eval-v1"] and api.body["status"]["phase"] == "Evaluating"


def test_a_body_older_than_our_last_write_is_replaced_by_a_get():
    api = FakeApi(sample())
    rec = Reconciler(SETTINGS, api, OperatorMetrics())
    stale = copy.deepcopy(api.body)  # captured before the first reconcile wrote the status
    run(rec.reconcile(KEY, copy.deepcopy(api.body), {}, trigger="object"))
    written = api.body["metadata"]["resourceVersion"]
    run(rec.reconcile(KEY, stale, {}, trigger="object"))
    assert api.gets == 1
    # Decided on the fresh object: nothing new to write, so the status written first is intact.
    assert api.body["metadata"]["resourceVersion"] == written
    assert api.body["status"]["candidate"]["version"] == 1 and api.body["status"]["nextVersion"] == 2


def test_a_body_with_our_last_written_version_needs_no_get():
    api = FakeApi(sample())
    rec = Reconciler(SETTINGS, api, OperatorMetrics())
    run(rec.reconcile(KEY, copy.deepcopy(api.body), {}, trigger="object"))
    run(rec.reconcile(KEY, copy.deepcopy(api.body), {}, trigger="object"))  # the watch event of that write
    assert api.gets == 0


def test_without_a_body_the_object_is_read_and_a_deleted_one_is_left_alone():
    api = FakeApi(sample())
    rec = Reconciler(SETTINGS, api, OperatorMetrics())
    run(rec.reconcile(KEY, None, {}, trigger="resync"))
    assert api.gets == 1 and api.applied == ["bikeshare-dc-eval-v1"]

    async def gone(namespace, name):
        api.gets += 1
        return None

    api.get_modelreuse = gone
    run(rec.reconcile(KEY, None, {}, trigger="resync"))
    assert api.gets == 2 and api.applied == ["bikeshare-dc-eval-v1"]


def test_the_echo_of_our_own_write_is_not_reconciled_but_a_resync_is():
    api = FakeApi(sample())
    metrics = OperatorMetrics()
    rec = Reconciler(SETTINGS, api, metrics)
    run(rec.reconcile(KEY, copy.deepcopy(api.body), {}, trigger="object"))
    run(rec.reconcile(KEY, copy.deepcopy(api.body), {}, trigger="object"))  # the watch event of that write
    assert metrics.reconciles.labels("object")._value.get() == 1
    run(rec.reconcile(KEY, copy.deepcopy(api.body), {}, trigger="resync"))  # the clock may have moved
    assert metrics.reconciles.labels("resync")._value.get() == 1 and api.gets == 0
