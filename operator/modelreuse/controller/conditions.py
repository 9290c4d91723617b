"""Conditions as the Kubernetes API conventions want them: keyed by type, lastTransitionTime changed only
when the status flips, and one summary ``Ready``."""

from __future__ import annotations

from datetime import datetime

from modelreuse.api.status import CONDITION_TYPES, Condition


def rfc3339(now: datetime) -> str:
    """UTC time as the API server writes it (second precision, ``Z``)."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """A new list with ``type_`` set; the transition time moves only when ``status`` changes."""
    old = get_condition(conditions, type_)
    when = old.last_transition_time if old is not None and old.status == status else rfc3339(now)
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=when,
        observed_generation=generation,
    )
    out = [new if c.type == type_ else c for c in conditions]
    if old is None:
        out.append(new)
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(out, key=lambda c: order.get(c.type, len(order)))


def is_true(conditions: list[Condition], type_: str) -> bool:
    c = get_condition(conditions, type_)
    return c is not None and c.status == "True"
