"""The torch training loop both strategies share."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VALIDATION_FRACTION = 0.15
BATCH_SIZE = 64
# Below this many trainable parameters a CPU step runs on one thread.
SMALL_MODEL_PARAMETERS = 1_000_000


@dataclass
class FitConfig:
    epochs: int
    learning_rate: float
    max_seconds: float
    seed: int
    device: str = "cpu"
    weight_decay: float = 0.0
    patience: int = 5
    batch_size: int = BATCH_SIZE


@dataclass
class FitResult:
    """The training curve (one entry per epoch), why training stopped, and the best epoch kept."""

    curve: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "epochs"
    best_epoch: int = 0
    seconds: float = 0.0
    train_rows: int = 0
    validation_rows: int = 0
    class_weights: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        last = self.curve[self.best_epoch - 1] if self.curve and self.best_epoch else {}
        return {
            "epochs_run": len(self.curve),
            "best_epoch": self.best_epoch,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
            "train_rows": self.train_rows,
            "validation_rows": self.validation_rows,
            "validation_loss": last.get("validation_loss"),
            "validation_accuracy": last.get("validation_accuracy"),
        }


def pick_device(prefer: str = "auto") -> str:
    import torch

    return "cuda" if prefer != "cpu" and torch.cuda.is_available() else "cpu"


def validation_split(y: np.ndarray, seed: int, fraction: float = VALIDATION_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row positions, stratified by class so each class is in both when it can be."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rng.shuffle(rows)
        k = int(round(len(rows) * fraction)) if len(rows) >= 4 else 0
        val.append(rows[:k])
        train.append(rows[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse class frequency (balanced), 1 for a class absent from the training rows."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights


def fit(
    module: Any,
    inputs: dict[str, np.ndarray] | np.ndarray,
    y: np.ndarray,
    n_classes: int,
    config: FitConfig,
    loss_of: Callable[[Any, Any, Any], Any],
    trainable: list[Any] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FitResult:
    """Train ``module`` in place and leave the weights of its best validation epoch in it.

    ``inputs`` is one array or a dict of arrays (rows first); ``loss_of(module, batch, targets)`` returns
    per-row losses, so the class weighting happens here. Same inputs and seed give the same weights on
    CPU: the generator seeds initialisation (done by the caller under ``torch.manual_seed``) and shuffling.
    """
    import torch

    params = trainable if trainable is not None else [p for p in module.parameters() if p.requires_grad]
    threads = torch.get_num_threads()
    if config.device == "cpu" and sum(p.numel() for p in params) < SMALL_MODEL_PARAMETERS:
        # A small model's steps are too short to split across threads: the threads' hand-offs cost more
        # than the arithmetic, and on a busy node they cost ten times over.
        torch.set_num_threads(1)
    try:
        return _fit(module, tensors_of(inputs), inputs, y, n_classes, config, loss_of, params, clock)
    finally:
        torch.set_num_threads(threads)


def tensors_of(inputs: dict[str, np.ndarray] | np.ndarray) -> dict[str, Any]:
    import torch

    arrays = inputs if isinstance(inputs, dict) else {"x": inputs}
    return {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in arrays.items()}


def _fit(module, tensors, inputs, y, n_classes, config, loss_of, params, clock) -> FitResult:
    import torch

    start = clock()
    device = torch.device(config.device)
    gen = torch.Generator().manual_seed(config.seed)
    train_idx, val_idx = validation_split(y, config.seed)
    targets = torch.as_tensor(y, dtype=torch.long)
    weights = torch.as_tensor(class_weights(y[train_idx], n_classes), dtype=torch.float32, device=device)
    opt = torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    result = FitResult(train_rows=len(train_idx), validation_rows=len(val_idx), class_weights=weights.tolist())

    def batch_of(rows: torch.Tensor) -> Any:
        picked = {k: t[rows].to(device) for k, t in tensors.items()}
        return picked if isinstance(inputs, dict) else picked["x"]

    def evaluate(rows: np.ndarray) -> tuple[float, float]:
        total, correct, seen = 0.0, 0, 0
        with torch.no_grad():
            for i in range(0, len(rows), 1024):
                part = torch.as_tensor(rows[i : i + 1024])
                t = targets[part].to(device)
                losses, logits = loss_of(module, batch_of(part), t)
                total += float((losses * weights[t]).sum())
                correct += int((logits.argmax(1) == t).sum())
                seen += len(part)
        return total / max(seen, 1), correct / max(seen, 1)

    best = math.inf
    best_state = copy.deepcopy({k: v.detach().clone() for k, v in module.state_dict().items()})
    bad_epochs = 0
    train_rows = torch.as_tensor(train_idx)
    for epoch in range(1, config.epochs + 1):
        order = train_rows[torch.randperm(len(train_rows), generator=gen)]
        running, seen = 0.0, 0
        for i in range(0, len(order), config.batch_size):
            rows = order[i : i + config.batch_size]
            t = targets[rows].to(device)
            losses, _ = loss_of(module, batch_of(rows), t)
            w = weights[t]
            loss = (losses * w).sum() / w.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item() * len(rows)
            seen += len(rows)
        entry = {"epoch": epoch, "train_loss": running / max(seen, 1)}
        # Without a validation slice the training loss stands in, so early stopping still works.
        monitored = entry["train_loss"]
        if len(val_idx):
            entry["validation_loss"], entry["validation_accuracy"] = evaluate(val_idx)
            monitored = entry["validation_loss"]
        result.curve.append({k: round(v, 6) if isinstance(v, float) else v for k, v in entry.items()})
        if monitored < best - 1e-6:
            best, bad_epochs, result.best_epoch = monitored, 0, epoch
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            bad_epochs += 1
        if bad_epochs >= config.patience:
            result.stopped = "early-stopping"
            break
        if clock() - start >= config.max_seconds:
            result.stopped = "time-budget"
            break
    module.load_state_dict(best_state)
    result.seconds = clock() - start
    return result
