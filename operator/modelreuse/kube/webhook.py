"""The Alertmanager webhook receiver: ``POST /alerts`` with a bearer token.

Firing alerts are matched to objects by their ``namespace`` and ``modelreuse`` labels and the object's
``retraining.alerts``; each match outside the object's cooldown becomes a retraining request (an annotation
the reconcile core accepts at most once per cooldown), so a storm of alerts gives one retraining.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from aiohttp import web

from modelreuse.controller.triggers import AlertTarget, in_cooldown, match_alerts
from modelreuse.kube.client import Kube, request_retraining
from modelreuse.kube.metrics import OperatorMetrics
from modelreuse.settings import Settings

log = logging.getLogger("modelreuse.webhook")
MAX_BODY = 1 << 20
TOKEN_TTL_SECONDS = 30.0


class AlertReceiver:
    def __init__(self, settings: Settings, kube: Kube, metrics: OperatorMetrics,
                 targets: Callable[[], Iterable[tuple[tuple[str, str], Mapping[str, Any]]]],
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self.targets = targets
        self.clock = clock
        self._token: tuple[float, str | None] | None = None

    async def token(self) -> str | None:
        """The expected token: from the Secret (``namespace/name``, key ``token``, re-read every 30 s so a
        rotation takes effect), else from the settings; None refuses every call."""
        if not self.settings.webhook_token_secret:
            return self.settings.webhook_token or None
        if self._token is None or time.monotonic() - self._token[0] > TOKEN_TTL_SECONDS:
            ns, _, name = self.settings.webhook_token_secret.partition("/")
            self._token = (time.monotonic(), await self.kube.read_secret_key(ns, name, "token"))
        return self._token[1]

    def _refuse(self, status: int, outcome: str, message: str) -> web.Response:
        self.metrics.alerts.labels(outcome).inc()
        return web.json_response({"error": message}, status=status)

    async def handle(self, request: web.Request) -> web.Response:
        expected = await self.token()
        given = request.headers.get("Authorization", "")
        if not expected or not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            return self._refuse(401, "unauthorized",
                                "Missing or wrong bearer token; set http_config.authorization in the Alertmanager receiver.")
        if (request.content_length or 0) > MAX_BODY:
            return self._refuse(413, "too_large", "The notification is larger than 1 MiB.")
        try:
            payload = json.loads(await request.read())
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._refuse(400, "bad_request", "The body is not an Alertmanager webhook JSON object.")
        known = {key: info for key, info in self.targets()}
        targets = [AlertTarget(ns, name, tuple(info.get("alerts") or ())) for (ns, name), info in known.items()]
        now = self.clock()
        requested, suppressed = [], []
        for m in match_alerts(payload, targets):
            info = known[(m.namespace, m.name)]
            ref = f"{m.namespace}/{m.name}"
            if info.get("phase") == "Retraining" or in_cooldown(now, info.get("lastRetrainingTime"), info.get("cooldown", "1h")):
                suppressed.append(ref)
                continue
            await request_retraining(self.kube, m.namespace, m.name, m.alertname,
                                     f"alert {m.alertname} fired", now)
            requested.append(ref)
        self.metrics.alerts.labels("accepted").inc()
        log.info("alerts: requested %s, suppressed %s", requested, suppressed)
        return web.json_response({"requested": requested, "suppressed": suppressed})

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/alerts", self.handle)]
