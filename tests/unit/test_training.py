"""Pieces of `modelreuse adapt`'s training on small hand-built ONNX graphs and tensors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from modelreuse.runtime.errors import WorkloadError
from modelreuse.runtime.training import head as head_mod
from modelreuse.runtime.training.full import layer_groups
from modelreuse.runtime.training.loop import FitConfig, class_weights, fit, validation_split

RNG = np.random.default_rng(0)
W1 = RNG.normal(size=(4, 6)).astype(np.float32)
W2 = RNG.normal(size=(6, 3)).astype(np.float32)
B2 = RNG.normal(size=(3,)).astype(np.float32)


def _mlp(classifier: str = "matmul", activation: str | None = "Softmax") -> onnx.ModelProto:
    """x -> MatMul(W1) -> Relu -> [classifier] -> [activation] -> y."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["pre"]), helper.make_node("Relu", ["pre"], ["hidden"])]
    inits = [numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(B2, "b2")]
    if classifier == "matmul":
        inits.append(numpy_helper.from_array(W2, "w2"))
        nodes += [helper.make_node("MatMul", ["hidden", "w2"], ["mm"]), helper.make_node("Add", ["mm", "b2"], ["logits"])]
    elif classifier == "gemm":
        inits.append(numpy_helper.from_array(W2.T.copy(), "w2"))
        nodes.append(helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"], transB=1))
    else:  # no linear layer: a parameter-free "classifier"
        nodes.append(helper.make_node("Slice", ["hidden", "starts", "ends", "axes"], ["logits"]))
        inits += [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("starts", 0), ("ends", 3), ("axes", 1))]
    if activation:
        nodes.append(helper.make_node(activation, ["logits"], ["y"], axis=1))
    else:
        nodes.append(helper.make_node("Identity", ["logits"], ["y"]))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("classifier", ["matmul", "gemm"])
def test_the_penultimate_tensor_is_the_input_of_the_last_linear_layer(classifier):
    assert head_mod.find_feature_tensor(_mlp(classifier)) == ("hidden", "penultimate")


def test_without_a_linear_layer_the_outputs_are_the_features():
    assert head_mod.find_feature_tensor(_mlp("none")) == ("y", "outputs")


def test_a_requested_tensor_wins_and_an_unknown_one_is_refused():
    assert head_mod.find_feature_tensor(_mlp(), "pre") == ("pre", "task")
    with pytest.raises(WorkloadError) as caught:
        head_mod.find_feature_tensor(_mlp(), "nope")
    assert caught.value.reason == "InvalidTask" and "'nope'" in caught.value.message


def test_metadata_names_the_feature_tensor():
    model = _mlp()
    model.metadata_props.add(key=head_mod.FEATURE_METADATA_KEY, value="pre")
    assert head_mod.find_feature_tensor(model) == ("pre", "metadata")


def test_expose_makes_an_intermediate_tensor_the_output():
    x = RNG.normal(size=(5, 4)).astype(np.float32)
    got = _run(head_mod.expose(_mlp(), "hidden"), x)
    np.testing.assert_allclose(got, np.maximum(x @ W1, 0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["Softmax", None])
def test_compose_is_the_truncated_source_plus_the_head(activation):
    source = _mlp(activation=activation)
    weight = RNG.normal(size=(2, 6)).astype(np.float32)
    bias = RNG.normal(size=(2,)).astype(np.float32)
    mean = RNG.normal(size=6).astype(np.float32)
    std = RNG.uniform(0.5, 2, size=6).astype(np.float32)
    act = head_mod.final_activation(source.graph, "y")
    assert act == activation
    composed = head_mod.compose(source, "hidden", weight, bias, mean, std, act, ["a", "b"])
    assert [o.name for o in composed.graph.output] == ["y"]
    assert "w2" not in {i.name for i in composed.graph.initializer}  # the old classifier is gone
    meta = {p.key: p.value for p in composed.metadata_props}
    assert json.loads(meta[head_mod.LABELS_METADATA_KEY]) == ["a", "b"]
    x = RNG.normal(size=(7, 4)).astype(np.float32)
    logits = ((np.maximum(x @ W1, 0) - mean) / std) @ weight.T + bias
    want = np.exp(logits) / np.exp(logits).sum(1, keepdims=True) if activation else logits
    np.testing.assert_allclose(_run(composed, x), want, rtol=1e-4, atol=1e-5)


def test_compose_on_the_source_outputs_keeps_the_output_name():
    source = _mlp()
    weight = np.eye(3, dtype=np.float32)[:2]
    composed = head_mod.compose(source, "y", weight, np.zeros(2, np.float32), np.zeros(3, np.float32),
                                np.ones(3, np.float32), "Softmax", ["a", "b"])
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    probs = _run(source, x)
    logits = probs[:, :2]
    want = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(_run(composed, x), want, rtol=1e-4, atol=1e-5)


def test_class_weights_balance_the_classes():
    y = np.array([0] * 30 + [1] * 10)
    w = class_weights(y, 3)
    assert w[0] * 30 == pytest.approx(w[1] * 10)
    assert w[2] == 1.0


def test_validation_split_is_stratified_disjoint_and_seeded():
    y = np.array([0] * 80 + [1] * 20)
    train, val = validation_split(y, seed=4)
    assert not set(train) & set(val) and len(train) + len(val) == 100
    assert (y[val] == 1).sum() == 3 and (y[val] == 0).sum() == 12
    again = validation_split(y, seed=4)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(validation_split(y, seed=5)[1], val)


def _toy():
    x = RNG.normal(size=(200, 2)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, y


def _loss(module, x, t):
    logits = module(x)
    return torch.nn.functional.cross_entropy(logits, t, reduction="none"), logits


def test_fit_learns_and_records_a_curve():
    x, y = _toy()
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2)
    result = fit(net, x, y, 2, FitConfig(epochs=30, learning_rate=0.05, max_seconds=1e9, seed=0), _loss)
    assert result.curve[-1]["train_loss"] < result.curve[0]["train_loss"]
    assert result.curve[result.best_epoch - 1]["validation_accuracy"] > 0.9
    assert result.train_rows + result.validation_rows == 200


def test_fit_stops_at_the_time_budget_and_keeps_the_best_epoch():
    x, y = _toy()
    ticks = iter(range(0, 10**6, 10))
    net = torch.nn.Linear(2, 2)
    result = fit(net, x, y, 2, FitConfig(epochs=50, learning_rate=0.05, max_seconds=5, seed=0), _loss,
                 clock=lambda: float(next(ticks)))
    assert result.stopped == "time-budget" and len(result.curve) == 1


def test_fit_stops_early_when_validation_stops_improving():
    x, _ = _toy()
    y = RNG.integers(0, 2, size=len(x))  # labels unrelated to the features: nothing to learn
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2)
    result = fit(net, x, y, 2, FitConfig(epochs=500, learning_rate=0.5, max_seconds=1e9, seed=0, patience=3), _loss)
    assert result.stopped == "early-stopping" and len(result.curve) < 500
    assert len(result.curve) - result.best_epoch == 3


def test_layer_groups_follow_definition_order():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    assert [name for name, _ in layer_groups(net)] == ["0", "2"]
    assert [n for n, _ in layer_groups(net)[-1][1]] == ["2.weight", "2.bias"]
