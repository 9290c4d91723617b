"""The install manifests: Prometheus rules pass promtool (syntax and a rule unit test), the Alertmanager
receiver passes amtool, alerts carry the labels the operator matches on, the operator Deployment is hardened
with the Recreate strategy, and every workload command line the operator builds parses with the workloads'
own argument parsers."""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from controller_support import SETTINGS
from modelreuse.api.resource import ModelReuse
from modelreuse.api.status import ModelVersion
from modelreuse.controller import children as ch
from catalogue import load_sample

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "manifests" / "monitoring"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run `make debs` (tools/install-debs.sh installs prometheus and alertmanager)"
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=MON, capture_output=True, text=True, timeout=60)


def test_prometheus_rules_check_and_unit_test():
    cp = run(tool("promtool"), "check", "rules", "modelreuse-rules.yaml")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp = run(tool("promtool"), "test", "rules", "modelreuse-rules.test.yaml")
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_alertmanager_receiver_config_checks_and_routes_model_alerts_to_the_webhook():
    cp = run(tool("amtool"), "check-config", "alertmanager.yaml")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cfg = yaml.safe_load((MON / "alertmanager.yaml").read_text())
    (hook,) = next(r for r in cfg["receivers"] if r["name"] == "modelreuse-operator")["webhook_configs"]
    assert hook["url"].endswith("/alerts") and hook["http_config"]["authorization"]["type"] == "Bearer"
    rules = yaml.safe_load((MON / "modelreuse-rules.yaml").read_text())
    model_alerts = [r for g in rules["groups"] if g["name"] == "modelreuse-models" for r in g["rules"]]
    for rule in model_alerts:
        assert "by (namespace, modelreuse)" in rule["expr"], rule["alert"]
    sample = load_sample("bikeshare")
    assert set(sample["spec"]["retraining"]["alerts"]) <= {r["alert"] for r in model_alerts}


def test_operator_deployment_is_hardened_and_recreated():
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "operator" / "operator.yaml").read_text()))
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["strategy"] == {"type": "Recreate"} and dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    sc = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert pod["serviceAccountName"] == "modelreuse-operator"
    rbac = list(yaml.safe_load_all((ROOT / "manifests" / "rbac" / "operator.yaml").read_text()))
    role = next(d for d in rbac if d["kind"] == "ClusterRole")
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert not verbs & {"*", "delete", "deletecollection", "escalate", "bind", "impersonate"}
    assert all("*" not in rule["resources"] for rule in role["rules"])
    updates = [r for r in role["rules"] if "update" in r["verbs"]]
    assert [r["resources"] for r in updates] == [["modelreuses/finalizers"]]


@pytest.mark.parametrize("command, module", [("evaluate", "modelreuse.runtime.evaluate"),
                                             ("adapt", "modelreuse.runtime.adapt"),
                                             ("serve", "modelreuse.runtime.serve")])
def test_workload_command_lines_parse_with_the_workloads_parsers(command, module):
    obj = ModelReuse.from_dict({**load_sample("bikeshare"), "metadata": {"name": "m", "namespace": "ml", "uid": "u"}})
    v = ModelVersion(version=2, origin="adaptation", uri="s3://a/ml/m/v2/model.onnx", digest="sha256:" + "c" * 64)
    manifest = {"evaluate": lambda: ch.build_evaluation_job(obj, v, SETTINGS),
                "adapt": lambda: ch.build_adaptation_job(obj, v, SETTINGS),
                "serve": lambda: ch.build_deployment(obj, v, SETTINGS)}[command]()
    args = manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == command
    parser = argparse.ArgumentParser()
    importlib.import_module(module).add_arguments(parser)
    parsed = parser.parse_args(args[1:])
    assert parsed.task
