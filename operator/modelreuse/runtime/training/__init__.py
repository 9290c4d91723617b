"""Training for ``modelreuse adapt``: the rows to train on, the torch loop, and the two strategies.

- ``rows.load_rows(task)``: the data's training part (the holdout of ``runtime.data`` is never read into
  it) plus the extra URIs, checked (enough rows, known labels, finite features).
- ``loop.fit(...)``: class-weighted cross entropy, a validation slice taken from the training rows, early
  stopping, an epoch count and a time budget, seeded, on the GPU when there is one.
- ``head.adapt_head(...)``: any ONNX source, kept frozen; a new head on a named intermediate tensor (or the
  source outputs), composed with the truncated source into one ONNX graph.
- ``full.adapt_full(...)``: TorchScript or torch.export sources fine-tuned (all or the last N layers) and
  exported to ONNX.
"""
