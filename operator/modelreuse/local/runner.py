"""Run a ModelReuse on one machine, without a cluster, through the very reconcile core the operator uses.

The core plans Jobs, a Deployment and a Service; here a Job becomes a ``modelreuse evaluate|adapt``
process whose termination message is a file, and the Deployment becomes one ``modelreuse serve`` process
on loopback. What the processes report is fed back as the observed children, exactly as the Kubernetes
layer does from pod statuses, until the object is Serving, Rejected or Failed.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from modelreuse.api.resource import ModelReuse
from modelreuse.controller.children import SPEC_HASH_ANNOTATION, VERSION_LABEL
from modelreuse.controller.lifecycle import Event, apply_merge_patch, reconcile
from modelreuse.controller.observed import DeploymentObservation, JobObservation, Observed
from modelreuse.settings import Settings

TERMINAL_PHASES = ("Rejected", "Failed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _override_arg(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


@dataclass
class LocalServer:
    """The one inference process standing in for the Deployment's pods."""

    process: subprocess.Popen
    port: int
    manifest: dict[str, Any]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@dataclass
class LocalRun:
    """One ModelReuse driven to a final phase on this machine."""

    body: dict[str, Any]
    workdir: Path
    settings: Settings = field(default_factory=Settings)
    say: Callable[[str], None] = print
    jobs: dict[str, JobObservation] = field(default_factory=dict)
    server: LocalServer | None = None
    events: list[Event] = field(default_factory=list)

    @classmethod
    def create(cls, body: dict[str, Any], workdir: str | os.PathLike | None = None, **kwargs: Any) -> LocalRun:
        work = Path(workdir or tempfile.mkdtemp(prefix="modelreuse-run-"))
        (work / "artifacts").mkdir(parents=True, exist_ok=True)
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        meta.setdefault("namespace", "local")
        meta.setdefault("generation", 1)
        meta.setdefault("uid", "local-" + meta.get("name", "modelreuse"))
        settings = kwargs.pop("settings", None) or Settings(artifacts_uri=(work / "artifacts").as_uri())
        return cls(body=body, workdir=work, settings=settings, **kwargs)

    @property
    def obj(self) -> ModelReuse:
        return ModelReuse.from_dict(self.body)

    @property
    def phase(self) -> str:
        return (self.body.get("status") or {}).get("phase", "Pending")

    def _observed(self) -> Observed:
        deployment = None
        if self.server is not None:
            meta = self.server.manifest["metadata"]
            version = int(meta["labels"].get(VERSION_LABEL, "0") or 0)
            replicas = self.server.manifest["spec"]["replicas"]
            available = replicas if self.server.ready() else 0
            deployment = DeploymentObservation(
                name=meta["name"], version=version,
                spec_hash=meta.get("annotations", {}).get(SPEC_HASH_ANNOTATION),
                generation=1, observed_generation=1, replicas=replicas, updated_replicas=replicas,
                available_replicas=available,
                progress_deadline_exceeded=self.server.process.poll() is not None,
            )
        return Observed(jobs=dict(self.jobs), deployment=deployment, service=self.server is not None)

    def _run_job(self, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        if name in self.jobs:
            return
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        log_dir = self.workdir / "jobs" / name
        log_dir.mkdir(parents=True, exist_ok=True)
        term = log_dir / "termination-log"
        env = {**os.environ, "MODELREUSE_TERMINATION_LOG": str(term), "HF_HUB_OFFLINE": "1"}
        self.say(f"job {name}: modelreuse {container['args'][0]}")
        started = time.monotonic()
        with open(log_dir / "log", "wb") as log:
            proc = subprocess.run([sys.executable, "-m", "modelreuse", *container["args"]], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, check=False)
        message = term.read_text() if term.exists() else None
        if message is None:  # FallbackToLogsOnError: the log's tail stands in for the message
            message = (log_dir / "log").read_bytes()[-2048:].decode(errors="replace")
        self.say(f"job {name}: exit {proc.returncode} after {time.monotonic() - started:.1f}s")
        self.jobs[name] = JobObservation(
            name=name, succeeded=proc.returncode == 0, failed=proc.returncode != 0, termination_message=message,
            exit_code=proc.returncode, finished_at=datetime.now(timezone.utc),
            failure_reason=None if proc.returncode == 0 else "Error",
        )

    def _run_deployment(self, manifest: dict[str, Any]) -> None:
        if self.server is not None:
            old = self.server.manifest["metadata"].get("annotations", {})
            if old == manifest["metadata"].get("annotations", {}):
                return
            self.server.stop()
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        port = _free_port()
        args = _override_arg(_override_arg(container["args"], "--host", "127.0.0.1"), "--port", str(port))
        log = self.workdir / f"serve-{port}.log"
        proc = subprocess.Popen([sys.executable, "-m", "modelreuse", *args], stdout=open(log, "wb"),
                                stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        self.server = LocalServer(process=proc, port=port, manifest=manifest, log=log)
        self.say(f"deployment {manifest['metadata']['name']}: modelreuse serve on {self.server.url}")
        deadline = time.monotonic() + 120
        while not self.server.ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)

    def step(self) -> bool:
        """One reconcile and the execution of its plan; False when nothing is left to do."""
        plan = reconcile(self.obj, self._observed(), datetime.now(timezone.utc), self.settings)
        if plan.status:
            self.body["status"] = apply_merge_patch(self.body.get("status") or {}, plan.status)
        for event in plan.events:
            self.events.append(event)
            self.say(f"event {event.type} {event.reason}: {event.message}")
        for child in plan.apply:
            if child["kind"] == "Job":
                self._run_job(child)
            elif child["kind"] == "Deployment":
                self._run_deployment(child)
        return not plan.empty

    def until_settled(self, max_steps: int = 200) -> str:
        """Reconcile until the object is Serving and Ready, Rejected or Failed."""
        for _ in range(max_steps):
            progressed = self.step()
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (self.body.get("status") or {}).get("conditions", []))
            if self.phase in TERMINAL_PHASES or (self.phase == "Serving" and ready):
                return self.phase
            if not progressed:
                time.sleep(0.5)
        return self.phase

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def summary(body: dict[str, Any]) -> str:
    """What `kubectl get mr -o yaml` would show of the status, briefly."""
    st = body.get("status") or {}
    lines = [f"phase: {st.get('phase')}"]
    for c in st.get("conditions", []):
        lines.append(f"  {c['type']:<15} {c['status']:<6} {c['reason']}: {c.get('message', '')}")
    for h in st.get("history", []):
        lines.append(f"  v{h['version']} ({h['origin']}) score {h.get('score')} -> {h['decision']}")
    if st.get("serving"):
        lines.append(f"serving: v{st['serving']['version']} score {st['serving'].get('score')}")
    return "\n".join(lines)


def json_dump(body: dict[str, Any]) -> str:
    return json.dumps(body, indent=2, sort_keys=True)

