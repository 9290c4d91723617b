"""The operator runs under exactly manifests/rbac/operator.yaml, authenticated with a token (no
system:masters): the lifecycle, the alert token from its Secret and retraining all work, nothing it does is
refused, and what it does not need is denied."""

from __future__ import annotations

from pathlib import Path

from operator_fixtures import Operator, evaluation, kube, wait_for  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
NAME = "least-privilege"
SYSTEM_NS = "modelreuse-system"

BIND_TEST_USER = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: modelreuse-operator-test-user}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: modelreuse-operator}
subjects: [{kind: User, name: operator, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: modelreuse-operator-alert-token-test-user, namespace: modelreuse-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: modelreuse-operator-alert-token}
subjects: [{kind: User, name: operator, apiGroup: rbac.authorization.k8s.io}]
"""


def test_operator_works_under_its_own_rbac_and_nothing_more(cluster, kube, tmp_path):
    cluster.kubectl("create", "namespace", SYSTEM_NS)
    cluster.apply((REPO / "manifests" / "rbac" / "operator.yaml").read_text())
    # The test's token user `operator` stands in for the ServiceAccount: same roles, bound the same way.
    cluster.apply(BIND_TEST_USER)
    cluster.kubectl("-n", SYSTEM_NS, "create", "secret", "generic", "modelreuse-alert-token",
                    "--from-literal=token=rotate-me-7f3a", check=True)

    def can(*args: str) -> bool:
        return cluster.kubectl("auth", "can-i", *args, user="operator").stdout.strip() == "yes"

    assert can("patch", "modelreuses.modelreuse.io", "--subresource=status")
    assert not can("update", "modelreuses.modelreuse.io")
    assert not can("delete", "jobs.batch")
    assert not can("create", "pods")
    assert not can("delete", "deployments.apps")
    assert not can("get", "secrets", "-n", "default")
    assert not can("list", "secrets", "-n", SYSTEM_NS)  # only the one named token Secret, by name

    ns = kube.namespace("rbac")
    op = Operator(cluster.users["operator"].kubeconfig, tmp_path,
                  extra_args=["--webhook-token-secret", f"{SYSTEM_NS}/modelreuse-alert-token"],
                  env={"MODELREUSE_WEBHOOK_TOKEN": ""}).start()
    try:
        kube.create(ns, NAME)
        kube.finish_job(ns, f"{NAME}-eval-v1", evaluation(0.9))
        wait_for(lambda: kube.phase(ns, NAME) in ("Deploying", "Serving"), 60, "the Deployment phase")
        wait_for(lambda: kube.apps.list_namespaced_deployment(ns).items and kube.core.list_namespaced_service(ns).items,
                 30, "the Deployment and Service")
        kube.wait_phase(ns, NAME, "Serving", timeout=90)
        wait_for(lambda: any(e.reason == "Serving" for e in kube.core.list_namespaced_event(ns).items), 30, "Events")
        alert = {"alerts": [{"status": "firing", "labels": {
            "alertname": "ModelReuseAccuracyLow", "namespace": ns, "modelreuse": NAME}}]}
        assert op.post_alerts(alert, token="wrong")[0] == 401
        code, body = op.post_alerts(alert, token="rotate-me-7f3a")
        assert code == 200 and body["requested"] == [f"{ns}/{NAME}"]
        kube.wait_job(ns, f"{NAME}-retrain-v2")
        kube.custom.delete_namespaced_custom_object("modelreuse.io", "v1alpha1", ns, "modelreuses", NAME)
        wait_for(lambda: not kube.batch.list_namespaced_job(ns).items and not kube.apps.list_namespaced_deployment(ns).items
                 and not kube.core.list_namespaced_service(ns).items, 90, "the garbage collector")
        log = op.log.read_text(errors="replace")
        assert "Forbidden" not in log and "forbidden" not in log, op.tail(80)
    finally:
        op.stop()
