"""The operator on a real kube-apiserver: a passing source is served, adaptation rescues a failing one,
exhausted attempts end Rejected, a failing Job surfaces the workload's reason, deletion leaves nothing."""

from __future__ import annotations

from operator_fixtures import adaptation, evaluation, kube, operator, wait_for  # noqa: F401

NAME = "bikeshare-dc"


def test_passing_source_is_evaluated_deployed_and_served(cluster, kube, operator):
    ns = kube.namespace("pass")
    kube.create(ns, NAME)
    kube.wait_job(ns, f"{NAME}-eval-v1")
    job = kube.batch.read_namespaced_job(f"{NAME}-eval-v1", ns)
    pod = job.spec.template.spec
    assert job.metadata.owner_references[0].kind == "ModelReuse" and pod.automount_service_account_token is False
    c = pod.containers[0]
    assert c.security_context.read_only_root_filesystem and c.security_context.capabilities.drop == ["ALL"]
    kube.finish_job(ns, f"{NAME}-eval-v1", evaluation(0.86))
    status = kube.wait_phase(ns, NAME, "Serving", timeout=90)
    dep = kube.apps.read_namespaced_deployment(NAME, ns)
    tpl = dep.spec.template.spec
    assert tpl.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert tpl.node_selector == {"nvidia.com/gpu.present": "true"}
    assert tpl.tolerations[0].key == "nvidia.com/gpu"
    assert dep.metadata.owner_references[0].name == NAME
    # kwok runs the inference pods on the fake GPU node: the Deployment controller reports them available.
    assert all(p.spec.node_name == "kwok-gpu-0" for p in kube.core.list_namespaced_pod(
        ns, label_selector="app.kubernetes.io/component=serve").items)
    assert kube.core.read_namespaced_service(NAME, ns).spec.ports[0].port == 8080
    assert status["serving"]["version"] == 1 and status["evaluation"]["score"] == 0.86
    assert status["endpoint"] == f"http://{NAME}.{ns}.svc:8080/v2/models/{NAME}"
    assert status["observedGeneration"] == 1
    assert [h["decision"] for h in status["history"]] == ["Promoted"]
    reasons = wait_for(lambda: {e.reason for e in kube.core.list_namespaced_event(ns).items
                                if e.involved_object.kind == "ModelReuse"} >= {"EvaluationStarted", "Promoted", "Serving"},
                       30, "the transition Events")
    assert reasons
    # Printer columns come from the status.
    out = cluster.kubectl("get", "modelreuse", NAME, "-n", ns, check=True).stdout.split("\n")
    cells = dict(zip(out[0].split(), out[1].split()))
    assert cells["PHASE"] == "Serving" and cells["SCORE"] == "0.86" and cells["VERSION"] == "1"
    assert cells["THRESHOLD"] == "0.8"
    assert "modelreuse_operator_reconciles_total" in operator.metrics()


def test_failing_source_is_rescued_by_adaptation(kube, operator):
    ns = kube.namespace("rescue")
    kube.create(ns, NAME)
    kube.finish_job(ns, f"{NAME}-eval-v1", evaluation(0.6))
    kube.wait_job(ns, f"{NAME}-adapt-v2")
    assert kube.phase(ns, NAME) == "Adapting"
    kube.finish_job(ns, f"{NAME}-adapt-v2", adaptation(ns, NAME, 2))
    kube.wait_job(ns, f"{NAME}-eval-v2")
    kube.finish_job(ns, f"{NAME}-eval-v2", evaluation(0.84))
    status = kube.wait_phase(ns, NAME, "Serving", timeout=90)
    assert status["serving"]["version"] == 2 and status["serving"]["origin"] == "adaptation"
    assert status["serving"]["uri"] == f"file:///artifacts/{ns}/{NAME}/v2/model.onnx"
    assert [(h["version"], h["decision"]) for h in status["history"]] == [(1, "Rejected"), (2, "Promoted")]
    assert kube.jobs(ns) == [f"{NAME}-adapt-v2", f"{NAME}-eval-v1", f"{NAME}-eval-v2"]


def test_rejected_when_adaptation_attempts_run_out(kube, operator):
    ns = kube.namespace("reject")
    kube.create(ns, NAME, lambda s: s["adaptation"].update(maxAttempts=1))
    kube.finish_job(ns, f"{NAME}-eval-v1", evaluation(0.5))
    kube.finish_job(ns, f"{NAME}-adapt-v2", adaptation(ns, NAME, 2))
    kube.finish_job(ns, f"{NAME}-eval-v2", evaluation(0.55))
    status = kube.wait_phase(ns, NAME, "Rejected")
    assert status["attempts"] == 1 and "serving" not in status
    assert kube.condition(ns, NAME, "ThresholdMet")["reason"] == "BelowThreshold"
    assert kube.condition(ns, NAME, "Ready")["status"] == "False"
    assert kube.apps.list_namespaced_deployment(ns).items == []


def test_failed_job_reports_the_workload_reason_and_deletion_leaves_nothing(kube, operator):
    ns = kube.namespace("fail")
    kube.create(ns, NAME)
    message = "The model file's sha256 is 1234..., not the pinned 9f2c...; fix spec.source.sha256."
    kube.finish_job(ns, f"{NAME}-eval-v1",
                    {"ok": False, "command": "evaluate", "reason": "DigestMismatch", "message": message}, exit_code=3)
    kube.wait_phase(ns, NAME, "Failed")
    cond = kube.condition(ns, NAME, "SourceVerified")
    assert cond["status"] == "False" and cond["reason"] == "DigestMismatch" and cond["message"] == message
    # Job failed by the Job controller too (backoffLimit 0): no retry pod.
    wait_for(lambda: any(c.type == "Failed" and c.status == "True" for c in
                         (kube.batch.read_namespaced_job(f"{NAME}-eval-v1", ns).status.conditions or [])),
             60, "the Job controller to mark the Job Failed")
    assert len(kube.core.list_namespaced_pod(ns).items) == 1
    kube.custom.delete_namespaced_custom_object("modelreuse.io", "v1alpha1", ns, "modelreuses", NAME)
    wait_for(lambda: not kube.batch.list_namespaced_job(ns).items and not kube.core.list_namespaced_pod(ns).items,
             90, "the garbage collector to delete the Job and its pod")
