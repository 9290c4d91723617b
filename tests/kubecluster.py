"""A real, local Kubernetes control plane for the tests (and for humans).

Runs, on loopback only, in one temporary folder:

* etcd (Debian's ``etcd-server``, ``/usr/bin/etcd``),
* kube-apiserver (RBAC, token authentication, self-signed serving certificate),
* kube-controller-manager (all default controllers: Deployments, ReplicaSets, Jobs, the garbage collector,
  service accounts, ...),
* kube-scheduler,
* kwok, which plays the kubelet for fake nodes: pods bound to them become Running, Job pods Succeeded.

Two fake nodes are created: ``kwok-gpu-0`` (label ``nvidia.com/gpu.present=true``, 4 ``nvidia.com/gpu``,
taint ``nvidia.com/gpu:NoSchedule``) and ``kwok-cpu-0`` (a plain CPU node).

The Kubernetes binaries are built from Go modules by ``make kube-tools`` (tools/kube/build.sh) into
``${MODELREUSE_CACHE:-~/.cache/modelreuse}/kube-<version>/bin``; ``MODELREUSE_KUBE_BIN`` overrides the folder.

Users (static token file; the API server reads it only at start):

* ``admin``: group ``system:masters`` (the kubeconfig ``cluster.kubeconfig`` uses it),
* ``operator``, ``viewer``: no groups at all, so they can do only what RBAC bindings grant them
  (run the operator under exactly its ClusterRole),
* ``developer``: group ``modelreuse:developers``.

``add_token_user(name, groups)`` returns a pre-created user, or adds a new one by restarting the API
server (about 20 s; etcd keeps all state).

From Python::

    from kubecluster import KubeCluster
    with KubeCluster() as cluster:
        cluster.kubectl("get", "nodes", check=True)

By hand::

    python tests/kubecluster.py up      # prints the KUBECONFIG to export; processes keep running
    python tests/kubecluster.py down    # stops them and removes the folder

Only the standard library is used, so the system Python runs it too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KUBE_GO_MOD = REPO / "tools" / "kube" / "go.mod"
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")

GPU_NODE = "kwok-gpu-0"
CPU_NODE = "kwok-cpu-0"

# Users created at start besides the admin: name -> groups.
DEFAULT_USERS: dict[str, tuple[str, ...]] = {
    "operator": (),
    "viewer": (),
    "developer": ("modelreuse:developers",),
}


class ClusterError(RuntimeError):
    """The control plane could not be started (the message carries the log tails)."""


def kube_version() -> str:
    """The Kubernetes release pinned in tools/kube/go.mod, e.g. ``v1.34.4``."""
    m = re.search(r"^require\s+k8s\.io/kubernetes\s+(v\S+)", KUBE_GO_MOD.read_text(), re.M)
    if not m:
        raise ClusterError(f"cannot read the k8s.io/kubernetes version from {KUBE_GO_MOD}")
    return m.group(1)


def cache_dir() -> Path:
    return Path(os.environ.get("MODELREUSE_CACHE") or Path.home() / ".cache" / "modelreuse")


def default_bin_dir() -> Path:
    override = os.environ.get("MODELREUSE_KUBE_BIN")
    if override:
        return Path(override)
    return cache_dir() / f"kube-{kube_version()}" / "bin"


def missing_binaries(bin_dir: Path | None = None) -> list[str]:
    """Names of the needed programs that are not there (empty when all are)."""
    bin_dir = bin_dir or default_bin_dir()
    missing = [str(bin_dir / b) for b in KUBE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if not kwok_stages(bin_dir).is_file():
        missing.append(str(kwok_stages(bin_dir)))
    if not find_etcd():
        missing.append("etcd")
    return missing


def kwok_stages(bin_dir: Path) -> Path:
    """kwok's Stages (nodes Ready with a lease; pods Running; Job pods Succeeded), written by build.sh."""
    return Path(bin_dir).parent / "kwok-stages.yaml"


