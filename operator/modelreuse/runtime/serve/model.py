"""The served model: an onnxruntime session opened from a URI with the sha256 check, its OIP signature,
and (for text models) the tokenizer shipped beside it (read and applied through ``runtime.modelio``).

A text model is an ONNX model whose inputs are ``input_ids`` (and ``attention_mask``, ``token_type_ids``)
with a tokenizer.json beside it: the server exposes one BYTES input ``text`` and tokenizes server-side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from modelreuse.api.spec import ModelSource
from modelreuse.runtime import modelio, storage
from modelreuse.runtime.errors import WorkloadError
from modelreuse.runtime.serve.protocol import BYTES, NP_DTYPES

log = logging.getLogger("modelreuse.serve")

# onnxruntime type strings -> OIP datatypes.
_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}
TEXT_INPUT = "text"
LABEL_OUTPUT = "label"
_TOKEN_INPUTS = modelio.TEXT_INPUTS
DEFAULT_MAX_TOKENS = modelio.DEFAULT_MAX_TOKENS


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a dynamic dimension

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _dims(shape) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise WorkloadError(
            "DeviceUnavailable",
            "--device cuda was asked for but onnxruntime has no CUDA execution provider here; install "
            "onnxruntime-gpu on a node with a GPU or use --device auto.",
        )
    return ["CPUExecutionProvider"]


class ServedModel:
    """One model version ready to run batches."""

    def __init__(
        self,
        session,
        *,
        name: str,
        version: int,
        labels: list[str],
        digest: str,
        tokenizer=None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ):
        self.session = session
        self.name = name
        self.version = version
        self.version_str = str(version)
        self.labels = list(labels)
        self.digest = digest
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.model_inputs = [TensorSpec(i.name, _ORT_TYPES.get(i.type, "?"), _dims(i.shape)) for i in session.get_inputs()]
        self.model_outputs = [
            TensorSpec(o.name, _ORT_TYPES.get(o.type, "?"), _dims(o.shape)) for o in session.get_outputs()
        ]
        for spec in self.model_inputs + self.model_outputs:
            if spec.datatype == "?":
                raise WorkloadError("UnsupportedModel", f"The model's tensor {spec.name!r} has a type OIP v2 cannot carry.")
        self.text = tokenizer is not None
        self._token_inputs = [s.name for s in self.model_inputs]
        if self.text:
            names = {s.name for s in self.model_inputs}
            if "input_ids" not in names or not names <= set(_TOKEN_INPUTS):
                raise WorkloadError(
                    "ModelInputMismatch",
                    f"A tokenizer was given but the model's inputs are {sorted(names)}; a text model takes "
                    "input_ids and optionally attention_mask and token_type_ids.",
                )
            self.inputs = [TensorSpec(TEXT_INPUT, BYTES, (-1,))]
        else:
            self.inputs = self.model_inputs
        self.input_by_name = {s.name: s for s in self.inputs}
        self.output_names = [o.name for o in self.model_outputs]
        # The first 2-D float output is read as class scores: argmax is the prediction.
        self.score_index = next(
            (i for i, o in enumerate(self.model_outputs) if o.datatype in ("FP32", "FP64", "FP16") and len(o.shape) == 2),
            None,
        )
        self.outputs = list(self.model_outputs)
        if self.labels and self.score_index is not None:
            self.outputs.append(TensorSpec(LABEL_OUTPUT, BYTES, (-1,)))
        self.output_by_name = {s.name: s for s in self.outputs}
        first = self.inputs[0].shape
        # Requests are concatenated along axis 0 only when every input has a dynamic first dimension.
        self.batchable = all(s.shape and s.shape[0] == -1 for s in self.inputs) and bool(first)
        self.label_array = np.asarray(self.labels, dtype=object) if self.labels else None
        self.num_classes = None
        if self.score_index is not None:
            width = self.model_outputs[self.score_index].shape[1]
            self.num_classes = width if width > 0 else (len(self.labels) or None)

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "versions": [self.version_str],
            "platform": "onnxruntime_onnx",
            "inputs": [s.metadata() for s in self.inputs],
            "outputs": [s.metadata() for s in self.outputs],
        }

    def feeds(self, batch_inputs: dict[str, object]) -> dict[str, np.ndarray]:
        """ONNX feeds for one batch (text is tokenized here, in the inference thread)."""
        if not self.text:
            return batch_inputs  # type: ignore[return-value]
        return modelio.encode_texts(self.tokenizer, batch_inputs[TEXT_INPUT], self._token_inputs)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)

    def _dummy(self, rows: int) -> dict:
        if self.text:
            return {TEXT_INPUT: ["warm up the model"] * rows}
        feeds = {}
        for spec in self.inputs:
            dtype = NP_DTYPES.get(spec.datatype)
            if dtype is None:
                raise ValueError(f"no dummy for {spec.datatype}")
            shape = [rows if i == 0 and d == -1 else (1 if d == -1 else d) for i, d in enumerate(spec.shape)]
            feeds[spec.name] = np.zeros(shape, dtype=dtype)
        return feeds

    def warm_up(self, max_rows: int, repeats: int = 5):
        """Run the model on dummy batches (first runs are slow) and return rows -> expected seconds, or
        None when the model cannot be run on zeros (it then always runs in the inference thread)."""
        import time

        sizes = sorted({1, max(1, max_rows)}) if self.batchable else [1]
        seconds = {}
        try:
            for rows in sizes:
                feeds = self._dummy(rows)
                self.run(self.feeds(feeds))
                best = float("inf")
                for _ in range(repeats):
                    start = time.perf_counter()
                    self.run(self.feeds(feeds))
                    best = min(best, time.perf_counter() - start)
                seconds[rows] = best
        except Exception as exc:  # a model with inputs zeros cannot satisfy still serves, threaded
            log.info("warm-up skipped (%s); every batch runs in the inference thread", exc)
            return None
        low, high = sizes[0], sizes[-1]
        slope = (seconds[high] - seconds[low]) / (high - low) if high > low else 0.0
        log.info("warm-up: %d row(s) %.0f us, %d rows %.0f us", low, seconds[low] * 1e6, high, seconds[high] * 1e6)
        return lambda rows: seconds[low] + slope * (rows - low)


def load(
    source: ModelSource,
    *,
    name: str,
    version: int = 1,
    device: str = "auto",
    intra_op_threads: int = 1,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> ServedModel:
    """Read the model, check its sha256, open the session and, for a text model, its tokenizer.

    The session is opened here rather than through ``modelio.load_model`` because serving needs its own
    thread settings: onnxruntime's default pool spins on every core and starves the event loop.
    """
    import onnxruntime as ort

    fmt = modelio.infer_format(source.uri, source.format)
    if fmt != "onnx":
        raise WorkloadError(
            "UnsupportedModel",
            f"serve runs ONNX models; {source.uri} is {fmt}. Export it to ONNX (adapt does) and serve that file.",
        )
    payload = storage.read_bytes(source.uri)
    digest = storage.verify_sha256(source.uri, source.sha256, payload)
    if not payload:
        raise WorkloadError("CorruptModel", f"The model file at {source.uri} is empty; restore it.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = _providers(device)  # outside the try: DeviceUnavailable is not a corrupt model
    try:
        session = ort.InferenceSession(payload, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise WorkloadError(
            "CorruptModel",
            f"The file at {source.uri} is not a loadable ONNX model ({str(exc).splitlines()[0][:300]}); restore it.",
        ) from exc
    log.info("model %s v%s loaded from %s (%s) on %s", name, version, source.uri, digest, session.get_providers()[0])
    tokenizer = None
    if "input_ids" in {i.name for i in session.get_inputs()}:
        tokenizer = modelio.load_tokenizer(source, max_tokens)
    return ServedModel(
        session, name=name, version=version, labels=list(source.labels), digest=digest, tokenizer=tokenizer,
        max_tokens=max_tokens,
    )
