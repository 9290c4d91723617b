"""Benchmark of `modelreuse adapt` on the two real reuse scenarios, on CPU.

    python bench/adapt_bench.py [--repeat 1] [--out DIR]

Builds (or reuses from the cache) the bikeshare and sentiment scenarios, then for each case runs the real
command line, `python -m modelreuse adapt ...`, in a fresh process and measures its wall time from start to
exit and its peak RSS (from wait4). The score P (macro, w1 = w2 = 0.5) of the source and of the adapted
model on the new domain's holdout comes from `modelreuse.runtime.evaluate`. Prints a Markdown table for
BENCHMARKS.md. Scenario building is not timed (it happens once per cache).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = [
    # name, scenario, strategy, source kind, adaptation
    ("bikeshare head", "bikeshare", "head", "onnx", {"epochs": 30, "learningRate": 0.01, "seed": 3}),
    ("bikeshare full (TorchScript)", "bikeshare", "full", "torchscript", {"epochs": 25, "learningRate": 0.001, "seed": 3}),
    ("sentiment head (MiniLM)", "sentiment", "head", "onnx", {"epochs": 60, "learningRate": 0.001, "seed": 3}),
]


def _measure(argv: list[str]) -> tuple[float, float, str]:
    # Popen.communicate reaps the child, so read its rusage through a tiny wrapper process instead.
    wrapper = (
        "import os,sys,time,subprocess,resource,json;t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);w=time.perf_counter()-t;"
        "r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024;"
        "sys.stderr.write(p.stderr);print(json.dumps({'wall':w,'rss':r,'rc':p.returncode,'out':p.stdout}))"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    info = json.loads(done.stdout.strip().splitlines()[-1])
    if info["rc"] != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return info["wall"], info["rss"], info["out"]


def _score(scenario, model_uri: str) -> float:
    from modelreuse.runtime.evaluate import evaluate

    body = scenario.task()
    body["source"]["uri"] = model_uri
    body["source"].pop("sha256", None)
    return evaluate(body)["metrics"]["score"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the table shows the median")
    parser.add_argument("--out", help="folder for the adapted models (a temporary one by default)")
    args = parser.parse_args()

    from modelreuse.scenarios import bikeshare, sentiment

    scenarios = {"bikeshare": bikeshare.build(), "sentiment": sentiment.build()}
    out_root = Path(args.out or tempfile.mkdtemp(prefix="adapt-bench-"))
    rows = []
    for name, key, strategy, kind, adaptation in CASES:
        s = scenarios[key]
        task = s.task()
        task["adaptation"] = {"strategy": strategy, **adaptation}
        model = str(s.model_path) if kind == "onnx" else str(s.extra_models[kind])
        if kind != "onnx":
            task["source"] = {"uri": model, "labels": s.labels}
        walls, rsss = [], []
        for i in range(args.repeat):
            out = out_root / f"{key}-{strategy}-{i}"
            argv = [sys.executable, "-m", "modelreuse", "adapt", "--model", model, "--data", str(s.data_parquet),
                    "--out", str(out), "--task", json.dumps(task), "--termination-log", os.devnull, "--device", "cpu"]
            wall, rss, stdout = _measure(argv)
            walls.append(wall)
            rsss.append(rss)
        result = json.loads(stdout.strip().splitlines()[-1])
        before = _score(s, str(s.model_path))
        after = _score(s, result["modelUri"])
        walls.sort()
        rows.append((name, result["samples"], result["extra"]["epochsRun"], walls[len(walls) // 2], max(rsss), before, after))
        print(f"{name}: {rows[-1]}", file=sys.stderr)

    load = os.getloadavg()[0]
    print(f"cores: {os.cpu_count()}, repeat {args.repeat}, 1-minute load average at the end: {load:.1f}\n")
    print("| case | training rows | epochs run | wall time (s) | peak RSS (MiB) | score before | score after |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, n, epochs, wall, rss, before, after in rows:
        print(f"| {name} | {n} | {epochs} | {wall:.1f} | {rss:.0f} | {before:.3f} | {after:.3f} |")


if __name__ == "__main__":
    main()
