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
        app = web.Application()
        app.router.add_get("/api/v1/query", query)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
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
