"""Shared fixtures of the workload tests: real models built from packaged data, and a runner that starts
`modelreuse evaluate` as a real process and reads back its result, termination message and stderr."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

WINE_LABELS = ["class_0", "class_1", "class_2"]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Run:
    rc: int
    result: dict[str, Any]
    termination: str
    stdout: str
    stderr: str


def run_evaluate(*args: str, tmp: Path, task: dict[str, Any] | None = None, timeout: float = 300) -> Run:
    """Run `python -m modelreuse evaluate` in a fresh process; the result is stdout's last line."""
    log = tmp / "termination-log"
    if log.exists():
        log.unlink()
    cmd = [sys.executable, "-m", "modelreuse", "evaluate", "--termination-log", str(log), *args]
    if task is not None:
        cmd += ["--task", json.dumps(task)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    return Run(proc.returncode, result, log.read_text() if log.exists() else "", proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def bikes():
    """The bike-share scenario: an MLP trained on January-June, the new domain July-December (ISLP)."""
    from modelreuse.scenarios import bikeshare

    return bikeshare.build()


@pytest.fixture(scope="session")
def wine(tmp_path_factory):
    """scikit-learn's wine set as CSV, an MLP over all 13 features as ONNX, and a model with one input per
    feature (named after two columns) for the input-name checks."""
    import numpy as np
    import torch
    from sklearn.datasets import load_wine

    folder = tmp_path_factory.mktemp("wine")
    bunch = load_wine(as_frame=True)
    frame = bunch.frame.copy()
    frame["cultivar"] = [WINE_LABELS[i] for i in frame.pop("target")]
    features = list(bunch.feature_names)
    frame.to_csv(folder / "wine.csv", index=False)

    x = torch.tensor(frame[features].to_numpy(np.float32))
    y = torch.tensor([WINE_LABELS.index(v) for v in frame["cultivar"]])
    mean, std = x.mean(0), x.std(0)
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Linear(len(features), 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    class Wine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def forward(self, features):
            return self.body((features - self.mean) / self.std)

    net = Wine()
    opt = torch.optim.Adam(body.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    pair = ["alcohol", "proline"]
    j = [features.index(c) for c in pair]

    class Pair(Wine):
        """The same network fed by two named inputs; the other features stay at their means."""

        def forward(self, alcohol, proline):
            full = self.mean.repeat(alcohol.shape[0], 1)
            full[:, j[0]] = alcohol[:, 0]
            full[:, j[1]] = proline[:, 0]
            return self.body((full - self.mean) / self.std)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter needs no onnxscript
        torch.onnx.export(net.eval(), (x[:4],), str(folder / "wine.onnx"), dynamo=False, opset_version=17,
                          input_names=["features"], output_names=["logits"],
                          dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}})
        torch.onnx.export(Pair().eval(), (x[:4, j[0] : j[0] + 1], x[:4, j[1] : j[1] + 1]),
                          str(folder / "pair.onnx"), dynamo=False, opset_version=17, input_names=pair,
                          output_names=["logits"],
                          dynamic_axes={"alcohol": {0: "batch"}, "proline": {0: "batch"}, "logits": {0: "batch"}})
    return {"folder": folder, "csv": folder / "wine.csv", "model": folder / "wine.onnx", "pair": folder / "pair.onnx",
            "features": features, "frame": frame, "pair_features": pair}
