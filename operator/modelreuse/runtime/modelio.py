"""Loading an inherited model and asking it for classes: ONNX through onnxruntime, TorchScript and
``torch.export`` archives through torch. Shared by evaluate, adapt and serve; the API is stable:

- ``load_model(source, device="auto") -> Model``: reads the file at ``source.uri``, checks it against
  ``source.sha256`` (WorkloadError DigestMismatch), and opens it. Nothing is ever unpickled: ONNX is a
  protobuf, TorchScript is read by ``torch.jit.load`` and ``torch.export`` archives by
  ``torch.export.load``, neither of which runs pickled Python.
- ``Model.inputs`` / ``Model.outputs``: names, shapes (int, or a string for a dynamic dimension, or None
  when unknown) and dtypes. ``Model.kind`` is "text" when the model takes ``input_ids``, else "tabular";
  ``Model.n_features`` and ``Model.n_classes`` when the shapes tell.
- ``Model.predict(x, probabilities=False) -> Prediction``: ``x`` is a float32 (rows, features) array, or
  for a text model the dict ``encode_texts`` returns. Class indices, and probabilities on request.
- ``load_tokenizer(source)`` and ``encode_texts(tokenizer, texts, input_names)`` for text models: the
  ``tokenizer.json`` (``tokenizers`` / transformers format) beside the model, or at ``source.tokenizer``.

How outputs become classes: an integer output holds class indices; a float output of shape (rows, C) with
C >= 2 holds scores and the class is the argmax (probabilities: the output itself when the ONNX graph ends
in Softmax, else its softmax); a float output with one column is binary: a probability of class 1 when the
ONNX graph ends in Sigmoid (class 1 at >= 0.5), else a logit (class 1 at > 0). With several outputs the
first float (rows, C) output is used, else the first output.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from modelreuse.api.spec import Device, ModelSource
from modelreuse.runtime import storage
from modelreuse.runtime.errors import WorkloadError

ModelFormat = Literal["onnx", "torchscript", "torch-export"]
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...] | None
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape) if self.shape is not None else None, "dtype": self.dtype}


@dataclass
class Prediction:
    classes: np.ndarray
    probabilities: np.ndarray | None = None


def infer_format(uri: str, explicit: str | None = None) -> ModelFormat:
    """The model format from the spec, else from the file suffix."""
    if explicit:
        return explicit  # type: ignore[return-value]
    name = uri.split("?", 1)[0].lower()
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(".pt2"):
        return "torch-export"
    if name.endswith((".pt", ".pth", ".torchscript", ".ts", ".jit")):
        return "torchscript"
    raise WorkloadError(
        "UnsupportedModel",
        f"Cannot tell the format of {uri} from its name; set source.format to onnx, torchscript or torch-export.",
    )


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


@dataclass
class Model:
    """An opened model; see the module docstring. Subclasses implement ``_run``."""

    uri: str
    format: ModelFormat
    digest: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    provider: str = "cpu"
    output_activation: str | None = None
    _output_index: int = field(default=0, repr=False)

    @property
    def kind(self) -> Literal["text", "tabular"]:
        return "text" if any(i.name == "input_ids" for i in self.inputs) else "tabular"

    @property
    def n_features(self) -> int | None:
        """Features per row the model takes, when its input shape says (one 2-D input, or one per feature)."""
        if self.kind == "text":
            return None
        if len(self.inputs) > 1:
            return len(self.inputs)
        shape = self.inputs[0].shape if self.inputs else None
        if not shape or len(shape) != 2:
            return None
        return _static(shape[1])

    @property
    def n_classes(self) -> int | None:
        out = self.outputs[self._output_index] if self.outputs else None
        if out is None or out.shape is None or not out.dtype.startswith("float"):
            return None
        if len(out.shape) == 1:
            return 2
        if len(out.shape) == 2:
            c = _static(out.shape[1])
            return 2 if c == 1 else c
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "format": self.format,
            "digest": self.digest,
            "provider": self.provider,
            "kind": self.kind,
            "inputs": [i.to_dict() for i in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
        }

    def _run(self, x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def check_features(self, feature_names: Sequence[str]) -> None:
        """Raise ModelInputMismatch when numeric features of these names cannot feed this model."""
        if self.kind == "text":
            raise WorkloadError(
                "ModelInputMismatch",
                f"The model at {self.uri} takes token ids ({', '.join(i.name for i in self.inputs)}), not numeric "
                "features; set data.textColumn to the column with the text.",
            )
        if len(self.inputs) > 1:
            missing = [i.name for i in self.inputs if i.name not in feature_names]
            if missing:
                raise WorkloadError(
                    "ModelInputMismatch",
                    f"The model at {self.uri} has inputs {', '.join(missing)} that are not among data.features "
                    f"{list(feature_names)}; name the feature columns after the model's inputs.",
                )
            return
        expected = self.n_features
        if expected is not None and expected != len(feature_names):
            raise WorkloadError(
                "ModelInputMismatch",
                f"The model at {self.uri} takes {expected} features per row (input {self.inputs[0].name!r} of "
                f"shape {list(self.inputs[0].shape or [])}) but data.features names {len(feature_names)}; "
                "list exactly the columns the model was trained on, in order.",
            )

    def check_text(self) -> None:
        if self.kind != "text":
            raise WorkloadError(
                "ModelInputMismatch",
                f"The model at {self.uri} takes numeric features, not text; set data.features instead of "
                "data.textColumn.",
            )

    def bind(self, feature_names: Sequence[str]) -> None:
        """Remember the feature order for models with one input per feature."""
        self._feature_positions = {name: j for j, name in enumerate(feature_names)}

    def predict(self, x: np.ndarray | dict[str, np.ndarray], probabilities: bool = False) -> Prediction:
        """Class indices (and probabilities on request) for a batch; see the module docstring."""
        try:
            raw = self._run(x)
        except WorkloadError:
            raise
        except Exception as exc:  # the runtimes raise their own types for shape/dtype errors
            raise WorkloadError(
                "ModelInputMismatch",
                f"The model at {self.uri} rejected a batch of the data ({str(exc).splitlines()[0][:300]}); "
                "check that data.features or data.textColumn match what the model was trained on.",
            ) from exc
        raw = np.asarray(raw)
        if raw.dtype.kind in "iub":
            classes = raw.reshape(raw.shape[0], -1)[:, 0].astype(np.int64)
            return Prediction(classes, None)
        if raw.ndim == 1 or (raw.ndim == 2 and raw.shape[1] == 1):
            value = raw.reshape(-1).astype(np.float64)
            if self.output_activation == "Sigmoid":
                classes = (value >= 0.5).astype(np.int64)
                p1 = value
            else:
                classes = (value > 0).astype(np.int64)
                p1 = 1.0 / (1.0 + np.exp(-value)) if probabilities else None
            probs = np.stack([1.0 - p1, p1], axis=1) if probabilities else None
            return Prediction(classes, probs)
        if raw.ndim != 2:
            raise WorkloadError(
                "ModelInputMismatch",
                f"The model at {self.uri} returned an output of shape {list(raw.shape)}; a classifier must "
                "return (rows, classes) scores or (rows,) class indices.",
            )
        classes = raw.argmax(axis=1).astype(np.int64)
        probs = None
        if probabilities:
            scores = raw.astype(np.float64)
            already = self.output_activation == "Softmax" or (
                self.output_activation is None
                and scores.min() >= 0.0
                and scores.max() <= 1.0
                and np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)
            )
            probs = scores if already else _softmax(scores)
        return Prediction(classes, probs)


def _ort_dtype(type_str: str) -> str:
    inner = type_str[len("tensor(") : -1] if type_str.startswith("tensor(") else type_str
    return {"float": "float32", "double": "float64", "float16": "float16"}.get(inner, inner)


class OnnxModel(Model):
    session: Any = None

    def _run(self, x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        name = self.outputs[self._output_index].name
        if isinstance(x, dict):
            feeds = {i.name: x[i.name].astype(i.dtype, copy=False) for i in self.inputs if i.name in x}
        elif len(self.inputs) > 1:
            pos = getattr(self, "_feature_positions", {})
            feeds = {}
            for info in self.inputs:
                column = x[:, pos[info.name]]
                feeds[info.name] = column.reshape(-1, 1) if info.shape is not None and len(info.shape) == 2 else column
                feeds[info.name] = feeds[info.name].astype(info.dtype, copy=False)
        else:
            info = self.inputs[0]
            feeds = {info.name: x if x.dtype == np.dtype(info.dtype) else x.astype(info.dtype)}
        return self.session.run([name], feeds)[0]


def _providers(device: Device) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise WorkloadError(
            "UnsupportedModel",
            "device is cuda but onnxruntime has no CUDA execution provider here; install onnxruntime-gpu or use "
            "device auto.",
        )
    return ["CPUExecutionProvider"]


def _final_op(model_bytes: bytes, output_name: str) -> str | None:
    """The op that produces an ONNX output (Softmax, Sigmoid, ...), to read its scores correctly."""
    import onnx

    graph = onnx.load_model_from_string(model_bytes).graph
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(output_name)
    # Look through shape-only ops a converter may add after the activation.
    while node is not None and node.op_type in ("Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast"):
        node = producers.get(node.input[0])
    return node.op_type if node is not None else None


def _load_onnx(uri: str, payload: bytes, digest: str, device: Device) -> OnnxModel:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(payload, sess_options=options, providers=_providers(device))
    except WorkloadError:
        raise
    except Exception as exc:
        raise WorkloadError(
            "CorruptModel",
            f"The file at {uri} is not a loadable ONNX model ({str(exc).splitlines()[0][:300]}); it may be "
            "truncated or of another format: restore it or fix source.format.",
        ) from exc

    def info(arg: Any) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) else (str(d) if d is not None else None) for d in arg.shape)
        return TensorInfo(arg.name, shape, _ort_dtype(arg.type))

    inputs = [info(i) for i in session.get_inputs()]
    outputs = [info(o) for o in session.get_outputs()]
    index = next(
        (k for k, o in enumerate(outputs) if o.dtype.startswith("float") and o.shape is not None and len(o.shape) == 2),
        0,
    )
    provider = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    try:
        activation = _final_op(payload, outputs[index].name)
    except Exception:  # a graph onnxruntime accepts but onnx cannot walk: read scores as logits
        activation = None
    model = OnnxModel(
        uri=uri, format="onnx", digest=digest, inputs=inputs, outputs=outputs, provider=provider,
        output_activation=activation, _output_index=index,
    )
    model.session = session
    return model


class TorchModel(Model):
    module: Any = None
    device_name: str = "cpu"

    def _run(self, x: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if isinstance(x, dict):
                args = [torch.from_numpy(x[i.name]).to(self.device_name) for i in self.inputs if i.name in x]
            else:
                args = [torch.from_numpy(np.ascontiguousarray(x)).to(self.device_name)]
            out = self.module(*args)
            if isinstance(out, (tuple, list)):
                out = out[0]
            if isinstance(out, dict):
                out = next(iter(out.values()))
            return out.detach().to("cpu").numpy()


def _torch_device(device: Device) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise WorkloadError("UnsupportedModel", "device is cuda but torch sees no GPU here; use device auto or cpu.")
    return "cpu"


def _load_torchscript(uri: str, payload: bytes, digest: str, device: Device) -> TorchModel:
    import torch

    dev = _torch_device(device)
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream; inherited models still come in it, so load quietly.
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(io.BytesIO(payload), map_location=dev)
    except Exception as exc:
        raise WorkloadError(
            "CorruptModel",
            f"The file at {uri} is not a loadable TorchScript archive ({str(exc).splitlines()[0][:300]}); it "
            "may be truncated or of another format: restore it or fix source.format.",
        ) from exc
    module.eval()
    try:
        arguments = module.forward.schema.arguments[1:]
        inputs = [TensorInfo(a.name, None, "float32") for a in arguments]
    except Exception:  # scripted modules without a readable schema still run
        inputs = [TensorInfo("input", None, "float32")]
    if any(i.name == "input_ids" for i in inputs):
        inputs = [TensorInfo(i.name, None, "int64") for i in inputs]
    model = TorchModel(uri=uri, format="torchscript", digest=digest, inputs=inputs,
                       outputs=[TensorInfo("output", None, "float32")], provider=dev)
    model.module, model.device_name = module, dev
    return model


def _load_torch_export(uri: str, payload: bytes, digest: str, device: Device) -> TorchModel:
    import torch

    dev = _torch_device(device)
    try:
        program = torch.export.load(io.BytesIO(payload))
    except Exception as exc:
        raise WorkloadError(
            "CorruptModel",
            f"The file at {uri} is not a loadable torch.export archive ({str(exc).splitlines()[0][:300]}); it "
            "may be truncated or of another format: restore it or fix source.format.",
        ) from exc
    user_inputs = set(program.graph_signature.user_inputs)
    user_outputs = list(program.graph_signature.user_outputs)
    inputs, outputs = [], []
    for node in program.graph.nodes:
        val = node.meta.get("val")
        if node.op == "placeholder" and node.name in user_inputs:
            shape = tuple(int(d) if str(d).lstrip("-").isdigit() else str(d) for d in val.shape) if val is not None else None
            dtype = str(val.dtype).replace("torch.", "") if val is not None else "float32"
            inputs.append(TensorInfo(node.name, shape, dtype))
        if node.op == "output":
            for arg in node.args[0]:
                meta = getattr(arg, "meta", {}).get("val")
                if getattr(arg, "name", None) in user_outputs and meta is not None:
                    shape = tuple(int(d) if str(d).isdigit() else str(d) for d in meta.shape)
                    outputs.append(TensorInfo(arg.name, shape, str(meta.dtype).replace("torch.", "")))
    module = program.module()
    if dev != "cpu":
        module = module.to(dev)
    model = TorchModel(uri=uri, format="torch-export", digest=digest, inputs=inputs,
                       outputs=outputs or [TensorInfo("output", None, "float32")], provider=dev)
    model.module, model.device_name = module, dev
    return model


def load_model(source: ModelSource, device: Device = "auto") -> Model:
    """Read, verify and open the model described by ``source``; see the module docstring."""
    fmt = infer_format(source.uri, source.format)
    payload = storage.read_bytes(source.uri)
    digest = storage.verify_sha256(source.uri, source.sha256, payload=payload)
    if not payload:
        raise WorkloadError("CorruptModel", f"The model file at {source.uri} is empty; restore it.")
    loader = {"onnx": _load_onnx, "torchscript": _load_torchscript, "torch-export": _load_torch_export}[fmt]
    return loader(source.uri, payload, digest, device)


def tokenizer_uri(source: ModelSource) -> str:
    """Where the tokenizer of a text model lives: ``source.tokenizer`` or tokenizer.json beside the model."""
    if source.tokenizer:
        return source.tokenizer
    base = source.uri.split("?", 1)[0]
    return (base.rsplit("/", 1)[0] + "/" if "/" in base else "") + "tokenizer.json"


def load_tokenizer(source: ModelSource, max_tokens: int = DEFAULT_MAX_TOKENS) -> Any:
    """The ``tokenizers.Tokenizer`` of a text model, set to pad each batch and truncate at ``max_tokens``."""
    from tokenizers import Tokenizer

    uri = tokenizer_uri(source)
    try:
        text = storage.read_bytes(uri).decode("utf-8")
    except WorkloadError as exc:
        raise WorkloadError(
            "UnreadableUri",
            f"The text model needs its tokenizer at {uri}, which cannot be read; put tokenizer.json beside the "
            "model or set source.tokenizer.",
        ) from exc
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as exc:
        raise WorkloadError(
            "CorruptModel", f"{uri} is not a tokenizers tokenizer.json ({exc}); restore the model's tokenizer."
        ) from exc
    # The file's own padding and truncation are the model's contract; add them only where it has none,
    # since a batch of rows must be padded to one length.
    if tokenizer.padding is None:
        pad_token = next((t for t in ("[PAD]", "<pad>", "<|pad|>") if tokenizer.token_to_id(t) is not None), None)
        pad_id = tokenizer.token_to_id(pad_token) if pad_token else 0
        tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token or "[PAD]")
    if tokenizer.truncation is None:
        tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def encode_texts(tokenizer: Any, texts: Sequence[str], input_names: Sequence[str] = TEXT_INPUTS) -> dict[str, np.ndarray]:
    """Token ids, attention masks and token types (int64, padded to the batch's longest) for the inputs named."""
    encodings = tokenizer.encode_batch(list(texts))
    out = {
        "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
    }
    return {name: out[name] for name in input_names if name in out}
