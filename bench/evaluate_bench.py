"""Benchmark of `modelreuse evaluate` against the script a data scientist writes by hand.

    python bench/evaluate_bench.py [--rows 1000000 4000000] [--repeat 3] [--keep DIR]

Generates labelled tabular data (CSV and Parquet, 12 numeric features, 3 classes) under a temporary folder,
trains a small MLP on a slice of it with torch and exports it to ONNX, then measures, each in a fresh
process (wall time from start to exit, peak RSS from wait4):

  (a) `modelreuse evaluate` scoring every row (holdout fraction 1);
  (b) the hand-written script: pandas.read_csv / read_parquet of the whole file, onnxruntime session.run in
      batches, scikit-learn metrics;
  (c) onnxruntime alone over arrays already in memory (the compute ceiling; timed inside the process).

Prints a Markdown table for BENCHMARKS.md. Nothing is written outside the temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

N_FEATURES = 12
LABELS = ["low", "mid", "high"]
FEATURES = [f"x{i}" for i in range(N_FEATURES)]
BATCH = 65536

HAND_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, pandas as pd, onnxruntime as ort
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support
    model, data = sys.argv[1], sys.argv[2]
    features = [f"x{i}" for i in range(12)]
    labels = np.array(["low", "mid", "high"])
    df = pd.read_parquet(data) if data.endswith(".parquet") else pd.read_csv(data)
    x = df[features].to_numpy(np.float32)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    preds = []
    for i in range(0, len(x), 65536):
        preds.append(sess.run(None, {name: x[i:i + 65536]})[0].argmax(axis=1))
    pred = labels[np.concatenate(preds)]
    p, r, f, _ = precision_recall_fscore_support(df["label"].astype(str), pred, average="macro", zero_division=0)
    print(p, r, f, accuracy_score(df["label"].astype(str), pred))
    """
)

CEILING_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np, onnxruntime as ort
    model, rows = sys.argv[1], int(sys.argv[2])
    x = np.random.default_rng(0).normal(size=(rows, 12)).astype(np.float32)
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x[:1024]})
    t = time.perf_counter()
    for i in range(0, rows, 65536):
        sess.run(None, {name: x[i:i + 65536]})[0].argmax(axis=1)
    print(rows / (time.perf_counter() - t))
    """
)


def make_data(folder: Path, rows: int) -> tuple[Path, Path]:
    """Write `rows` labelled rows as CSV and Parquet, in slices so generating stays within memory."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng(rows)
    weights = np.random.default_rng(1).normal(size=(N_FEATURES,))
    csv_path, pq_path = folder / f"data-{rows}.csv", folder / f"data-{rows}.parquet"
    schema = pa.schema([*(pa.field(f, pa.float64()) for f in FEATURES), pa.field("label", pa.string())])
    with pcsv.CSVWriter(str(csv_path), schema) as cw, pq.ParquetWriter(str(pq_path), schema) as pw:
        for start in range(0, rows, 500_000):
            n = min(500_000, rows - start)
            x = np.round(rng.normal(size=(n, N_FEATURES)), 4)
            z = x @ weights + rng.normal(scale=0.5, size=n)
            label = np.array(LABELS, dtype=object)[np.digitize(z, [-1.0, 1.0])]
            table = pa.table({**{f: x[:, i] for i, f in enumerate(FEATURES)}, "label": label}, schema=schema)
            cw.write_table(table)
            pw.write_table(table)
    return csv_path, pq_path


def make_model(folder: Path, csv_path: Path) -> Path:
    """A small MLP (12-64-64-3) trained briefly on the first 50,000 rows, exported to ONNX."""
    import numpy as np
    import pyarrow.csv as pcsv
    import torch

    table = pcsv.read_csv(str(csv_path)).slice(0, 50_000)
    x = torch.tensor(np.stack([table[f].to_numpy() for f in FEATURES], axis=1), dtype=torch.float32)
    y = torch.tensor([LABELS.index(v) for v in table["label"].to_pylist()])
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, len(LABELS)))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    path = folder / "mlp.onnx"
    torch.onnx.export(net.eval(), (x[:8],), str(path), dynamo=False, opset_version=17, input_names=["features"],
                      output_names=["logits"], dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}})
    return path


