"""Kubernetes API I/O: apply children, read and patch a ModelReuse, read the webhook's Secret.

The official client library supplies the credentials (kubeconfig, in-cluster token, refresh hooks) and the
connection pool; the requests themselves are plain JSON over that pool, made in worker threads so the kopf
event loop never blocks. Only this module talks to the API server directly (kopf does the watching).
"""

from __future__ import annotations

import asyncio
import base64
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode

import orjson
import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from modelreuse import __version__
from modelreuse.api.base import GROUP, PLURAL, VERSION

FIELD_MANAGER = "modelreuse-operator"
USER_AGENT = f"modelreuse-operator/{__version__}"
TIMEOUT = urllib3.Timeout(connect=10, read=60)


def load_config(kubeconfig: str | None = None) -> None:
    """In-cluster credentials when running in a pod, else the kubeconfig (explicit or $KUBECONFIG)."""
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
        return
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class Kube:
    """The few API calls the operator makes, each async.

    Calls run on a pool of ``concurrency`` threads (the defaults of asyncio and the client library allow
    cores + 4: on a 2-core node, 6 calls at a time, which a burst of new objects queues behind). Status
    writes have their own, smaller pool of ``status_concurrency``: children first. In a burst every object
    needs its Job and a status write (and kopf posts its Event); capping the concurrent status writes keeps
    them from crowding the API server while it creates the work itself."""

    def __init__(self, api_client: client.ApiClient | None = None, concurrency: int = 16,
                 status_concurrency: int = 4):
        if api_client is None:
            cfg = client.Configuration.get_default_copy()
            cfg.connection_pool_maxsize = concurrency + status_concurrency
            api_client = client.ApiClient(cfg)
        self.api = api_client
        self.concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kube-api")
        self._status_pool = ThreadPoolExecutor(max_workers=status_concurrency, thread_name_prefix="kube-status")

    async def _call(self, fn, *args, pool: ThreadPoolExecutor | None = None):
        return await asyncio.get_running_loop().run_in_executor(pool or self._pool, fn, *args)

    def _request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                 query: list[tuple[str, str]] | None = None, ok_missing: bool = False) -> dict[str, Any] | None:
        """One API call on the client library's connection pool and credentials, without its typed layer
        (which validates arguments and converts bodies through pydantic models: several times the cost of
        the call). Returns the decoded answer; None for a 404 when ``ok_missing``; raises ApiException."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)
        queries = list(query or [])
        self.api.update_params_for_auth(headers, queries, ["BearerToken"], path, method, body)
        url = self.api.configuration.host + path + ("?" + urlencode(queries) if queries else "")
        resp = self.api.rest_client.pool_manager.request(method, url, body=data, headers=headers, timeout=TIMEOUT)
        if resp.status == 404 and ok_missing:
            return None
        if resp.status >= 400:
            raise ApiException(status=resp.status, reason=resp.reason, body=resp.data.decode(errors="replace"))
        return orjson.loads(resp.data) if resp.data else None

    async def warm_up(self) -> None:
        """Open the pool's connections before they are needed: each new TLS connection loads the system CA
        bundle and does a handshake (about 20 ms of CPU), which would otherwise land on the first burst of
        work, such as reconciling every object after a restart. GET /version is open to every client."""
        calls = [self._call(self._request, "GET", "/version") for _ in range(self.concurrency)]
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    async def apply(self, manifest: dict[str, Any]) -> str:
        """Create a Job or Service if absent (they are never changed), server-side apply a Deployment.
        Returns "created", "exists" or "applied"."""
        return await self._call(self._apply, manifest)

    def _apply(self, manifest: dict[str, Any]) -> str:
        kind, meta = manifest["kind"], manifest["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if kind == "Deployment":
            self._request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}", manifest,
                          "application/apply-patch+yaml", [("fieldManager", FIELD_MANAGER), ("force", "true")])
            return "applied"
        collection = {"Job": "/apis/batch/v1/namespaces/{ns}/jobs", "Service": "/api/v1/namespaces/{ns}/services"}[kind]
        try:
            self._request("POST", collection.format(ns=ns), manifest, query=[("fieldManager", FIELD_MANAGER)])
        except ApiException as exc:
            if exc.status == 409:  # a restarted operator finds what it made before: deterministic names
                return "exists"
            raise
        return "created"

    def _modelreuse_path(self, namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"

    async def get_modelreuse(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(lambda: self._request("GET", self._modelreuse_path(namespace, name), ok_missing=True))

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> str | None:
        """Merge-patch the status; returns the object's new resourceVersion."""
        def call() -> str | None:
            answer = self._request("PATCH", self._modelreuse_path(namespace, name) + "/status", {"status": patch},
                                   "application/merge-patch+json")
            return ((answer or {}).get("metadata") or {}).get("resourceVersion")

        return await self._call(call, pool=self._status_pool)

    async def annotate(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        await self._call(lambda: self._request("PATCH", self._modelreuse_path(namespace, name),
                                               {"metadata": {"annotations": annotations}},
                                               "application/merge-patch+json"))

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str | None:
        def read() -> str | None:
            try:
                secret = self._request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}", ok_missing=True)
            except ApiException as exc:
                if exc.status == 403:
                    return None
                raise
            raw = ((secret or {}).get("data") or {}).get(key)
            return base64.b64decode(raw).decode().strip() if raw else None

        return await self._call(read)


async def request_retraining(kube: Kube, namespace: str, name: str, reason: str, message: str, now) -> None:
    """Record a retraining request on the object; the reconcile core accepts it at most once per cooldown."""
    from modelreuse.controller.observed import RetrainRequest
    from modelreuse.controller.triggers import RETRAIN_ANNOTATION, encode_request

    request = RetrainRequest(time=now, reason=reason, message=message)
    await kube.annotate(namespace, name, {RETRAIN_ANNOTATION: encode_request(request)})
