"""Pure builders of the children of a ModelReuse: evaluation and adaptation Jobs, the inference Deployment
and its Service, as plain manifests. Names are deterministic so that a restarted operator finds, rather than
duplicates, what it created; every pod is hardened the same way.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any

from modelreuse.api.base import API_VERSION, KIND
from modelreuse.api.resource import ModelReuse
from modelreuse.api.spec import ModelSource
from modelreuse.api.status import ModelVersion
from modelreuse.api.tasks import DEFAULT_TERMINATION_LOG, AdaptTask, EvaluateTask, ServeTask
from modelreuse.settings import Settings

MANAGED_BY = "modelreuse-operator"
NAME_LABEL = "modelreuse.io/name"
VERSION_LABEL = "modelreuse.io/version"
COMPONENT_LABEL = "app.kubernetes.io/component"
SPEC_HASH_ANNOTATION = "modelreuse.io/spec-hash"
WORKLOAD_CONTAINER = "workload"
SERVER_CONTAINER = "server"
RUN_AS = 65532  # the runtime images' non-root user
GPU_RESOURCE = "nvidia.com/gpu"
_MAX_NAME = 63  # Job names become label values; Service names are DNS labels


def child_name(name: str, suffix: str = "") -> str:
    """``name + suffix`` within 63 characters; a long name is cut and made unique with a hash."""
    full = f"{name}{suffix}"
    if len(full) <= _MAX_NAME:
        return full
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    keep = _MAX_NAME - len(suffix) - len(digest) - 1
    return f"{name[:keep].rstrip('-.')}-{digest}{suffix}"


def eval_job_name(name: str, version: int) -> str:
    return child_name(name, f"-eval-v{version}")


def adapt_job_name(name: str, version: int) -> str:
    return child_name(name, f"-adapt-v{version}")


def retrain_job_name(name: str, version: int) -> str:
    return child_name(name, f"-retrain-v{version}")


def serving_name(name: str) -> str:
    return child_name(name)


def version_dir(obj: ModelReuse, settings: Settings, version: int) -> str:
    """The folder of version N: ``{artifacts}/{namespace}/{name}/v{N}`` (model, metadata, evaluation report)."""
    base = (obj.spec.artifacts.uri if obj.spec.artifacts else settings.artifacts_uri).rstrip("/")
    return f"{base}/{obj.metadata.namespace}/{obj.metadata.name}/v{version}"


def artifact_uri(obj: ModelReuse, settings: Settings, version: int) -> str:
    """Where version N of this object's model is written: ``{artifacts}/{namespace}/{name}/v{N}/model.onnx``."""
    return f"{version_dir(obj, settings, version)}/model.onnx"


def report_uri(obj: ModelReuse, settings: Settings, version: int) -> str:
    return f"{version_dir(obj, settings, version)}/evaluation"


def endpoint(obj: ModelReuse, settings: Settings) -> str:
    svc = serving_name(obj.metadata.name)
    return f"http://{svc}.{obj.metadata.namespace}.svc:{settings.service_port}/v2/models/{obj.metadata.name}"


def owner_reference(obj: ModelReuse) -> dict[str, Any]:
    # blockOwnerDeletion keeps foreground deletion of the ModelReuse waiting for its children.
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": obj.metadata.name,
        "uid": obj.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(obj: ModelReuse, component: str, version: int | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "modelreuse",
        "app.kubernetes.io/instance": child_name(obj.metadata.name),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        COMPONENT_LABEL: component,
        NAME_LABEL: child_name(obj.metadata.name),
    }
    if version is not None:
        out[VERSION_LABEL] = str(version)
    return out


def model_source(obj: ModelReuse, version: ModelVersion) -> ModelSource:
    """The ModelSource a workload reads for one version: the inherited model itself, or an adapted file."""
    src = obj.spec.source
    if version.origin == "source":
        return src
    digest = version.digest.split(":", 1)[-1] if version.digest else None
    tokenizer = src.tokenizer
    if tokenizer is None and obj.spec.data.text_column is not None:
        tokenizer = posixpath.join(posixpath.dirname(src.uri), "tokenizer.json")
    artifacts_secret = obj.spec.artifacts.credentials_secret if obj.spec.artifacts else None
    return ModelSource(
        uri=version.uri or "",
        format="onnx",
        sha256=digest,
        labels=list(src.labels),
        tokenizer=tokenizer,
        credentials_secret=artifacts_secret or src.credentials_secret,
    )


def _secrets(obj: ModelReuse) -> list[str]:
    names = [obj.spec.source.credentials_secret]
    if obj.spec.artifacts is not None:
        names.append(obj.spec.artifacts.credentials_secret)
    return sorted({n for n in names if n})


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(obj: ModelReuse) -> list[dict[str, str]]:
    # The root filesystem is read-only: every cache a library might write goes to the scratch volume.
    return [
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "MODELREUSE_NAME", "value": obj.metadata.name},
        {"name": "MODELREUSE_NAMESPACE", "value": obj.metadata.namespace},
    ]


def _pod_spec(obj: ModelReuse, container: dict[str, Any], **extra: Any) -> dict[str, Any]:
    container = {
        "imagePullPolicy": "IfNotPresent",
        "env": _env(obj),
        "envFrom": [{"secretRef": {"name": s}} for s in _secrets(obj)],
        "terminationMessagePath": DEFAULT_TERMINATION_LOG,
        # A crash before the result is written still tells the operator something: the log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
        **container,
    }
    if not container["envFrom"]:
        del container["envFrom"]
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(),
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        **extra,
    }


