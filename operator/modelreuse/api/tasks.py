"""Task documents: what the operator hands a workload (``modelreuse evaluate | adapt | serve``) and what the
workload hands back. Both sides validate with these models, so a task the operator builds from a spec is
exactly what the workload accepts.

A task is passed as ``--task JSON`` or ``--task-file F``; the result is one JSON object of at most 4 KiB
written to the container's termination-message path and to stdout.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from modelreuse.api.base import ApiModel
from modelreuse.api.spec import (
    AdaptationSpec,
    Batching,
    DataCapture,
    DataSpec,
    Device,
    EvaluationSpec,
    ModelSource,
)

RESULT_LIMIT_BYTES = 4096
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


class EvaluateTask(ApiModel):
    """Score one model on the holdout of the new domain's data."""

    source: ModelSource
    data: DataSpec
    evaluation: EvaluationSpec


class AdaptTask(ApiModel):
    """Fine-tune one model on the new domain's training rows (never the holdout)."""

    source: ModelSource
    data: DataSpec
    evaluation: EvaluationSpec | None = None
    adaptation: AdaptationSpec = Field(default_factory=AdaptationSpec)
    extra_data: list[str] = Field(
        default_factory=list, description="Extra labelled data URIs, for example captured feedback."
    )
    extend_labels: list[str] = Field(
        default_factory=list, description="Labels to add to the source's label set (strategy head)."
    )
    feature_output: str | None = Field(
        default=None,
        description="Strategy head: the source tensor to train the head on. Defaults to the input of the "
        "source's last Gemm/MatMul, else the source outputs.",
    )


class ServeTask(ApiModel):
    """Serve one model version behind the Open Inference Protocol."""

    name: str = Field(min_length=1, max_length=253)
    version: int = Field(default=1, ge=1)
    source: ModelSource
    device: Device = "auto"
    batching: Batching = Field(default_factory=Batching)
    data_capture: DataCapture = Field(default_factory=DataCapture)
    feature_names: list[str] | None = None
    text_input: bool = False
    reference_stats: str | None = Field(
        default=None, description="URI of the feature statistics recorded at evaluation, for drift."
    )


class WorkloadResult(ApiModel):
    """What a workload reports back. ``reason`` is a CamelCase code; ``message`` one actionable sentence."""

    ok: bool
    command: Literal["evaluate", "adapt", "serve"]
    reason: str = "Succeeded"
    message: str = ""
    score: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    accuracy: float | None = None
    samples: int | None = None
    model_uri: str | None = None
    model_digest: str | None = None
    data_digest: str | None = None
    report_uri: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
