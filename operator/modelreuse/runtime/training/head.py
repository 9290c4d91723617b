"""Strategy ``head``: keep any ONNX source frozen and train a new classification head on its features.

The features are a named intermediate tensor (the task's ``featureOutput``, else the source's
``modelreuse.feature_output`` metadata, else the input of the source's last Gemm/MatMul, found by walking
back from its first output through activations), or the source outputs when no such layer is found. The
result is ONE ONNX graph: the source truncated at the feature tensor, then standardisation, a linear layer
and the source's output activation, under the source's output name, so serving needs nothing new.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from modelreuse.runtime.errors import WorkloadError
from modelreuse.runtime.training.loop import FitConfig, FitResult, fit

FEATURE_METADATA_KEY = "modelreuse.feature_output"
LABELS_METADATA_KEY = "modelreuse.labels"
# Ops a walk from the output back to the classifier layer looks through.
_PASS_THROUGH = {"Softmax", "LogSoftmax", "Sigmoid", "Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}
_TEXT_BATCH = 64
_TABULAR_BATCH = 8192
_CHECK_ROWS = 64


@dataclass
class HeadOutcome:
    model_bytes: bytes
    fit: FitResult
    feature_output: str
    feature_source: str
    feature_width: int
    activation: str | None
    check_max_abs_diff: float
    info: dict[str, Any] = field(default_factory=dict)


def _producers(graph) -> dict[str, Any]:
    return {out: node for node in graph.node for out in node.output}


def final_activation(graph, output_name: str) -> str | None:
    """The activation that makes the output (Softmax, Sigmoid, ...), looking through shape-only ops."""
    producers = _producers(graph)
    node = producers.get(output_name)
    while node is not None and node.op_type in ("Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast"):
        node = producers.get(node.input[0])
    return node.op_type if node is not None and node.op_type in ("Softmax", "Sigmoid", "LogSoftmax") else None


def find_feature_tensor(model, requested: str | None = None) -> tuple[str, str]:
    """The tensor the head is trained on and how it was chosen: requested, metadata, penultimate, outputs."""
    graph = model.graph
    known = {v for node in graph.node for v in node.output} | {i.name for i in graph.input}
    if requested:
        if requested not in known:
            raise WorkloadError(
                "InvalidTask",
                f"The source model has no tensor named {requested!r}; set featureOutput to one of its "
                "intermediate tensors (for example the input of its last Gemm), or leave it out.",
            )
        return requested, "task"
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(FEATURE_METADATA_KEY) in known:
        return meta[FEATURE_METADATA_KEY], "metadata"
    initializers = {i.name for i in graph.initializer}
    producers = _producers(graph)
    node = producers.get(graph.output[0].name)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producers.get(node.input[0])
    if node is not None and node.op_type == "Add":
        # MatMul + Add is how many exporters write a Linear layer.
        inner = [producers.get(i) for i in node.input if i not in initializers]
        node = inner[0] if len(inner) == 1 else None
    if node is not None and node.op_type in ("Gemm", "MatMul") and len(node.input) >= 2 and node.input[1] in initializers:
        return node.input[0], "penultimate"
    return graph.output[0].name, "outputs"


def _elem_type(model, name: str) -> tuple[int, int | None]:
    """ONNX element type and rank of a tensor, by shape inference (float and unknown rank if it cannot tell)."""
    import onnx

    for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        if v.name == name and v.type.tensor_type.elem_type:
            t = v.type.tensor_type
            return t.elem_type, (len(t.shape.dim) if t.HasField("shape") else None)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort; onnxruntime tells the real type later
        return onnx.TensorProto.FLOAT, None
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        if v.name == name:
            t = v.type.tensor_type
            return t.elem_type or onnx.TensorProto.FLOAT, (len(t.shape.dim) if t.HasField("shape") else None)
    return onnx.TensorProto.FLOAT, None


def expose(model, name: str):
    """A copy of the model whose only output is the tensor ``name`` (added as a graph output if needed)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    elem, _ = _elem_type(model, name)
    del out.graph.output[:]
    out.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return out


def _subgraph_inputs(node) -> set[str]:
    names: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for g in graphs:
            for inner in g.node:
                names.update(inner.input)
                names |= _subgraph_inputs(inner)
    return names