def _job(obj: ModelReuse, settings: Settings, name: str, component: str, version: int,
         args: list[str], deadline: int) -> dict[str, Any]:
    lbl = labels(obj, component, version)
    pod = _pod_spec(
        obj,
        {
            "name": WORKLOAD_CONTAINER,
            "image": settings.runtime_image,
            "imagePullPolicy": settings.image_pull_policy,
            "args": args,
        },
        restartPolicy="Never",
    )
    if settings.job_node_selector:
        pod["nodeSelector"] = dict(settings.job_node_selector)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": obj.metadata.namespace,
            "labels": lbl,
            "ownerReferences": [owner_reference(obj)],
        },
        "spec": {
            # Workload failures are deterministic (bad data, digest mismatch): a retry only wastes time.
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline,
            "template": {"metadata": {"labels": lbl}, "spec": pod},
        },
    }


def _task_json(task: Any) -> str:
    return json.dumps(task.to_json_dict(), separators=(",", ":"), sort_keys=True)


def build_evaluation_job(obj: ModelReuse, version: ModelVersion, settings: Settings) -> dict[str, Any]:
    """The Job that scores one version on the holdout: ``modelreuse evaluate --task JSON``."""
    task = EvaluateTask(source=model_source(obj, version), data=obj.spec.data, evaluation=obj.spec.evaluation)
    return _job(
        obj, settings, eval_job_name(obj.metadata.name, version.version), "evaluate", version.version,
        ["evaluate", "--task", _task_json(task), "--report", report_uri(obj, settings, version.version)],
        settings.job_active_deadline_seconds,
    )


def build_adaptation_job(
    obj: ModelReuse,
    version: ModelVersion,
    settings: Settings,
    base: ModelVersion | None = None,
    attempt: int = 1,
    extra_data: list[str] | None = None,
) -> dict[str, Any]:
    """The Job that fine-tunes ``base`` (the inherited model by default) into ``version``:
    ``modelreuse adapt --task JSON --out {version folder}`` (it writes ``model.onnx`` there). Retraining adapts the serving version on the data plus
    captured feedback and is named ``-retrain-``."""
    adaptation = obj.spec.adaptation.model_copy(update={"seed": obj.spec.adaptation.seed + attempt - 1})
    source = obj.spec.source if base is None else model_source(obj, base)
    task = AdaptTask(
        source=source, data=obj.spec.data, evaluation=obj.spec.evaluation, adaptation=adaptation,
        extra_data=list(extra_data or []),
    )
    retrain = version.origin == "retraining"
    name = (retrain_job_name if retrain else adapt_job_name)(obj.metadata.name, version.version)
    return _job(
        obj, settings, name, "retrain" if retrain else "adapt", version.version,
        ["adapt", "--task", _task_json(task), "--out", version_dir(obj, settings, version.version)],
        obj.spec.adaptation.max_seconds + 600,
    )


def _selector(obj: ModelReuse) -> dict[str, str]:
    return {NAME_LABEL: child_name(obj.metadata.name), COMPONENT_LABEL: "serve"}


def spec_hash(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def build_deployment(obj: ModelReuse, serving: ModelVersion, settings: Settings) -> dict[str, Any]:
    """The inference Deployment of the serving version: ``modelreuse serve --task JSON`` behind port
    ``settings.service_port``, with the spec's GPU resources, node selector, tolerations, batching and data
    capture. Its template hash (annotation) tells the core whether the running Deployment is current."""
    dep = obj.spec.deployment
    task = ServeTask(
        name=obj.metadata.name,
        version=serving.version,
        source=model_source(obj, serving),
        device=dep.device,
        batching=dep.batching,
        data_capture=dep.data_capture,
        feature_names=list(obj.spec.data.features) if obj.spec.data.features else None,
        text_input=obj.spec.data.text_column is not None,
        reference_stats=f"{report_uri(obj, settings, serving.version)}/feature-stats.json",
    )
    resources = dep.resources.to_json_dict()
    gpu = GPU_RESOURCE in dep.resources.limits or GPU_RESOURCE in dep.resources.requests
    image = settings.runtime_gpu_image if gpu and settings.runtime_gpu_image else settings.runtime_image
    lbl = labels(obj, "serve", serving.version)
    probe_port = "http"
    container = {
        "name": SERVER_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["serve", "--task", _task_json(task), "--host", "0.0.0.0", "--port", str(settings.service_port)],
        "ports": [{"name": "http", "containerPort": settings.service_port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": probe_port}, "periodSeconds": 5},
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": probe_port},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
    }
    if resources:
        container["resources"] = resources
    extra: dict[str, Any] = {}
    if dep.node_selector:
        extra["nodeSelector"] = dict(dep.node_selector)
    if dep.tolerations:
        extra["tolerations"] = [t.to_json_dict() for t in dep.tolerations]
    template = {
        "metadata": {
            "labels": lbl,
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(settings.service_port),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": _pod_spec(obj, container, **extra),
    }
    spec = {
        "replicas": dep.replicas,
        "progressDeadlineSeconds": dep.rollout_deadline_seconds,
        "revisionHistoryLimit": 3,
        # Old pods stay until new ones are available: a failed rollout keeps serving the previous version.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "selector": {"matchLabels": _selector(obj)},
        "template": template,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": serving_name(obj.metadata.name),
            "namespace": obj.metadata.namespace,
            "labels": lbl,
            "annotations": {SPEC_HASH_ANNOTATION: spec_hash(spec)},
            "ownerReferences": [owner_reference(obj)],
        },
        "spec": spec,
    }


def build_service(obj: ModelReuse, settings: Settings) -> dict[str, Any]:
    """The ClusterIP Service in front of the inference pods (the object's endpoint)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": serving_name(obj.metadata.name),
            "namespace": obj.metadata.namespace,
            "labels": labels(obj, "serve"),
            "ownerReferences": [owner_reference(obj)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(obj),
            "ports": [{"name": "http", "port": settings.service_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
