"""``modelreuse serve`` as a real process on loopback: tritonclient round trips, every bad input, metrics
through promtool, feedback, the text model, the sha256 refusal, and data capture flushed on SIGTERM."""

from __future__ import annotations

import http.client
import json
import pathlib
import signal
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.http as triton
from serve_support import (
    MLP_LABELS,
    N_FEATURES,
    TEXT_LABELS,
    ServerProcess,
    get_json,
    get_text,
    make_mlp,
    make_text_model,
    mlp_reference,
    post_json,
    sha256,
)
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.timeout(180)
MAX_BODY = 64 * 1024
REFERENCE = {"features": [f"f{i}" for i in range(N_FEATURES)], "mean": [0.0] * N_FEATURES, "std": [1.0] * N_FEATURES}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("models")
    make_mlp(folder)
    text = folder / "text"
    text.mkdir()
    make_text_model(text)
    (folder / "reference.json").write_text(json.dumps(REFERENCE))
    return folder


@pytest.fixture(scope="module")
def mlp_server(models, tmp_path_factory):
    capture = tmp_path_factory.mktemp("capture")
    model = models / "mlp.onnx"
    server = ServerProcess(
        [
            "--model", model.as_uri(), "--name", "bikes", "--version", "3", "--sha256", sha256(model),
            "--labels", *MLP_LABELS, "--max-body-bytes", str(MAX_BODY), "--reference-stats", str(models / "reference.json"),
            "--capture-uri", capture.as_uri(), "--capture-rate", "1",
        ],
        termination_log=capture / "termination-log",
    )
    server.wait_ready()
    server.capture_dir = capture
    yield server
    server.stop()


@pytest.fixture()
def client(mlp_server):
    c = triton.InferenceServerClient(f"127.0.0.1:{mlp_server.port}")
    yield c
    c.close()


def rows(n: int, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, N_FEATURES)) + shift).astype(np.float32)


def test_health_and_metadata_through_tritonclient(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("bikes")
    assert client.is_model_ready("bikes", "3")
    assert not client.is_model_ready("bikes", "4")
    assert not client.is_model_ready("other")
    server = client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("bikes", "3")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}]
    assert [o["name"] for o in meta["outputs"]] == ["logits", "label"]
    assert client.get_model_config("bikes")["max_batch_size"] == 64


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_through_tritonclient_matches_onnxruntime(client, models, binary):
    x = rows(7, seed=1)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [triton.InferRequestedOutput("logits", binary_data=binary), triton.InferRequestedOutput("label", binary_data=binary)]
    result = client.infer("bikes", [tensor], model_version="3", outputs=outputs, request_id=f"tc-{binary}")
    want = mlp_reference(models / "mlp.onnx", x)
    np.testing.assert_allclose(result.as_numpy("logits"), want, rtol=1e-5, atol=1e-6)
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").ravel()]
    assert labels == [MLP_LABELS[i] for i in want.argmax(axis=1)]
    assert result.get_response()["id"] == f"tc-{binary}"


def test_infer_without_named_outputs_returns_all_and_output_selection_works(client, mlp_server):
    x = rows(3, seed=2)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("bikes", [tensor])
    assert {o["name"] for o in result.get_response()["outputs"]} == {"logits", "label"}
    status, doc, _ = post_json(
        mlp_server.url + "/v2/models/bikes/infer",
        {"inputs": [{"name": "input", "shape": [3, N_FEATURES], "datatype": "FP32", "data": x.ravel().tolist()}],
         "outputs": [{"name": "label"}]},
    )
    assert status == 200
    assert [o["name"] for o in doc["outputs"]] == ["label"]
    assert doc["outputs"][0]["shape"] == [3] and doc["model_version"] == "3"
    assert doc["id"]  # the server names requests that came without an id, so feedback can refer to them


def _one_row(**over):
    tensor = {"name": "input", "shape": [1, N_FEATURES], "datatype": "FP32", "data": [0.1] * N_FEATURES}
    tensor.update(over)
    return {"inputs": [tensor]}


