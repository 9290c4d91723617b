"""An operator killed (SIGKILL) in every phase and started again creates no duplicate Job or version and
ends where an uninterrupted run ends."""

from __future__ import annotations

import time

from operator_fixtures import Operator, adaptation, evaluation, kube, wait_for  # noqa: F401

NAME = "restart-me"


def test_killed_in_each_phase_no_duplicates_same_final_state(cluster, kube, tmp_path):
    ns = kube.namespace("restart")

    def fresh() -> Operator:
        return Operator(cluster.kubeconfig, tmp_path, namespaces=[ns]).start()

    op = fresh()
    kube.create(ns, NAME)
    kube.wait_job(ns, f"{NAME}-eval-v1")
    op.kill()  # Evaluating: Job created, status written

    op = fresh()
    kube.finish_job(ns, f"{NAME}-eval-v1", evaluation(0.6))
    op.kill()  # right after the result: the decision may or may not have been taken
    op = fresh()
    kube.wait_job(ns, f"{NAME}-adapt-v2")
    assert kube.phase(ns, NAME) == "Adapting"
    op.kill()  # Adapting

    kube.finish_job(ns, f"{NAME}-adapt-v2", adaptation(ns, NAME, 2))
    op = fresh()
    kube.wait_job(ns, f"{NAME}-eval-v2")
    kube.finish_job(ns, f"{NAME}-eval-v2", evaluation(0.84))
    wait_for(lambda: kube.phase(ns, NAME) in ("Deploying", "Serving"), 60, "Deploying")
    op.kill()  # Deploying (or just after)

    op = fresh()
    try:
        status = kube.wait_phase(ns, NAME, "Serving", timeout=90)
        time.sleep(4)  # a resync round of the restarted operator: it must not create anything new
        assert kube.jobs(ns) == [f"{NAME}-adapt-v2", f"{NAME}-eval-v1", f"{NAME}-eval-v2"]
        assert len(kube.apps.list_namespaced_deployment(ns).items) == 1
        assert len(kube.apps.list_namespaced_replica_set(ns).items) == 1
        assert len(kube.core.list_namespaced_service(ns).items) == 1
        status = kube.status(ns, NAME)
        assert status["nextVersion"] == 3 and status["attempts"] == 1
        assert status["serving"]["version"] == 2
        assert [(h["version"], h["decision"]) for h in status["history"]] == [(1, "Rejected"), (2, "Promoted")]
    finally:
        op.stop()
