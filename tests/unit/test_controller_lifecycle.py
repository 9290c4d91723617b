"""The pure reconcile core, scenario by scenario: each step feeds what the cluster 'did' and checks the
Plan (children to apply, status, events). No cluster, no kopf."""

from __future__ import annotations

import dataclasses

import pytest

from controller_support import World, deployment_for, done, result, sample
from modelreuse.api.resource import ModelReuse
from modelreuse.controller import children as ch
from modelreuse.controller.lifecycle import reconcile
from modelreuse.controller.observed import RetrainRequest

NAME = "bikeshare-dc"


def evaluate_to(w: World, version: int, score: float) -> None:
    name = ch.eval_job_name(NAME, version)
    assert name in w.jobs, f"no evaluation Job for v{version}: {sorted(w.jobs)}"
    w.jobs[name] = done(name, result("evaluate", score=score), at=w.now)


def adapt_to(w: World, version: int, kind: str = "adapt") -> None:
    name = (ch.adapt_job_name if kind == "adapt" else ch.retrain_job_name)(NAME, version)
    uri = f"s3://artifacts/ml/{NAME}/v{version}/model.onnx"
    w.jobs[name] = done(name, result("adapt", model_uri=uri, model_digest="sha256:" + "c" * 64), at=w.now)


def roll_out(w: World, **kw) -> None:
    w.deployment = deployment_for(w.body, w.last("Deployment"), **kw)


def to_serving(w: World, score: float = 0.9) -> None:
    w.step()
    evaluate_to(w, 1, score)
    w.step()
    roll_out(w)
    w.step()
    assert w.status["phase"] == "Serving"


def assert_fixpoint(w: World) -> None:
    plan = w.step()
    assert plan.empty, f"a second reconcile must plan nothing, got {plan}"


def test_new_object_creates_one_evaluation_job_and_then_waits():
    w = World(sample())
    plan = w.step()
    assert [c["kind"] for c in plan.apply] == ["Job"]
    assert plan.apply[0]["metadata"]["name"] == f"{NAME}-eval-v1"
    assert w.status["phase"] == "Evaluating"
    assert w.status["observedGeneration"] == 1
    assert w.status["candidate"]["version"] == 1 and w.status["candidate"]["origin"] == "source"
    assert w.cond("Ready")["status"] == "False"
    assert [e.reason for e in plan.events] == ["EvaluationStarted"]
    assert_fixpoint(w)


def test_passing_source_is_deployed_and_serves():
    w = World(sample())
    w.step()
    evaluate_to(w, 1, 0.86)
    plan = w.step()
    assert w.status["phase"] == "Deploying"
    assert sorted(c["kind"] for c in plan.apply) == ["Deployment", "Service"]
    assert w.status["serving"]["version"] == 1 and w.status["serving"]["score"] == pytest.approx(0.86)
    assert w.status["evaluation"]["score"] == pytest.approx(0.86)
    assert w.cond("SourceVerified")["reason"] == "DigestVerified"
    assert w.cond("ThresholdMet")["status"] == "True"
    assert w.cond("Ready")["status"] == "False"
    roll_out(w)
    plan = w.step()
    assert w.status["phase"] == "Serving"
    assert w.cond("Ready")["status"] == "True"
    assert w.status["endpoint"] == f"http://{NAME}.ml.svc:8080/v2/models/{NAME}"
    assert w.status["replicas"] == {"desired": 2, "available": 2}
    assert [h["decision"] for h in w.status["history"]] == ["Promoted"]
    assert "Serving" in [e.reason for e in plan.events]
    assert_fixpoint(w)


