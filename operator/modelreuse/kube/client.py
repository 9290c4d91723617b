"""Kubernetes API I/O: apply children, read and patch a ModelReuse, read the webhook's Secret.

The official client is synchronous; calls run in worker threads so the kopf event loop never blocks.
Only this module talks to the API server directly (kopf does the watching and its own patches).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelreuse.api.base import GROUP, PLURAL, VERSION

FIELD_MANAGER = "modelreuse-operator"


def load_config(kubeconfig: str | None = None) -> None:
    """In-cluster credentials when running in a pod, else the kubeconfig (explicit or $KUBECONFIG)."""
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
        return
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def _done(response: Any) -> None:
    """Discard an answer without turning it into client models (that costs more than the call) and give
    the connection back to the pool."""
    response.drain_conn()
    response.release_conn()


def resource_version(raw: bytes) -> str | None:
    """metadata.resourceVersion of an object's JSON, None when it cannot be read."""
    try:
        return orjson.loads(raw)["metadata"]["resourceVersion"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


class Kube:
    """The few API calls the operator makes, each async."""

    def __init__(self, api_client: client.ApiClient | None = None):
        self.api = api_client or client.ApiClient()
        self.batch = client.BatchV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    async def apply(self, manifest: dict[str, Any]) -> str:
        """Create a Job or Service if absent (they are never changed), server-side apply a Deployment.
        Returns "created", "exists" or "applied"."""
        return await asyncio.to_thread(self._apply, manifest)

    def _apply(self, manifest: dict[str, Any]) -> str:
        kind, meta = manifest["kind"], manifest["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if kind == "Deployment":
            _done(self.apps.patch_namespaced_deployment(
                name, ns, manifest, field_manager=FIELD_MANAGER, force=True,
                _content_type="application/apply-patch+yaml", _preload_content=False,
            ))
            return "applied"
        create = {"Job": self.batch.create_namespaced_job, "Service": self.core.create_namespaced_service}[kind]
        try:
            # The answer is not read: turning it into client models costs more than the call itself.
            _done(create(ns, manifest, field_manager=FIELD_MANAGER, _preload_content=False))
        except ApiException as exc:
            if exc.status == 409:  # a restarted operator finds what it made before: deterministic names
                return "exists"
            raise
        return "created"

    async def get_modelreuse(self, namespace: str, name: str) -> dict[str, Any] | None:
        def get() -> dict[str, Any] | None:
            try:
                return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        return await asyncio.to_thread(get)

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> str | None:
        """Merge-patch the status; returns the object's new resourceVersion."""
        def call() -> str | None:
            response = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": patch},
                _content_type="application/merge-patch+json", _preload_content=False,
            )
            try:
                return resource_version(response.data)
            finally:
                response.release_conn()

        return await asyncio.to_thread(call)

    async def annotate(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        def call() -> None:
            _done(self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"annotations": annotations}},
                _content_type="application/merge-patch+json", _preload_content=False,
            ))

        await asyncio.to_thread(call)

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        def read() -> str | None:
            try:
                secret = self.core.read_namespaced_secret(name, namespace)
            except ApiException as exc:
                if exc.status in (403, 404):
                    return None
                raise
            raw = (secret.data or {}).get(key)
            return base64.b64decode(raw).decode().strip() if raw else None

        return await asyncio.to_thread(read)


async def request_retraining(kube: Kube, namespace: str, name: str, reason: str, message: str, now) -> None:
    """Record a retraining request on the object; the reconcile core accepts it at most once per cooldown."""
    from modelreuse.controller.observed import RetrainRequest
    from modelreuse.controller.triggers import RETRAIN_ANNOTATION, encode_request

    request = RetrainRequest(time=now, reason=reason, message=message)
    await kube.annotate(namespace, name, {RETRAIN_ANNOTATION: encode_request(request)})
