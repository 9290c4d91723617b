"""Operator benchmark on the local control plane (tests/kubecluster.py).

1. 200 ModelReuse objects created at once: time until every one has its evaluation Job, p50/p99 of
   create-to-Job, operator peak RSS and CPU seconds; then the same for a bare kopf operator whose only
   handler creates one Job per object (bench/bare_operator.py), the floor of kopf on this API server.
   ``--rounds N`` repeats the pair N times in alternating order (fresh namespaces and processes) and
   reports medians: single runs on a shared 2-core machine swing by +-50 %.
2. 1,000 idle Serving objects (each with its Deployment and Service): the operator's RSS once settled.

Run: .venv/bin/python bench/operator_bench.py [--objects 200] [--rounds 5] [--idle 1000]
Prints one JSON document; the figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "operator"))

import urllib3  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402

from catalogue import load_sample  # noqa: E402
from kubecluster import KubeCluster, free_port  # noqa: E402
from modelreuse.api.resource import ModelReuse  # noqa: E402
from modelreuse.controller.lifecycle import inputs_digest  # noqa: E402

urllib3.disable_warnings()
G, V, P = "modelreuse.io", "v1alpha1", "modelreuses"
CLK = os.sysconf("SC_CLK_TCK")


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS MiB, CPU seconds) of a process, from /proc."""
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return hwm, (int(fields[11]) + int(fields[12])) / CLK


def rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def body(ns: str, name: str, replicas: int | None = None) -> dict:
    b = copy.deepcopy(load_sample("bikeshare"))
    b["metadata"] = {"name": name, "namespace": ns}
    if replicas is not None:
        b["spec"]["deployment"]["replicas"] = replicas
    return b


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def burst(cluster: KubeCluster, api: client.ApiClient, cmd: list[str], ns: str, n: int, job_of) -> dict:
    core, batch, custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": ns}})
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONPATH": str(REPO / "operator")}
    log = open(cluster.workdir / f"{ns}.log", "wb")
    op = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    time.sleep(6)  # started and listing (an empty namespace)
    _, cpu0 = proc_stats(op.pid)
    seen: dict[str, float] = {}
    stop = threading.Event()

    def watch_jobs():
        w = watch.Watch()
        for ev in w.stream(batch.list_namespaced_job, ns, timeout_seconds=600):
            seen.setdefault(ev["object"].metadata.name, time.monotonic())
            if stop.is_set() or len(seen) >= n:
                w.stop()

    t = threading.Thread(target=watch_jobs, daemon=True)
    t.start()
    time.sleep(1)
    created: dict[str, float] = {}

    def create(i: int) -> None:
        name = f"obj-{i:04d}"
        t0 = time.monotonic()
        custom.create_namespaced_custom_object(G, V, ns, P, body(ns, name))
        created[name] = t0

    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(n)))
    created_all = time.monotonic() - start
    deadline = time.monotonic() + 600
    while len(seen) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    lat = [seen[job_of(name)] - t0 for name, t0 in created.items() if job_of(name) in seen]
    peak, cpu1 = proc_stats(op.pid)
    op.terminate()
    op.wait(30)
    return {"objects": n, "jobs_seen": len(lat), "create_all_s": round(created_all, 2),
            "all_jobs_s": round(max(seen.values()) - start, 2) if seen else None,
            "p50_s": round(statistics.median(lat), 3), "p99_s": round(pct(lat, 0.99), 3),
            "peak_rss_mib": round(peak, 1), "cpu_s": round(cpu1 - cpu0, 2)}


