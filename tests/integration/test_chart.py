"""The Helm chart (charts/modelreuse): its CRD is the generated one, its RBAC and operator Deployment are those
of the plain manifests (no drift between the two installs), `helm lint --strict` passes, the values schema
refuses bad values by name, and it installs into, upgrades in and uninstalls from the real API server.

helm is built by `make kube-tools` (tools/helm/build.sh) next to kubectl.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from kubecluster import default_bin_dir

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelreuse"
SYSTEM_NS = "modelreuse-system"
# Not "modelreuse": the plain manifests' objects (test_operator_rbac.py) may be there under those names.
RELEASE = "chart-test"
PREFIX = f"{RELEASE}-modelreuse"


@pytest.fixture(scope="module")
def helm(tmp_path_factory):
    """Runs helm with its own config and cache folders (never the user's); returns a CompletedProcess."""
    binary = default_bin_dir() / "helm"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"helm is not installed at {binary}. Run `make kube-tools` (tools/helm/build.sh builds it "
                    "with `go install`).", pytrace=False)
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}

    def run(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(binary), *args]
        if kubeconfig is not None:
            cmd += ["--kubeconfig", str(kubeconfig)]
        cp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if check and cp.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
        return cp

    return run


def render(helm, *set_args: str, release: str = "modelreuse", namespace: str = SYSTEM_NS) -> list[dict]:
    out = helm("template", release, str(CHART), "--namespace", namespace, *set_args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def plain(path: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((REPO / path).read_text()) if d]


def by_kind(docs: list[dict], kind: str) -> dict[tuple[str, str | None], dict]:
    return {(d["metadata"]["name"], d["metadata"].get("namespace")): d for d in docs if d["kind"] == kind}


def canonical(rules: list[dict]) -> list[str]:
    """Rules as comparable text: the order of rules, and of the lists within one, means nothing to RBAC."""
    return sorted(json.dumps({k: sorted(v) for k, v in r.items()}, sort_keys=True) for r in rules)


def test_chart_crd_is_the_generated_crd():
    generated = (REPO / "crds" / "modelreuse.io_modelreuses.yaml").read_bytes()
    in_chart = (CHART / "crds" / "modelreuse.io_modelreuses.yaml").read_bytes()
    assert in_chart == generated, "charts/modelreuse/crds/ differs from crds/: run `make crd`"


def test_helm_lint_strict_passes_for_every_mode(helm):
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "--set", "watchNamespaces={team-a,team-b}", "--set", "webhook.port=8081",
         "--set", "serviceMonitor.enabled=true", "--set", "prometheus.url=http://prometheus:9090")
    helm("lint", "--strict", str(CHART), "--set", "webhook.enabled=false")


def test_rbac_is_the_plain_manifests_rbac(helm):
    """Release "modelreuse" in modelreuse-system renders exactly the RBAC objects of manifests/rbac/operator.yaml."""
    rendered, manifest = render(helm), plain("manifests/rbac/operator.yaml")
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        ours, theirs = by_kind(rendered, kind), by_kind(manifest, kind)
        assert set(ours) == set(theirs), f"{kind}: chart {sorted(ours)} vs manifests {sorted(theirs)}"
        for key, obj in ours.items():
            if "rules" in obj or "rules" in theirs[key]:
                assert canonical(obj["rules"]) == canonical(theirs[key]["rules"]), f"{kind} {key} rules drifted"
            assert obj.get("roleRef") == theirs[key].get("roleRef"), f"{kind} {key}"
            assert obj.get("subjects") == theirs[key].get("subjects"), f"{kind} {key}"


def test_namespaced_mode_grants_the_same_rules_per_namespace(helm):
    rendered = render(helm, "--set", "watchNamespaces={team-a,team-b}")
    cluster_rules = plain("manifests/rbac/operator.yaml")
    cluster_rules = next(d for d in cluster_rules if d["kind"] == "ClusterRole")["rules"]
    clusterrole = next(iter(by_kind(rendered, "ClusterRole").values()))
    roles = by_kind(rendered, "Role")
    assert {ns for (_, ns) in roles} == {"team-a", "team-b", SYSTEM_NS}
    for ns in ("team-a", "team-b"):
        # What a Role grants in each namespace plus what only a ClusterRole can grant: the cluster-wide set.
        assert canonical(roles[("modelreuse-operator", ns)]["rules"] + clusterrole["rules"]) == canonical(cluster_rules)
        binding = by_kind(rendered, "RoleBinding")[("modelreuse-operator", ns)]
        sa = {"kind": "ServiceAccount", "name": "modelreuse-operator", "namespace": SYSTEM_NS}
        assert binding["subjects"] == [sa]
    # Nothing namespaced is granted cluster-wide.
    assert [r["resources"] for r in clusterrole["rules"]] == [["customresourcedefinitions"]]
    args = deployment(rendered)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def deployment(docs: list[dict]) -> dict:
    (d,) = by_kind(docs, "Deployment").values()
    return d


