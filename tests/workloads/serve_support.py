"""Models and a server process for the serve tests: a small MLP and a tiny text classifier (word-level
tokenizer + embedding bag) exported from torch, and ``modelreuse serve`` run as a real process."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import warnings

N_FEATURES = 5
MLP_LABELS = ["low", "high"]
TEXT_LABELS = ["negative", "neutral", "positive"]
WORDS = ["good", "great", "love", "fine", "okay", "meh", "bad", "awful", "hate", "the", "flight", "phone", "is", "was"]


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_mlp(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """A 5-64-64-2 MLP as ONNX with a dynamic batch dimension (input 'input', output 'logits')."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)
    ).eval()
    path = folder / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is the one without onnxscript
        torch.onnx.export(
            net, (torch.zeros(1, N_FEATURES),), str(path), input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    return path


def mlp_reference(path: pathlib.Path, rows):
    """Logits straight from onnxruntime, to compare the server's answers with."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.asarray(rows, dtype=np.float32)})[0]


def make_text_model(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """tokenizer.json (word level) beside an embedding-bag classifier taking input_ids and attention_mask."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1} | {w: i + 2 for i, w in enumerate(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))

    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(len(vocab), 8)
            self.head = torch.nn.Linear(8, len(TEXT_LABELS))

        def forward(self, input_ids, attention_mask):
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(pooled)

    torch.manual_seed(seed)
    net = Bag().eval()
    ids = torch.ones(2, 4, dtype=torch.int64)
    path = folder / "text.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net, (ids, torch.ones_like(ids)), str(path), input_names=["input_ids", "attention_mask"],
            output_names=["logits"], opset_version=17, dynamo=False,
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}},
        )
    return path


class ServerProcess:
    """``modelreuse serve`` in a child process on a free loopback port."""

    def __init__(self, args: list[str], env: dict | None = None, termination_log: pathlib.Path | None = None):
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        if termination_log is not None:
            full_env["MODELREUSE_TERMINATION_LOG"] = str(termination_log)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelreuse", "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, text=True,
        )
        self.stderr_lines: list[str] = []
        self.port: int | None = None
        found = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.stderr_lines.append(line)
                match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if match and self.port is None:
                    self.port = int(match.group(1))
                    found.set()
            found.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        found.wait(60)
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.stderr_lines))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.stderr_lines))
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server not ready:\n" + "".join(self.stderr_lines))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> tuple[int, dict | None]:
        """Signal the server and return its exit code and the result JSON it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=timeout)
        self._pump.join(5)
        result = None
        for line in out.splitlines()[::-1]:
            if line.startswith("{"):
                result = json.loads(line)
                break
        return self.proc.returncode, result

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def post_json(url: str, doc, headers: dict | None = None, raw: bytes | None = None) -> tuple[int, dict, dict]:
    """POST and return (status, parsed JSON body, headers) without raising on 4xx."""
    data = raw if raw is not None else json.dumps(doc).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()

