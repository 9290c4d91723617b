"""Retraining triggers end to end, with real Prometheus and Alertmanager processes (tests/prometheus_stack.py):
the test exposes a live-accuracy gauge that Prometheus scrapes every second; one object polls a query on it
through the operator's Prometheus poller, another is retrained by a Prometheus alerting rule that
Alertmanager routes to the operator's webhook with the bearer token."""

from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from kubecluster import free_port
from operator_fixtures import TOKEN, Operator, evaluation, kube, wait_for  # noqa: F401
from prometheus_stack import Alertmanager, Prometheus, StackError

ALERT = "ModelReuseAccuracyLow"
BY_QUERY, BY_ALERT = "by-query", "by-alert"


def gauge_expr(ns: str, name: str) -> str:
    return f'modelreuse_live_accuracy{{namespace="{ns}",modelreuse="{name}"}}'


@pytest.fixture(scope="module")
def stack(cluster, kube, tmp_path_factory):
    """One namespace; the gauge exporter, Alertmanager, Prometheus and an operator limited to the namespace."""
    workdir = tmp_path_factory.mktemp("triggers")
    ns = kube.namespace("triggers")
    registry = CollectorRegistry()
    accuracy = Gauge("modelreuse_live_accuracy", "Live accuracy, set by the test.", ["namespace", "modelreuse"],
                     registry=registry)
    exporter_port = free_port()
    server, _ = start_http_server(exporter_port, addr="127.0.0.1", registry=registry)
    rules = {"groups": [{"name": "modelreuse", "rules": [{
        "alert": ALERT, "expr": f"{gauge_expr(ns, BY_ALERT)} < 0.8", "for": "0s",
        "annotations": {"summary": "live accuracy below 0.8"}}]}]}
    started: list = []
    op = None
    try:
        # Each side is told the other's address: the operator's port is chosen when it is constructed, and
        # it learns Prometheus's URL before it starts.
        op = Operator(cluster.kubeconfig, workdir, namespaces=[ns])
        am = Alertmanager(workdir, op.url("/alerts"), TOKEN)
        prom = Prometheus(workdir, [f"127.0.0.1:{exporter_port}"], json.dumps(rules), am.address)
        op.extra_args = ["--prometheus-url", prom.url, "--prometheus-interval", "1"]
        try:
            started.append(am.start())
            started.append(prom.start())
        except StackError as e:
            pytest.fail(str(e), pytrace=False)
        op.start()
        yield SimpleNamespace(ns=ns, op=op, prom=prom, am=am, accuracy=accuracy)
    finally:
        if op is not None:
            op.stop()
            print(op.tail(80))
        for p in reversed(started):
            p.stop()
            print(f"--- {p.binary} log tail\n{p.tail(15)}")
        server.shutdown()


def serve_v1(kube, ns: str, name: str, retraining: dict) -> None:
    kube.create(ns, name, lambda spec: spec["retraining"].update(retraining))
    kube.finish_job(ns, f"{name}-eval-v1", evaluation(0.82))
    kube.wait_phase(ns, name, "Serving", timeout=90)


def retrain_jobs(kube, ns: str, name: str) -> list[str]:
    return [j for j in kube.jobs(ns) if j.startswith(f"{name}-retrain-")]


def alerts_total(op: Operator, outcome: str) -> float:
    m = re.search(rf'^modelreuse_operator_alerts_total\{{outcome="{outcome}"\}} (\S+)$', op.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def test_prometheus_query_below_its_bound_starts_retraining(kube, stack):
    ns, name = stack.ns, BY_QUERY
    expr = gauge_expr(ns, name)
    stack.accuracy.labels(ns, name).set(0.9)
    serve_v1(kube, ns, name, {"alerts": [], "prometheus": [{"query": expr, "below": 0.8, "for": "2s"}]})
    wait_for(lambda: stack.prom.query(expr) == 0.9, 30, f"Prometheus to scrape {expr} = 0.9")
    time.sleep(4)  # several polls (1 s apart) of a value above the bound, longer than `for`
    assert kube.phase(ns, name) == "Serving"
    assert retrain_jobs(kube, ns, name) == []

    stack.accuracy.labels(ns, name).set(0.5)
    kube.wait_job(ns, f"{name}-retrain-v2", timeout=60)
    kube.wait_phase(ns, name, "Retraining", timeout=30)
    cond = kube.condition(ns, name, "Retraining")
    assert cond["status"] == "True" and cond["reason"] == "PrometheusBelow", cond
    assert f"{expr} = 0.5 stayed below 0.8 for 2s" in cond["message"], cond
    assert retrain_jobs(kube, ns, name) == [f"{name}-retrain-v2"]
    assert stack.prom.alerts() == []  # the alerting rule is about the other object only


def test_alertmanager_routes_a_firing_rule_to_the_webhook(kube, stack):
    ns, name = stack.ns, BY_ALERT
    expr = gauge_expr(ns, name)
    stack.accuracy.labels(ns, name).set(0.9)
    serve_v1(kube, ns, name, {"alerts": [ALERT], "prometheus": []})
    wait_for(lambda: stack.prom.query(expr) == 0.9, 30, f"Prometheus to scrape {expr} = 0.9")

    def rule():
        groups = stack.prom.get("/api/v1/rules")["data"]["groups"]
        return next((r for g in groups for r in g["rules"] if r["name"] == ALERT and r["health"] == "ok"), None)

    assert wait_for(rule, 15, f"rule {ALERT} to be evaluated")["state"] == "inactive"
    assert kube.phase(ns, name) == "Serving" and retrain_jobs(kube, ns, name) == []
    accepted = alerts_total(stack.op, "accepted")

    stack.accuracy.labels(ns, name).set(0.5)
    kube.wait_job(ns, f"{name}-retrain-v2", timeout=60)
    kube.wait_phase(ns, name, "Retraining", timeout=30)
    cond = kube.condition(ns, name, "Retraining")
    assert cond["status"] == "True" and cond["reason"] == ALERT, cond
    assert f"alert {ALERT} fired" in cond["message"], cond
    assert retrain_jobs(kube, ns, name) == [f"{name}-retrain-v2"]
    # It went through Alertmanager, with the token.
    labels = [a["labels"] for a in stack.am.alerts()]
    assert any(lb.get("alertname") == ALERT and lb.get("namespace") == ns and lb.get("modelreuse") == name
               for lb in labels), labels
    assert alerts_total(stack.op, "accepted") >= accepted + 1
    assert alerts_total(stack.op, "unauthorized") == 0
