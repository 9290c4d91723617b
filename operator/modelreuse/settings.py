"""Operator settings: one frozen value passed into the pure reconcile core and the Kubernetes layer.

Read from flags or ``MODELREUSE_*`` environment variables by ``modelreuse operator``; tests build it directly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields

ENV_PREFIX = "MODELREUSE_"


@dataclass(frozen=True)
class Settings:
    """Everything the operator decides with besides the object and the clock."""

    runtime_image: str = "ghcr.io/modelreuse/runtime:0.1.0"
    runtime_gpu_image: str = ""  # used for the inference pods when they ask for a GPU; runtime_image if empty
    image_pull_policy: str = "IfNotPresent"
    artifacts_uri: str = "file:///var/lib/modelreuse/artifacts"
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    service_port: int = 8080
    # Workload pods (Jobs) can be pinned to a node pool; tests pin them where no kubelet runs and play it.
    job_node_selector: dict[str, str] = field(default_factory=dict)
    job_active_deadline_seconds: int = 7200
    # A Job whose pod finished but whose termination message has not been seen yet: how long to wait.
    result_grace_seconds: float = 60.0
    resync_seconds: float = 60.0
    api_concurrency: int = 16  # Kubernetes API calls in flight at once (threads and pooled connections)
    api_status_concurrency: int = 4  # of which status writes, on their own pool: children go first
    watch_server_timeout: int = 300
    watch_client_timeout: int = 330
    webhook_port: int = 8081
    webhook_token_secret: str = ""  # "namespace/name" of a Secret with key "token"; empty: webhook refuses all
    webhook_token: str = ""  # the token itself (tests, local runs); a Secret wins when both are given
    prometheus_url: str = ""
    prometheus_interval_seconds: float = 30.0
    metrics_port: int = 8080
    metrics_host: str = "0.0.0.0"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``MODELREUSE_<FIELD>`` variables, then explicit overrides (flags)."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _parse(f.name, raw, getattr(cls(), f.name))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _parse(name: str, raw: str, default: object) -> object:
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, tuple):
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    if isinstance(default, dict):
        if raw.lstrip().startswith("{"):
            return json.loads(raw)
        return dict(p.split("=", 1) for p in raw.split(",") if "=" in p)
    return raw
