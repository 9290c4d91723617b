"""The operator's own metrics on ``/metrics`` and a liveness endpoint on ``/healthz``."""

from __future__ import annotations

import time
from typing import Callable, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from modelreuse.api.status import PHASES


class _PhaseCollector:
    def __init__(self, phases: Callable[[], Iterable[str]]):
        self.phases = phases

    def collect(self):
        counts = dict.fromkeys(PHASES, 0)
        for phase in self.phases():
            counts[phase] = counts.get(phase, 0) + 1
        family = GaugeMetricFamily("modelreuse_operator_objects", "ModelReuse objects by phase.", labels=["phase"])
        for phase, n in sorted(counts.items()):
            family.add_metric([phase], n)
        yield family


class OperatorMetrics:
    """Counters the reconciler and the webhook bump, and a gauge of objects by phase read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconciles = Counter("modelreuse_operator_reconciles_total", "Reconciles run.", ["trigger"], registry=r)
        self.reads = Counter("modelreuse_operator_object_reads_total",
                             "GETs of a ModelReuse before a reconcile: the body at hand was older than this "
                             "operator's own last status write.", registry=r)
        self.errors = Counter("modelreuse_operator_reconcile_errors_total", "Reconciles that raised.", ["error"],
                              registry=r)
        self.duration = Histogram("modelreuse_operator_reconcile_seconds", "Time of one reconcile.", registry=r,
                                  buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
        self.applied = Counter("modelreuse_operator_children_applied_total", "Children created or updated.",
                               ["kind", "outcome"], registry=r)
        self.events = Counter("modelreuse_operator_transitions_total", "Transitions recorded as Events.",
                              ["type", "reason"], registry=r)
        self.alerts = Counter("modelreuse_operator_alerts_total", "Alert webhook calls by outcome.", ["outcome"],
                              registry=r)
        self.prometheus_queries = Counter("modelreuse_operator_prometheus_queries_total",
                                          "Prometheus trigger queries by outcome (ok, empty, error).", ["outcome"],
                                          registry=r)
        self.started = time.time()
        self._phases: Callable[[], Iterable[str]] = lambda: ()
        r.register(_PhaseCollector(lambda: self._phases()))

    def count_phases_from(self, phases: Callable[[], Iterable[str]]) -> None:
        self._phases = phases

    def routes(self) -> list[web.RouteDef]:
        async def metrics(_: web.Request) -> web.Response:
            body = generate_latest(self.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            # Answering at all proves the event loop that runs every handler is not stuck.
            return web.json_response({"ok": True, "uptimeSeconds": round(time.time() - self.started, 1)})

        return [web.get("/metrics", metrics), web.get("/healthz", healthz)]
