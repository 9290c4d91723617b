"""Bike traffic flow, high or low: an MLP trained on January-June reused for July-December.

Data: ISLP's Washington DC hourly bike-share counts (2011, 8,645 hours), read by path so ISLP's heavy
dependencies are never imported. ``flow`` is ``high`` when the hour's count is above the year's median.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modelreuse.scenarios.base import Scenario, cached_build, package_file, sha256_file

FEATURES = ["hr", "temp", "hum", "windspeed", "workingday"]
TARGET = "flow"
LABELS = ["low", "high"]
FIRST_HALF = ["Jan", "Feb", "March", "April", "May", "June"]
# Bump when the build changes so stale caches are rebuilt rather than trusted.
VERSION = "1"
SEED = 7


def load_frame():
    """The full year as a DataFrame with numeric features, ``month`` (1-12) and the ``flow`` label."""
    import pandas as pd

    frame = pd.read_csv(package_file("ISLP", "ISLP/data/Bikeshare.csv"))
    months = ["Jan", "Feb", "March", "April", "May", "June", "July", "Aug", "Sept", "Oct", "Nov", "Dec"]
    frame["month"] = frame["mnth"].map({m: i + 1 for i, m in enumerate(months)})
    if frame["month"].isna().any():
        raise RuntimeError("ISLP Bikeshare has month names this scenario does not know; update bikeshare.py.")
    frame["hr"] = frame["hr"].astype(int)
    median = frame["bikers"].median()
    frame[TARGET] = ["high" if b > median else "low" for b in frame["bikers"]]
    cols = ["month", "day", *FEATURES, "bikers", TARGET]
    out = frame[cols].copy()
    for col in FEATURES:
        out[col] = out[col].astype("float32")
    return out.reset_index(drop=True)


def _network(n_features: int, mean, std):
    import torch
    from torch import nn

    class FlowNet(nn.Module):
        """Standardisation is inside the model, so the ONNX file takes raw feature values."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
            self.body = nn.Sequential(nn.Linear(n_features, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
            self.classifier = nn.Linear(32, len(LABELS))

        def forward(self, features):
            hidden = self.body((features - self.mean) / self.std)
            return torch.softmax(self.classifier(hidden), dim=-1)

    return FlowNet()


def _build(tmp: Path) -> dict[str, Any]:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    frame = load_frame()
    source = frame[frame["month"] <= 6].reset_index(drop=True)
    target = frame[frame["month"] > 6].reset_index(drop=True)
    x = torch.tensor(source[FEATURES].to_numpy(np.float32))
    y = torch.tensor([LABELS.index(v) for v in source[TARGET]])

    torch.manual_seed(SEED)
    net = _network(len(FEATURES), x.mean(0), x.std(0))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(400):
        opt.zero_grad()
        loss = torch.nn.functional.nll_loss(torch.log(net(x) + 1e-9), y)
        loss.backward()
        opt.step()
    net.eval()

    onnx_path = tmp / "model.onnx"
    sample = x[:16]
    torch.onnx.export(
        net, (sample,), str(onnx_path), dynamo=False, opset_version=17,
        input_names=["features"], output_names=["probabilities"],
        dynamic_axes={"features": {0: "batch"}, "probabilities": {0: "batch"}},
    )
    model = onnx.load(str(onnx_path))
    # Name the hidden layer so a reader (and `adapt`) can find the penultimate features by name.
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    old = gemm.input[0]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = "hidden"
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = "hidden"
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"features": x.numpy()})[0]
    with torch.no_grad():
        want = net(x).numpy()
    if not np.allclose(got, want, atol=1e-5):
        raise RuntimeError("the exported bikeshare model differs from torch")

    # The same network for the `full` strategy: TorchScript and torch.export archives.
    scripted = torch.jit.trace(net, sample)
    scripted.save(str(tmp / "model.pt"))
    exported = torch.export.export(net, (sample,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(exported, str(tmp / "model.pt2"))

    target.to_csv(tmp / "autumn.csv", index=False)
    target.to_parquet(tmp / "autumn.parquet", index=False)
    source.to_csv(tmp / "spring.csv", index=False)
    return {
        "model_sha256": sha256_file(onnx_path),
        "rows": {"source": len(source), "new_domain": len(target)},
        "median_bikers": float(frame["bikers"].median()),
    }


def build(cache_dir: str | os.PathLike | None = None) -> Scenario:
    """Build (once) and return the bike-share scenario."""
    root, info = cached_build(f"bikeshare-v{VERSION}", cache_dir, _build)
    return Scenario(
        name="bikeshare",
        root=root,
        model_path=root / "model.onnx",
        model_sha256=info["model_sha256"],
        labels=list(LABELS),
        data_csv=root / "autumn.csv",
        data_parquet=root / "autumn.parquet",
        target=TARGET,
        features=list(FEATURES),
        source_data_csv=root / "spring.csv",
        extra_models={"torchscript": root / "model.pt", "torch-export": root / "model.pt2"},
        info=info,
    )
