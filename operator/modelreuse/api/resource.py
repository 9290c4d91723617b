"""A whole ModelReuse object as read from the API server or a YAML file."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelreuse.api.base import API_VERSION, KIND, ApiModel
from modelreuse.api.spec import ModelReuseSpec
from modelreuse.api.status import ModelReuseStatus


class ObjectMeta(BaseModel):
    """The metadata fields modelreuse reads; the API server owns the rest, so extra keys are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelReuse(ApiModel):
    """apiVersion, kind, metadata, spec and status of one ModelReuse."""

    api_version: Literal["modelreuse.io/v1alpha1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["ModelReuse"] = KIND
    metadata: ObjectMeta
    spec: ModelReuseSpec
    status: ModelReuseStatus = Field(default_factory=ModelReuseStatus)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ModelReuse:
        """Parse an object as the API server returns it (status may be missing or empty)."""
        body = dict(body)
        body["status"] = body.get("status") or {}
        return cls.model_validate(body)