def test_failing_source_rescued_by_adaptation():
    w = World(sample())
    w.step()
    evaluate_to(w, 1, 0.6)
    plan = w.step()
    assert w.status["phase"] == "Adapting" and w.status["attempts"] == 1
    job = plan.apply[0]
    assert job["metadata"]["name"] == f"{NAME}-adapt-v2"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--out", f"s3://artifacts/ml/{NAME}/v2"]
    assert w.cond("ThresholdMet")["reason"] == "BelowThreshold"
    assert_fixpoint(w)
    adapt_to(w, 2)
    plan = w.step()
    assert w.status["phase"] == "Evaluating"
    assert [c["metadata"]["name"] for c in plan.apply] == [f"{NAME}-eval-v2"]
    task = w.last("Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert '"uri":"s3://artifacts/ml/bikeshare-dc/v2/model.onnx"' in task[2]
    evaluate_to(w, 2, 0.85)
    w.step()
    assert w.status["phase"] == "Deploying" and w.status["serving"]["version"] == 2
    assert w.status["serving"]["origin"] == "adaptation"
    assert [(h["version"], h["decision"]) for h in w.status["history"]] == [(1, "Rejected"), (2, "Promoted")]


def test_rejected_when_attempts_are_exhausted():
    w = World(sample(adaptation={"strategy": "head", "maxAttempts": 2, "epochs": 5}))
    w.step()
    evaluate_to(w, 1, 0.5)
    for version in (2, 3):
        w.step()
        adapt_to(w, version)
        w.step()
        w.step()
        evaluate_to(w, version, 0.55)
    plan = w.step()
    assert w.status["phase"] == "Rejected"
    assert w.status["attempts"] == 2
    assert "candidate" not in w.status and "serving" not in w.status
    assert [h["decision"] for h in w.status["history"]] == ["Rejected"] * 3
    assert [e.reason for e in plan.events] == ["Rejected"] and plan.events[0].type == "Warning"
    assert w.cond("Ready")["reason"] == "BelowThreshold"
    assert not any(c["kind"] == "Deployment" for c in w.applied)
    assert_fixpoint(w)


def test_strategy_none_rejects_without_adapting():
    w = World(sample(adaptation={"strategy": "none"}))
    w.step()
    evaluate_to(w, 1, 0.5)
    w.step()
    assert w.status["phase"] == "Rejected"
    assert not any(n.startswith(f"{NAME}-adapt") for n in w.jobs)


@pytest.mark.parametrize(
    "message, exit_code, reason, condition",
    [
        (result(ok=False, reason="DigestMismatch", message="The model's sha256 differs; fix spec.source.sha256."), 3,
         "DigestMismatch", "SourceVerified"),
        (result(ok=False, reason="MissingColumns", message="Column hr is missing; fix spec.data.features."), 8,
         "MissingColumns", "Evaluated"),
        ("Traceback (most recent call last): boom", 1, "JobFailed", "Evaluated"),
    ],
)
def test_failed_evaluation_job_gives_the_workload_reason(message, exit_code, reason, condition):
    w = World(sample())
    w.step()
    name = ch.eval_job_name(NAME, 1)
    w.jobs[name] = done(name, message, exit_code=exit_code, at=w.now)
    plan = w.step()
    assert w.status["phase"] == "Failed"
    c = w.cond(condition)
    assert c["status"] == "False" and c["reason"] == reason
    assert c["message"]
    assert plan.events[0].type == "Warning" and plan.events[0].reason == reason
    assert_fixpoint(w)


def test_finished_job_without_result_waits_then_fails_with_missing_result():
    w = World(sample())
    w.step()
    name = ch.eval_job_name(NAME, 1)
    w.jobs[name] = done(name, "", at=w.now)
    assert w.step(advance=5).empty
    w.step(advance=60)
    assert w.status["phase"] == "Failed"
    assert w.cond("Evaluated")["reason"] == "MissingResult"


def test_retraining_better_candidate_is_promoted_and_alert_storm_gives_one_retraining():
    w = World(sample())
    to_serving(w, 0.82)
    w.request = RetrainRequest(time=w.now, reason="ModelReuseAccuracyLow", message="alert")
    plan = w.step()
    assert w.status["phase"] == "Retraining"
    assert w.cond("Retraining")["status"] == "True"
    assert plan.apply[0]["metadata"]["name"] == f"{NAME}-retrain-v2"
    args = plan.apply[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "s3://capture/bikeshare/" in args[2]  # captured feedback is trained on
    # More alerts inside the cooldown: no second retraining, no new Job.
    for _ in range(5):
        w.request = RetrainRequest(time=w.now, reason="ModelReuseAccuracyLow")
        assert w.step().apply == []
    adapt_to(w, 2, kind="retrain")
    w.step()
    w.step()
    evaluate_to(w, 2, 0.9)
    w.step()
    assert w.status["phase"] == "Deploying"
    assert w.status["serving"]["version"] == 2 and w.status["previous"]["version"] == 1
    assert w.cond("Retraining")["reason"] == "Promoted"
    roll_out(w)
    w.step()
    assert w.status["phase"] == "Serving" and "previous" not in w.status
    # A request inside the cooldown of the first retraining is ignored even once serving again.
    w.request = RetrainRequest(time=w.now, reason="ModelReuseAccuracyLow")
    assert w.step().apply == [] and w.status["phase"] == "Serving"
    retrain_jobs = [c for c in w.applied if c["metadata"]["name"].startswith(f"{NAME}-retrain")]
    assert len(retrain_jobs) == 1


@pytest.mark.parametrize("score, reason", [(0.825, "NotBetter"), (0.7, "BelowThreshold")])
def test_worse_candidate_is_kept_out(score, reason):
    w = World(sample())
    to_serving(w, 0.82)
    w.request = RetrainRequest(time=w.now, reason="ModelReuseAccuracyLow")
    w.step()
    adapt_to(w, 2, kind="retrain")
    w.step()
    w.step()
    evaluate_to(w, 2, score)
    plan = w.step()
    assert w.status["phase"] == "Serving"
    assert w.status["serving"]["version"] == 1
    assert w.status["evaluation"]["score"] == pytest.approx(0.82)
    assert w.status["history"][-1]["decision"] == "Rejected" and w.status["history"][-1]["reason"] == reason
    assert w.cond("Retraining")["status"] == "False" and w.cond("Retraining")["reason"] == reason
    assert not any(c["kind"] == "Deployment" for c in plan.apply)
    assert w.cond("Ready")["status"] == "True"


def test_failed_rollout_rolls_back_to_the_previous_version():
    w = World(sample())
    to_serving(w, 0.82)
    v1_manifest = w.last("Deployment")
    w.request = RetrainRequest(time=w.now, reason="ModelReuseAccuracyLow")
    w.step()
    adapt_to(w, 2, kind="retrain")
    w.step()
    w.step()
    evaluate_to(w, 2, 0.95)
    w.step()
    v2_manifest = w.last("Deployment")
    assert v2_manifest["metadata"]["labels"][ch.VERSION_LABEL] == "2"
    roll_out(w, available=0, exceeded=True)
    plan = w.step()
    assert w.status["serving"]["version"] == 1
    assert w.cond("Degraded")["status"] == "True" and w.cond("Degraded")["reason"] == "RolledBack"
    assert [e.reason for e in plan.events] == ["RolledBack"]
    assert w.status["history"][-1]["decision"] == "RolledBack" and w.status["history"][-1]["version"] == 2
    # The Deployment goes back to exactly the v1 template.
    back = [c for c in plan.apply if c["kind"] == "Deployment"][-1]
    assert back["metadata"]["annotations"] == v1_manifest["metadata"]["annotations"]
    # The v1 template is applied, but the controller has not observed it yet: the Deployment still carries
    # the ProgressDeadlineExceeded of version 2. That is not a failure of the rollback itself.
    w.deployment = dataclasses.replace(deployment_for(w.body, back, available=1, exceeded=True),
                                       generation=3, observed_generation=2)
    w.step()
    assert w.cond("Degraded")["reason"] == "RolledBack" and w.status["serving"]["version"] == 1
    roll_out(w)
    w.step()
    assert w.status["phase"] == "Serving" and w.cond("Ready")["status"] == "True"
    assert_fixpoint(w)


def test_rollout_deadline_also_checked_on_the_clock():
    w = World(sample(deployment__rolloutDeadlineSeconds=20))
    to_serving(w, 0.82)
    w.request = RetrainRequest(time=w.now, reason="Manual")
    w.step()
    adapt_to(w, 2, kind="retrain")
    w.step(); w.step()
    evaluate_to(w, 2, 0.95)
    w.step()
    roll_out(w, available=0)  # never available, the controller has not flagged it yet
    w.step(advance=5)
    assert w.status["serving"]["version"] == 2
    w.step(advance=60)
    assert w.status["serving"]["version"] == 1


def test_deployment_only_change_rolls_without_re_evaluating():
    w = World(sample())
    to_serving(w)
    jobs_before = set(w.jobs)
    w.body["spec"]["deployment"]["replicas"] = 3
    w.body["metadata"]["generation"] = 2
    plan = w.step()
    assert set(w.jobs) == jobs_before
    assert [c["kind"] for c in plan.apply] == ["Deployment"]
    assert plan.apply[0]["spec"]["replicas"] == 3
    assert w.status["phase"] == "Deploying" and w.status["observedGeneration"] == 2
    # The surge pod of a rolling update: four available of three wanted is reported as three of three.
    w.deployment = dataclasses.replace(deployment_for(w.body, plan.apply[0]), available_replicas=4)
    w.step()
    assert w.status["phase"] == "Serving" and w.status["serving"]["version"] == 1
    assert w.status["replicas"] == {"desired": 3, "available": 3}


def test_data_change_re_evaluates_as_a_new_version_while_serving_continues():
    w = World(sample())
    to_serving(w)
    w.body["spec"]["data"]["uri"] = "s3://data/bikeshare/winter.parquet"
    w.body["metadata"]["generation"] = 2
    plan = w.step()
    assert [c["metadata"]["name"] for c in plan.apply] == [f"{NAME}-eval-v2"]
    assert w.status["phase"] == "Evaluating"
    assert w.status["serving"]["version"] == 1
    assert [e.reason for e in plan.events] == ["SpecChanged"]


def test_restart_before_status_write_plans_the_same_child():
    """The operator crashed after creating the Job but before writing status: the same name comes back."""
    body = sample()
    first = reconcile(ModelReuse.from_dict(body), World(body).observed(), World(body).now, World(body).settings)
    again = reconcile(ModelReuse.from_dict(body), World(body).observed(), World(body).now, World(body).settings)
    assert first.apply == again.apply
    assert first.status == again.status


def test_history_is_bounded():
    w = World(sample(adaptation={"strategy": "head", "maxAttempts": 20, "epochs": 1}))
    w.step()
    evaluate_to(w, 1, 0.1)
    for version in range(2, 22):  # 20 attempts: 21 decisions
        w.step()
        adapt_to(w, version)
        w.step()
        w.step()
        evaluate_to(w, version, 0.1)
    w.step()
    assert w.status["phase"] == "Rejected"
    assert len(w.status["history"]) == 20
    assert w.status["history"][-1]["version"] == 21
    ModelReuse.from_dict(w.body)  # the status still validates
