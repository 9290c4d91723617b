"""The lifecycle of a ModelReuse as one pure function.

``reconcile(obj, observed, now, settings) -> Plan`` reads the object's status as the record of what was
decided, the observed children as what happened since, and returns what to apply, the status patch and the
events. It is level-based and deterministic: called twice on the same input it plans the same thing, and on
its own output it plans nothing, which is what makes an operator restarted at any point safe.

Phases: Evaluating -> (ThresholdMet) Deploying -> Serving, or Evaluating -> Adapting -> Evaluating ... up to
``maxAttempts`` -> Rejected. From Serving an accepted retraining request goes to Retraining (adapt the
serving version on data plus feedback, evaluate on the same holdout) and back to Deploying (promoted) or
Serving (kept out). A rollout that misses its deadline returns to the previous version.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from modelreuse.api.base import parse_duration
from modelreuse.api.resource import ModelReuse
from modelreuse.api.spec import ModelReuseSpec
from modelreuse.api.status import HISTORY_LIMIT, EvaluationStatus, HistoryEntry, ModelReuseStatus, ModelVersion
from modelreuse.api.tasks import WorkloadResult
from modelreuse.controller import children as ch
from modelreuse.controller.conditions import get_condition, rfc3339, set_condition
from modelreuse.controller.observed import JobObservation, Observed
from modelreuse.controller.triggers import accept_request, parse_time
from modelreuse.settings import Settings


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to record on the object."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    """What one reconcile decided: children to create or update, a JSON merge patch of ``.status`` (empty
    when nothing changes) and the events of the transitions taken."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    phase: str = "Pending"

    @property
    def empty(self) -> bool:
        return not (self.apply or self.status or self.events)


def inputs_digest(spec: ModelReuseSpec) -> str:
    """Digest of what an evaluation depends on; deployment and retraining settings are left out on purpose
    so that changing them only rolls the Deployment."""
    body = {k: getattr(spec, k).to_json_dict() for k in ("source", "data", "evaluation", "adaptation")}
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: what the API server does with a JSON merge patch (the local runner and tests use it)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (None for keys that disappear)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    out: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        out[key] = None
    for key, value in new.items():
        if key not in old:
            out[key] = value
        elif old[key] != value:
            out[key] = merge_patch(old[key], value) if isinstance(value, dict) and isinstance(old[key], dict) else value
    return out


@dataclass(frozen=True)
class Outcome:
    state: str  # running | ok | failed
    result: WorkloadResult | None = None
    reason: str = ""
    message: str = ""


def parse_result(text: str | None) -> WorkloadResult | None:
    """The workload's result from a termination message, or None when there is none or it is not JSON
    (with FallbackToLogsOnError a crash leaves the log tail there instead)."""
    if not text or not text.lstrip().startswith("{"):
        return None
    try:
        return WorkloadResult.model_validate_json(text)
    except ValidationError:
        return None


def job_outcome(job: JobObservation, now: datetime, settings: Settings) -> Outcome:
    """Whether a workload Job is still running, succeeded with a result, or failed, and why."""
    result = parse_result(job.termination_message)
    if result is not None and not result.ok:
        return Outcome("failed", result, result.reason or "WorkloadFailed", result.message)
    if result is not None and (job.succeeded or job.exit_code == 0):
        return Outcome("ok", result)
    if job.failed:
        detail = (job.termination_message or "").strip()[-300:]
        message = job.failure_message or f"The workload pod failed (exit code {job.exit_code})."
        if detail:
            message = f"{message} Last output: {detail}"
        return Outcome("failed", None, job.failure_reason or "JobFailed",
                       f"{message} See `kubectl logs job/{job.name}`.")
    if job.succeeded:
        finished = job.finished_at or now
        if now - finished >= timedelta(seconds=settings.result_grace_seconds):
            return Outcome(
                "failed", None, "MissingResult",
                f"Job {job.name} finished without a result in its termination message; check that the image "
                "runs `modelreuse` and see `kubectl logs job/" + job.name + "`.",
            )
    return Outcome("running")


