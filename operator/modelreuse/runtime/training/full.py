"""Strategy ``full``: fine-tune a TorchScript or torch.export source (all layers, or the last N) and export
the result to ONNX, checked against torch with onnxruntime.

Modules are trained in the mode they were saved in (normally eval): dropout stays off and batch-norm
statistics stay frozen, which is what a small fine-tuning step on a modest new-domain set wants. The
source must take one float (rows, features) tensor; text models adapt with strategy ``head``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from modelreuse.runtime.errors import WorkloadError
from modelreuse.runtime.training.head import LABELS_METADATA_KEY, session_for
from modelreuse.runtime.training.loop import FitConfig, FitResult, fit

_CHECK_ROWS = 64


@dataclass
class FullOutcome:
    model_bytes: bytes
    fit: FitResult
    output_kind: str
    trainable: list[str]
    frozen: list[str]
    check_max_abs_diff: float


def layer_groups(module) -> list[tuple[str, list[tuple[str, Any]]]]:
    """Parameters grouped by the layer (owning submodule) they belong to, in definition order."""
    groups: dict[str, list[tuple[str, Any]]] = {}
    for name, param in module.named_parameters():
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        groups.setdefault(owner, []).append((name, param))
    return list(groups.items())


def _output(out):
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return out


class _ModeFixed:
    """An exported program's module refuses ``train()``/``eval()``, which the ONNX exporter calls; this
    wrapper keeps the mode it was saved in."""

    @staticmethod
    def wrap(inner):
        from torch import nn

        class Wrapped(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def train(self, mode: bool = True):
                return self

            def forward(self, x):
                return self.inner(x)

        return Wrapped()


def adapt_full(model, rows, labels: Sequence[str], config: FitConfig, trainable_layers: int | None) -> FullOutcome:
    """Fine-tune ``model`` (a modelio TorchModel) on the rows and return the ONNX export."""
    import onnx
    import torch

    if rows.features is None:
        raise WorkloadError(
            "UnsupportedStrategy",
            "Strategy full fine-tunes torch models on numeric features; for a text model use strategy head.",
        )
    module = model.module
    groups = layer_groups(module)
    if not groups:
        raise WorkloadError("UnsupportedModel", f"The model at {model.uri} has no parameters to fine-tune; use strategy head.")
    n_train = len(groups) if trainable_layers is None else min(trainable_layers, len(groups))
    chosen = groups[len(groups) - n_train :]
    trainable_names = {name for _, params in chosen for name, _ in params}
    params = []
    for name, param in module.named_parameters():
        param.requires_grad_(name in trainable_names)
        if name in trainable_names:
            params.append(param)

    device = torch.device(model.device_name)
    with torch.no_grad():
        probe = _output(module(torch.as_tensor(rows.features[: min(32, len(rows))]).to(device))).float()
    if probe.ndim != 2 or probe.shape[1] != len(labels):
        raise WorkloadError(
            "ModelOutputMismatch",
            f"The model at {model.uri} returns scores of shape {list(probe.shape)} but the labels are "
            f"{list(labels)}; strategy full needs (rows, {len(labels)}) scores: fix source.labels, or use strategy "
            "head to train a new output layer.",
        )
    is_prob = bool(torch.all(probe >= 0) and torch.all(probe <= 1) and torch.allclose(probe.sum(1), torch.ones(len(probe), device=device), atol=1e-4))
    output_kind = "probabilities" if is_prob else "logits"

    def loss_of(mod, x, t):
        out = _output(mod(x)).float()
        logp = torch.log(out.clamp_min(1e-12)) if is_prob else torch.log_softmax(out, dim=1)
        return torch.nn.functional.nll_loss(logp, t, reduction="none"), logp

    torch.manual_seed(config.seed)
    result = fit(module, rows.features, rows.y, len(labels), config, loss_of, trainable=params)
    for p in module.parameters():
        p.requires_grad_(False)
    module = module.to("cpu")

    if model.format == "torch-export":
        module = _ModeFixed.wrap(module)
    input_name = model.inputs[0].name if model.inputs else "features"
    sample = torch.as_tensor(rows.features[: min(_CHECK_ROWS, len(rows))])
    buffer = io.BytesIO()
    try:
        torch.onnx.export(
            module, (sample,), buffer, dynamo=False, opset_version=17,
            input_names=[input_name], output_names=[output_kind],
            dynamic_axes={input_name: {0: "batch"}, output_kind: {0: "batch"}},
        )
    except Exception as exc:
        raise WorkloadError(
            "UnsupportedModel",
            f"The fine-tuned model cannot be exported to ONNX ({str(exc).splitlines()[0][:300]}); use strategy "
            "head on an ONNX export of the source instead.",
        ) from exc
    exported = onnx.load_model_from_string(buffer.getvalue())
    exported.metadata_props.add(key=LABELS_METADATA_KEY, value=json.dumps(list(labels)))
    payload = exported.SerializeToString()
    got = session_for(payload, "cpu").run(None, {input_name: sample.numpy()})[0]
    with torch.no_grad():
        want = _output(module(sample)).float().numpy()
    diff = float(np.max(np.abs(got - want)))
    if not np.allclose(got, want, atol=1e-4, rtol=1e-3):
        raise WorkloadError(
            "ExportMismatch",
            f"The ONNX export of the fine-tuned model differs from torch by {diff:.3g} on sample rows; use "
            "strategy head on an ONNX export of the source instead.",
        )
    return FullOutcome(
        model_bytes=payload, fit=result, output_kind=output_kind,
        trainable=sorted(trainable_names), frozen=[n for n, _ in module.named_parameters() if n not in trainable_names],
        check_max_abs_diff=diff,
    )