def test_deployment_and_service_are_the_plain_manifests(helm):
    rendered = render(helm)
    ours = deployment(rendered)
    theirs = deployment(plain("manifests/operator/operator.yaml"))
    assert ours["spec"]["strategy"] == theirs["spec"]["strategy"] == {"type": "Recreate"}
    assert ours["spec"]["replicas"] == theirs["spec"]["replicas"]
    pod, plain_pod = ours["spec"]["template"]["spec"], theirs["spec"]["template"]["spec"]
    for key in ("securityContext", "volumes", "serviceAccountName"):
        assert pod[key] == plain_pod[key], key
    (c,), (pc,) = pod["containers"], plain_pod["containers"]
    for key in ("image", "args", "ports", "livenessProbe", "readinessProbe", "resources", "securityContext",
                "volumeMounts"):
        assert c[key] == pc[key], key
    assert {"name": "HOME", "value": "/tmp"} in c["env"]
    assert ours["spec"]["template"]["metadata"]["annotations"] == theirs["spec"]["template"]["metadata"]["annotations"]
    (svc,), (plain_svc,) = by_kind(rendered, "Service").values(), by_kind(plain("manifests/operator/operator.yaml"),
                                                                         "Service").values()
    assert svc["spec"]["ports"] == plain_svc["spec"]["ports"]


