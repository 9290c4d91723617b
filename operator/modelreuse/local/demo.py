"""`modelreuse demo` (what `make demo` runs) and `modelreuse run -f FILE`: the whole job on one machine.

The demo inherits the bike-share model trained on January-June, declares July-December as the new domain
with a threshold the inherited model misses, and lets the reconcile core drive evaluation, adaptation,
re-evaluation and serving. Then it sends live traffic over the Open Inference Protocol, posts ground-truth
feedback and reads the live accuracy from the server's metrics.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import sys
import urllib.request
from typing import Any

import yaml

from modelreuse.local.runner import LocalRun, summary


def demo_object(threshold: float) -> dict[str, Any]:
    """A ModelReuse for the bike-share scenario, with file URIs into the scenario cache."""
    from modelreuse.scenarios import bikeshare

    scenario = bikeshare.build()
    task = scenario.task(data_uri=scenario.data_parquet.as_uri(), threshold=threshold)
    task["source"]["uri"] = scenario.model_path.as_uri()
    return {
        "apiVersion": "modelreuse.io/v1alpha1",
        "kind": "ModelReuse",
        "metadata": {"name": "bikeshare-dc", "namespace": "demo"},
        "spec": {
            **task,
            "adaptation": {"strategy": "head", "maxAttempts": 2, "epochs": 60},
            "deployment": {"replicas": 1, "device": "auto", "batching": {"maxBatchSize": 64}},
        },
    }


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def live_traffic(run: LocalRun, rows: int, say=print) -> None:
    """Send rows of the new domain to the local server, then their true labels as feedback."""
    import pyarrow.parquet as pq

    spec = run.body["spec"]
    name = run.body["metadata"]["name"]
    table = pq.read_table(spec["data"]["uri"].removeprefix("file://")).to_pylist()
    sample = random.Random(0).sample(table, min(rows, len(table)))
    base = f"{run.server.url}/v2/models/{name}"
    with urllib.request.urlopen(base, timeout=10) as resp:
        model_input = json.loads(resp.read())["inputs"][0]
    feedback = []
    for i, row in enumerate(sample):
        features = [float(row[f]) for f in spec["data"]["features"]]
        out = _post(base + "/infer", {"id": f"demo-{i}", "inputs": [
            {"name": model_input["name"], "shape": [1, len(features)], "datatype": model_input["datatype"],
             "data": features}]})
        feedback.append({"id": f"demo-{i}", "label": row[spec["data"]["target"]]})
        if i == 0:
            say(f"infer -> {json.dumps(out)[:300]}")
    reply = _post(base + "/feedback", {"feedback": feedback})
    say(f"feedback -> {json.dumps(reply)[:300]}")
    with urllib.request.urlopen(run.server.url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(("modelreuse_live_accuracy", "modelreuse_feedback_total")):
                say(line)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", help="a ModelReuse YAML to run (default: the bike-share demo)")
    parser.add_argument("--threshold", type=float, default=0.87, help="the demo's gate (the source scores ~0.86)")
    parser.add_argument("--workdir", help="where artifacts, job logs and the server log go (default: a temp dir)")
    parser.add_argument("--requests", type=int, default=200, help="live requests sent once serving")
    parser.add_argument("--keep-serving", action="store_true", help="serve until interrupted")


def run(args: argparse.Namespace) -> int:
    body = yaml.safe_load(pathlib.Path(args.filename).read_text()) if args.filename else demo_object(args.threshold)
    local = LocalRun.create(body, workdir=args.workdir)
    print(f"modelreuse: running {body['metadata']['name']} locally in {local.workdir}")
    try:
        phase = local.until_settled()
        print(summary(local.body))
        if phase != "Serving":
            return 1
        if args.requests:
            live_traffic(local, args.requests)
        if args.keep_serving:
            print(f"serving at {local.server.url}/v2/models/{body['metadata']['name']} (Ctrl-C stops)")
            local.server.process.wait()
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        local.close()


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
