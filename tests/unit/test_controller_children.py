"""Pure builders of Jobs, the Deployment and the Service; conditions; retraining triggers; and the rule that
the core imports no kopf or Kubernetes client."""

from __future__ import annotations

import ast
import json
import pathlib
import shutil
import subprocess
import sys
from datetime import timedelta

import pytest

from controller_support import SETTINGS, T0, sample
from modelreuse.api.resource import ModelReuse
from modelreuse.api.status import ModelVersion
from modelreuse.api.tasks import AdaptTask, EvaluateTask, ServeTask
from modelreuse.controller import children as ch
from modelreuse.controller.conditions import set_condition
from modelreuse.controller.observed import RetrainRequest
from modelreuse.controller.triggers import (
    AlertTarget, BelowState, accept_request, decode_request, encode_request, evaluate_prometheus, match_alerts,
)
from modelreuse.settings import Settings

ROOT = pathlib.Path(__file__).resolve().parents[2]


def obj(**kw) -> ModelReuse:
    return ModelReuse.from_dict(sample(**kw))


SOURCE = ModelVersion(version=1, origin="source", uri="s3://models/bikeshare/spring/model.onnx")
ADAPTED = ModelVersion(version=4, origin="adaptation", uri="s3://artifacts/ml/bikeshare-dc/v4/model.onnx",
                       digest="sha256:" + "c" * 64)


