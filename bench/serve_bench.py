"""Serving benchmark: ``modelreuse serve`` against KServe's Python ModelServer and a bare aiohttp endpoint.

Same model, same machine, same load generator (wrk, one thread, loopback), one server at a time:

- modelreuse serve with everything on: validation, dynamic batching, metrics, feedback store, drift
  statistics and data capture of 10% of requests to JSONL;
- KServe ModelServer (bench/kserve_server.py, in its own venv .venv-bench) with its default settings and
  with its logging off;
- a bare aiohttp endpoint (bench/aiohttp_floor.py) on the default asyncio loop and on uvloop.

Requests: single-row and 64-row OIP v2 JSON, and 64-row binary tensors (the Triton extension) where the
server supports it; concurrency 1, 16 and 64. Besides throughput and latency, the server process's CPU time
per request is recorded: on a shared 2-core machine it is steadier than throughput.

    .venv/bin/python bench/serve_bench.py --setup-kserve   # once: .venv-bench with kserve, onnxruntime, tokenizers
    .venv/bin/python bench/serve_bench.py --kind mlp --duration 5
    .venv/bin/python bench/serve_bench.py --kind minilm --duration 10 --batch-concurrency 1 4   # MiniLM classifier

Results: a Markdown table on stdout and bench/results/serve-<kind>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
BENCH_PY = str(ROOT / ".venv-bench" / "bin" / "python")
N_FEATURES = 5
OUTPUT = {"mlp": "logits", "minilm": "probabilities"}
TEXTS = [
    "@united my flight was delayed again and nobody at the gate could tell us anything",
    "loving the new phone, the battery lasts all day",
    "the update is okay I guess",
    "@apple why does my laptop keep restarting after the update",
]


def build_mlp(folder: Path) -> dict:
    """The calibration model of the issue: a 5-64-64-2 MLP exported to ONNX with a dynamic batch."""
    import warnings

    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)
    ).eval()
    path = folder / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(1, N_FEATURES),), str(path), input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    reference = folder / "reference.json"
    reference.write_text(json.dumps({"features": [f"f{i}" for i in range(N_FEATURES)], "mean": [0.0] * N_FEATURES, "std": [1.0] * N_FEATURES}))
    return {"model": path, "labels": ["low", "high"], "tokenizer": None, "reference": reference, "input": "input"}


def build_minilm(folder: Path) -> dict:
    """all-MiniLM-L6-v2 with the airline sentiment head (the sentiment scenario's model)."""
    from modelreuse.scenarios import sentiment

    scenario = sentiment.build()
    return {"model": scenario.model_path, "labels": scenario.labels, "tokenizer": scenario.tokenizer_path,
            "reference": None, "input": "text"}


def payloads(kind: str, folder: Path) -> dict[str, tuple[Path, int | None]]:
    """name -> (body file, Inference-Header-Content-Length or None)."""
    rng = np.random.default_rng(0)
    out = {}
    for rows in (1, 64):
        if kind == "mlp":
            x = rng.normal(size=(rows, N_FEATURES)).astype(np.float32)
            tensor = {"name": "input", "shape": [rows, N_FEATURES], "datatype": "FP32"}
            json_doc = {"inputs": [{**tensor, "data": [round(float(v), 4) for v in x.ravel()]}]}
            blob = x.tobytes()
        else:
            texts = [TEXTS[i % len(TEXTS)] for i in range(rows)]
            tensor = {"name": "text", "shape": [rows], "datatype": "BYTES"}
            json_doc = {"inputs": [{**tensor, "data": texts}]}
            blob = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
        path = folder / f"json-{rows}.json"
        path.write_text(json.dumps(json_doc))
        out[f"json-{rows}"] = (path, None)
        if rows == 64:
            head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(blob)}}],
                               "outputs": [{"name": OUTPUT[kind], "parameters": {"binary_data": True}}]}).encode()
            path = folder / f"binary-{rows}.bin"
            path.write_bytes(head + blob)
            out[f"binary-{rows}"] = (path, len(head))
    return out


