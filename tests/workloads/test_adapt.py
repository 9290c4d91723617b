"""`modelreuse adapt` on the real reuse scenarios: the adapted model scores higher on the new domain's
holdout, the holdout is never trained on, training is deterministic, and bad input ends with a reason."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper

from modelreuse.api.tasks import RESULT_LIMIT_BYTES, AdaptTask
from modelreuse.runtime import data as data_io
from modelreuse.runtime.adapt import adapt
from modelreuse.runtime.errors import EXIT_CODES, WorkloadError
from modelreuse.runtime.evaluate import evaluate
from modelreuse.runtime.training.rows import load_rows
from modelreuse.scenarios import bikeshare, sentiment


@pytest.fixture(scope="session")
def scenario_cache(request, tmp_path_factory):
    # The Makefile sets MODELREUSE_CACHE; a bare pytest run keeps the scenarios in pytest's own cache.
    if os.environ.get("MODELREUSE_CACHE"):
        return None
    cache = getattr(request.config, "cache", None)
    return cache.mkdir("modelreuse-scenarios") if cache is not None else tmp_path_factory.mktemp("scenarios")


@pytest.fixture(scope="session")
def bike(scenario_cache):
    return bikeshare.build(scenario_cache)


@pytest.fixture(scope="session")
def tweets(scenario_cache):
    return sentiment.build(scenario_cache)


def _task(scenario, **adaptation) -> dict:
    body = scenario.task()
    body["adaptation"] = {"strategy": "head", "epochs": 30, "learningRate": 0.01, "seed": 3, **adaptation}
    return body


def _score(scenario, model_uri: str, labels=None) -> float:
    body = scenario.task()
    body["source"]["uri"] = model_uri
    body["source"].pop("sha256", None)
    if labels is not None:
        body["source"]["labels"] = labels
    return evaluate(body)["metrics"]["score"]


def _weights(model_uri: str) -> dict[str, np.ndarray]:
    model = onnx.load(model_uri)
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "modelreuse", "adapt", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def _one_sentence(message: str) -> None:
    assert message and "\n" not in message and message.endswith(".")
    assert message.count(". ") == 0, message


# --------------------------------------------------------------------------------------------------------
# The scenarios improve


def test_bikeshare_head_via_cli_improves_on_the_holdout(bike, tmp_path):
    out = tmp_path / "v2"
    log = tmp_path / "termination-log"
    body = _task(bike)
    done = _cli("--model", str(bike.model_path), "--data", str(bike.data_csv), "--out", str(out),
                "--task", json.dumps(body), "--termination-log", str(log))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert log.read_text() == done.stdout.strip().splitlines()[-1]
    assert len(log.read_bytes()) <= RESULT_LIMIT_BYTES
    assert result["ok"] and result["command"] == "adapt" and result["reason"] == "Succeeded"

    model_bytes = (out / "model.onnx").read_bytes()
    digest = hashlib.sha256(model_bytes).hexdigest()
    assert result["modelDigest"] == f"sha256:{digest}"
    assert (out / "model.onnx.sha256").read_text().split()[0] == digest
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["source"]["digest"] == f"sha256:{bike.model_sha256}"
    assert meta["model"]["sha256"] == digest
    assert meta["data"]["digest"] == result["dataDigest"] == "sha256:" + hashlib.sha256(bike.data_csv.read_bytes()).hexdigest()
    assert meta["hyperParameters"]["epochs"] == 30 and meta["hyperParameters"]["seed"] == 3
    assert len(meta["training"]["curve"]) == meta["training"]["epochs_run"] >= 1
    assert {"torch", "onnx", "onnxruntime"} <= set(meta["versions"])
    # The head sits on the source's hidden layer, and the result is one graph with the source's signature.
    assert meta["strategyDetails"]["featureOutput"] == "hidden"
    adapted = onnx.load(str(out / "model.onnx"))
    source = onnx.load(str(bike.model_path))
    assert [i.name for i in adapted.graph.input] == [i.name for i in source.graph.input]
    assert [o.name for o in adapted.graph.output] == [o.name for o in source.graph.output]

    before = _score(bike, str(bike.model_path))
    after = _score(bike, str(out / "model.onnx"))
    assert after > before, (before, after)


@pytest.mark.parametrize("kind", ["torchscript", "torch-export"])
def test_bikeshare_full_fine_tuning_improves(bike, tmp_path, kind):
    body = _task(bike, strategy="full", learningRate=0.001, epochs=25)
    body["source"] = {"uri": str(bike.extra_models[kind]), "labels": bike.labels}
    result = adapt(AdaptTask.model_validate(body), str(tmp_path / "v2"), device="cpu")
    assert result.ok
    before = _score(bike, str(bike.model_path))
    after = _score(bike, result.model_uri)
    assert after > before, (before, after)


def test_full_fine_tunes_only_the_last_layers(bike, tmp_path):
    body = _task(bike, strategy="full", learningRate=0.001, epochs=3, trainableLayers=1)
    body["source"] = {"uri": str(bike.extra_models["torchscript"]), "labels": bike.labels}
    result = adapt(AdaptTask.model_validate(body), str(tmp_path / "v2"), device="cpu")
    meta = json.loads((tmp_path / "v2" / "metadata.json").read_text())
    assert meta["strategyDetails"]["trainableParameters"] == ["classifier.bias", "classifier.weight"]
    import torch

    source = torch.jit.load(str(bike.extra_models["torchscript"]))
    weights = _weights(result.model_uri)
    frozen = dict(source.named_parameters())
    # The exporter may fold weights into differently named tensors; every frozen weight must still be
    # present unchanged, and the classifier must have moved.
    flat = [w.ravel() for w in weights.values()]
    for name in ("body.0.weight", "body.2.weight"):
        want = frozen[name].detach().numpy().ravel()
        assert any(f.shape == want.shape and np.array_equal(f, want) for f in flat), name
    head = frozen["classifier.weight"].detach().numpy()
    assert not any(f.shape == head.ravel().shape and np.array_equal(f, head.ravel()) for f in flat)


def test_sentiment_head_improves_apple_holdout_by_a_clear_margin(tweets, tmp_path):
    body = _task(tweets, epochs=60, learningRate=0.001)
    result = adapt(AdaptTask.model_validate(body), str(tmp_path / "v2"), device="cpu")
    assert result.ok and result.extra["labels"] == tweets.labels
    meta = json.loads((tmp_path / "v2" / "metadata.json").read_text())
    assert meta["strategyDetails"]["featureOutput"] == "embedding"
    before = _score(tweets, str(tweets.model_path))
    after = _score(tweets, result.model_uri)
    assert after >= before + 0.08, (before, after)


# --------------------------------------------------------------------------------------------------------
# The holdout is never trained on


def test_no_holdout_row_is_ever_trained_on(bike, tmp_path):
    frame = pd.read_csv(bike.data_csv)
    spec = AdaptTask.model_validate(_task(bike)).data
    held = data_io.holdout_mask(np.arange(len(frame)), spec.holdout)
    assert 0 < held.sum() < len(frame)
    # Poison every holdout row: a label the model does not know and NaN features. Reading any of them
    # into training would fail with UnknownLabels or InvalidFeatures.
    frame = frame.astype({"temp": "float64"})
    frame.loc[held, "flow"] = "poison"
    frame.loc[held, "temp"] = np.nan
    poisoned = tmp_path / "poisoned.csv"
    frame.to_csv(poisoned, index=False)

    body = _task(bike, epochs=2)
    body["data"]["uri"] = str(poisoned)
    task = AdaptTask.model_validate(body)
    rows = load_rows(task, bike.labels)
    assert len(rows) == int((~held).sum())
    assert not held[rows.row_index].any()
    result = adapt(task, str(tmp_path / "v2"), device="cpu")
    assert result.ok and result.samples == int((~held).sum())
    meta = json.loads((tmp_path / "v2" / "metadata.json").read_text())
    assert meta["data"]["files"][0]["trainingRows"] == int((~held).sum())


def test_captured_feedback_adds_training_rows(bike, tmp_path):
    frame = pd.read_csv(bike.source_data_csv).head(40)
    capture = tmp_path / "capture" / "bikeshare" / "v1"
    capture.mkdir(parents=True)
    lines = []
    for i in range(0, 40, 10):
        part = frame.iloc[i : i + 10]
        lines.append({"kind": "inference", "id": f"r{i}", "time": 1.0, "model": "bikeshare", "version": "1",
                      "inputs": {"features": part[bike.features].to_numpy().tolist()},
                      "outputs": {"probabilities": [[0.5, 0.5]] * len(part)}})
        lines.append({"kind": "feedback", "id": f"r{i}", "time": 2.0, "model": "bikeshare", "version": "1",
                      "labels": part["flow"].tolist()})
    lines.append({"kind": "inference", "id": "unlabelled", "time": 1.0, "model": "bikeshare", "version": "1",
                  "inputs": {"features": [[1, 2, 3, 4, 5]]}, "outputs": {}})
    (capture / "part-000001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    body = _task(bike, epochs=2)
    body["extraData"] = [str(tmp_path / "capture")]
    rows = load_rows(AdaptTask.model_validate(body), bike.labels)
    assert int((rows.origin == 1).sum()) == 40
    np.testing.assert_array_equal(rows.features[rows.origin == 1], frame[bike.features].to_numpy(np.float32))


# --------------------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("strategy", ["head", "full"])
def test_same_inputs_and_seed_give_the_same_weights(bike, tmp_path, strategy):
    def run(seed: int, name: str) -> dict[str, np.ndarray]:
        body = _task(bike, strategy=strategy, epochs=3, seed=seed)
        if strategy == "full":
            body["source"] = {"uri": str(bike.extra_models["torchscript"]), "labels": bike.labels}
        return _weights(adapt(AdaptTask.model_validate(body), str(tmp_path / name), device="cpu").model_uri)

    first, second, other = run(5, "a"), run(5, "b"), run(6, "c")
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert any(not np.array_equal(first[n], other[n]) for n in first), "the seed must matter"


# --------------------------------------------------------------------------------------------------------
# Bad input


def _expect(reason: str, body: dict, out, **kwargs) -> str:
    with pytest.raises(WorkloadError) as caught:
        adapt(AdaptTask.model_validate(body), str(out), device="cpu", **kwargs)
    assert caught.value.reason == reason, caught.value.message
    _one_sentence(caught.value.message)
    return caught.value.message


def test_too_few_labelled_rows(bike, tmp_path):
    small = tmp_path / "small.csv"
    pd.read_csv(bike.data_csv).head(15).to_csv(small, index=False)
    body = _task(bike)
    body["data"]["uri"] = str(small)
    message = _expect("TooFewRows", body, tmp_path / "out")
    assert "holdout" in message and not (tmp_path / "out").exists()


def test_labels_outside_the_source_set_unless_extended(bike, tmp_path):
    frame = pd.read_csv(bike.data_csv)
    frame.loc[frame["bikers"] > 500, "flow"] = "peak"
    extended = tmp_path / "peak.csv"
    frame.to_csv(extended, index=False)
    body = _task(bike, epochs=5)
    body["data"]["uri"] = str(extended)
    message = _expect("UnknownLabels", body, tmp_path / "out")
    assert "'peak'" in message and "extendLabels" in message
    body["adaptation"]["strategy"] = "full"
    body["source"] = {"uri": str(bike.extra_models["torchscript"]), "labels": bike.labels}
    body["extendLabels"] = ["peak"]
    _expect("UnsupportedStrategy", body, tmp_path / "out")

    body = _task(bike, epochs=5)
    body["data"]["uri"] = str(extended)
    body["extendLabels"] = ["peak"]
    result = adapt(AdaptTask.model_validate(body), str(tmp_path / "v2"), device="cpu")
    assert result.extra["labels"] == ["low", "high", "peak"]
    body["source"]["uri"] = result.model_uri
    body["source"]["labels"] = result.extra["labels"]
    body["source"].pop("sha256")
    report = evaluate({k: body[k] for k in ("source", "data", "evaluation")})
    assert report["labels"] == ["low", "high", "peak"]
    peak = next(c for c in report["perClass"] if c["label"] == "peak")
    assert peak["support"] > 0 and peak["predicted"] > 0


def test_nan_features_in_training_rows(bike, tmp_path):
    frame = pd.read_csv(bike.data_csv)
    spec = AdaptTask.model_validate(_task(bike)).data
    first_train = int(np.flatnonzero(~data_io.holdout_mask(np.arange(len(frame)), spec.holdout))[0])
    frame.loc[first_train, "hum"] = np.nan
    bad = tmp_path / "nan.csv"
    frame.to_csv(bad, index=False)
    body = _task(bike)
    body["data"]["uri"] = str(bad)
    message = _expect("InvalidFeatures", body, tmp_path / "out")
    assert "'hum'" in message


def test_full_on_an_onnx_source(bike, tmp_path):
    message = _expect("UnsupportedStrategy", _task(bike, strategy="full"), tmp_path / "out")
    assert "strategy head" in message


def test_strategy_none_and_head_on_torch(bike, tmp_path):
    _expect("UnsupportedStrategy", _task(bike, strategy="none"), tmp_path / "out")
    body = _task(bike)
    body["source"] = {"uri": str(bike.extra_models["torch-export"]), "labels": bike.labels}
    _expect("UnsupportedStrategy", body, tmp_path / "out")


def test_pinned_digest_mismatch(bike, tmp_path):
    body = _task(bike)
    body["source"]["sha256"] = "0" * 64
    _expect("DigestMismatch", body, tmp_path / "out")


def test_time_budget_spent_before_training(bike, tmp_path):
    ticks = iter(range(0, 10_000_000, 1000))
    body = _task(bike, maxSeconds=5)
    _expect("TimeBudgetExceeded", body, tmp_path / "out", clock=lambda: float(next(ticks)))


def test_cli_reports_a_bad_task_with_its_exit_code(bike, tmp_path):
    log = tmp_path / "termination-log"
    body = _task(bike, strategy="full")
    done = _cli("--out", str(tmp_path / "out"), "--task", json.dumps(body), "--termination-log", str(log))
    assert done.returncode == EXIT_CODES["UnsupportedStrategy"]
    result = json.loads(log.read_text())
    assert result["ok"] is False and result["reason"] == "UnsupportedStrategy"
    _one_sentence(result["message"])

    done = _cli("--out", str(tmp_path / "out"), "--task", '{"data": {"target": "flow"}}', "--termination-log", str(log))
    assert done.returncode == EXIT_CODES["InvalidTask"]
    assert json.loads(log.read_text())["reason"] == "InvalidTask"