def pods(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def all_manifests():
    o = obj()
    return [
        ch.build_evaluation_job(o, SOURCE, SETTINGS),
        ch.build_adaptation_job(o, ADAPTED, SETTINGS, attempt=2),
        ch.build_deployment(o, ADAPTED, SETTINGS),
    ]


@pytest.mark.parametrize("manifest", all_manifests(), ids=["eval", "adapt", "deployment"])
def test_every_pod_is_hardened(manifest):
    pod = pods(manifest)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert {m["name"] for m in c["volumeMounts"]} <= scratch and "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
    (ref,) = manifest["metadata"]["ownerReferences"]
    assert ref == {"apiVersion": "modelreuse.io/v1alpha1", "kind": "ModelReuse", "name": "bikeshare-dc",
                   "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}


def test_evaluation_job_carries_a_task_the_workload_accepts():
    job = ch.build_evaluation_job(obj(), SOURCE, SETTINGS)
    assert job["metadata"]["name"] == "bikeshare-dc-eval-v1"
    assert job["spec"]["backoffLimit"] == 0 and pods(job)["restartPolicy"] == "Never"
    args = pods(job)["containers"][0]["args"]
    assert args[:2] == ["evaluate", "--task"] and args[3:] == ["--report", "s3://artifacts/ml/bikeshare-dc/v1/evaluation"]
    task = EvaluateTask.model_validate_json(args[2])
    assert task.source.sha256 == obj().spec.source.sha256 and task.data.target == "flow"
    assert pods(job)["containers"][0]["image"] == SETTINGS.runtime_image


def test_adaptation_job_adapts_source_with_attempt_seed_and_writes_the_versioned_artifact():
    job = ch.build_adaptation_job(obj(), ADAPTED, SETTINGS, attempt=3)
    args = pods(job)["containers"][0]["args"]
    assert job["metadata"]["name"] == "bikeshare-dc-adapt-v4"
    task = AdaptTask.model_validate_json(args[2])
    assert task.source.uri == obj().spec.source.uri and task.adaptation.seed == 2
    assert args[3:] == ["--out", "s3://artifacts/ml/bikeshare-dc/v4"]


def test_retraining_job_starts_from_the_serving_version_with_feedback():
    cand = ModelVersion(version=5, origin="retraining")
    job = ch.build_adaptation_job(obj(), cand, SETTINGS, base=ADAPTED, extra_data=["s3://capture/x/"])
    task = AdaptTask.model_validate_json(pods(job)["containers"][0]["args"][2])
    assert job["metadata"]["name"] == "bikeshare-dc-retrain-v5"
    assert task.source.uri == ADAPTED.uri and task.source.sha256 == "c" * 64
    assert task.extra_data == ["s3://capture/x/"]


def test_deployment_takes_gpu_placement_batching_and_capture_from_the_spec():
    dep = ch.build_deployment(obj(), ADAPTED, Settings(runtime_gpu_image="gpu:1", runtime_image="cpu:1"))
    pod = pods(dep)
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["image"] == "gpu:1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    task = ServeTask.model_validate_json(c["args"][2])
    assert task.batching.max_batch_size == 64 and task.data_capture.sample_rate == 0.1
    assert task.version == 4 and task.source.uri == ADAPTED.uri
    assert task.feature_names == ["hr", "temp", "hum", "windspeed", "workingday"]
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["progressDeadlineSeconds"] == 600
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    sel = dep["spec"]["selector"]["matchLabels"]
    assert all(pod_label in dep["spec"]["template"]["metadata"]["labels"].items() for pod_label in sel.items())
    svc = ch.build_service(obj(), SETTINGS)
    assert svc["spec"]["selector"] == sel and svc["spec"]["ports"][0]["port"] == 8080


def test_deployment_hash_changes_with_settings_and_version_only():
    a = ch.build_deployment(obj(), ADAPTED, SETTINGS)
    b = ch.build_deployment(obj(), ADAPTED, SETTINGS)
    c = ch.build_deployment(obj(deployment__replicas=5), ADAPTED, SETTINGS)
    d = ch.build_deployment(obj(), SOURCE, SETTINGS)
    h = lambda m: m["metadata"]["annotations"][ch.SPEC_HASH_ANNOTATION]  # noqa: E731
    assert h(a) == h(b) and len({h(a), h(c), h(d)}) == 3


def test_long_names_stay_valid_and_distinct():
    base = "x" * 250
    names = {ch.eval_job_name(base, 1), ch.eval_job_name(base + "y", 1), ch.eval_job_name(base, 12345)}
    assert len(names) == 3 and all(len(n) <= 63 for n in names)
    assert ch.eval_job_name("short", 3) == "short-eval-v3"


def test_condition_transition_time_moves_only_on_a_flip():
    conds = set_condition([], "Ready", "False", "Evaluating", "", T0, 1)
    later = T0 + timedelta(minutes=5)
    same = set_condition(conds, "Ready", "False", "Adapting", "other message", later, 2)
    assert same[0].last_transition_time == conds[0].last_transition_time
    assert same[0].reason == "Adapting" and same[0].observed_generation == 2
    flipped = set_condition(same, "Ready", "True", "Available", "", later, 2)
    assert flipped[0].last_transition_time == "2026-01-01T12:05:00Z"
    both = set_condition(flipped, "Evaluated", "True", "Evaluated", "", later, 2)
    assert [c.type for c in both] == ["Evaluated", "Ready"]  # canonical order, keyed by type


def test_alerts_match_by_namespace_and_modelreuse_labels():
    targets = [AlertTarget("ml", "a", ("AccuracyLow",)), AlertTarget("ml", "b", ()), AlertTarget("web", "a", ("AccuracyLow",))]
    payload = {"alerts": [
        {"status": "firing", "labels": {"alertname": "AccuracyLow", "namespace": "ml", "modelreuse": "a"}},
        {"status": "firing", "labels": {"alertname": "AccuracyLow", "namespace": "ml", "modelreuse": "a"}},
        {"status": "resolved", "labels": {"alertname": "AccuracyLow", "namespace": "web", "modelreuse": "a"}},
        {"status": "firing", "labels": {"alertname": "AccuracyLow", "namespace": "ml", "modelreuse": "b"}},
        {"status": "firing", "labels": {"alertname": "Other", "namespace": "web", "modelreuse": "a"}},
        {"status": "firing", "labels": {"alertname": "AccuracyLow", "modelreuse": "a"}},
    ]}
    assert [(m.namespace, m.name, m.alertname) for m in match_alerts(payload, targets)] == [("ml", "a", "AccuracyLow")]


@pytest.mark.parametrize(
    "request_after, last_after, since_after, expected",
    [
        (10, None, 0, True),         # first request
        (10, 0, 0, False),           # inside the 1h cooldown of the last retraining
        (3700, 0, 0, True),          # after it
        (10, None, 20, False),       # about an older serving version
        (None, None, 0, False),      # no request
    ],
)
def test_cooldown_and_serving_age_decide_whether_a_request_is_accepted(request_after, last_after, since_after, expected):
    at = lambda s: None if s is None else (T0 + timedelta(seconds=s))  # noqa: E731
    stamp = lambda s: None if s is None else at(s).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    req = None if request_after is None else RetrainRequest(time=at(request_after), reason="X")
    assert accept_request(req, stamp(last_after), stamp(since_after), "1h") is expected


def test_retrain_request_annotation_round_trips_and_garbage_is_ignored():
    req = RetrainRequest(time=T0, reason="AccuracyLow", message="m")
    assert decode_request(encode_request(req)) == req
    assert decode_request("not json") is None and decode_request(json.dumps({"reason": "x"})) is None


def test_prometheus_trigger_fires_only_after_staying_below_for_its_duration():
    state, fired = BelowState(), []
    samples = [(0, 0.9), (60, 0.7), (120, 0.7), (659, 0.7), (661, 0.7), (700, 0.8), (760, 0.7), (800, None)]
    for second, value in samples:
        state, fire = evaluate_prometheus(value, 0.75, "10m", state, T0 + timedelta(seconds=second))
        fired.append(fire)
    assert fired == [False, False, False, False, True, False, False, False]


def test_settings_from_environment_and_flags():
    s = Settings.from_env({"MODELREUSE_NAMESPACES": "a, b", "MODELREUSE_RESYNC_SECONDS": "5",
                           "MODELREUSE_JOB_NODE_SELECTOR": "pool=jobs"}, runtime_image="img:2")
    assert s.namespaces == ("a", "b") and s.resync_seconds == 5.0 and s.runtime_image == "img:2"
    assert s.job_node_selector == {"pool": "jobs"}


PURE = [ROOT / "operator/modelreuse/settings.py", *sorted((ROOT / "operator/modelreuse/controller").glob("*.py"))]
FORBIDDEN = {"kopf", "kubernetes", "aiohttp", "requests", "urllib3", "socket", "subprocess"}


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.name)
def test_core_modules_import_no_io(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN and not name.startswith("modelreuse.kube"), (
                f"{path.name} imports {name}")


def test_import_linter_contract_holds():
    exe = shutil.which("lint-imports", path=str(pathlib.Path(sys.executable).parent))
    assert exe, "import-linter is a test dependency (pip install -e '.[test]')"
    cp = subprocess.run([exe, "--config", str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True, text=True,
                        env={"PYTHONPATH": str(ROOT / "operator"), "PATH": "/usr/bin:/bin"})
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "1 kept, 0 broken" in cp.stdout
