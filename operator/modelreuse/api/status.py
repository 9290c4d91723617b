"""The observed state of a ModelReuse, written only by the operator through the status subresource.

Conditions follow the Kubernetes API conventions: a list keyed by ``type``, CamelCase reasons, human
messages, ``lastTransitionTime`` changed only when the status flips, and one summary condition ``Ready``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelreuse.api.base import ApiModel

Phase = Literal[
    "Pending", "Evaluating", "Adapting", "Deploying", "Serving", "Retraining", "Rejected", "Failed"
]
PHASES: tuple[str, ...] = Phase.__args__  # type: ignore[attr-defined]

ConditionType = Literal["SourceVerified", "Evaluated", "ThresholdMet", "Ready", "Retraining", "Degraded"]
CONDITION_TYPES: tuple[str, ...] = ConditionType.__args__  # type: ignore[attr-defined]

Origin = Literal["source", "adaptation", "retraining"]
Decision = Literal["Promoted", "Rejected", "RolledBack", "Superseded", "Pending"]

HISTORY_LIMIT = 20
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(ApiModel):
    """One aspect of the object's state, as in metav1.Condition."""

    type: str = Field(min_length=1, max_length=316, description="Condition type, for example Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1, max_length=1024, pattern=REASON_PATTERN, description="CamelCase reason code of the last change."
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(
        json_schema_extra={"format": "date-time"},
        description="When the status last changed, RFC 3339.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition was computed from."
    )


class EvaluationStatus(ApiModel):
    """Scores of one model on the holdout of the new domain's data."""

    version: int | None = Field(default=None, ge=1, description="Model version that was scored.")
    score: float = Field(ge=0.0, le=1.0, description="P = precisionWeight * Precision + recallWeight * Recall.")
    precision: float = Field(ge=0.0, le=1.0, description="Averaged precision.")
    recall: float = Field(ge=0.0, le=1.0, description="Averaged recall.")
    f1: float = Field(ge=0.0, le=1.0, description="Averaged F1.")
    accuracy: float = Field(ge=0.0, le=1.0, description="Fraction of holdout rows predicted right.")
    samples: int = Field(ge=0, description="Holdout rows scored.")
    model_digest: str | None = Field(default=None, description="sha256:<hex> of the scored model file.")
    data_digest: str | None = Field(default=None, description="sha256:<hex> of the data file.")
    evaluated_at: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="When the evaluation finished."
    )


class ModelVersion(ApiModel):
    """One model version: where it is, what it is and how it scored."""

    version: int = Field(ge=1, description="Version number, 1 for the inherited model.")
    origin: Origin = Field(description="source, adaptation or retraining.")
    uri: str | None = Field(default=None, description="Location of the model file.")
    digest: str | None = Field(default=None, description="sha256:<hex> of the model file.")
    score: float | None = Field(default=None, ge=0.0, le=1.0, description="Score on the holdout.")
    since: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="When it started serving or was created."
    )


class HistoryEntry(ApiModel):
    """A decision taken on one model version."""

    version: int = Field(ge=1, description="Model version.")
    origin: Origin = Field(description="source, adaptation or retraining.")
    score: float | None = Field(default=None, ge=0.0, le=1.0, description="Score on the holdout.")
    decision: Decision = Field(description="Promoted, Rejected, RolledBack, Superseded or Pending.")
    reason: str | None = Field(default=None, max_length=1024, description="Why, as a reason code.")
    time: str | None = Field(default=None, json_schema_extra={"format": "date-time"}, description="When.")


class ReplicaStatus(ApiModel):
    """Inference pods wanted and available."""

    desired: int = Field(default=0, ge=0, description="Replicas asked for.")
    available: int = Field(default=0, ge=0, description="Replicas available.")


class ModelReuseStatus(ApiModel):
    """Observed state of a ModelReuse, written by the operator."""

    phase: Phase = Field(
        default="Pending",
        description="Pending, Evaluating, Adapting, Deploying, Serving, Retraining, Rejected or Failed.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the operator last acted on."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="SourceVerified, Evaluated, ThresholdMet, Ready, Retraining and Degraded.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    evaluation: EvaluationStatus | None = Field(default=None, description="The latest evaluation.")
    serving: ModelVersion | None = Field(default=None, description="The version being served.")
    candidate: ModelVersion | None = Field(
        default=None, description="The version being adapted, retrained or evaluated, if any."
    )
    attempts: int = Field(default=0, ge=0, description="Adaptation attempts used for the current generation.")
    next_version: int = Field(default=1, ge=1, description="The number the next model version gets.")
    history: list[HistoryEntry] = Field(
        default_factory=list,
        max_length=HISTORY_LIMIT,
        description=f"The last {HISTORY_LIMIT} decisions, oldest first.",
    )
    previous: ModelVersion | None = Field(
        default=None, description="The version served before the current one; a failed rollout returns to it."
    )
    inputs_digest: str | None = Field(
        default=None,
        description="Digest of the source, data and evaluation settings last evaluated; a change re-evaluates.",
    )
    last_retraining_time: str | None = Field(
        default=None, json_schema_extra={"format": "date-time"}, description="When the last retraining started."
    )
    endpoint: str | None = Field(default=None, description="Open Inference Protocol URL of the served model.")
    replicas: ReplicaStatus | None = Field(default=None, description="Inference pods wanted and available.")