def idle(cluster: KubeCluster, api: client.ApiClient, n: int) -> dict:
    """n objects already Serving (status written as the operator would have, replicas 0 so no pods): the
    operator starts, makes each one's Deployment and Service, and then holds them idle."""
    core, custom, apps = client.CoreV1Api(api), client.CustomObjectsApi(api), client.AppsV1Api(api)
    ns = "bench-idle"
    core.create_namespace({"metadata": {"name": ns}})
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def make(i: int) -> None:
        b = body(ns, f"idle-{i:04d}", replicas=0)
        obj = custom.create_namespaced_custom_object(G, V, ns, P, b)
        digest = inputs_digest(ModelReuse.from_dict(obj).spec)
        serving = {"version": 1, "origin": "source", "uri": b["spec"]["source"]["uri"], "score": 0.9, "since": now}
        status = {"phase": "Serving", "observedGeneration": 1, "inputsDigest": digest, "nextVersion": 2,
                  "serving": serving, "evaluation": {"version": 1, "score": 0.9, "precision": 0.9, "recall": 0.9,
                                                     "f1": 0.9, "accuracy": 0.9, "samples": 100},
                  "history": [{"version": 1, "origin": "source", "score": 0.9, "decision": "Promoted", "time": now}]}
        custom.patch_namespaced_custom_object_status(G, V, ns, P, obj["metadata"]["name"], {"status": status})

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(make, range(n)))
    made = time.monotonic() - t0
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONPATH": str(REPO / "operator")}
    log = open(cluster.workdir / "idle.log", "wb")
    op = subprocess.Popen([sys.executable, "-m", "modelreuse", "operator", "-n", ns, "--metrics-port", str(port),
                           "--webhook-port", str(port), "--resync-seconds", "60"],
                          env=env, stdout=log, stderr=subprocess.STDOUT)
    t1 = time.monotonic()
    # Deployments are waited for; Services are counted at the end.
    while time.monotonic() - t1 < 900:
        if len(apps.list_namespaced_deployment(ns).items) >= n:
            break
        time.sleep(5)
    children_s = time.monotonic() - t1
    serving = sum(1 for o in custom.list_namespaced_custom_object(G, V, ns, P)["items"]
                  if (o.get("status") or {}).get("phase") == "Serving")
    time.sleep(30)  # settle: every object reconciled once more, nothing left to do
    _, cpu0 = proc_stats(op.pid)
    time.sleep(60)
    peak, cpu1 = proc_stats(op.pid)
    current = rss(op.pid)
    op.terminate()
    op.wait(30)
    services = len(core.list_namespaced_service(ns).items)
    return {"objects": n, "serving": serving, "deployments": len(apps.list_namespaced_deployment(ns).items),
            "services": services, "setup_s": round(made, 1), "children_ready_s": round(children_s, 1),
            "rss_mib": round(current, 1), "peak_rss_mib": round(peak, 1),
            "idle_cpu_s_per_min": round(cpu1 - cpu0, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=200)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=1, help="burst pairs, alternating order; medians reported")
    args = ap.parse_args()
    cluster = KubeCluster()
    cluster.start()
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "modelreuse.io_modelreuses.yaml"), check=True)
        cluster.kubectl("wait", "--for=condition=Established", "crd/modelreuses.modelreuse.io", check=True)
        time.sleep(2)
        api = config.new_client_from_config(str(cluster.kubeconfig))
        api.configuration.connection_pool_maxsize = 32
        py = sys.executable
        out = {"machine": f"{os.cpu_count()} cores", "kubernetes": cluster.version, "rounds": []}

        def ours(ns):
            return [py, "-m", "modelreuse", "operator", "-n", ns, "--job-node-selector", "modelreuse.io/test-kubelet=true",
                    "--metrics-port", str(free_port()), "--webhook-port", str(free_port()), "--resync-seconds", "60"]

        runs = {
            "modelreuse": lambda ns: burst(cluster, api, ours(ns), ns, args.objects, lambda n: f"{n}-eval-v1"),
            "bare_kopf": lambda ns: burst(cluster, api, [py, str(REPO / "bench" / "bare_operator.py"), ns], ns,
                                          args.objects, lambda n: f"{n}-job"),
        }
        for r in range(args.rounds):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            row = {name: runs[name](f"bench-{name.replace('_', '-')}-{r}") for name in order}
            row["p99_ratio"] = round(row["modelreuse"]["p99_s"] / row["bare_kopf"]["p99_s"], 2)
            out["rounds"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        for name in runs:
            out[name] = {k: round(statistics.median(r[name][k] for r in out["rounds"]), 3)
                         for k in ("all_jobs_s", "p50_s", "p99_s", "peak_rss_mib", "cpu_s")}
        out["p99_ratio"] = round(out["modelreuse"]["p99_s"] / out["bare_kopf"]["p99_s"], 2)
        out["p99_ratio_per_round"] = [r["p99_ratio"] for r in out["rounds"]]
        print(json.dumps({k: out[k] for k in ("modelreuse", "bare_kopf", "p99_ratio", "p99_ratio_per_round")}),
              file=sys.stderr, flush=True)
        if args.idle:
            out["idle"] = idle(cluster, api, args.idle)
        print(json.dumps(out, indent=2))
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
