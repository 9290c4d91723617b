"""Running `modelreuse operator` as a real process against the local control plane, and playing the
kubelet for workload pods (they are pinned to a node label no node has, so they stay Pending until a test
writes their final status and termination message)."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import urllib3
from kubernetes import client, config

from catalogue import load_sample
from kubecluster import free_port

REPO = Path(__file__).resolve().parents[2]
TEST_KUBELET = "modelreuse.io/test-kubelet=true"
GROUP, VERSION, PLURAL = "modelreuse.io", "v1alpha1", "modelreuses"
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # loopback, self-signed
TOKEN = "alert-token-" + uuid.uuid4().hex[:8]


def wait_for(fn: Callable[[], Any], timeout: float = 60, what: str = "condition", interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except client.ApiException as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class Operator:
    """One `python -m modelreuse operator` process."""

    def __init__(self, kubeconfig: Path, workdir: Path, namespaces: list[str] | None = None,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None):
        self.kubeconfig = kubeconfig
        self.port = free_port()
        self.log = workdir / f"operator-{self.port}.log"
        self.namespaces = namespaces or []
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Operator:
        args = [sys.executable, "-m", "modelreuse", "operator", "--kubeconfig", str(self.kubeconfig),
                "--runtime-image", "registry.test/modelreuse/runtime:test", "--artifacts", "file:///artifacts",
                "--job-node-selector", TEST_KUBELET, "--resync-seconds", "3", "--result-grace-seconds", "20",
                "--metrics-port", str(self.port), "--webhook-port", str(self.port),
                "--watch-server-timeout", "60", "--watch-client-timeout", "70", *self.extra_args]
        if os.environ.get("MODELREUSE_OPERATOR_VERBOSE"):
            args.append("--verbose")
        for ns in self.namespaces:
            args += ["-n", ns]
        env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "MODELREUSE_WEBHOOK_TOKEN": TOKEN, **self.env}
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_for(self.healthy, 60, f"the operator's /healthz (log {self.log})")
        return self

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the operator exited {self.proc.returncode}:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as r:
            return r.read().decode()

    def post_alerts(self, payload: dict, token: str | None = TOKEN) -> tuple[int, dict]:
        req = urllib.request.Request(self.url("/alerts"), data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies under the operator."""
        self.stop(signal.SIGKILL)

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class Kube:
    """Typed API clients for the test (admin) plus the few helpers the tests share."""

    def __init__(self, kubeconfig: Path):
        self.api = config.new_client_from_config(str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def create(self, ns: str, name: str, change: Callable[[dict], None] | None = None) -> dict:
        body = copy.deepcopy(load_sample("bikeshare"))
        body["metadata"] = {"name": name, "namespace": ns}
        if change:
            change(body["spec"])
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)

    def get(self, ns: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)

    def status(self, ns: str, name: str) -> dict:
        return self.get(ns, name).get("status") or {}

    def phase(self, ns: str, name: str) -> str | None:
        return self.status(ns, name).get("phase")

    def wait_phase(self, ns: str, name: str, phase: str, timeout: float = 60) -> dict:
        wait_for(lambda: self.phase(ns, name) == phase, timeout, f"{ns}/{name} phase {phase} "
                 f"(now {self.phase(ns, name)})")
        return self.status(ns, name)

    def condition(self, ns: str, name: str, type_: str) -> dict:
        return next((c for c in self.status(ns, name).get("conditions", []) if c["type"] == type_), {})

    def jobs(self, ns: str) -> list[str]:
        return sorted(j.metadata.name for j in self.batch.list_namespaced_job(ns).items)

    def finish_job(self, ns: str, job: str, result: dict | str, exit_code: int = 0, timeout: float = 60) -> None:
        """Play the kubelet: the job's pod ends with this termination message and exit code."""
        pod = wait_for(lambda: next(iter(self.core.list_namespaced_pod(
            ns, label_selector=f"batch.kubernetes.io/job-name={job}").items), None), timeout, f"a pod of job {job}")
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = result if isinstance(result, str) else json.dumps(result)
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [{
                "name": "workload", "image": pod.spec.containers[0].image, "imageID": "", "ready": False,
                "restartCount": 0, "started": False,
                "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                         "message": message, "startedAt": now, "finishedAt": now}},
            }],
        }
        self.core.patch_namespaced_pod_status(pod.metadata.name, ns, {"status": status})

    def wait_job(self, ns: str, job: str, timeout: float = 60) -> None:
        wait_for(lambda: job in self.jobs(ns), timeout, f"job {job} (jobs: {self.jobs(ns)})")


def evaluation(score: float, digest: str = "sha256:" + "a" * 64) -> dict:
    return {"ok": True, "command": "evaluate", "score": score, "precision": score, "recall": score, "f1": score,
            "accuracy": score, "samples": 120, "modelDigest": digest, "dataDigest": "sha256:" + "b" * 64}


def adaptation(ns: str, name: str, version: int) -> dict:
    return {"ok": True, "command": "adapt", "modelUri": f"file:///artifacts/{ns}/{name}/v{version}/model.onnx",
            "modelDigest": "sha256:" + f"{version:x}" * 64}


@pytest.fixture(scope="module")
def kube(cluster) -> Kube:
    return Kube(cluster.kubeconfig)


@pytest.fixture(scope="module")
def operator(cluster, tmp_path_factory):
    op = Operator(cluster.kubeconfig, tmp_path_factory.mktemp("operator")).start()
    yield op
    op.stop()
    print(op.tail(200))
