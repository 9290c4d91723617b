"""What the Kubernetes layer saw of an object's children, reduced to the few facts the core decides on."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class JobObservation:
    """One workload Job and its pod: finished or not, and the result from the termination message."""

    name: str
    succeeded: bool = False
    failed: bool = False
    termination_message: str | None = None
    exit_code: int | None = None
    failure_reason: str | None = None
    failure_message: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class DeploymentObservation:
    """The inference Deployment: which version and settings it runs, and how far its rollout got."""

    name: str
    version: int | None = None
    spec_hash: str | None = None
    generation: int = 0
    observed_generation: int = 0
    replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    progress_deadline_exceeded: bool = False

    def deadline_exceeded(self, spec_hash: str) -> bool:
        """True when the controller, having seen exactly this template, reports ProgressDeadlineExceeded.
        Right after a new template is applied the old condition is still there (from the template before,
        e.g. the one just rolled back from) until the controller observes the new generation."""
        return (
            self.spec_hash == spec_hash
            and self.observed_generation >= self.generation
            and self.progress_deadline_exceeded
        )

    def rolled_out(self, spec_hash: str, replicas: int) -> bool:
        """True when the controller has fully rolled out exactly this template."""
        return (
            self.spec_hash == spec_hash
            and self.observed_generation >= self.generation
            and self.updated_replicas >= replicas
            and self.available_replicas >= replicas
        )


@dataclass(frozen=True)
class Observed:
    """The children of one ModelReuse (only those it owns) and a pending retraining request."""

    jobs: dict[str, JobObservation] = field(default_factory=dict)
    deployment: DeploymentObservation | None = None
    service: bool = False
    retrain_request: RetrainRequest | None = None


@dataclass(frozen=True)
class RetrainRequest:
    """A retraining asked for by an alert, a Prometheus trigger or a user (the object's annotation)."""

    time: datetime
    reason: str
    message: str = ""
