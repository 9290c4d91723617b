"""The Prometheus poller against an HTTP server that answers the Prometheus instant-query API: a value that
stays below its bound for the trigger's duration requests retraining once, a missing or high value resets
it, and an object in its cooldown is left alone. The API server side is a recorder of the annotation
requests (the integration tests cover the real write)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import aiohttp
from aiohttp import web

from modelreuse.kube.prometheus import PrometheusPoller, sample_value
from modelreuse.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Recorder:
    def __init__(self):
        self.annotations: list[tuple[str, str, dict]] = []

    async def annotate(self, namespace, name, annotations):
        self.annotations.append((namespace, name, annotations))


async def prometheus_api(query) -> tuple[web.AppRunner, int]:
    """A loopback server answering GET /api/v1/query with ``query``; returns its runner and port."""
    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def test_sample_value_reads_vectors_and_scalars():
    assert sample_value({"data": {"resultType": "vector", "result": [{"value": [1, "0.7"]}]}}) == 0.7
    assert sample_value({"data": {"resultType": "scalar", "result": [1, "2"]}}) == 2.0
    assert sample_value({"data": {"resultType": "vector", "result": []}}) is None
    assert sample_value({"status": "error"}) is None


def test_poller_requests_retraining_after_the_for_duration():
    values = {"acc": "0.7"}
    clock = {"now": T0}

    async def query(request: web.Request) -> web.Response:
        v = values.get(request.query["query"])
        result = [{"metric": {}, "value": [0, v]}] if v is not None else []
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    async def scenario() -> list[list[str]]:
        runner, port = await prometheus_api(query)
        targets = {
            ("ml", "a"): {"phase": "Serving", "cooldown": "1h", "lastRetrainingTime": None,
                          "prometheus": [{"query": "acc", "below": 0.75, "for": "10m"}]},
            ("ml", "cooling"): {"phase": "Serving", "cooldown": "1h",
                                "lastRetrainingTime": (T0 - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                "prometheus": [{"query": "acc", "below": 0.75, "for": "0s"}]},
            ("ml", "evaluating"): {"phase": "Evaluating", "prometheus": [{"query": "acc", "below": 0.75}]},
        }
        kube = Recorder()
        poller = PrometheusPoller(Settings(prometheus_url=f"http://127.0.0.1:{port}"), kube,
                                  lambda: list(targets.items()), clock=lambda: clock["now"])
        rounds = []
        async with aiohttp.ClientSession() as session:
            for minute, value in [(0, "0.7"), (5, "0.7"), (6, None), (7, "0.7"), (12, "0.7"), (18, "0.7"), (19, "0.9")]:
                clock["now"] = T0 + timedelta(minutes=minute)
                values["acc"] = value
                rounds.append(await poller.poll_once(session))
        await runner.cleanup()
        return rounds, kube.annotations

    rounds, annotations = asyncio.run(scenario())
    # Below since minute 7 (minute 6 had no sample): fires at 18 (11 minutes), not at 12 (5 minutes).
    assert rounds == [[], [], [], [], [], ["ml/a"], []]
    (ns, name, ann), = annotations
    assert (ns, name) == ("ml", "a") and "PrometheusBelow" in ann["modelreuse.io/retrain-request"]


def test_several_series_give_the_smallest_value():
    body = {"data": {"resultType": "vector", "result": [{"value": [1, "0.9"]}, {"value": [1, "0.6"]}]}}
    assert sample_value(body) == 0.6


def test_failing_queries_are_counted_and_a_firing_trigger_keeps_the_others_timers():
    from modelreuse.kube.metrics import OperatorMetrics

    clock = {"now": T0}
    values = {"fast": "0.9", "slow": "0.5"}

    async def query(request: web.Request) -> web.Response:
        q = request.query["query"]
        if q == "broken(":
            return web.json_response({"status": "error", "error": "parse error"}, status=400)
        return web.json_response({"status": "success", "data": {"resultType": "vector",
                                                                "result": [{"metric": {}, "value": [0, values[q]]}]}})

    async def scenario():
        runner, port = await prometheus_api(query)
        targets = {("ml", "a"): {"phase": "Serving", "cooldown": "0s", "lastRetrainingTime": None, "prometheus": [
            {"query": "fast", "below": 0.75, "for": "0s"},
            {"query": "slow", "below": 0.75, "for": "10m"},
            {"query": "broken(", "below": 0.75, "for": "0s"}]}}
        metrics = OperatorMetrics()
        poller = PrometheusPoller(Settings(prometheus_url=f"http://127.0.0.1:{port}"), Recorder(),
                                  lambda: list(targets.items()), clock=lambda: clock["now"], metrics=metrics)
        rounds = []
        async with aiohttp.ClientSession() as session:
            for minute, fast in [(0, "0.9"), (5, "0.5"), (11, "0.9")]:
                clock["now"] = T0 + timedelta(minutes=minute)
                values["fast"] = fast
                rounds.append(await poller.poll_once(session))
        await runner.cleanup()
        return rounds, metrics

    rounds, metrics = asyncio.run(scenario())
    # Minute 0: "slow" goes below (its 10 minutes start). Minute 5: "fast" fires and the round stops there,
    # which must not reset "slow". Minute 11: "slow" has been below for 11 minutes and fires.
    assert rounds == [[], ["ml/a"], ["ml/a"]]
    assert metrics.prometheus_queries.labels("error")._value.get() == 1  # only round 1 reaches "broken("
    assert metrics.prometheus_queries.labels("ok")._value.get() == 5
