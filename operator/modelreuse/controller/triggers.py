"""Retraining triggers, decided without I/O: which objects an Alertmanager notification is for, whether a
request falls inside the cooldown, and when a polled Prometheus value has stayed below its bound long enough.

A request is stored on the object as the annotation ``modelreuse.io/retrain-request`` (so it survives an
operator restart, and a user can set it by hand); the reconcile core accepts it at most once per cooldown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from modelreuse.api.base import parse_duration
from modelreuse.controller.observed import RetrainRequest

RETRAIN_ANNOTATION = "modelreuse.io/retrain-request"


@dataclass(frozen=True)
class AlertTarget:
    """An object that an alert may retrain: where it is and which alert names it listens to."""

    namespace: str
    name: str
    alerts: tuple[str, ...]


@dataclass(frozen=True)
class AlertMatch:
    namespace: str
    name: str
    alertname: str


def match_alerts(payload: dict, targets: list[AlertTarget]) -> list[AlertMatch]:
    """Firing alerts of an Alertmanager webhook payload matched to objects by their ``namespace`` and
    ``modelreuse`` labels, kept only when the object lists the alert's name in ``retraining.alerts``."""
    by_key = {(t.namespace, t.name): t for t in targets}
    out: list[AlertMatch] = []
    seen: set[tuple[str, str]] = set()
    for alert in payload.get("alerts") or []:
        if not isinstance(alert, dict) or alert.get("status", "firing") != "firing":
            continue
        labels = alert.get("labels") or {}
        key = (str(labels.get("namespace", "")), str(labels.get("modelreuse", "")))
        target = by_key.get(key)
        name = str(labels.get("alertname", ""))
        if target is None or name not in target.alerts or key in seen:
            continue
        seen.add(key)
        out.append(AlertMatch(key[0], key[1], name))
    return out


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def in_cooldown(now: datetime, last_retraining_time: str | None, cooldown: str) -> bool:
    """True while the last retraining started less than ``cooldown`` ago."""
    last = parse_time(last_retraining_time)
    return last is not None and now < last + timedelta(seconds=parse_duration(cooldown))


def accept_request(
    request: RetrainRequest | None,
    last_retraining_time: str | None,
    serving_since: str | None,
    cooldown: str,
) -> bool:
    """A request starts retraining only if it came after the cooldown of the last retraining and after the
    serving version started (an alert about an older version says nothing about this one)."""
    if request is None:
        return False
    last = parse_time(last_retraining_time)
    if last is not None and request.time < last + timedelta(seconds=parse_duration(cooldown)):
        return False
    since = parse_time(serving_since)
    return since is None or request.time >= since


def encode_request(request: RetrainRequest) -> str:
    return json.dumps(
        {"time": request.time.strftime("%Y-%m-%dT%H:%M:%SZ"), "reason": request.reason, "message": request.message},
        sort_keys=True,
    )


def decode_request(text: str | None) -> RetrainRequest | None:
    """The request in the annotation, or None when absent or unreadable (a typo must not wedge the object)."""
    if not text:
        return None
    try:
        body = json.loads(text)
        when = parse_time(body["time"])
    except (ValueError, KeyError, TypeError):
        return None
    if when is None:
        return None
    return RetrainRequest(time=when, reason=str(body.get("reason") or "Requested"), message=str(body.get("message") or ""))


@dataclass(frozen=True)
class BelowState:
    """Since when a polled value has been below its bound (None: it is not)."""

    since: datetime | None = None


def evaluate_prometheus(
    value: float | None, below: float, for_: str, state: BelowState, now: datetime
) -> tuple[BelowState, bool]:
    """Advance one trigger with a fresh sample. It fires once the value has stayed below ``below`` for
    ``for_``; a missing sample or one at or above the bound resets it."""
    if value is None or not value < below:
        return BelowState(None), False
    since = state.since or now
    return BelowState(since), now - since >= timedelta(seconds=parse_duration(for_))
