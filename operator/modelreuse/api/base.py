"""Shared base for the API models: camelCase on the wire, unknown fields refused, one group/version."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

GROUP = "modelreuse.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelReuse"
PLURAL = "modelreuses"
SINGULAR = "modelreuse"
SHORT_NAMES = ["mr"]

# Go-style durations as Kubernetes users write them: 90s, 10m, 1h30m.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
SHA256_PATTERN = r"^[a-f0-9]{64}$"


class ApiModel(BaseModel):
    """Base of every spec and status model.

    Fields are snake_case in Python and camelCase in YAML/JSON; unknown fields are an error in Python,
    just as the API server prunes or rejects them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        use_attribute_docstrings=False,
    )

    def to_json_dict(self, **kwargs: Any) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, **kwargs)


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One CEL validation rule for ``x-kubernetes-validations``, mirrored by a pydantic validator."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``1h30m`` or ``250ms``."""
    import re

    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 90s, 10m or 1h30m")
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * units[u] for n, _, u in re.findall(r"([0-9]+(\.[0-9]+)?)(ms|s|m|h)", text))
