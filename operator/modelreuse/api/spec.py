"""The desired state of a ModelReuse: the inherited model, the new domain's data, the gate, adaptation,
serving and retraining. These models are the only hand-written schema; the CRD is generated from them.

Every cross-field rule lives twice on purpose: as a CEL rule the API server enforces
(``x-kubernetes-validations``) and as a pydantic validator the workloads enforce on their task documents.
A unit test checks that both reject the same catalogue of invalid objects.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from modelreuse.api.base import DURATION_PATTERN, SHA256_PATTERN, ApiModel, cel

ModelFormat = Literal["onnx", "torchscript", "torch-export"]
DataFormat = Literal["csv", "parquet", "jsonl"]
Average = Literal["binary", "micro", "macro", "weighted"]
Strategy = Literal["head", "full", "none"]
Device = Literal["auto", "cpu", "cuda"]

Uri = Annotated[str, Field(min_length=1, max_length=2048)]
ColumnName = Annotated[str, Field(min_length=1, max_length=253)]
Label = Annotated[str, Field(min_length=1, max_length=253)]
Quantity = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]

_WEIGHT_SUM_TOLERANCE = 1e-6


class ModelSource(ApiModel):
    """The inherited model: where it is, its format, its digest and its class labels."""

    uri: Uri = Field(
        description="Location of the model file: any fsspec URI (file://, s3://, gs://, http(s)://) or a "
        "path inside a mounted volume."
    )
    format: ModelFormat | None = Field(
        default=None,
        description="Model format: onnx, torchscript or torch-export. Inferred from the file suffix "
        "(.onnx, .pt/.torchscript, .pt2) when omitted.",
    )
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="Expected sha256 of the model file as 64 lowercase hex digits. A mismatch stops "
        "everything with reason DigestMismatch.",
    )
    labels: list[Label] = Field(
        default_factory=list,
        max_length=1000,
        description="Class labels by output index (index 0 is labels[0]). Target values in the data must "
        "be among them.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    tokenizer: Uri | None = Field(
        default=None,
        description="Location of a tokenizer.json for text models. Defaults to the tokenizer.json beside "
        "the model file.",
    )
    credentials_secret: str | None = Field(
        default=None,
        max_length=253,
        description="Name of a Secret in the same namespace whose keys become environment variables "
        "when the model is read (for example AWS_ACCESS_KEY_ID for s3://).",
    )

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("source.labels must not repeat a label")
        return labels


class Holdout(ApiModel):
    """The rows kept for evaluation. The split is deterministic and never trained on."""

    fraction: float = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        description="Fraction of rows held out for evaluation, in (0, 1]. 1 scores every row.",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the deterministic row split.")


class DataSpec(ApiModel):
    """The new domain's labelled data."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.features) != has(self.textColumn)",
                    "exactly one of data.features and data.textColumn must be set",
                )
            ]
        }
    }

    uri: Uri = Field(description="Location of the labelled data: CSV, Parquet or JSONL at any fsspec URI.")
    format: DataFormat | None = Field(
        default=None,
        description="Data format: csv, parquet or jsonl. Inferred from the file suffix when omitted.",
    )
    features: list[ColumnName] | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="Numeric feature columns, in the order the model expects them. Exclusive with "
        "textColumn.",
    )
    text_column: ColumnName | None = Field(
        default=None,
        description="Column holding raw text for a text model, tokenized with the model's tokenizer. "
        "Exclusive with features.",
    )
    target: ColumnName = Field(description="Column holding the true label of each row.")
    holdout: Holdout = Field(
        default_factory=Holdout, description="How rows are held out for evaluation."
    )

    @model_validator(mode="after")
    def _one_input_kind(self) -> DataSpec:
        if (self.features is None) == (self.text_column is None):
            raise ValueError("exactly one of data.features and data.textColumn must be set")
        return self