def test_split_ports_and_options_reach_the_operator_flags(helm):
    rendered = render(helm, "--set", "webhook.port=8081", "--set", "prometheus.url=http://prometheus:9090",
                      "--set", "prometheus.intervalSeconds=15", "--set", "runtime.jobNodeSelector.pool=train",
                      "--set", "runtime.image.pullPolicy=Always", "--set", "webhook.existingSecret=my-token",
                      "--set", "image.tag=0.2.0")
    c = deployment(rendered)["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "ghcr.io/modelreuse/operator:0.2.0"
    for flag in ("--webhook-port=8081", "--metrics-port=8080", "--prometheus-url=http://prometheus:9090",
                 "--prometheus-interval=15", "--job-node-selector=pool=train",
                 f"--webhook-token-secret={SYSTEM_NS}/my-token"):
        assert flag in c["args"], (flag, c["args"])
    assert {"name": "MODELREUSE_IMAGE_PULL_POLICY", "value": "Always"} in c["env"]
    assert c["livenessProbe"]["httpGet"]["port"] == "metrics"
    (svc,) = by_kind(rendered, "Service").values()
    assert {(p["name"], p["port"]) for p in svc["spec"]["ports"]} == {("metrics", 8080), ("webhook", 8081)}
    # An existing Secret: the chart makes none, and the Role names that one.
    assert not by_kind(rendered, "Secret")
    (role,) = by_kind(rendered, "Role").values()
    assert role["rules"][0]["resourceNames"] == ["my-token"]


def test_webhook_off_means_no_secret_and_no_secret_access(helm):
    rendered = render(helm, "--set", "webhook.enabled=false")
    assert not by_kind(rendered, "Secret") and not by_kind(rendered, "Role") and not by_kind(rendered, "RoleBinding")
    args = deployment(rendered)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--webhook-token-secret") for a in args)


@pytest.mark.parametrize(("setting", "named"), [
    ("replicas=two", "/replicas"),
    ("replicas=2", "/replicas"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("runtime.image.pullPolicy=Sometimes", "/runtime/image/pullPolicy"),
    ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
    ("webhook.port=70000", "/webhook/port"),
    ("artifacts.uri=bucket-without-scheme", "/artifacts/uri"),
    ("replica=1", "'replica'"),  # a misspelt key is refused, not silently ignored
])
def test_values_schema_refuses_a_bad_value_by_name(helm, setting, named):
    cp = helm("template", "modelreuse", str(CHART), "--set", setting, check=False)
    assert cp.returncode != 0, f"{setting} was accepted"
    assert "schema" in cp.stderr and named in cp.stderr, cp.stderr


def kubectl_json(cluster, *args: str):
    cp = cluster.kubectl(*args, "-o", "json", check=True)
    return json.loads(cp.stdout)


def test_install_upgrade_uninstall_on_the_api_server(cluster, helm):
    kc = cluster.kubeconfig
    cluster.kubectl("create", "namespace", SYSTEM_NS)  # may exist already (other tests use it)
    # As the plain manifests do: the restricted Pod Security level, which the operator pod must pass.
    cluster.kubectl("label", "--overwrite", "namespace", SYSTEM_NS, "pod-security.kubernetes.io/enforce=restricted",
                    check=True)
    try:
        install = helm("install", RELEASE, str(CHART), "--namespace", SYSTEM_NS, "--wait", "--timeout", "180s",
                       kubeconfig=kc)
        assert f"{PREFIX}-operator.{SYSTEM_NS}.svc:8080/alerts" in install.stdout  # NOTES.txt

        name = f"{PREFIX}-operator"
        expected = render(helm, release=RELEASE)
        cluster.kubectl("-n", SYSTEM_NS, "get", "serviceaccount", name, check=True)
        live_role = kubectl_json(cluster, "get", "clusterrole", name)
        assert canonical(live_role["rules"]) == canonical(by_kind(expected, "ClusterRole")[(name, None)]["rules"])
        binding = kubectl_json(cluster, "get", "clusterrolebinding", name)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": SYSTEM_NS}]

        live = kubectl_json(cluster, "-n", SYSTEM_NS, "get", "deployment", name)
        assert live["spec"]["strategy"] == {"type": "Recreate"}
        pod = live["spec"]["template"]["spec"]
        rendered_pod = deployment(expected)["spec"]["template"]["spec"]
        assert pod["securityContext"] == rendered_pod["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = pod["containers"][0]["securityContext"]
        assert sc == rendered_pod["containers"][0]["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
        # --wait returned: the pod was admitted under the restricted level, scheduled and is Ready (kwok node).
        assert live["status"].get("availableReplicas") == 1

        svc = kubectl_json(cluster, "-n", SYSTEM_NS, "get", "service", name)
        assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8080)]
        endpoints = kubectl_json(cluster, "-n", SYSTEM_NS, "get", "endpointslices", "-l",
                                 f"kubernetes.io/service-name={name}")
        assert any(ep.get("endpoints") for ep in endpoints["items"]), "the Service selects no pod"

        # The ServiceAccount's access is the ClusterRole's: what the operator needs, and not more.
        sa = f"system:serviceaccount:{SYSTEM_NS}:{name}"

        def can(*args: str) -> bool:
            return cluster.kubectl("auth", "can-i", "--as", sa, *args).stdout.strip() == "yes"

        assert can("patch", "modelreuses.modelreuse.io", "--subresource=status", "-n", "default")
        assert can("create", "jobs.batch", "-n", "default")
        assert can("get", f"secrets/{PREFIX}-alert-token", "-n", SYSTEM_NS)
        assert not can("list", "secrets", "-n", SYSTEM_NS)
        assert not can("delete", "deployments.apps", "-n", "default")

        token = secret_token(cluster, f"{PREFIX}-alert-token")
        assert len(token) == 48 and token.isalnum()

        # An upgrade changes the operator flags but keeps the generated token (Alertmanager holds a copy).
        helm("upgrade", RELEASE, str(CHART), "--namespace", SYSTEM_NS, "--reuse-values",
             "--set", "prometheus.url=http://prometheus.monitoring.svc:9090", kubeconfig=kc)
        args = kubectl_json(cluster, "-n", SYSTEM_NS, "get", "deployment", name)["spec"]["template"]["spec"][
            "containers"][0]["args"]
        assert "--prometheus-url=http://prometheus.monitoring.svc:9090" in args
        assert secret_token(cluster, f"{PREFIX}-alert-token") == token

        helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, "--wait", "--timeout", "120s", kubeconfig=kc)
        for kind, ns in (("serviceaccount", SYSTEM_NS), ("clusterrole", None), ("clusterrolebinding", None),
                         ("deployment", SYSTEM_NS), ("service", SYSTEM_NS), ("role", SYSTEM_NS),
                         ("rolebinding", SYSTEM_NS)):
            obj = name if kind not in ("role", "rolebinding") else f"{name}-alert-token"
            gone(cluster, kind, obj, ns)
        gone(cluster, "secret", f"{PREFIX}-alert-token", SYSTEM_NS)
        # Helm never deletes what it found in crds/: ModelReuses elsewhere keep their CRD.
        cluster.kubectl("get", "crd", "modelreuses.modelreuse.io", check=True)
    finally:
        helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, "--ignore-not-found", kubeconfig=kc, check=False)
        cluster.kubectl("label", "namespace", SYSTEM_NS, "pod-security.kubernetes.io/enforce-")


def secret_token(cluster, name: str) -> str:
    data = kubectl_json(cluster, "-n", SYSTEM_NS, "get", "secret", name)["data"]
    return base64.b64decode(data["token"]).decode()


def gone(cluster, kind: str, name: str, namespace: str | None, timeout: float = 60) -> None:
    """Waits until the object is gone (a Deployment's pods go first, by the garbage collector)."""
    ns_args = ["-n", namespace] if namespace else []
    deadline = time.monotonic() + timeout
    while True:
        cp = cluster.kubectl("get", kind, name, *ns_args, "--ignore-not-found", "-o", "name")
        if cp.returncode == 0 and not cp.stdout.strip():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{kind} {name} still there after helm uninstall: {cp.stdout}{cp.stderr}")
        time.sleep(0.5)
