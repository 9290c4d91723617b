"""Integration tests run against a real local control plane (tests/kubecluster.py): etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok fake nodes, started once per session.

Fixture ``cluster`` (session scope) is a :class:`kubecluster.KubeCluster` with the ModelReuse CRD applied
and Established:

* ``cluster.server`` (https URL), ``cluster.kubeconfig`` (admin, system:masters), ``cluster.admin_token``,
* ``cluster.users``: name -> User(name, token, groups, kubeconfig); pre-created ``operator`` and ``viewer``
  (no groups: only what RBAC grants) and ``developer`` (group ``modelreuse:developers``),
* ``cluster.kubectl(*args, user=None, input=None, check=False, timeout=120)`` -> CompletedProcess (text),
* ``cluster.apply(yaml_text, user=None)``, ``cluster.env(user=None)`` (os.environ + KUBECONFIG),
* ``cluster.add_token_user(name, groups)`` (a new name restarts kube-apiserver, about 20 s),
* ``cluster.bin_dir`` (kubectl and the others), ``cluster.version`` (e.g. v1.34.4), ``cluster.workdir``
  (logs/ holds every component's log).

Missing binaries FAIL the tests (run ``make kube-tools`` / ``make debs``); they are never skipped.
Set MODELREUSE_KEEP_CLUSTER=1 to keep the folder (logs, etcd data) after the session.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kubecluster import ClusterError, KubeCluster, missing_binaries

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modelreuse.io_modelreuses.yaml"
CRD_NAME = "modelreuses.modelreuse.io"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster():
    missing = missing_binaries()
    if missing:
        pytest.fail(
            "the local Kubernetes control plane is not installed (missing: " + ", ".join(missing)
            + "). Run `make kube-tools` (builds kube-apiserver, kube-controller-manager, kube-scheduler, "
              "kubectl and kwok from Go modules) and `make debs` (etcd).", pytrace=False)
    c = KubeCluster(keep_workdir=bool(os.environ.get("MODELREUSE_KEEP_CLUSTER")))
    try:
        c.start()
    except ClusterError as e:
        pytest.fail(f"local control plane did not start:\n{e}", pytrace=False)
    try:
        _install_crd(c)
        yield c
    except BaseException:
        print(c.log_tails())
        raise
    finally:
        c.stop()


def _install_crd(c: KubeCluster) -> None:
    if not CRD.exists():
        pytest.fail(f"{CRD.relative_to(REPO)} is missing (make crd)", pytrace=False)
    cp = c.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    if cp.returncode != 0:
        pytest.fail(f"applying the CRD failed:\n{cp.stderr}", pytrace=False)
    cp = c.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=120s")
    if cp.returncode != 0:
        pytest.fail(f"the CRD did not become Established:\n{cp.stderr}\n{c.log_tails()}", pytrace=False)
    # Discovery can lag behind Established for a moment; wait until kubectl knows the resource.
    for _ in range(60):
        if c.kubectl("get", "modelreuses", "-A").returncode == 0:
            return
        time.sleep(1)
    pytest.fail("the modelreuses resource never appeared in discovery", pytrace=False)