class ScoreWeights(ApiModel):
    """Weights of the seed score P = precisionWeight * Precision + recallWeight * Recall."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    f"self.precisionWeight + self.recallWeight >= {1 - _WEIGHT_SUM_TOLERANCE} && "
                    f"self.precisionWeight + self.recallWeight <= {1 + _WEIGHT_SUM_TOLERANCE}",
                    "evaluation.score.precisionWeight and evaluation.score.recallWeight must sum to 1",
                )
            ]
        }
    }

    precision_weight: float = Field(default=0.5, ge=0.0, le=1.0, description="Weight w1 of precision, in [0, 1].")
    recall_weight: float = Field(default=0.5, ge=0.0, le=1.0, description="Weight w2 of recall, in [0, 1].")

    @model_validator(mode="after")
    def _sum_to_one(self) -> ScoreWeights:
        if abs(self.precision_weight + self.recall_weight - 1.0) > _WEIGHT_SUM_TOLERANCE:
            raise ValueError("evaluation.score.precisionWeight and evaluation.score.recallWeight must sum to 1")
        return self


class EvaluationSpec(ApiModel):
    """How the model is scored on the holdout and the gate it must pass."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.average != 'binary' || has(self.positiveLabel)",
                    "evaluation.positiveLabel is required when evaluation.average is binary",
                )
            ]
        }
    }

    average: Average = Field(
        default="macro",
        description="How per-class precision and recall are averaged: binary (positiveLabel only), "
        "micro, macro or weighted, as in scikit-learn.",
    )
    positive_label: Label | None = Field(
        default=None, description="The positive class when average is binary."
    )
    score: ScoreWeights = Field(
        default_factory=ScoreWeights,
        description="Weights of the score P = precisionWeight * Precision + recallWeight * Recall.",
    )
    threshold: float = Field(
        ge=0.0, le=1.0, description="The gate: a model is deployed only if its score is at least this, in [0, 1]."
    )

    @model_validator(mode="after")
    def _binary_needs_positive(self) -> EvaluationSpec:
        if self.average == "binary" and self.positive_label is None:
            raise ValueError("evaluation.positiveLabel is required when evaluation.average is binary")
        return self


class AdaptationSpec(ApiModel):
    """How a model below the threshold is fine-tuned on the new domain's data."""

    strategy: Strategy = Field(
        default="head",
        description="head trains a new classification head on the frozen source model (any ONNX model); "
        "full fine-tunes a torch model; none never adapts.",
    )
    max_attempts: int = Field(
        default=3, ge=0, le=20, description="Adaptation attempts before the object is Rejected."
    )
    epochs: int = Field(default=20, ge=1, le=10000, description="Training epochs per attempt.")
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0, description="Optimizer learning rate.")
    max_seconds: int = Field(default=900, ge=1, le=86400, description="Time budget of one attempt in seconds.")
    trainable_layers: int | None = Field(
        default=None,
        ge=1,
        description="For strategy full: fine-tune only the last N layers. All layers when omitted.",
    )
    seed: int = Field(default=0, ge=0, description="Seed of weight initialisation and shuffling.")
    feature_output: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="For strategy head: the ONNX tensor the new head trains on. Defaults to the model's "
        "modelreuse.feature_output metadata, else the input of its last linear layer.",
    )


class ResourceRequirements(ApiModel):
    """Compute resources of each inference pod, as in a container's resources."""

    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Resource limits, for example nvidia.com/gpu: 1 or memory: 2Gi."
    )
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Resource requests, for example cpu: 500m."
    )


class Toleration(ApiModel):
    """A toleration of the inference pods, as in a pod's tolerations."""

    key: str | None = Field(default=None, max_length=316, description="Taint key; empty with Exists tolerates all.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value, with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; all effects when omitted."
    )
    toleration_seconds: int | None = Field(
        default=None, description="With effect NoExecute: how long the pod stays bound after the taint."
    )


class Batching(ApiModel):
    """Dynamic batching of inference requests."""

    max_batch_size: int = Field(default=64, ge=1, le=65536, description="Rows run together at most.")
    max_delay_microseconds: int = Field(
        default=2000, ge=0, le=10_000_000, description="How long a request may wait for others to join its batch."
    )


