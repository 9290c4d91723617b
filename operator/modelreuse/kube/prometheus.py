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
from modelreuse.settings import Settings

log = logging.getLogger("modelreuse.prometheus")


def sample_value(body: Mapping[str, Any]) -> float | None:
    """The single value of an instant query response (vector or scalar), None when there is none."""
    data = body.get("data") or {}
    result = data.get("result")
    try:
        if data.get("resultType") == "scalar":
            return float(result[1])
        if data.get("resultType") == "vector" and result:
            return float(result[0]["value"][1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return None


class PrometheusPoller:
    def __init__(self, settings: Settings, kube: Kube,
                 targets: Callable[[], Iterable[tuple[tuple[str, str], Mapping[str, Any]]]],
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.settings = settings
        self.kube = kube
        self.targets = targets
        self.clock = clock
        self.states: dict[tuple[str, str, int], BelowState] = {}

    async def query(self, session: aiohttp.ClientSession, expr: str) -> float | None:
        url = self.settings.prometheus_url.rstrip("/") + "/api/v1/query"
        try:
            async with session.get(url, params={"query": expr}, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                if resp.status != 200:
                    return None
                return sample_value(await resp.json())
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    async def poll_once(self, session: aiohttp.ClientSession) -> list[str]:
        """One round over every serving object's triggers; returns the objects asked to retrain."""
        requested = []
        live = set()
        for (ns, name), info in list(self.targets()):
            if info.get("phase") != "Serving":
                continue
            for i, trig in enumerate(info.get("prometheus") or ()):
                key = (ns, name, i)
                live.add(key)
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