# Linux carries a process's peak RSS across fork and exec, so a child forked from this (large) process would
# report at least our own size. A small launcher started with -S forks the measured command instead.
LAUNCHER = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    start = time.perf_counter()
    proc = subprocess.Popen(sys.argv[2:], stdout=open(sys.argv[1], "wb"), stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    print(json.dumps({"wall": time.perf_counter() - start, "maxrss_kib": usage.ru_maxrss,
                      "rc": os.waitstatus_to_exitcode(status)}))
    """
)


def measure(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB and stdout of one fresh process."""
    with tempfile.NamedTemporaryFile() as out:
        launched = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, out.name, *cmd], capture_output=True,
                                  check=True, text=True)
        stats = json.loads(launched.stdout)
        text = Path(out.name).read_text()
    if stats["rc"] != 0:
        raise RuntimeError(f"{cmd[:3]} exited {stats['rc']}: {text[-2000:]}")
    return stats["wall"], stats["maxrss_kib"] / 1024.0, text


def best(cmd: list[str], repeat: int) -> tuple[float, float, str]:
    runs = [measure(cmd) for _ in range(repeat)]
    wall = min(r[0] for r in runs)
    return wall, max(r[1] for r in runs), runs[-1][2]


def evaluate_cmd(model: Path, data: Path, folder: Path) -> list[str]:
    task = {
        "source": {"uri": str(model), "labels": LABELS},
        "data": {"uri": str(data), "features": FEATURES, "target": "label", "holdout": {"fraction": 1.0}},
        "evaluation": {"average": "macro", "threshold": 0.5},
    }
    return [sys.executable, "-m", "modelreuse", "evaluate", "--task", json.dumps(task),
            "--termination-log", str(folder / "termination-log"), "--progress-interval", "60"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest is reported")
    parser.add_argument("--keep", help="generate into this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="evaluate-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    scripts = {"hand": folder / "hand.py", "ceiling": folder / "ceiling.py"}
    scripts["hand"].write_text(HAND_SCRIPT)
    scripts["ceiling"].write_text(CEILING_SCRIPT)
    rows_list = sorted(args.rows)
    try:
        files = {}
        for rows in rows_list:
            t = time.perf_counter()
            files[rows] = make_data(folder, rows)
            print(f"generated {rows:,} rows in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        model = make_model(folder, files[rows_list[0]][0])
        results = []
        base = rows_list[0]
        ceiling = float(measure([sys.executable, str(scripts["ceiling"]), str(model), str(base)])[2].strip())
        for rows in rows_list:
            for kind, path in zip(("CSV", "Parquet"), files[rows]):
                a_wall, a_rss, a_out = best(evaluate_cmd(model, path, folder), args.repeat)
                accuracy = json.loads(a_out.strip().splitlines()[-1])["accuracy"]
                row = {"rows": rows, "format": kind, "a_rps": rows / a_wall, "a_rss": a_rss, "a_acc": accuracy}
                if rows == base:
                    b_wall, b_rss, b_out = best([sys.executable, str(scripts["hand"]), str(model), str(path)],
                                                args.repeat)
                    b_acc = float(b_out.split()[-1])
                    if abs(b_acc - accuracy) > 1e-12:
                        raise RuntimeError(f"evaluate and the hand script disagree: {accuracy} vs {b_acc}")
                    row.update(b_rps=rows / b_wall, b_rss=b_rss)
                results.append(row)
                print(json.dumps(row), file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    print(f"(c) onnxruntime alone over {base:,} in-memory rows: {ceiling:,.0f} rows/s\n")
    print("| rows | format | (a) evaluate rows/s | (a) peak RSS MiB | (b) hand script rows/s | (b) peak RSS MiB "
          "| (a)/(b) | (a)/(c) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        b = f"{r['b_rps']:,.0f} | {r['b_rss']:,.0f} | {r['a_rps'] / r['b_rps']:.2f}x" if "b_rps" in r else "- | - | -"
        print(f"| {r['rows']:,} | {r['format']} | {r['a_rps']:,.0f} | {r['a_rss']:,.0f} | {b} | "
              f"{r['a_rps'] / ceiling:.0%} |")
    by = {(r["rows"], r["format"]): r["a_rss"] for r in results}
    if len(rows_list) > 1:
        lo, hi = rows_list[0], rows_list[-1]
        for kind in ("CSV", "Parquet"):
            growth = by[(hi, kind)] / by[(lo, kind)] - 1
            print(f"\n(a) {kind} peak RSS at {hi:,} rows vs {lo:,}: {growth:+.1%}", end="")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
