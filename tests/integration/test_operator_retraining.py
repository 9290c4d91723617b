"""Retraining on the real API server: the alert webhook refuses a wrong token, an alert storm inside the
cooldown gives one retraining, a worse candidate is kept out, and a rollout that cannot finish is rolled
back to the previous version."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from operator_fixtures import adaptation, evaluation, kube, operator, wait_for  # noqa: F401

NAME = "retrain-me"


def alert(ns: str, name: str = NAME, alertname: str = "ModelReuseAccuracyLow") -> dict:
    return {"version": "4", "status": "firing", "receiver": "modelreuse", "alerts": [
        {"status": "firing", "labels": {"alertname": alertname, "namespace": ns, "modelreuse": name},
         "annotations": {}, "startsAt": "2026-01-01T00:00:00Z"}]}


def serve_v1(kube, ns: str, score: float = 0.82, change=None) -> None:
    kube.create(ns, NAME, change)
    kube.finish_job(ns, f"{NAME}-eval-v1", evaluation(score))
    kube.wait_phase(ns, NAME, "Serving", timeout=90)


def test_alert_with_a_wrong_token_is_refused(kube, operator):
    ns = kube.namespace("token")
    serve_v1(kube, ns)
    for token in ("wrong", None):
        code, body = operator.post_alerts(alert(ns), token=token)
        assert code == 401 and "token" in body["error"]
    time.sleep(2)
    assert kube.phase(ns, NAME) == "Serving"
    assert "modelreuse.io/retrain-request" not in (kube.get(ns, NAME)["metadata"].get("annotations") or {})
    assert 'modelreuse_operator_alerts_total{outcome="unauthorized"}' in operator.metrics()


def test_alert_storm_gives_one_retraining_and_a_worse_candidate_is_kept_out(kube, operator):
    ns = kube.namespace("storm")
    serve_v1(kube, ns)
    # An alert for another object or an alert name the object does not list starts nothing.
    assert operator.post_alerts(alert(ns, name="someone-else"))[1] == {"requested": [], "suppressed": []}
    assert operator.post_alerts(alert(ns, alertname="DiskFull"))[1] == {"requested": [], "suppressed": []}
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: operator.post_alerts(alert(ns))[0], range(16)))
    assert codes == [200] * 16
    kube.wait_job(ns, f"{NAME}-retrain-v2")
    assert kube.phase(ns, NAME) == "Retraining"
    kube.wait_phase(ns, NAME, "Retraining")
    # Once the operator's view has caught up with its own status, later alerts are not even recorded.
    wait_for(lambda: operator.post_alerts(alert(ns))[1]["suppressed"] == [f"{ns}/{NAME}"], 15, "suppression")
    time.sleep(4)  # a resync round
    assert [j for j in kube.jobs(ns) if "-retrain-" in j] == [f"{NAME}-retrain-v2"]
    kube.finish_job(ns, f"{NAME}-retrain-v2", adaptation(ns, NAME, 2))
    kube.wait_job(ns, f"{NAME}-eval-v2")
    kube.finish_job(ns, f"{NAME}-eval-v2", evaluation(0.825))  # better, but by less than minImprovement
    wait_for(lambda: kube.condition(ns, NAME, "Retraining").get("reason") == "NotBetter", 60, "the candidate decision")
    status = kube.status(ns, NAME)
    assert status["phase"] == "Serving" and status["serving"]["version"] == 1
    assert status["history"][-1] == {**status["history"][-1], "version": 2, "decision": "Rejected", "reason": "NotBetter"}
    dep = kube.apps.read_namespaced_deployment(NAME, ns)
    assert dep.spec.template.metadata.labels["modelreuse.io/version"] == "1"
    # Still inside the cooldown: another alert is suppressed.
    assert operator.post_alerts(alert(ns))[1]["suppressed"] == [f"{ns}/{NAME}"]


def test_failed_rollout_is_rolled_back_to_the_previous_version(kube, operator):
    ns = kube.namespace("rollback")

    def small(spec):
        spec["deployment"].update(replicas=1, rolloutDeadlineSeconds=10)

    serve_v1(kube, ns, change=small)
    # No GPU left for one more inference pod: the new version's first pod cannot be created, so its rollout
    # stalls (workload Jobs ask for no GPU and still run).
    gpu = "requests.nvidia.com/gpu"
    kube.core.create_namespaced_resource_quota(ns, {"metadata": {"name": "one-gpu"}, "spec": {"hard": {gpu: "1"}}})
    wait_for(lambda: (kube.core.read_namespaced_resource_quota("one-gpu", ns).status.used or {}).get(gpu) == "1",
             30, "the quota controller to count the serving pod's GPU")
    assert operator.post_alerts(alert(ns))[1]["requested"] == [f"{ns}/{NAME}"]
    kube.finish_job(ns, f"{NAME}-retrain-v2", adaptation(ns, NAME, 2))
    kube.finish_job(ns, f"{NAME}-eval-v2", evaluation(0.95))
    wait_for(lambda: kube.status(ns, NAME).get("serving", {}).get("version") == 2, 60, "version 2 promoted")
    wait_for(lambda: kube.condition(ns, NAME, "Degraded").get("reason") == "RolledBack", 90, "the rollback")
    status = kube.wait_phase(ns, NAME, "Serving", timeout=60)
    assert status["serving"]["version"] == 1
    assert [(h["version"], h["decision"]) for h in status["history"]][-2:] == [(2, "Promoted"), (2, "RolledBack")]
    dep = kube.apps.read_namespaced_deployment(NAME, ns)
    assert dep.spec.template.metadata.labels["modelreuse.io/version"] == "1"
    events = {e.reason for e in kube.core.list_namespaced_event(ns).items if e.involved_object.kind == "ModelReuse"}
    assert "RolledBack" in events