def truncate(model, name: str):
    """The source cut at tensor ``name``: only the nodes, initializers and inputs it depends on."""
    import onnx

    graph = model.graph
    needed = {name}
    kept = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
            needed |= _subgraph_inputs(node)
    kept.reverse()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    del g.node[:]
    g.node.extend(kept)
    inits = [i for i in graph.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    inputs = [i for i in graph.input if i.name in needed]
    del g.input[:]
    g.input.extend(inputs)
    infos = [v for v in graph.value_info if v.name in needed]
    del g.value_info[:]
    g.value_info.extend(infos)
    del g.output[:]
    return out


def compose(model, feature: str, weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, std: np.ndarray,
            activation: str | None, labels: Sequence[str]):
    """Source truncated at ``feature`` + standardise + Gemm + activation, under the source's output name."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    output_name = model.graph.output[0].name
    elem, rank = _elem_type(model, feature)
    out = truncate(model, feature)
    g = out.graph
    taken = {v for n in g.node for v in n.output} | {i.name for i in g.input}
    if output_name in taken:
        # The head's output keeps the source's name, so an internal tensor of that name must move aside.
        renamed = output_name + "/source"
        for n in g.node:
            n.input[:] = [renamed if v == output_name else v for v in n.input]
            n.output[:] = [renamed if v == output_name else v for v in n.output]
        if feature == output_name:
            feature = renamed
    prefix = "modelreuse_head/"
    x = feature
    nodes = []
    if elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], [prefix + "cast"], to=TensorProto.FLOAT, name=prefix + "Cast"))
        x = prefix + "cast"
    if rank != 2:
        nodes.append(helper.make_node("Flatten", [x], [prefix + "flat"], axis=1, name=prefix + "Flatten"))
        x = prefix + "flat"
    inits = [
        numpy_helper.from_array(mean.astype(np.float32).reshape(1, -1), prefix + "mean"),
        numpy_helper.from_array(std.astype(np.float32).reshape(1, -1), prefix + "std"),
        numpy_helper.from_array(weight.astype(np.float32), prefix + "weight"),
        numpy_helper.from_array(bias.astype(np.float32), prefix + "bias"),
    ]
    nodes.append(helper.make_node("Sub", [x, prefix + "mean"], [prefix + "centred"], name=prefix + "Sub"))
    nodes.append(helper.make_node("Div", [prefix + "centred", prefix + "std"], [prefix + "scaled"], name=prefix + "Div"))
    logits = output_name if activation is None else prefix + "logits"
    nodes.append(helper.make_node("Gemm", [prefix + "scaled", prefix + "weight", prefix + "bias"], [logits],
                                  transB=1, name=prefix + "Gemm"))
    if activation == "Softmax":
        nodes.append(helper.make_node("Softmax", [logits], [output_name], axis=1, name=prefix + "Softmax"))
    elif activation == "LogSoftmax":
        nodes.append(helper.make_node("LogSoftmax", [logits], [output_name], axis=1, name=prefix + "LogSoftmax"))
    elif activation == "Sigmoid":
        nodes.append(helper.make_node("Softmax", [logits], [output_name], axis=1, name=prefix + "Softmax"))
    g.node.extend(nodes)
    g.initializer.extend(inits)
    g.output.append(helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", len(labels)]))
    meta = {p.key: p.value for p in out.metadata_props}
    meta[FEATURE_METADATA_KEY] = feature
    meta[LABELS_METADATA_KEY] = json.dumps(list(labels))
    del out.metadata_props[:]
    for k, v in meta.items():
        out.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(out)
    return out


def _feeds(session, rows, lo: int, hi: int, tokenizer, feature_names: Sequence[str] | None) -> dict[str, np.ndarray]:
    from modelreuse.runtime.modelio import encode_texts

    inputs = session.get_inputs()
    if rows.texts is not None:
        return encode_texts(tokenizer, rows.texts[lo:hi], [i.name for i in inputs])
    x = rows.features[lo:hi]
    dtype = {"tensor(double)": np.float64, "tensor(float16)": np.float16}
    if len(inputs) == 1:
        return {inputs[0].name: x.astype(dtype.get(inputs[0].type, np.float32), copy=False)}
    positions = {n: j for j, n in enumerate(feature_names or [])}
    feeds = {}
    for i in inputs:
        if i.name not in positions:
            raise WorkloadError(
                "ModelInputMismatch",
                f"The source model's input {i.name!r} is not among data.features; name the feature columns "
                "after the model's inputs.",
            )
        col = x[:, positions[i.name]]
        feeds[i.name] = (col.reshape(-1, 1) if len(i.shape) == 2 else col).astype(dtype.get(i.type, np.float32))
    return feeds


def session_for(model_bytes: bytes, device: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(model_bytes, sess_options=options, providers=providers)


def extract_features(session, rows, tokenizer, feature_names, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Run the exposed source over the rows; features flattened to (rows, width) float32."""
    stop = len(rows) if stop is None else stop
    step = _TEXT_BATCH if rows.texts is not None else _TABULAR_BATCH
    out = []
    name = session.get_outputs()[0].name
    for lo in range(start, stop, step):
        hi = min(lo + step, stop)
        value = session.run([name], _feeds(session, rows, lo, hi, tokenizer, feature_names))[0]
        out.append(np.asarray(value, dtype=np.float32).reshape(hi - lo, -1))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


class _Head:
    """Factory for the torch head, kept apart so torch is imported only when training."""

    @staticmethod
    def build(mean: np.ndarray, std: np.ndarray, n_classes: int):
        import torch
        from torch import nn

        class Head(nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
                self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
                self.linear = nn.Linear(len(mean), n_classes)

            def forward(self, x):
                return self.linear((x - self.mean) / self.std)

        return Head()


def _probabilities(logits: np.ndarray, activation: str | None) -> np.ndarray:
    if activation in ("Softmax", "Sigmoid"):
        z = logits - logits.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
    if activation == "LogSoftmax":
        z = logits - logits.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))
    return logits