def find_etcd() -> str | None:
    return os.environ.get("MODELREUSE_ETCD") or shutil.which("etcd") or (
        "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class User:
    name: str
    token: str
    groups: tuple[str, ...]
    kubeconfig: Path


@dataclass
class Proc:
    name: str
    args: list[str]
    log: Path
    popen: subprocess.Popen | None = None
    env: dict[str, str] | None = None


@dataclass
class KubeCluster:
    """The control plane. ``start()`` (or ``with``) brings it up; ``stop()`` tears it down."""

    bin_dir: Path | None = None
    workdir: Path | None = None
    users_wanted: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_USERS))
    ready_timeout: float = 300.0  # generous: a loaded 2-core machine starts kube-apiserver slowly
    keep_workdir: bool = False
    detach: bool = False  # True: processes outlive this Python process (the `up` command)
    # kwok's pod-complete stage turns Running Job pods Succeeded at once (no termination message). False
    # leaves Job pods Running, so a test can play the kubelet and write their final status itself.
    kwok_completes_jobs: bool = True

    # Filled by start().
    server: str = ""
    admin_token: str = ""
    kubeconfig: Path | None = None
    ca_file: Path | None = None
    users: dict[str, User] = field(default_factory=dict)
    version: str = ""
    procs: dict[str, Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    # ---------------------------------------------------------------- public API

    def __enter__(self) -> "KubeCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def kubectl_bin(self) -> Path:
        return Path(self.bin_dir) / "kubectl"

    def env(self, user: str | None = None) -> dict[str, str]:
        """os.environ with KUBECONFIG pointing at this cluster (as ``user``, default admin)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig_for(user))
        return env

    def kubeconfig_for(self, user: str | None = None) -> Path:
        if user is None or user == "admin":
            assert self.kubeconfig is not None
            return self.kubeconfig
        return self.users[user].kubeconfig

    def kubectl(self, *args: str, user: str | None = None, input: str | None = None,
                check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the built kubectl against this cluster; returns the CompletedProcess (text)."""
        cmd = [str(self.kubectl_bin), f"--kubeconfig={self.kubeconfig_for(user)}", *args]
        cp = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode != 0:
            raise subprocess.CalledProcessError(cp.returncode, cmd, cp.stdout, cp.stderr)
        return cp

    def apply(self, manifest: str, user: str | None = None) -> subprocess.CompletedProcess:
        return self.kubectl("apply", "-f", "-", input=manifest, user=user, check=True)

    def add_token_user(self, name: str, groups: tuple[str, ...] | list[str] = ()) -> User:
        """A token user with these groups. Pre-created users come back at once; a new one (or new groups)
        means rewriting the token file and restarting kube-apiserver, which reads it only at start."""
        groups = tuple(groups)
        if name in self.users and self.users[name].groups == groups:
            return self.users[name]
        self.users_wanted[name] = groups
        if not self.server:  # not started yet: it is created with the others
            return User(name, "", groups, Path())
        self._make_user(name, groups)
        self._write_token_file()
        self._restart_apiserver()
        return self.users[name]

    def start(self) -> "KubeCluster":
        self.bin_dir = Path(self.bin_dir or default_bin_dir())
        missing = missing_binaries(self.bin_dir)
        if missing:
            raise ClusterError(
                "the local Kubernetes control plane is not installed; missing: " + ", ".join(missing)
                + ". Run `make kube-tools` (Go-built kube-apiserver, kube-controller-manager, "
                  "kube-scheduler, kubectl, kwok) and `make debs` (etcd).")
        self.version = kube_version() if not os.environ.get("MODELREUSE_KUBE_BIN") else ""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="modelreuse-kube-"))
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        try:
            self._start()
        except BaseException as e:
            report = self.log_tails()
            self.stop()
            if isinstance(e, ClusterError):
                raise ClusterError(f"{e}\n{report}") from None
            raise
        return self

    def stop(self) -> None:
        """Stop every process (process groups, reverse start order); remove the folder unless kept."""
        for name in reversed(list(self.procs)):
            self._stop_proc(self.procs[name])
        if self.workdir and not self.keep_workdir and not self.detach:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tails(self, lines: int = 40) -> str:
        parts = []
        for p in self.procs.values():
            state = "not started" if p.popen is None else (
                "running" if p.popen.poll() is None else f"exited {p.popen.returncode}")
            parts.append(f"----- {p.name} ({state}), {p.log} -----\n{tail(p.log, lines)}")
        return "\n".join(parts)

    # ---------------------------------------------------------------- internals

    def _start(self) -> None:
        wd = self.workdir
        assert wd is not None
        for k in ("etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kwok"):
            self.ports[k] = free_port()
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"

        # One RSA key signs and verifies service-account tokens.
        sa_key = wd / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True,
                       capture_output=True)
        sa_pub = wd / "sa.pub"
        subprocess.run(["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub)],
                       check=True, capture_output=True)

        self.admin_token = secrets.token_hex(16)
        self._system_tokens = {  # control-plane components: system:masters under their own names
            "system:kube-controller-manager": secrets.token_hex(16),
            "system:kube-scheduler": secrets.token_hex(16),
            "kwok": secrets.token_hex(16),
        }
        self.ca_file = wd / "certs" / "apiserver.crt"
        self.kubeconfig = wd / "admin.kubeconfig"
        self._write_kubeconfig(self.kubeconfig, "admin", self.admin_token)
        for comp, token in self._system_tokens.items():
            self._write_kubeconfig(wd / f"{comp.split(':')[-1]}.kubeconfig", comp, token)
        for name, groups in self.users_wanted.items():
            self._make_user(name, tuple(groups))
        self._write_token_file()

        # etcd
        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd_peer']}"
        self._spawn("etcd", [
            find_etcd(), "--data-dir", str(wd / "etcd"), "--name", "default",
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"default={peer_url}", "--logger=zap", "--log-level=warn",
        ])
        self._wait("etcd", lambda: self._http_ok(f"{etcd_url}/health"), 60)

        # kube-apiserver
        self._spawn("kube-apiserver", [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--cert-dir={wd / 'certs'}",
            f"--secure-port={self.ports['apiserver']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--service-cluster-ip-range=10.0.0.0/16",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            f"--token-auth-file={wd / 'tokens.csv'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            # With WatchList on (the 1.34 default), a watch from resourceVersion "" or "0" is served as a
            # streaming watch-list, which needs etcd >= 3.4.31 (RequestWatchProgress); Debian's etcd is
            # 3.4.23, so such watches (kwok's, kopf's) would end at once with an error and clients would
            # re-list with back-off, seeing changes tens of seconds late. Plain watches instead.
            "--feature-gates=WatchList=false",
            "--profiling=false",
            "--v=1",
        ])
        self._wait_apiserver()

        # kube-controller-manager, kube-scheduler, kwok
        kcm_kc = wd / "kube-controller-manager.kubeconfig"
        self._spawn("kube-controller-manager", [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kcm_kc}",
            f"--authentication-kubeconfig={kcm_kc}",
            f"--authorization-kubeconfig={kcm_kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['kcm']}",
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={self.ca_file}",
            "--use-service-account-credentials=false",
            "--controllers=*",
            # kwok renews node status but no node Lease, so the node lifecycle controller would call the
            # fake nodes NotReady after its grace period and mark every pod on them Ready=False for good.
            "--node-monitor-grace-period=24h",
            "--profiling=false",
            "--v=1",
        ])
        sch_kc = wd / "kube-scheduler.kubeconfig"
        self._spawn("kube-scheduler", [
            str(self.bin_dir / "kube-scheduler"),
            f"--kubeconfig={sch_kc}",
            f"--authentication-kubeconfig={sch_kc}",
            f"--authorization-kubeconfig={sch_kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['scheduler']}",
            "--profiling=false",
            "--v=1",
        ])
        kwok_home = wd / "kwok-home"  # kwok reads ~/.kwok/kwok.yaml: keep the user's out
        kwok_home.mkdir(exist_ok=True)
        self._spawn("kwok", [
            str(self.bin_dir / "kwok"),
            f"--kubeconfig={wd / 'kwok.kubeconfig'}",
            f"--config={self._kwok_config()}",
            "--manage-all-nodes=true",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
        ], env={**os.environ, "HOME": str(kwok_home)})

        self._create_nodes()
        deadline = self.ready_timeout
        # The controller manager is working once the service-account controller made `default/default`.
        self._wait("kube-controller-manager",
                   lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0,
                   deadline)
        self._wait("kube-scheduler",
                   lambda: self._http_ok(f"https://127.0.0.1:{self.ports['scheduler']}/healthz"),
                   deadline)
        self._wait("kwok (nodes Ready)", self._nodes_ready, deadline)

    def _kwok_config(self) -> Path:
        docs = kwok_stages(self.bin_dir).read_text().split("\n---\n")
        if not self.kwok_completes_jobs:
            docs = [d for d in docs if not re.search(r"^  name: pod-complete$", d, re.M)]
        path = self.workdir / "kwok-stages.yaml"
        path.write_text("\n---\n".join(docs))
        return path

    def _make_user(self, name: str, groups: tuple[str, ...]) -> None:
        token = secrets.token_hex(16)
        kc = self.workdir / f"user-{name}.kubeconfig"
        self._write_kubeconfig(kc, name, token)
        self.users[name] = User(name, token, groups, kc)

    def _write_token_file(self) -> None:
        lines = [f'{self.admin_token},admin,admin,"system:masters"']
        for comp, token in self._system_tokens.items():
            lines.append(f'{token},{comp},{comp},"system:masters"')
        for u in self.users.values():
            lines.append(f'{u.token},{u.name},{u.name}' + (f',"{",".join(u.groups)}"' if u.groups else ""))
        path = self.workdir / "tokens.csv"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        # The serving certificate is self-signed by kube-apiserver at its first start, after this file is
        # written; clients skip verification (loopback only).
        path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: modelreuse-local
  cluster:
    server: {self.server}
    insecure-skip-tls-verify: true