BAD_INPUTS = [
    # (case, path, raw body or doc, headers, status, reason)
    ("malformed JSON", "/v2/models/bikes/infer", b'{"inputs": [', {}, 400, "MalformedJson"),
    ("wrong tensor name", "/v2/models/bikes/infer", _one_row(name="features"), {}, 400, "UnknownInput"),
    ("wrong rank", "/v2/models/bikes/infer", _one_row(shape=[N_FEATURES]), {}, 400, "ShapeMismatch"),
    ("wrong width", "/v2/models/bikes/infer", _one_row(shape=[1, 4], data=[0.1] * 4), {}, 400, "ShapeMismatch"),
    ("wrong datatype", "/v2/models/bikes/infer", _one_row(datatype="INT64", data=[1] * N_FEATURES), {}, 400, "DatatypeMismatch"),
    ("too many elements", "/v2/models/bikes/infer", _one_row(data=[0.1] * (N_FEATURES + 1)), {}, 400, "ElementCountMismatch"),
    ("text in numbers", "/v2/models/bikes/infer", _one_row(data=["a"] * N_FEATURES), {}, 400, "DatatypeMismatch"),
    ("no rows", "/v2/models/bikes/infer", _one_row(shape=[0, N_FEATURES], data=[]), {}, 400, "EmptyBatch"),
    ("unknown output", "/v2/models/bikes/infer", {**_one_row(), "outputs": [{"name": "probs"}]}, {}, 400, "UnknownOutput"),
    ("input twice", "/v2/models/bikes/infer", {"inputs": _one_row()["inputs"] * 2}, {}, 400, "DuplicateInput"),
    ("unknown model", "/v2/models/cars/infer", _one_row(), {}, 404, "UnknownModel"),
    ("unknown version", "/v2/models/bikes/versions/9/infer", _one_row(), {}, 404, "UnknownVersion"),
    ("unknown path", "/v3/anything", _one_row(), {}, 404, "NotFound"),
    ("wrong method", "/v2/health/live", _one_row(), {}, 405, "MethodNotAllowed"),
    ("payload over the limit", "/v2/models/bikes/infer", b"{" + b" " * (MAX_BODY + 10) + b"}", {}, 413, "PayloadTooLarge"),
    ("binary header past the body", "/v2/models/bikes/infer", _one_row(), {"Inference-Header-Content-Length": "99999"}, 400, "InvalidHeader"),
    ("feedback for an unknown label", "/v2/models/bikes/feedback", {"id": "x", "labels": ["medium"]}, {}, 400, "UnknownLabels"),
    ("feedback not JSON", "/v2/models/bikes/feedback", b"labels=1", {}, 400, "MalformedJson"),
]