class _Run:
    """One reconcile: a working copy of the status plus what was decided so far."""

    def __init__(self, obj: ModelReuse, observed: Observed, now: datetime, settings: Settings):
        self.obj = obj
        self.spec = obj.spec
        self.observed = observed
        self.now = now
        self.stamp = rfc3339(now)
        self.settings = settings
        self.gen = obj.metadata.generation
        self.st: ModelReuseStatus = obj.status.model_copy(deep=True)
        self.apply: list[dict[str, Any]] = []
        self.events: list[Event] = []

    # -- small helpers
    def cond(self, type_: str, status: str, reason: str, message: str = "") -> None:
        self.st.conditions = set_condition(self.st.conditions, type_, status, reason, message, self.now, self.gen)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def history(self, version: ModelVersion, decision: str, reason: str | None) -> None:
        self.st.history.append(HistoryEntry(
            version=version.version, origin=version.origin, score=version.score, decision=decision,
            reason=reason, time=self.stamp,
        ))
        self.st.history = self.st.history[-HISTORY_LIMIT:]

    def new_version(self, origin: str) -> ModelVersion:
        v = self.st.next_version
        self.st.next_version = v + 1
        return ModelVersion(version=v, origin=origin, since=self.stamp)

    def job(self, name: str) -> JobObservation | None:
        return self.observed.jobs.get(name)

    def evaluation_outcome(self, cand: ModelVersion) -> Outcome | None:
        """The finished evaluation Job of ``cand``; creates the Job first and is None while it runs."""
        job = self.job(ch.eval_job_name(self.obj.metadata.name, cand.version))
        if job is None:
            self.apply.append(ch.build_evaluation_job(self.obj, cand, self.settings))
            return None
        out = job_outcome(job, self.now, self.settings)
        return None if out.state == "running" else out

    def position(self) -> tuple:
        c = self.st.candidate
        return (self.st.phase, c.version if c else None, c.uri if c else None)

    # -- the lifecycle
    def run(self) -> None:
        digest = inputs_digest(self.spec)
        if self.st.inputs_digest != digest:
            self.start_cycle(digest)
        self.st.observed_generation = self.gen
        # A transition is followed at once by the next phase's step (creating its Job), a few times at most.
        for _ in range(4):
            before = self.position()
            phase = self.st.phase
            if phase == "Evaluating":
                self.evaluating()
            elif phase == "Adapting":
                self.adapting()
            elif phase == "Retraining":
                self.retraining()
            elif phase == "Serving":
                self.maybe_retrain()
            if self.position() == before or self.apply:
                break
        if self.st.serving is not None:
            self.serving()
        self.summarise()

    def start_cycle(self, digest: str) -> None:
        first = self.st.inputs_digest is None
        cand = self.new_version("source")
        src = self.spec.source
        cand.uri = src.uri
        cand.digest = f"sha256:{src.sha256}" if src.sha256 else None
        self.st.candidate = cand
        self.st.attempts = 0
        self.st.phase = "Evaluating"
        self.st.inputs_digest = digest
        self.cond("SourceVerified", "Unknown", "Verifying", "The evaluation Job reads and checks the source model.")
        self.cond("Evaluated", "Unknown", "Evaluating", f"Evaluating version {cand.version} on the holdout.")
        self.cond("ThresholdMet", "Unknown", "Evaluating", "Waiting for the evaluation.")
        if first:
            self.cond("Retraining", "False", "NotRequested", "No retraining was requested.")
            self.cond("Degraded", "False", "AsExpected", "Nothing is degraded.")
            self.event("Normal", "EvaluationStarted", f"Evaluating the inherited model {src.uri} as version {cand.version}.")
        else:
            self.event("Normal", "SpecChanged", f"Source, data or evaluation changed: re-evaluating as version {cand.version}.")

    def evaluating(self) -> None:
        cand = self.st.candidate
        if cand is None:  # defensive: a status edited by hand; start over cleanly
            self.st.inputs_digest = None
            return
        out = self.evaluation_outcome(cand)
        if out is None:
            return
        if out.state == "failed":
            if out.reason == "DigestMismatch":
                self.cond("SourceVerified", "False", out.reason, out.message)
            self.cond("Evaluated", "False", out.reason, out.message)
            self.cond("ThresholdMet", "Unknown", "NotEvaluated", "The evaluation failed.")
            self.history(cand, "Rejected", out.reason)
            self.st.candidate = None
            self.st.phase = "Failed"
            self.event("Warning", out.reason, f"Evaluation of version {cand.version} failed: {out.message}")
            return
        res = out.result
        assert res is not None
        ev = _evaluation(res, cand.version, self.stamp)
        cand.score = ev.score
        cand.digest = res.model_digest or cand.digest
        if cand.origin == "source":
            how = "matches the pinned sha256" if self.spec.source.sha256 else "was read (no sha256 pinned)"
            self.cond("SourceVerified", "True", "DigestVerified" if self.spec.source.sha256 else "SourceReadable",
                      f"The source model {how}: {cand.digest or 'digest not reported'}.")
        self.cond("Evaluated", "True", "Evaluated",
                  f"Version {cand.version} scored {ev.score:.4f} on {ev.samples} holdout rows.")
        threshold = self.spec.evaluation.threshold
        if ev.score >= threshold:
            self.st.evaluation = ev
            self.cond("ThresholdMet", "True", "ThresholdMet", f"Score {ev.score:.4f} reaches the threshold {threshold}.")
            self.promote(cand, "ThresholdMet")
            return
        self.st.evaluation = ev
        self.cond("ThresholdMet", "False", "BelowThreshold", f"Score {ev.score:.4f} is below the threshold {threshold}.")
        self.history(cand, "Rejected", "BelowThreshold")
        ad = self.spec.adaptation
        if ad.strategy != "none" and self.st.attempts < ad.max_attempts:
            self.st.attempts += 1
            new = self.new_version("adaptation")
            self.st.candidate = new
            self.st.phase = "Adapting"
            self.event("Normal", "AdaptationStarted",
                       f"Score {ev.score:.4f} < {threshold}: adaptation attempt {self.st.attempts} of "
                       f"{ad.max_attempts} makes version {new.version}.")
            return
        self.st.candidate = None
        self.st.phase = "Rejected"
        why = "adaptation is off (strategy none)" if ad.strategy == "none" else f"after {self.st.attempts} adaptation attempts"
        self.event("Warning", "Rejected", f"Best score stays below the threshold {threshold} {why}.")

    def adapting(self) -> None:
        cand = self.st.candidate
        if cand is None:
            self.st.inputs_digest = None
            return
        name = ch.adapt_job_name(self.obj.metadata.name, cand.version)
        job = self.job(name)
        if job is None:
            self.apply.append(ch.build_adaptation_job(self.obj, cand, self.settings, attempt=self.st.attempts))
            return
        out = job_outcome(job, self.now, self.settings)
        if out.state == "running":
            return
        if out.state == "failed":
            self.history(cand, "Rejected", out.reason)
            self.st.candidate = None
            self.st.phase = "Failed"
            self.cond("Degraded", "True", out.reason, f"Adaptation of version {cand.version} failed: {out.message}")
            self.event("Warning", out.reason, f"Adaptation of version {cand.version} failed: {out.message}")
            return
        res = out.result
        assert res is not None
        cand.uri = res.model_uri or ch.artifact_uri(self.obj, self.settings, cand.version)
        cand.digest = res.model_digest
        self.st.phase = "Evaluating"
        self.cond("Evaluated", "Unknown", "Evaluating", f"Evaluating adapted version {cand.version} on the holdout.")
        self.event("Normal", "Adapted", f"Adaptation wrote version {cand.version} to {cand.uri}; evaluating it.")

    def promote(self, cand: ModelVersion, reason: str) -> None:
        cand.since = self.stamp
        current = self.st.serving
        # Rolling back is possible only to a different version that was serving.
        self.st.previous = current if current is not None and current.version != cand.version else None
        self.st.serving = cand
        self.st.candidate = None
        self.st.phase = "Deploying"
        self.history(cand, "Promoted", reason)
        self.event("Normal", "Promoted", f"Version {cand.version} (score {cand.score:.4f}) is rolling out.")

    def maybe_retrain(self) -> None:
        rt = self.spec.retraining
        serving = self.st.serving
        if serving is None or not accept_request(
            self.observed.retrain_request, self.st.last_retraining_time, serving.since, rt.cooldown
        ):
            return
        req = self.observed.retrain_request
        assert req is not None
        cand = self.new_version("retraining")
        self.st.candidate = cand
        self.st.phase = "Retraining"
        self.st.last_retraining_time = self.stamp
        self.cond("Retraining", "True", req.reason,
                  f"Retraining version {serving.version} into {cand.version}: {req.message or req.reason}.")
        self.event("Normal", "RetrainingStarted", f"{req.reason}: retraining into version {cand.version}.")

    def feedback(self) -> list[str]:
        rt, cap = self.spec.retraining, self.spec.deployment.data_capture
        uri = rt.feedback_uri or (cap.uri if cap.sample_rate > 0 else None)
        return [uri] if uri else []

    def retraining(self) -> None:
        cand, serving = self.st.candidate, self.st.serving
        if cand is None or serving is None:
            self.st.phase = "Serving" if serving is not None else "Pending"
            return
        name = self.obj.metadata.name
        if cand.uri is None:
            job = self.job(ch.retrain_job_name(name, cand.version))
            if job is None:
                self.apply.append(ch.build_adaptation_job(
                    self.obj, cand, self.settings, base=serving, attempt=cand.version, extra_data=self.feedback()))
                return
            out = job_outcome(job, self.now, self.settings)
            if out.state == "failed":
                return self.candidate_rejected(cand, out.reason, f"Retraining failed: {out.message}", warn=True)
            if out.state == "ok" and out.result is not None:
                cand.uri = out.result.model_uri or ch.artifact_uri(self.obj, self.settings, cand.version)
                cand.digest = out.result.model_digest
                self.event("Normal", "Retrained", f"Retraining wrote version {cand.version}; evaluating it.")
            return
        out = self.evaluation_outcome(cand)
        if out is None:
            return
        if out.state == "failed":
            return self.candidate_rejected(cand, out.reason, f"Evaluating the candidate failed: {out.message}", warn=True)
        res = out.result
        assert res is not None
        ev = _evaluation(res, cand.version, self.stamp)
        cand.score = ev.score
        cand.digest = res.model_digest or cand.digest
        threshold, need = self.spec.evaluation.threshold, self.spec.retraining.min_improvement
        base = serving.score or 0.0
        if ev.score >= threshold and ev.score >= base + need - 1e-12:
            self.st.evaluation = ev
            self.cond("Retraining", "False", "Promoted",
                      f"Version {cand.version} scored {ev.score:.4f} against {base:.4f} serving and was promoted.")
            self.promote(cand, "BetterThanServing")
            return
        reason = "BelowThreshold" if ev.score < threshold else "NotBetter"
        self.candidate_rejected(
            cand, reason,
            f"Candidate version {cand.version} scored {ev.score:.4f}; it needs at least "
            f"{max(threshold, base + need):.4f} (threshold {threshold}, serving {base:.4f} + {need}).",
            warn=False,
        )

    def candidate_rejected(self, cand: ModelVersion, reason: str, message: str, warn: bool) -> None:
        self.history(cand, "Rejected", reason)
        self.st.candidate = None
        self.st.phase = "Serving"
        self.cond("Retraining", "False", reason, message)
        self.event("Warning" if warn else "Normal", "CandidateRejected", message)

    def serving(self) -> None:
        serving = self.st.serving
        assert serving is not None
        desired = ch.build_deployment(self.obj, serving, self.settings)
        want_hash = desired["metadata"]["annotations"][ch.SPEC_HASH_ANNOTATION]
        dep = self.observed.deployment
        if dep is None or dep.spec_hash != want_hash:
            self.apply.append(desired)
        if not self.observed.service:
            self.apply.append(ch.build_service(self.obj, self.settings))
        replicas = self.spec.deployment.replicas
        rolled_out = dep is not None and dep.rolled_out(want_hash, replicas)
        if self.st.phase == "Serving" and not rolled_out and dep is not None and dep.spec_hash != want_hash:
            # Only deployment settings changed: roll the same version, no re-evaluation.
            serving.since = self.stamp
            self.st.previous = None
            self.st.phase = "Deploying"
            self.event("Normal", "Rolling", f"Deployment settings changed: rolling version {serving.version}.")
            return
        if self.st.phase != "Deploying":
            return
        if rolled_out:
            self.st.phase = "Serving"
            self.st.previous = None
            degraded = get_condition(self.st.conditions, "Degraded")
            if degraded is None or degraded.reason != "RolledBack":
                self.cond("Degraded", "False", "AsExpected", "Nothing is degraded.")
            self.event("Normal", "Serving", f"Version {serving.version} is available with {replicas} replicas.")
            return
        started = parse_time(serving.since) or self.now
        deadline = self.spec.deployment.rollout_deadline_seconds
        exceeded = (dep is not None and dep.deadline_exceeded(want_hash)) or (
            self.now - started > timedelta(seconds=deadline * 1.5)
        )
        if not exceeded:
            return
        prev = self.st.previous
        if prev is not None:
            self.history(serving, "RolledBack", "RolloutDeadlineExceeded")
            prev.since = self.stamp
            self.st.serving, self.st.previous = prev, None
            msg = (f"Version {serving.version} was not available within {deadline}s; rolled back to version "
                   f"{prev.version}.")
            self.cond("Degraded", "True", "RolledBack", msg)
            self.event("Warning", "RolledBack", msg)
            self.apply = [c for c in self.apply if c["kind"] != "Deployment"]
            self.apply.append(ch.build_deployment(self.obj, prev, self.settings))
            return
        msg = f"Version {serving.version} is not available within {deadline}s and there is no version to return to."
        if get_condition(self.st.conditions, "Degraded") is None or not _same(self.st, "Degraded", "RolloutFailed"):
            self.event("Warning", "RolloutFailed", msg)
        self.cond("Degraded", "True", "RolloutFailed", msg)

    def summarise(self) -> None:
        st = self.st
        dep = self.observed.deployment
        if st.serving is not None:
            st.endpoint = ch.endpoint(self.obj, self.settings)
            want = self.spec.deployment.replicas
            # During a rolling update the surge pod makes one more available than wanted: report at most want.
            available = min(dep.available_replicas, want) if dep is not None else 0
            st.replicas = _replicas(want, available)
            if st.phase == "Deploying":
                self.cond("Ready", "False", "RolloutInProgress",
                          f"Rolling out version {st.serving.version}: {available} of {want} replicas available.")
            elif want > 0 and available >= want:
                self.cond("Ready", "True", "Available", f"Version {st.serving.version} serves at {st.endpoint}.")
            else:
                self.cond("Ready", "False", "Unavailable", f"{available} of {want} replicas available.")
            return
        st.endpoint = None
        st.replicas = None
        reasons = {"Evaluating": "Evaluating", "Adapting": "Adapting", "Rejected": "BelowThreshold",
                   "Failed": "Failed", "Pending": "Pending"}
        self.cond("Ready", "False", reasons.get(st.phase, st.phase), f"Phase {st.phase}: nothing is served yet.")


