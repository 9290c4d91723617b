"""Polls each serving object's Prometheus queries and requests retraining when a value has stayed below its
bound for the configured time (the decision itself is modelreuse.controller.triggers.evaluate_prometheus)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

import aiohttp

from modelreuse.controller.triggers import BelowState, evaluate_prometheus, in_cooldown
from modelreuse.kube.client import Kube, request_retraining
from modelreuse.kube.metrics import OperatorMetrics
from modelreuse.settings import Settings

log = logging.getLogger("modelreuse.prometheus")


def sample_value(body: Mapping[str, Any]) -> float | None:
    """The value of an instant query response: a scalar, or the smallest sample of a vector (a trigger fires
    when any series is below its bound); None when there is none."""
    data = body.get("data") or {}
    result = data.get("result")
    try:
        if data.get("resultType") == "scalar":
            return float(result[1])
        if data.get("resultType") == "vector" and result:
            return min(float(series["value"][1]) for series in result)
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return None


class PrometheusPoller:
    def __init__(self, settings: Settings, kube: Kube,
                 targets: Callable[[], Iterable[tuple[tuple[str, str], Mapping[str, Any]]]],
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 metrics: OperatorMetrics | None = None):
        self.settings = settings
        self.kube = kube
        self.targets = targets
        self.clock = clock
        self.metrics = metrics
        # Keyed by the trigger itself, not its position: editing or reordering the list starts over.
        self.states: dict[tuple[str, str, str, float, str], BelowState] = {}
        self._failing: set[str] = set()

    async def query(self, session: aiohttp.ClientSession, expr: str) -> float | None:
        """The query's value; None when it has none or cannot be had (logged once per failing spell and
        counted in modelreuse_operator_prometheus_queries_total, so a typo or a wrong URL shows)."""
        url = self.settings.prometheus_url.rstrip("/") + "/api/v1/query"
        try:
            async with session.get(url, params={"query": expr}, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status != 200:
                    detail = (await resp.text())[:300]
                    return self._outcome(expr, "error", f"Prometheus answered {resp.status}: {detail}")
                value = sample_value(await resp.json())
                return self._outcome(expr, "ok" if value is not None else "empty", None, value)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            return self._outcome(expr, "error", f"{type(exc).__name__}: {exc}")

    def _outcome(self, expr: str, outcome: str, problem: str | None, value: float | None = None) -> float | None:
        if self.metrics is not None:
            self.metrics.prometheus_queries.labels(outcome).inc()
        if problem is None:
            self._failing.discard(expr)
        elif expr not in self._failing:
            self._failing.add(expr)
            log.warning("Prometheus query %r failed (%s); its trigger cannot fire until it works", expr, problem)
        return value

    async def poll_once(self, session: aiohttp.ClientSession) -> list[str]:
        """One round over every serving object's triggers; returns the objects asked to retrain."""
        requested = []
        live = set()
        for (ns, name), info in list(self.targets()):
            if info.get("phase") != "Serving":
                continue
            triggers = list(info.get("prometheus") or ())
            keys = [(ns, name, t["query"], float(t["below"]), t.get("for", "0s")) for t in triggers]
            live.update(keys)  # all of them: one firing must not reset the others' timers
            for key, trig in zip(keys, triggers):
                value = await self.query(session, trig["query"])
                now = self.clock()
                state, fire = evaluate_prometheus(value, float(trig["below"]), trig.get("for", "0s"),
                                                  self.states.get(key, BelowState()), now)
                self.states[key] = state
                if fire and not in_cooldown(now, info.get("lastRetrainingTime"), info.get("cooldown", "1h")):
                    await request_retraining(self.kube, ns, name, "PrometheusBelow",
                                             f"{trig['query']} = {value} stayed below {trig['below']} for {trig.get('for', '0s')}",
                                             now)
                    self.states[key] = BelowState()
                    requested.append(f"{ns}/{name}")
                    break
        for key in set(self.states) - live:
            del self.states[key]
        return requested

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self.poll_once(session)
                except Exception:  # noqa: BLE001 - a bad round must not stop polling
                    log.exception("Prometheus poll failed")
                await asyncio.sleep(self.settings.prometheus_interval_seconds)
