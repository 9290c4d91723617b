"""`modelreuse evaluate` as a real process on real data and models: metrics equal scikit-learn's on the same
holdout predictions, the digest pin, the termination message, the report, and every kind of bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
from conftest import WINE_LABELS, run_evaluate, sha256
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from modelreuse.api.spec import Holdout
from modelreuse.runtime.data import holdout_mask
from modelreuse.runtime.errors import EXIT_CODES

TOL = 1e-12


def _holdout(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    return frame[holdout_mask(np.arange(len(frame)), Holdout(fraction=fraction, seed=seed))]


def _onnx_predict(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0].argmax(axis=1)


def _sklearn(y_true, y_pred, average: str, pos_label=None) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {"pos_label": pos_label} if average == "binary" else {}
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0, **kwargs)
    return {"precision": p, "recall": r, "f1": f, "accuracy": accuracy_score(y_true, y_pred)}


def _assert_result(run, expected: dict[str, float], samples: int, w1: float = 0.5):
    assert run.rc == 0, run.stderr
    result = run.result
    assert result["ok"] is True and result["reason"] == "Succeeded"
    for key, value in expected.items():
        assert abs(result[key] - value) <= TOL, key
    assert abs(result["score"] - (w1 * expected["precision"] + (1 - w1) * expected["recall"])) <= TOL
    assert result["samples"] == samples
    # The termination message is the same document as stdout, within 4 KiB.
    assert json.loads(run.termination) == result
    assert len(run.termination.encode()) <= 4096


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_bikeshare_metrics_equal_sklearn(bikes, tmp_path, fmt):
    frame = pd.read_csv(bikes.data_csv)
    data = {"csv": bikes.data_csv, "parquet": bikes.data_parquet, "jsonl": tmp_path / "autumn.jsonl"}[fmt]
    if fmt == "jsonl":
        frame.to_json(data, orient="records", lines=True)
    held = _holdout(frame, bikes.holdout_fraction, bikes.holdout_seed)
    predicted = np.array(bikes.labels)[_onnx_predict(bikes.model_path, held[bikes.features].to_numpy(np.float32))]
    expected = _sklearn(held[bikes.target], predicted, "macro")

    run = run_evaluate("--data", str(data), "--report", str(tmp_path / "report"), tmp=tmp_path,
                       task=bikes.task(threshold=0.5))
    _assert_result(run, expected, len(held))
    result = run.result
    assert result["modelDigest"] == f"sha256:{bikes.model_sha256}"
    assert result["dataDigest"] == f"sha256:{sha256(data)}"
    assert result["extra"]["passed"] is True and result["extra"]["rowsRead"] == len(frame)

    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert result["reportUri"] == str(tmp_path / "report" / "report.json")
    counts = np.array(report["confusionMatrix"])
    assert counts.sum() == len(held)
    truth = held[bikes.target].to_numpy()
    for i, true_label in enumerate(bikes.labels):
        for j, predicted_label in enumerate(bikes.labels):
            assert counts[i, j] == int(((truth == true_label) & (predicted == predicted_label)).sum())
    assert [c["label"] for c in report["perClass"]] == bikes.labels
    stats = {f["name"]: f for f in json.loads((tmp_path / "report" / "feature-stats.json").read_text())["features"]}
    for name in bikes.features:
        column = held[name].to_numpy(np.float32).astype(np.float64)
        assert stats[name]["count"] == len(held) and sum(stats[name]["histogram"]["counts"]) == len(held)
        assert abs(stats[name]["mean"] - column.mean()) < 1e-9
        assert abs(stats[name]["std"] - column.std()) < 1e-9
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Confusion matrix" in markdown and f"| samples | {len(held)} |" in markdown
    assert "rows/s" in run.stderr


@pytest.mark.parametrize("fmt", ["torchscript", "torch-export"])
def test_torch_archives_are_scored_like_torch_predicts(bikes, tmp_path, fmt):
    import torch

    path = bikes.extra_models[fmt]
    frame = pd.read_csv(bikes.data_csv)
    held = _holdout(frame, bikes.holdout_fraction, bikes.holdout_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    with torch.no_grad():
        scores = module(torch.tensor(held[bikes.features].to_numpy(np.float32))).numpy()
    predicted = np.array(bikes.labels)[scores.argmax(axis=1)]
    task = bikes.task(threshold=0.5)
    task["source"] = {"uri": str(path), "format": fmt, "sha256": sha256(path), "labels": bikes.labels}
    run = run_evaluate(tmp=tmp_path, task=task)
    _assert_result(run, _sklearn(held[bikes.target], predicted, "macro"), len(held))


@pytest.mark.parametrize("average", ["weighted", "micro"])
def test_wine_three_classes_from_task_file(wine, tmp_path, average):
    frame = wine["frame"]
    held = _holdout(frame, 0.5, 3)
    predicted = np.array(WINE_LABELS)[_onnx_predict(wine["model"], held[wine["features"]].to_numpy(np.float32))]
    task = {
        "source": {"uri": str(wine["model"]), "labels": WINE_LABELS},
        "data": {"uri": str(wine["csv"]), "features": wine["features"], "target": "cultivar",
                 "holdout": {"fraction": 0.5, "seed": 3}},
        "evaluation": {"average": average, "threshold": 0.9,
                       "score": {"precisionWeight": 0.25, "recallWeight": 0.75}},
    }
    (tmp_path / "task.json").write_text(json.dumps(task))
    run = run_evaluate("--task-file", str(tmp_path / "task.json"), tmp=tmp_path)
    _assert_result(run, _sklearn(held["cultivar"], predicted, average), len(held), w1=0.25)


def test_binary_average_from_flags(bikes, tmp_path):
    frame = pd.read_csv(bikes.data_csv)
    held = _holdout(frame, 0.4, 11)
    predicted = np.array(bikes.labels)[_onnx_predict(bikes.model_path, held[bikes.features].to_numpy(np.float32))]
    run = run_evaluate(
        "--model", str(bikes.model_path), "--data", str(bikes.data_parquet), "--features", ",".join(bikes.features),
        "--target", bikes.target, "--labels", ",".join(bikes.labels), "--average", "binary", "--positive-label",
        "high", "--threshold", "0.99", "--holdout-fraction", "0.4", "--holdout-seed", "11", tmp=tmp_path,
    )
    _assert_result(run, _sklearn(held[bikes.target], predicted, "binary", pos_label="high"), len(held))
    assert run.result["extra"]["passed"] is False  # a score below the gate is a result, not a failure


def test_inputs_matched_by_name(wine, tmp_path):
    # The model has one input per feature; the data lists them in the other order, with an extra column.
    task = {
        "source": {"uri": str(wine["pair"]), "labels": WINE_LABELS},
        "data": {"uri": str(wine["csv"]), "features": ["proline", "hue", "alcohol"], "target": "cultivar",
                 "holdout": {"fraction": 1.0}},
        "evaluation": {"threshold": 0.5},
    }
    import onnxruntime as ort

    frame = wine["frame"]
    session = ort.InferenceSession(str(wine["pair"]), providers=["CPUExecutionProvider"])
    feeds = {c: frame[[c]].to_numpy(np.float32) for c in wine["pair_features"]}
    predicted = np.array(WINE_LABELS)[session.run(None, feeds)[0].argmax(axis=1)]
    run = run_evaluate(tmp=tmp_path, task=task)
    _assert_result(run, _sklearn(frame["cultivar"], predicted, "macro"), len(frame))


def test_text_model_on_new_domain_tweets(tmp_path):
    from tokenizers import Tokenizer

    from modelreuse.scenarios import sentiment

    scenario = sentiment.build()
    frame = pd.read_parquet(scenario.data_parquet)
    held = _holdout(frame, scenario.holdout_fraction, scenario.holdout_seed)
    import onnxruntime as ort

    tok = Tokenizer.from_file(str(scenario.tokenizer_path))
    session = ort.InferenceSession(str(scenario.model_path), providers=["CPUExecutionProvider"])
    predicted = []
    for start in range(0, len(held), 64):
        enc = tok.encode_batch(list(held[scenario.text_column].iloc[start : start + 64].astype(str)))
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
        predicted.append(session.run(None, feeds)[0].argmax(axis=1))
    labels = np.array(scenario.labels)[np.concatenate(predicted)]
    run = run_evaluate("--batch-rows", "64", tmp=tmp_path, task=scenario.task(data_uri=str(scenario.data_parquet)))
    _assert_result(run, _sklearn(held[scenario.target], labels, "macro"), len(held))


def test_digest_pin_mismatch_stops_with_its_own_exit_code(bikes, tmp_path):
    task = bikes.task()
    task["source"]["sha256"] = "0" * 64
    run = run_evaluate(tmp=tmp_path, task=task)
    assert run.rc == EXIT_CODES["DigestMismatch"] == 3
    assert run.result["ok"] is False and run.result["reason"] == "DigestMismatch"
    assert bikes.model_sha256 in run.result["message"]
    assert json.loads(run.termination) == run.result
    assert "score" not in run.result


def test_python_api_writes_report_to_any_fsspec_uri(bikes):
    from modelreuse.runtime.evaluate import evaluate

    report = evaluate(bikes.task(), report_uri="memory://reports/bikes/eval.json", progress_interval=-1)
    assert report["reportUri"] == "memory://reports/bikes/eval.json"
    with fsspec.open("memory://reports/bikes/eval.json") as fh:
        stored = json.loads(fh.read())
    with fsspec.open("memory://reports/bikes/eval.md", "rt") as fh:
        assert "# Evaluation report" in fh.read()
    with fsspec.open("memory://reports/bikes/eval.stats.json") as fh:
        assert json.loads(fh.read()) == report["featureStats"]
    assert stored["metrics"] == report["metrics"]
    assert stored["data"]["rowsScored"] == report["metrics"]["samples"] > 0


# ---------------------------------------------------------------------------------------------------------
# Bad input: a reason code, one sentence, the exit code for that reason, never a bare traceback.


def _bad_cases(bikes, wine, tmp: Path):
    frame = pd.read_csv(bikes.data_csv)
    base = bikes.task()

    def task(**parts):
        out = json.loads(json.dumps(base))
        for path, value in parts.items():
            node = out
            *parents, leaf = path.split("__")
            for key in parents:
                node = node[key]
            node[leaf] = value
        return out

    def write(name, df):
        path = tmp / name
        df.to_csv(path, index=False) if name.endswith(".csv") else df.to_parquet(path, index=False)
        return str(path)

    nan = frame.copy()
    nan[bikes.features] = nan[bikes.features].astype(float)
    nan.loc[nan.index[::2], "temp"] = np.nan
    text = frame.astype({"hum": str})
    text.loc[text.index[::2], "hum"] = "humid"
    model = bikes.model_path.read_bytes()
    (tmp / "truncated.onnx").write_bytes(model[: len(model) // 2])
    (tmp / "notes.onnx").write_text("this is not a model\n")
    scripted = bikes.extra_models["torchscript"].read_bytes()
    (tmp / "truncated.pt").write_bytes(scripted[: len(scripted) // 3])

    def model_at(path, fmt=None):
        source = {"uri": str(path), "labels": bikes.labels}
        if fmt:
            source["format"] = fmt
        return source

    return {
        "missing-column": ("MissingColumns", task(data__features=[*bikes.features[:-1], "windspeed_kmh"])),
        "label-not-in-set": ("UnknownLabels", task(source__labels=["low", "medium"])),
        "empty-data": ("EmptyData", task(data__uri=write("empty.csv", frame.iloc[:0]))),
        "nan-features": ("InvalidFeatures", task(data__uri=write("nan.parquet", nan))),
        "non-numeric-features": ("InvalidFeatures", task(data__uri=write("text.csv", text))),
        "too-few-features": ("ModelInputMismatch", task(data__features=bikes.features[:4])),
        "input-names": ("ModelInputMismatch", {
            "source": {"uri": str(wine["pair"]), "labels": WINE_LABELS},
            "data": {"uri": str(wine["csv"]), "features": ["alcohol", "hue"], "target": "cultivar"},
            "evaluation": {"threshold": 0.5}}),
        "text-for-tabular-model": ("ModelInputMismatch", {**base, "data": {
            "uri": str(bikes.data_csv), "textColumn": "flow", "target": "flow"}}),
        "label-count": ("ModelOutputMismatch", task(source__labels=["low", "mid", "high"])),
        "truncated-onnx": ("CorruptModel", {**base, "source": model_at(tmp / "truncated.onnx")}),
        "not-a-model": ("CorruptModel", {**base, "source": model_at(tmp / "notes.onnx")}),
        "truncated-torchscript": ("CorruptModel", {**base, "source": model_at(tmp / "truncated.pt", "torchscript")}),
        "unknown-model-suffix": ("UnsupportedModel", {**base, "source": model_at(tmp / "model.bin")}),
        "unreadable-data": ("UnreadableUri", task(data__uri=str(tmp / "no-such-file.csv"))),
        "unreadable-model": ("UnreadableUri", {**base, "source": model_at(tmp / "gone.onnx")}),
        "invalid-task": ("InvalidTask", task(evaluation__threshold=1.5)),
        "binary-without-positive": ("InvalidTask", task(evaluation__average="binary")),
    }


BAD = [
    "missing-column", "label-not-in-set", "empty-data", "nan-features", "non-numeric-features", "too-few-features",
    "input-names", "text-for-tabular-model", "label-count", "truncated-onnx", "not-a-model", "truncated-torchscript",
    "unknown-model-suffix", "unreadable-data", "unreadable-model", "invalid-task", "binary-without-positive",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_ends_with_reason_and_sentence(bikes, wine, tmp_path, case):
    reason, task = _bad_cases(bikes, wine, tmp_path)[case]
    if case == "input-names":
        task["data"]["holdout"] = {"fraction": 1.0}
    run = run_evaluate(tmp=tmp_path, task=task)
    assert run.rc == EXIT_CODES[reason], run.stderr
    assert run.result["ok"] is False and run.result["reason"] == reason
    message = run.result["message"]
    assert message and message.endswith((".", "?")) and "\n" not in message
    assert "Traceback" not in run.stderr
    assert json.loads(run.termination) == run.result


def test_task_flags_conflict_and_bad_json(tmp_path):
    run = run_evaluate("--task", "{not json", tmp=tmp_path)
    assert run.rc == EXIT_CODES["InvalidTask"] and run.result["reason"] == "InvalidTask"
    run = run_evaluate("--model", "x.onnx", tmp=tmp_path)
    assert run.rc == EXIT_CODES["InvalidTask"] and "data" in run.result["message"]