def _same(st: ModelReuseStatus, type_: str, reason: str) -> bool:
    c = get_condition(st.conditions, type_)
    return c is not None and c.status == "True" and c.reason == reason


def _replicas(want: int, available: int):
    from modelreuse.api.status import ReplicaStatus

    return ReplicaStatus(desired=want, available=available)


def _evaluation(res: WorkloadResult, version: int, stamp: str) -> EvaluationStatus:
    def unit(x: float | None) -> float:
        return min(1.0, max(0.0, float(x or 0.0)))

    return EvaluationStatus(
        version=version, score=unit(res.score), precision=unit(res.precision), recall=unit(res.recall),
        f1=unit(res.f1), accuracy=unit(res.accuracy), samples=max(0, res.samples or 0),
        model_digest=res.model_digest, data_digest=res.data_digest, evaluated_at=stamp,
    )


def reconcile(obj: ModelReuse, observed: Observed, now: datetime, settings: Settings) -> Plan:
    """Decide one step for ``obj``: children to apply, the status merge patch and the events."""
    run = _Run(obj, observed, now, settings)
    run.run()
    old = obj.status.to_json_dict()
    new = run.st.to_json_dict()
    return Plan(apply=run.apply, status=merge_patch(old, new), events=run.events, phase=run.st.phase)


__all__ = ["Event", "Plan", "inputs_digest", "job_outcome", "merge_patch", "parse_result", "reconcile",
           "parse_duration"]