def wrk_script(folder: Path, body: Path, header_length: int | None) -> Path:
    # KServe parses a body with binary tensors only when it is sent as application/octet-stream.
    content_type = "application/json" if header_length is None else "application/octet-stream"
    lines = [
        f'local f = io.open("{body}", "rb")',
        "wrk.body = f:read(\"*a\")",
        "f:close()",
        'wrk.method = "POST"',
        f'wrk.headers["Content-Type"] = "{content_type}"',
    ]
    if header_length is not None:
        lines.append(f'wrk.headers["Inference-Header-Content-Length"] = "{header_length}"')
    path = folder / (body.stem + ".lua")
    path.write_text("\n".join(lines) + "\n")
    return path


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run_wrk(url: str, script: Path, connections: int, duration: float, pid: int) -> dict:
    before = cpu_seconds(pid)
    proc = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "60s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )
    cpu = cpu_seconds(pid) - before
    out = proc.stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
        "p99_ms": _ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
        "requests": requests,
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
        "cpu_us_per_request": round(cpu / max(requests, 1) * 1e6, 1),
    }


def wait_answering(url: str, body: bytes, header_length: int | None, proc: subprocess.Popen, timeout: float = 120) -> None:
    headers = {"Content-Type": "application/json"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def targets(model: dict, work: Path, port: int) -> list[dict]:
    m = str(model["model"])
    ours = [PY, "-m", "modelreuse", "serve", "--model", m, "--name", "bench", "--labels", *model["labels"],
            "--port", str(port), "--capture-uri", (work / "capture").as_uri(), "--capture-rate", "0.1",
            "--log-level", "WARNING"]
    if model["reference"] is not None:
        ours += ["--reference-stats", str(model["reference"])]
    kserve = [BENCH_PY, str(ROOT / "bench" / "kserve_server.py"), "--model", m, "--name", "bench", "--port", str(port),
              "--grpc-port", str(port + 1)]
    floor = [PY, str(ROOT / "bench" / "aiohttp_floor.py"), "--model", m, "--port", str(port)]
    if model["tokenizer"] is not None:
        kserve += ["--tokenizer", str(model["tokenizer"])]
        floor += ["--tokenizer", str(model["tokenizer"])]
    out = [
        {"name": "modelreuse serve (everything on)", "cmd": ours, "binary": True},
        {"name": "KServe ModelServer (default)", "cmd": kserve, "binary": True},
        {"name": "KServe ModelServer (logging off)", "cmd": kserve + ["--enable_latency_logging", "False", "--configure_logging", "False"], "binary": True},
        {"name": "bare aiohttp (asyncio loop)", "cmd": floor, "binary": False},
        {"name": "bare aiohttp (uvloop)", "cmd": floor + ["--loop", "uvloop"], "binary": False},
    ]
    if not Path(BENCH_PY).exists():
        print("no .venv-bench: KServe is left out (run bench/serve_bench.py --setup-kserve first)", file=sys.stderr)
        out = [t for t in out if "KServe" not in t["name"]]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["mlp", "minilm"], default="mlp")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--batch-concurrency", type=int, nargs="+",
        help="concurrency of the 64-row runs (default: --concurrency; MiniLM needs seconds per 64-row request on 2 cores)",
    )
    parser.add_argument("--port", type=int, default=18480)
    parser.add_argument("--only", nargs="*", help="substrings of target names to run")
    parser.add_argument(
        "--rounds", type=int, default=0,
        help="instead of the grid: the headline case (single-row JSON, highest --concurrency) in N rounds, "
        "all servers up at once and taking turns, medians reported (steadier on a shared machine)",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--setup-kserve", action="store_true", help="create .venv-bench with kserve (its pins clash with ours) and exit")
    args = parser.parse_args()
    if args.setup_kserve:
        subprocess.run([sys.executable, "-m", "venv", str(ROOT / ".venv-bench")], check=True)
        subprocess.run([BENCH_PY, "-m", "pip", "install", "-q", "kserve", "onnxruntime", "tokenizers"], check=True)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian package wrk; tools/install-debs.sh installs it)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    model = build_mlp(work) if args.kind == "mlp" else build_minilm(work)
    bodies = payloads(args.kind, work)
    scripts = {name: wrk_script(work, path, hl) for name, (path, hl) in bodies.items()}
    if args.rounds:
        return headline(args, model, work, bodies, scripts)
    results = []
    for target in targets(model, work, args.port):
        if args.only and not any(s in target["name"] for s in args.only):
            continue
        proc = _start(target)
        url = f"http://127.0.0.1:{args.port}/v2/models/bench/infer"
        try:
            path, hl = bodies["json-1"]
            wait_answering(url, path.read_bytes(), hl, proc)
            subprocess.run(["wrk", "-t1", "-c16", "-d1s", "-s", str(scripts["json-1"]), url], capture_output=True)  # warm-up
            for payload in bodies:
                if payload.startswith("binary") and not target["binary"]:
                    continue
                levels = args.concurrency if payload.endswith("-1") or not args.batch_concurrency else args.batch_concurrency
                for c in levels:
                    row = {"target": target["name"], "payload": payload, "concurrency": c}
                    row |= run_wrk(url, scripts[payload], c, args.duration, proc.pid)
                    results.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            _stop(target, proc)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"serve-{args.kind}.json").write_text(json.dumps(results, indent=1))
    print(markdown(results, args.kind))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _start(target: dict) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(target["cmd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)


def _stop(target: dict, proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT if "KServe" in target["name"] else signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def headline(args, model: dict, work: Path, bodies: dict, scripts: dict) -> int:
    """Every server up at once on its own port; rounds of one wrk run each, in rotating order."""
    names = [t["name"] for t in targets(model, work, 0) if not args.only or any(s in t["name"] for s in args.only)]
    running = []
    try:
        for i, name in enumerate(names):
            port = args.port + 10 * i
            target = next(t for t in targets(model, work, port) if t["name"] == name)
            proc = _start(target)
            url = f"http://127.0.0.1:{port}/v2/models/bench/infer"
            running.append((target, proc, url))
        for target, proc, url in running:
            path, hl = bodies["json-1"]
            wait_answering(url, path.read_bytes(), hl, proc)
            subprocess.run(["wrk", "-t1", "-c16", "-d1s", "-s", str(scripts["json-1"]), url], capture_output=True)
        c = max(args.concurrency)
        samples: dict[str, list[dict]] = {t["name"]: [] for t, _, _ in running}
        for r in range(args.rounds):
            order = running[r % len(running):] + running[: r % len(running)]
            for target, proc, url in order:
                row = run_wrk(url, scripts["json-1"], c, args.duration, proc.pid)
                samples[target["name"]].append(row)
                print(json.dumps({"round": r, "target": target["name"], **row}), file=sys.stderr, flush=True)
    finally:
        for target, proc, _ in running:
            _stop(target, proc)
    results = []
    for name, rows in samples.items():
        med = {k: float(np.median([x[k] for x in rows])) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request")}
        results.append({"target": name, "payload": "json-1", "concurrency": max(args.concurrency), **med,
                        "requests": sum(x["requests"] for x in rows), "rounds": len(rows),
                        "non2xx": sum(x["non2xx"] for x in rows), "socket_errors": sum(x["socket_errors"] for x in rows)})
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"serve-{args.kind}-headline.json").write_text(json.dumps({"samples": samples, "medians": results}, indent=1))
    print(f"Medians of {args.rounds} rounds of {args.duration:g} s, single-row JSON, concurrency {max(args.concurrency)}:\n")
    print(markdown(results, args.kind))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def markdown(results: list[dict], kind: str) -> str:
    lines = [
        "| server | request | conc. | req/s | rows/s | p50 ms | p99 ms | CPU µs/req | non-2xx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows = 64 if r["payload"].endswith("64") else 1
        lines.append(
            f"| {r['target']} | {r['payload']} | {r['concurrency']} | {_num(r['rps'])} | {_num(r['rps'] * rows)} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_us_per_request']:,.0f} | {r['non2xx'] + r['socket_errors']} |"
        )
    summary = goals(results)
    if summary:
        lines += ["", summary]
    return "\n".join(lines)


def _num(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:,.0f}"


def goals(results: list[dict]) -> str:
    def find(prefix: str, payload: str = "json-1", c: int = 64):
        return next((r for r in results if r["target"].startswith(prefix) and r["payload"] == payload and r["concurrency"] == c), None)

    ours, kserve, floor = find("modelreuse"), find("KServe ModelServer (default)"), find("bare aiohttp (asyncio")
    floor_uv = find("bare aiohttp (uvloop")
    parts = []
    if ours and kserve:
        parts.append(f"throughput vs KServe default: {ours['rps'] / kserve['rps']:.1f}x (goal 5x); "
                     f"p99 {ours['p99_ms']:.1f} ms vs {kserve['p99_ms']:.1f} ms ({ours['p99_ms'] / kserve['p99_ms']:.2f} of it, goal <= 0.25)")
    if ours and floor:
        parts.append(f"vs bare aiohttp (asyncio): {100 * ours['rps'] / floor['rps']:.0f}% (goal >= 90%)")
    if ours and floor_uv:
        parts.append(f"vs bare aiohttp (uvloop): {100 * ours['rps'] / floor_uv['rps']:.0f}%")
    return ("At concurrency 64, single-row JSON: " + "; ".join(parts) + ".") if parts else ""


if __name__ == "__main__":
    raise SystemExit(main())