class DataCapture(ApiModel):
    """Sampling of live requests and responses for retraining and audit."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.sampleRate == 0.0 || has(self.uri)",
                    "deployment.dataCapture.uri is required when sampleRate is above 0",
                )
            ]
        }
    }

    sample_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Fraction of requests captured, in [0, 1].")
    uri: Uri | None = Field(default=None, description="Where captured records are written (fsspec URI prefix).")
    format: Literal["jsonl", "parquet"] = Field(default="jsonl", description="File format of captured records.")

    @model_validator(mode="after")
    def _uri_when_sampling(self) -> DataCapture:
        if self.sample_rate > 0 and self.uri is None:
            raise ValueError("deployment.dataCapture.uri is required when sampleRate is above 0")
        return self


class DeploymentSpec(ApiModel):
    """How the passing model is served."""

    replicas: int = Field(default=1, ge=0, le=1000, description="Inference pods.")
    device: Device = Field(
        default="auto", description="auto uses CUDA when the pod has a GPU; cpu or cuda force one."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="Compute resources of each inference pod."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the inference pods must match, for example GPU nodes."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, description="Taints the inference pods tolerate."
    )
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching of requests.")
    data_capture: DataCapture = Field(
        default_factory=DataCapture, description="Sampling of live traffic for retraining."
    )
    rollout_deadline_seconds: int = Field(
        default=600,
        ge=10,
        le=86400,
        description="A rollout not available within this many seconds is rolled back to the previous version.",
    )


class PrometheusTrigger(ApiModel):
    """A Prometheus query polled by the operator; retraining starts when it stays below a bound."""

    query: str = Field(
        min_length=1, max_length=4096,
        description="PromQL expression; its value is the scalar, or the smallest sample when it returns several series.",
    )
    below: float = Field(description="Retraining starts when the value is below this.")
    for_: str = Field(
        default="0s",
        alias="for",
        pattern=DURATION_PATTERN,
        description="How long the value must stay below the bound, as a duration like 10m.",
    )


class RetrainingSpec(ApiModel):
    """When and how a serving model is retrained, evaluated and promoted."""

    alerts: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        max_length=64,
        description="Alertmanager alert names that start retraining when routed to the operator's webhook.",
    )
    prometheus: list[PrometheusTrigger] = Field(
        default_factory=list, max_length=16, description="Prometheus queries that start retraining."
    )
    cooldown: str = Field(
        default="1h",
        pattern=DURATION_PATTERN,
        description="Minimum time between two retrainings; alerts inside it are merged into one.",
    )
    min_improvement: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="A candidate is promoted only if its score beats the serving model's by this much.",
    )
    feedback_uri: Uri | None = Field(
        default=None,
        description="Labelled feedback to train on besides the data; defaults to the data capture URI.",
    )


class ArtifactStore(ApiModel):
    """Where versioned models and reports are written."""

    uri: Uri = Field(description="fsspec URI prefix; versions go to {uri}/{namespace}/{name}/v{N}/.")
    credentials_secret: str | None = Field(
        default=None, max_length=253, description="Secret whose keys become environment variables for the store."
    )


class ModelReuseSpec(ApiModel):
    """Desired state of a ModelReuse: reuse an inherited model in a new domain, safely."""

    source: ModelSource = Field(description="The inherited model.")
    data: DataSpec = Field(description="The new domain's labelled data.")
    evaluation: EvaluationSpec = Field(description="How the model is scored and the gate it must pass.")
    adaptation: AdaptationSpec = Field(
        default_factory=AdaptationSpec, description="Fine-tuning when the score is below the threshold."
    )
    deployment: DeploymentSpec = Field(default_factory=DeploymentSpec, description="How the passing model is served.")
    retraining: RetrainingSpec = Field(
        default_factory=RetrainingSpec, description="Retraining and promotion on live metric alerts."
    )
    artifacts: ArtifactStore | None = Field(
        default=None, description="Where model versions are stored; the operator's default store when omitted."
    )