@pytest.mark.parametrize("case, path, payload, headers, status, reason", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_json_4xx(mlp_server, case, path, payload, headers, status, reason):
    raw = payload if isinstance(payload, bytes) else None
    got, doc, _ = post_json(mlp_server.url + path, payload, headers=headers, raw=raw)
    assert (got, doc["reason"]) == (status, reason), doc
    assert doc["error"].endswith(".")
    assert mlp_server.proc.poll() is None


def test_chunked_body_over_the_limit_gets_413(mlp_server):
    conn = http.client.HTTPConnection("127.0.0.1", mlp_server.port, timeout=30)
    chunks = (b" " * 8192 for _ in range(MAX_BODY // 8192 + 2))
    conn.request("POST", "/v2/models/bikes/infer", body=chunks, headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = conn.getresponse()
    doc = json.loads(response.read())
    assert response.status == 413 and doc["reason"] == "PayloadTooLarge"
    conn.close()


def test_tritonclient_sees_errors_as_exceptions_with_the_status(client):
    tensor = triton.InferInput("input", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("bikes", [tensor])
    assert info.value.status() == "400"
    assert "takes [-1, 5]" in info.value.message()


def test_feedback_drives_live_accuracy_and_metrics_pass_promtool(mlp_server, models):
    x = rows(20, seed=3, shift=2.0)
    predicted = mlp_reference(models / "mlp.onnx", x).argmax(axis=1)
    ids = []
    for i in range(0, 20, 4):
        status, doc, _ = post_json(
            mlp_server.url + "/v2/models/bikes/versions/3/infer",
            {"id": f"fb-{i}", "inputs": [{"name": "input", "shape": [4, N_FEATURES], "datatype": "FP32", "data": x[i : i + 4].ravel().tolist()}]},
        )
        assert status == 200
        ids.append(doc["id"])
    # Truth: the prediction for the first 15 rows, the other class for the last 5 -> accuracy 0.75.
    truth = [int(p) if k < 15 else 1 - int(p) for k, p in enumerate(predicted)]
    items = [{"id": ids[j], "labels": [MLP_LABELS[t] for t in truth[4 * j : 4 * j + 4]]} for j in range(5)]
    status, doc, _ = post_json(mlp_server.url + "/v2/models/bikes/feedback", {"feedback": items + [{"id": "never-sent", "label": 0}]})
    assert status == 200
    assert (doc["rows"], doc["correct"], doc["unknown_ids"]) == (20, 15, ["never-sent"])
    text = get_text(mlp_server.url + "/metrics")
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    base = 'model="bikes",version="3"'
    assert samples[f"modelreuse_live_accuracy{{{base}}}"] == pytest.approx(0.75)
    assert samples[f'modelreuse_feedback_total{{model="bikes",outcome="incorrect",version="3"}}'] >= 5
    assert samples[f"modelreuse_model_ready{{{base}}}"] == 1.0
    # Every predicted row is counted under its class, and the batches carried every row.
    predictions = sum(v for k, v in samples.items() if k.startswith("modelreuse_predictions_total"))
    assert predictions == samples[f"modelreuse_batch_size_rows_sum{{{base}}}"] >= 20
    assert samples[f'modelreuse_requests_total{{code="200",endpoint="feedback",{base}}}'] >= 1
    # The shifted rows moved every feature mean away from the reference (mean 0, std 1).
    assert samples[f"modelreuse_input_drift_score{{{base}}}"] > 0.1


def test_text_model_tokenizes_bytes_on_the_server(models, tmp_path):
    model = models / "text" / "text.onnx"
    # evaluate records the text length for text models; the server compares live text lengths with it.
    reference = tmp_path / "feature-stats.json"
    reference.write_text(json.dumps({"format": 1, "features": [{"name": "textLength", "count": 100, "mean": 10.0, "std": 5.0}]}))
    args = ["--model", str(model), "--name", "tweets", "--labels", *TEXT_LABELS, "--reference-stats", str(reference)]
    with ServerProcess(args, termination_log=tmp_path / "t") as server:
        server.wait_ready()
        c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        meta = c.get_model_metadata("tweets")
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        texts = ["great flight love it", "awful phone", "the flight was okay okay okay meh"]
        tensor = triton.InferInput("text", [3], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
        result = c.infer("tweets", [tensor])
        logits = result.as_numpy("logits")
        # The same rows one at a time (no padding) must give the same logits: the mask works.
        for i, text in enumerate(texts):
            status, doc, _ = post_json(
                server.url + "/v2/models/tweets/infer",
                {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [[text]]}]},
            )
            assert status == 200
            np.testing.assert_allclose(doc["outputs"][0]["data"], logits[i], rtol=1e-5, atol=1e-6)
            assert doc["outputs"][1]["data"] == [TEXT_LABELS[int(np.argmax(logits[i]))]]
        status, doc, _ = post_json(
            server.url + "/v2/models/tweets/infer",
            {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
        )
        assert (status, doc["reason"]) == (400, "DatatypeMismatch")
        # Texts of 11-33 characters against a reference mean of 10 (std 5): a clear positive shift.
        drift = [line for line in get_text(server.url + "/metrics").splitlines() if line.startswith("modelreuse_input_drift_score")]
        assert len(drift) == 1 and float(drift[0].rsplit(" ", 1)[1]) > 0.5
        c.close()
        code, result = server.stop()
    assert code == 0 and result["ok"] and result["extra"]["inferences"] == 4


def test_missing_reference_stats_only_turn_the_drift_score_off(models, tmp_path):
    args = ["--model", str(models / "mlp.onnx"), "--name", "bikes", "--reference-stats", str(tmp_path / "absent.json")]
    with ServerProcess(args, termination_log=tmp_path / "t") as server:
        server.wait_ready()
        status, _, _ = post_json(server.url + "/v2/models/bikes/infer", _one_row())
        assert status == 200
        assert "modelreuse_input_drift_score" not in get_text(server.url + "/metrics")
        code, result = server.stop()
    assert code == 0 and result["ok"]
    assert any("no drift score" in line for line in server.stderr_lines)


def test_digest_mismatch_refuses_to_become_ready(models, tmp_path):
    model = models / "mlp.onnx"
    server = ServerProcess(["--model", str(model), "--name", "bikes", "--sha256", "0" * 64], termination_log=tmp_path / "t")
    code = server.proc.wait(60)
    _, result = server.stop()
    assert code == 3
    assert result["reason"] == "DigestMismatch" and not result["ok"]
    assert json.loads((tmp_path / "t").read_text())["reason"] == "DigestMismatch"


def test_sigterm_under_load_answers_in_flight_and_writes_every_captured_record(models, tmp_path):
    capture = tmp_path / "capture"
    model = models / "mlp.onnx"
    server = ServerProcess(
        ["--model", str(model), "--name", "bikes", "--labels", *MLP_LABELS, "--capture-uri", str(capture),
         "--capture-rate", "1", "--capture-queue", "100000"],
        termination_log=tmp_path / "t",
    )
    server.wait_ready()
    answered: list[str] = []
    stop = threading.Event()
    body = json.dumps(_one_row()).encode()

    def load(worker: int):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        n = 0
        while not stop.is_set():
            n += 1
            request_id = f"w{worker}-{n}"
            doc = json.loads(body)
            doc["id"] = request_id
            try:
                conn.request("POST", "/v2/models/bikes/infer", body=json.dumps(doc), headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                return  # the server closed the connection while stopping
            if response.status == 200:
                answered.append(json.loads(payload)["id"])
            else:
                assert response.status == 503, payload  # not ready any more: never a crash
                return

    threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(answered) < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    code, result = server.stop(signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join(30)
    assert code == 0 and result["ok"], result
    records = []
    for path in sorted(capture.rglob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    captured = {r["id"] for r in records if r["kind"] == "inference"}
    assert len(answered) >= 300
    assert set(answered) <= captured
    assert result["extra"]["captured"] == len(records) == len(captured)
    assert result["extra"]["captureDropped"] == 0
    sample = next(r for r in records if r["id"] == answered[0])
    assert sample["inputs"]["input"] == [[pytest.approx(0.1)] * N_FEATURES]
    assert sample["outputs"]["label"][0] in MLP_LABELS


def test_ready_goes_false_while_draining(models, tmp_path):
    model = models / "mlp.onnx"
    server = ServerProcess(["--model", str(model), "--name", "bikes", "--drain-seconds", "3"], termination_log=tmp_path / "t")
    server.wait_ready()
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2.5
    seen = None
    while time.monotonic() < deadline:
        status, doc = get_json(server.url + "/v2/health/ready")
        if status == 503:
            seen = doc
            break
        time.sleep(0.05)
    assert seen == {"ready": False, "error": "the server is stopping"}
    status, doc, _ = post_json(server.url + "/v2/models/bikes/infer", _one_row())
    assert (status, doc["reason"]) == (503, "NotReady")
    code, result = server.stop()
    assert code == 0 and result["reason"] == "Stopped"


def test_openapi_document_is_served(mlp_server):
    status, doc = get_json(mlp_server.url + "/v2/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert "/v2/models/{name}/infer" in doc["paths"]
    example = doc["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]["application/json"]["example"]
    status, _, _ = post_json(mlp_server.url + "/v2/models/bikes/infer", example)
    assert status == 200


def test_capture_files_hold_the_sampled_traffic(mlp_server):
    # The module's server captures at rate 1; records reach storage within the flush interval.
    post_json(mlp_server.url + "/v2/models/bikes/infer", {**_one_row(), "id": "cap-1"})
    deadline = time.monotonic() + 10
    found = False
    while time.monotonic() < deadline and not found:
        for path in mlp_server.capture_dir.rglob("*.jsonl"):
            found |= any(json.loads(line)["id"] == "cap-1" for line in path.read_text().splitlines())
        time.sleep(0.2)
    assert found


def test_server_answers_after_a_fuzz_of_garbage(mlp_server):
    rng = np.random.default_rng(7)
    for _ in range(50):
        raw = rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        header = {"Inference-Header-Content-Length": str(int(rng.integers(0, 50)))} if rng.random() < 0.5 else {}
        request = urllib.request.Request(mlp_server.url + "/v2/models/bikes/infer", data=raw, method="POST", headers=header)
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as exc:
            assert 400 <= exc.code < 500
    assert get_json(mlp_server.url + "/v2/health/live")[0] == 200


def test_serve_task_document_as_the_operator_passes_it(models, tmp_path):
    from modelreuse.api.tasks import ServeTask

    model = models / "mlp.onnx"
    task = ServeTask.model_validate({
        "name": "bikeshare-dc", "version": 2,
        "source": {"uri": str(model), "sha256": sha256(model), "labels": MLP_LABELS},
        "batching": {"maxBatchSize": 8, "maxDelayMicroseconds": 500},
        "dataCapture": {"sampleRate": 1.0, "uri": (tmp_path / "cap").as_uri(), "format": "parquet"},
        "featureNames": [f"f{i}" for i in range(N_FEATURES)],
        "referenceStats": str(models / "reference.json"),
    })
    with ServerProcess(["--task", json.dumps(task.to_json_dict())], termination_log=tmp_path / "t") as server:
        server.wait_ready()
        c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        assert c.get_model_config("bikeshare-dc", "2")["max_batch_size"] == 8
        tensor = triton.InferInput("input", [3, N_FEATURES], "FP32")
        tensor.set_data_from_numpy(rows(3, seed=5))
        labels = c.infer("bikeshare-dc", [tensor], model_version="2").as_numpy("label")
        assert len(labels) == 3
        c.close()
        code, result = server.stop()
    assert code == 0 and result["extra"]["captured"] == 1
    import pyarrow.parquet as pq

    table = pq.read_table(next((tmp_path / "cap").rglob("*.parquet")))
    assert table.column("kind").to_pylist() == ["inference"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--name", "x"], "source"),
        (["--model", "m.onnx", "--name", "x", "--capture-rate", "0.5"], "dataCapture"),
        (["--task", "{not json", "--name", "x"], "cannot be read"),
        (["--model", "m.onnx", "--name", "x", "--max-batch-size", "0"], "batching"),
    ],
)
def test_invalid_tasks_exit_with_invalid_task(tmp_path, args, fragment):
    import os
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "modelreuse", "serve", "--port", "0", *args], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, MODELREUSE_TERMINATION_LOG=str(tmp_path / "t")),
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 2 and result["reason"] == "InvalidTask"
    assert fragment in result["message"]


def test_device_cuda_without_a_cuda_provider_is_refused(models, tmp_path):
    import onnxruntime as ort

    server = ServerProcess(["--model", str(models / "mlp.onnx"), "--name", "bikes", "--device", "cuda"], termination_log=tmp_path / "t")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        server.wait_ready()
        assert any("CUDAExecutionProvider" in line for line in server.stderr_lines)
        code, result = server.stop()
        assert code == 0
    else:
        code = server.proc.wait(60)
        _, result = server.stop()
        assert (code, result["reason"]) == (19, "DeviceUnavailable")
        assert "onnxruntime-gpu" in result["message"]
