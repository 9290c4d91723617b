"""The local control plane itself: the stamped version, real controllers (Deployment -> ReplicaSet -> pods
Running on a kwok node; Job pods scheduled and completed), the garbage collector, and token users under
RBAC. If these fail, every other integration test is suspect."""

from __future__ import annotations

import json
import time
import urllib.request
import ssl

import pytest

from kubecluster import CPU_NODE, GPU_CAPACITY, GPU_NODE

NAMESPACE = "control-plane-tests"


@pytest.fixture(scope="module")
def ns(cluster):
    cluster.kubectl("create", "namespace", NAMESPACE)
    # The service-account controller must create `default` before pods are admitted.
    wait_for(lambda: cluster.kubectl("-n", NAMESPACE, "get", "serviceaccount", "default").returncode == 0,
             "default service account")
    yield NAMESPACE
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false")


def wait_for(ok, what: str, timeout: float = 240, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = ok()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def get_json(cluster, *args: str) -> dict:
    cp = cluster.kubectl(*args, "-o", "json", check=True)
    return json.loads(cp.stdout)


def test_version_is_stamped(cluster):
    req = urllib.request.Request(f"{cluster.server}/version")
    req.add_header("Authorization", f"Bearer {cluster.admin_token}")
    with urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=10) as r:
        info = json.load(r)
    assert info["gitVersion"] == cluster.version
    major, minor = cluster.version.lstrip("v").split(".")[:2]
    assert (info["major"], info["minor"]) == (major, minor)
    client = json.loads(cluster.kubectl("version", "-o", "json", check=True).stdout)
    assert client["clientVersion"]["gitVersion"] == cluster.version
    assert client["serverVersion"]["gitVersion"] == cluster.version


def test_fake_nodes(cluster):
    gpu = get_json(cluster, "get", "node", GPU_NODE)
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == GPU_CAPACITY
    assert {"key": "nvidia.com/gpu", "effect": "NoSchedule"} in gpu["spec"]["taints"]
    cpu = get_json(cluster, "get", "node", CPU_NODE)
    assert "nvidia.com/gpu" not in cpu["status"]["allocatable"]
    assert not cpu["spec"].get("taints")


def test_deployment_gets_replicaset_and_running_pods(cluster, ns):
    cluster.apply(f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: example.invalid/web:1}}]
""")
    rs = wait_for(lambda: get_json(cluster, "-n", ns, "get", "replicasets", "-l", "app=web")["items"],
                  "the ReplicaSet")
    assert rs[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"

    def running():
        pods = get_json(cluster, "-n", ns, "get", "pods", "-l", "app=web")["items"]
        ok = [p for p in pods if p["status"].get("phase") == "Running"]
        return pods if len(ok) == 2 else None

    pods = wait_for(running, "2 Running pods")
    # The untolerated GPU taint keeps plain pods on the CPU node.
    assert {p["spec"]["nodeName"] for p in pods} == {CPU_NODE}
    cluster.kubectl("-n", ns, "rollout", "status", "deployment/web", "--timeout=240s", check=True,
                    timeout=300)


def test_gpu_pod_lands_on_gpu_node(cluster, ns):
    cluster.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: gpu-pod, namespace: {ns}}}
spec:
  nodeSelector: {{nvidia.com/gpu.present: "true"}}
  tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]
  containers:
  - name: c
    image: example.invalid/gpu:1
    resources: {{limits: {{nvidia.com/gpu: 1}}}}
""")
    pod = wait_for(lambda: (p := get_json(cluster, "-n", ns, "get", "pod", "gpu-pod"))["status"].get("phase")
                   == "Running" and p, "the GPU pod Running")
    assert pod["spec"]["nodeName"] == GPU_NODE


def test_job_pod_is_scheduled_and_completes(cluster, ns):
    cluster.apply(f"""
apiVersion: batch/v1
kind: Job
metadata: {{name: once, namespace: {ns}}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: once, image: example.invalid/once:1}}]
""")

    def scheduled():
        pods = get_json(cluster, "-n", ns, "get", "pods", "-l", "job-name=once")["items"]
        return pods if pods and pods[0]["spec"].get("nodeName") else None

    pods = wait_for(scheduled, "the Job's pod to be scheduled")
    assert pods[0]["metadata"]["ownerReferences"][0]["kind"] == "Job"
    cluster.kubectl("-n", ns, "wait", "--for=condition=Complete", "job/once", "--timeout=240s", check=True,
                    timeout=300)


def test_garbage_collector_deletes_owned_objects(cluster, ns):
    owner = json.loads(cluster.kubectl("-n", ns, "create", "configmap", "owner", "-o", "json",
                                       check=True).stdout)
    cluster.apply(json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "child", "namespace": ns,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                          "uid": owner["metadata"]["uid"]}]},
        "data": {"k": "v"},
    }))
    assert cluster.kubectl("-n", ns, "get", "configmap", "child").returncode == 0
    cluster.kubectl("-n", ns, "delete", "configmap", "owner", "--wait=true", check=True)
    wait_for(lambda: cluster.kubectl("-n", ns, "get", "configmap", "child").returncode != 0,
             "the garbage collector to delete the child")


def test_token_users_have_only_rbac_grants(cluster, ns):
    assert {"operator", "viewer", "developer"} <= set(cluster.users)
    assert cluster.users["operator"].groups == ()
    who = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", user="operator", check=True).stdout)
    assert who["status"]["userInfo"]["username"] == "operator"
    assert "system:masters" not in who["status"]["userInfo"].get("groups", [])
    denied = cluster.kubectl("-n", ns, "get", "configmaps", user="viewer")
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    cluster.kubectl("-n", ns, "create", "rolebinding", "viewer-view", "--clusterrole=view", "--user=viewer",
                    check=True)
    wait_for(lambda: cluster.kubectl("-n", ns, "get", "configmaps", user="viewer").returncode == 0,
             "the viewer binding to take effect", timeout=30)
    assert cluster.kubectl("-n", ns, "create", "configmap", "nope", user="viewer").returncode != 0