def adapt_head(
    model_bytes: bytes,
    rows,
    labels: Sequence[str],
    config: FitConfig,
    *,
    tokenizer=None,
    feature_names: Sequence[str] | None = None,
    feature_output: str | None = None,
    deadline_check=None,
    budget_left=None,
) -> HeadOutcome:
    """Train a new head on the frozen source's features and compose one ONNX graph (see module docstring)."""
    import onnx
    import torch

    try:
        source = onnx.load_model_from_string(model_bytes)
    except Exception as exc:
        raise WorkloadError("CorruptModel", f"The source is not a readable ONNX model ({exc}); restore it.") from exc
    feature, how = find_feature_tensor(source, feature_output)
    activation = final_activation(source.graph, source.graph.output[0].name)
    session = session_for(expose(source, feature).SerializeToString(), config.device)
    features = extract_features(session, rows, tokenizer, feature_names)
    if not np.all(np.isfinite(features)):
        raise WorkloadError(
            "InvalidFeatures",
            f"The source model's tensor {feature!r} is NaN or infinite for some training rows; check the "
            "feature values, or set featureOutput to another tensor.",
        )
    if deadline_check is not None:
        deadline_check()
    if budget_left is not None:
        # Computing the features spent part of the attempt's budget; training gets what is left.
        config = replace(config, max_seconds=max(budget_left(), 0.0))
    mean = features.mean(0)
    std = features.std(0)
    std = np.where(std > 1e-6, std, 1.0).astype(np.float32)

    torch.manual_seed(config.seed)
    head = _Head.build(mean, std, len(labels)).to(config.device)

    def loss_of(module, x, t):
        logits = module(x)
        return torch.nn.functional.cross_entropy(logits, t, reduction="none"), logits

    result = fit(head, features, rows.y, len(labels), config, loss_of)
    head = head.to("cpu").eval()
    weight = head.linear.weight.detach().numpy()
    bias = head.linear.bias.detach().numpy()
    composed = compose(source, feature, weight, bias, mean, std, activation, labels)
    payload = composed.SerializeToString()

    # Check the composed graph against torch on sample rows: same source features, same head.
    n = min(_CHECK_ROWS, len(rows))
    check = session_for(payload, "cpu")
    got = check.run(None, _feeds(check, rows, 0, n, tokenizer, feature_names))[0]
    with torch.no_grad():
        logits = head(torch.as_tensor(features[:n])).numpy()
    want = _probabilities(logits, activation)
    diff = float(np.max(np.abs(got - want))) if n else 0.0
    if not np.allclose(got, want, atol=1e-4, rtol=1e-3):
        raise WorkloadError(
            "ExportMismatch",
            f"The composed ONNX model differs from the trained head by {diff:.3g} on sample rows; report this "
            "with the source model, or set featureOutput to another tensor.",
        )
    return HeadOutcome(
        model_bytes=payload, fit=result, feature_output=feature, feature_source=how,
        feature_width=int(features.shape[1]), activation=activation, check_max_abs_diff=diff,
    )