users:
- name: {json.dumps(user)}
  user:
    token: {token}
contexts:
- name: modelreuse-local
  context:
    cluster: modelreuse-local
    user: {json.dumps(user)}
    namespace: default
current-context: modelreuse-local
""")
        path.chmod(0o600)

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / "logs" / f"{name}.log"
        proc = self.procs.get(name) or Proc(name, args, log, env=env)
        proc.args, proc.env = args, env if env is not None else proc.env
        logf = open(log, "ab")
        preexec = None if self.detach else _die_with_parent
        proc.popen = subprocess.Popen(
            args, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=proc.env, cwd=self.workdir, start_new_session=True, preexec_fn=preexec)
        logf.close()
        self.procs[name] = proc
        return proc

    def _stop_proc(self, proc: Proc, grace: float = 15.0) -> None:
        p = proc.popen
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)

    def _restart_apiserver(self) -> None:
        proc = self.procs["kube-apiserver"]
        self._stop_proc(proc)
        self._spawn("kube-apiserver", proc.args)
        self._wait_apiserver()

    def _wait_apiserver(self) -> None:
        self._wait("kube-apiserver", lambda: self._http_ok(f"{self.server}/readyz", self.admin_token),
                   self.ready_timeout)

    def _http_ok(self, url: str, token: str | None = None) -> bool:
        req = urllib.request.Request(url)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        ctx = ssl._create_unverified_context() if url.startswith("https") else None
        try:
            with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _wait(self, what: str, ok, timeout: float, interval: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if ok():
                return
            dead = [p for p in self.procs.values() if p.popen is not None and p.popen.poll() is not None]
            if dead:
                raise ClusterError(f"waiting for {what}: {', '.join(p.name for p in dead)} exited")
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} not ready after {timeout:.0f} s")
            time.sleep(interval)

    def _create_nodes(self) -> None:
        nodes = [_node(GPU_NODE, gpu=True), _node(CPU_NODE, gpu=False)]
        cp = self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                "items": nodes}))
        if cp.returncode != 0:
            raise ClusterError(f"creating the fake nodes failed: {cp.stderr}")

    def _nodes_ready(self) -> bool:
        cp = self.kubectl("get", "nodes", "-o", "json")
        if cp.returncode != 0:
            return False
        items = json.loads(cp.stdout)["items"]
        ready = {n["metadata"]["name"] for n in items
                 if any(c["type"] == "Ready" and c["status"] == "True"
                        for c in n.get("status", {}).get("conditions", []))}
        return {GPU_NODE, CPU_NODE} <= ready

    # ---------------------------------------------------------------- detached mode (`up` / `down`)

    def state(self) -> dict:
        return {
            "workdir": str(self.workdir), "server": self.server, "kubeconfig": str(self.kubeconfig),
            "admin_token": self.admin_token, "bin_dir": str(self.bin_dir),
            "users": {u.name: {"token": u.token, "groups": list(u.groups), "kubeconfig": str(u.kubeconfig)}
                      for u in self.users.values()},
            "pids": {p.name: p.popen.pid for p in self.procs.values() if p.popen is not None},
        }


GPU_CAPACITY = "256"


def _node(name: str, gpu: bool) -> dict:
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "type": "kwok"}
    # Generous capacity: a whole test session's Serving objects (two GPU replicas each) share these nodes.
    resources = {"cpu": "512", "memory": "2Ti", "pods": "2000", "ephemeral-storage": "10Ti"}
    taints = []
    if gpu:
        labels["nvidia.com/gpu.present"] = "true"
        resources["nvidia.com/gpu"] = GPU_CAPACITY
        taints.append({"key": "nvidia.com/gpu", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"taints": taints},
        # kwok's node-initialize stage fills conditions, addresses and nodeInfo.
        "status": {"allocatable": resources, "capacity": resources},
    }


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the Python process that started it dies (no leaked servers)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# -------------------------------------------------------------------- command line


def _is_ours(pid: int, name: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return Path(cmdline).name == name


def _state_file(args) -> Path:
    return Path(args.state or cache_dir() / "kubecluster" / "state.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Local Kubernetes control plane (etcd, kube-apiserver, "
                                             "kube-controller-manager, kube-scheduler, kwok).")
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument("--dir", help="working folder (default: a new temporary folder)")
    ap.add_argument("--state", help="state file (default: $MODELREUSE_CACHE/kubecluster/state.json)")
    ap.add_argument("--keep", action="store_true", help="down: keep the folder (logs, etcd data)")
    args = ap.parse_args(argv)
    state_file = _state_file(args)

    if args.command == "up":
        if state_file.exists():
            print(f"a cluster is already up ({state_file}); run `down` first", file=sys.stderr)
            return 1
        cluster = KubeCluster(workdir=Path(args.dir) if args.dir else None, detach=True)
        try:
            cluster.start()
        except ClusterError as e:
            print(e, file=sys.stderr)
            if not args.dir:
                shutil.rmtree(cluster.workdir, ignore_errors=True)
            return 1
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(cluster.state(), indent=2))
        print(f"control plane up: {cluster.server} (logs in {cluster.workdir}/logs)")
        for u in cluster.users.values():
            print(f"  user {u.name} (groups: {', '.join(u.groups) or 'none'}): KUBECONFIG={u.kubeconfig}")
        print(f"export KUBECONFIG={cluster.kubeconfig}   # admin, system:masters")
        print(f"export PATH={cluster.bin_dir}:$PATH        # the matching kubectl")
        return 0

    if not state_file.exists():
        print("no cluster is up", file=sys.stderr)
        return 1 if args.command == "status" else 0
    state = json.loads(state_file.read_text())
    if args.command == "status":
        print(json.dumps(state, indent=2))
        return 0
    for name, pid in reversed(list(state["pids"].items())):
        if not _is_ours(pid, name):  # the pid may have been reused since `up`
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(150):
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if not args.keep:
        shutil.rmtree(state["workdir"], ignore_errors=True)
    state_file.unlink()
    print("control plane stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
