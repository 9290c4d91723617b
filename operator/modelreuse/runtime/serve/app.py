"""The HTTP server: Open Inference Protocol v2 routes, feedback, /metrics and the OpenAPI document.

Every refusal is a JSON body ``{"error", "reason"}`` with a 4xx status; a 5xx means the server itself
failed (or is not ready: 503). Handlers catch their own errors instead of going through a middleware:
the success path of an inference request then pays for nothing it does not use.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import random
import secrets
import time
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelreuse import __version__
from modelreuse.runtime.errors import WorkloadError
from modelreuse.runtime.serve import openapi
from modelreuse.runtime.serve.batcher import Batcher, BatchResult, concat_rows
from modelreuse.runtime.serve.capture import CaptureWriter
from modelreuse.runtime.serve.feedback import FeedbackError, FeedbackStore
from modelreuse.runtime.serve.metrics import DriftMonitor, ServerMetrics
from modelreuse.runtime.serve.model import LABEL_OUTPUT, TEXT_INPUT, ServedModel
from modelreuse.runtime.serve.protocol import (
    BYTES,
    HEADER_LENGTH,
    InferRequest,
    ProtocolError,
    encode_infer_response,
    parse_infer_request,
)

log = logging.getLogger("modelreuse.serve")

JSON = "application/json"
EXTENSIONS = ["binary_tensor_data", "classification_labels", "model_feedback", "data_capture", "metrics"]
DEFAULT_MAX_BODY_BYTES = 16 << 20


@dataclass
class ServeConfig:
    max_batch_size: int = 64
    max_delay_us: int = 2000
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    capture_uri: str | None = None
    capture_rate: float = 0.0
    capture_format: str = "jsonl"
    capture_queue: int = 10_000
    feedback_capacity: int = 100_000
    accuracy_window: int = 1000
    reference_stats: dict | None = None
    inline_us: int = 300
    extra: dict = field(default_factory=dict)


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.Response(body=orjson.dumps({"error": message, "reason": reason}), status=status, content_type=JSON)


def _json(doc, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type=JSON)


try:  # onnxruntime's argument errors mean the input, not the server, is wrong
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as _OrtInvalidArgument
except ImportError:  # pragma: no cover - other onnxruntime builds
    _OrtInvalidArgument = ()  # type: ignore[assignment]


class Server:
    """State shared by the handlers: the model, batcher, metrics, feedback and capture."""

    def __init__(self, name: str, version: int, config: ServeConfig):
        self.name = name
        self.version = version
        self.version_str = str(version)
        self.config = config
        self.model: ServedModel | None = None
        self.ready = False
        self.stopping = False
        self.load_error: str | None = None
        self.metrics = ServerMetrics(name, self.version_str)
        self.metrics.ready = lambda: self.ready
        self.batcher: Batcher | None = None
        self.feedback: FeedbackStore | None = None
        self.capture: CaptureWriter | None = None
        self.drift: DriftMonitor | None = None
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4) + "-"
        self._random = random.random
        self.registry = self.metrics.registry()

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def attach(self, model: ServedModel, cost=None) -> None:
        """Start serving a loaded model: batcher thread, feedback store, capture writer, then ready.

        ``cost`` (rows -> seconds, from ``ServedModel.warm_up``) lets cheap batches run on the event loop.
        """
        cfg = self.config
        self.model = model
        m = self.metrics
        m.digest = model.digest
        m.class_names = list(model.labels) or [str(i) for i in range(model.num_classes or 0)]
        m.predictions = np.zeros(max(len(m.class_names), 1), dtype=np.int64)
        if cfg.reference_stats is not None:
            # Text models are compared on text length (evaluate records "textLength" for them).
            width = 1 if model.text else (model.inputs[0].shape[1] if len(model.inputs[0].shape) == 2 else None)
            try:
                self.drift = m.drift = DriftMonitor.from_document(cfg.reference_stats, width)
            except WorkloadError as exc:
                # Serving matters more than the drift gauge: say why it is missing and go on.
                log.warning("no drift score: %s", exc.message)
        self.feedback = FeedbackStore(model.labels, capacity=cfg.feedback_capacity, window=cfg.accuracy_window)
        m.accuracy = self.feedback.accuracy
        if cfg.capture_uri and cfg.capture_rate > 0:
            self.capture = CaptureWriter(
                cfg.capture_uri, model=self.name, version=self.version_str, fmt=cfg.capture_format,
                max_queue=cfg.capture_queue,
            )
            self.capture.start()
            m.capture_stats = self.capture.stats
        batch_hist = m.batch_sizes
        self.batcher = Batcher(
            self._run_batch,
            max_batch_size=cfg.max_batch_size,
            max_delay_s=cfg.max_delay_us / 1e6,
            on_batch=batch_hist.observe,
            batchable=model.batchable,
            cost=cost,
            inline_budget_s=cfg.inline_us / 1e6,
        )
        self.batcher.start()
        m.queue_depth = lambda: self.batcher.queue_depth
        self.ready = True

    async def shutdown(self) -> None:
        """Ready goes false at once; queued batches run; captured records are written."""
        self.ready = False
        self.stopping = True
        if self.batcher is not None:
            await self.batcher.drain()
            self.batcher.close()
        if self.capture is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.capture.close)

    # -- inference thread ------------------------------------------------------------------------------------

    def _run_batch(self, batch: list[dict], rows: list[int]) -> list[BatchResult | BaseException]:
        model = self.model
        if len(batch) == 1:
            joined = batch[0]
        elif model.text:
            joined = {TEXT_INPUT: list(chain.from_iterable(b[TEXT_INPUT] for b in batch))}
        else:
            joined = {name: concat_rows([b[name] for b in batch]) for name in batch[0]}
        try:
            feeds = model.feeds(joined)
            outputs = model.run(feeds)
        except _OrtInvalidArgument as exc:
            if len(batch) == 1:
                return [ProtocolError(400, "ModelRejectedInput", f"The model rejected the input: {exc}")]
            # One request spoiled the batch: run each alone so only that one fails.
            return [self._run_batch([b], [r])[0] for b, r in zip(batch, rows)]
        predicted = None
        if model.score_index is not None:
            scores = outputs[model.score_index]
            if scores.ndim == 2 and scores.shape[0] == sum(rows):
                predicted = scores.argmax(axis=1)
                self.metrics.count_predictions(predicted)
        if self.drift is not None:
            if model.text:
                self.drift.update(np.fromiter(map(len, joined[TEXT_INPUT]), dtype=np.float64).reshape(-1, 1))
            else:
                first = feeds[model.model_inputs[0].name]
                if first.ndim == 2:
                    self.drift.update(first)
        if len(batch) == 1:
            return [BatchResult(outputs, predicted)]
        results = []
        start = 0
        for n in rows:
            end = start + n
            results.append(BatchResult([o[start:end] for o in outputs], None if predicted is None else predicted[start:end]))
            start = end
        return results

    # -- request validation ----------------------------------------------------------------------------------

    def validate(self, request: InferRequest) -> tuple[dict, int]:
        """Check the request's tensors against the model's inputs; return the feeds and the row count."""
        model = self.model
        specs = model.input_by_name
        feeds = {}
        rows = -1
        for tensor in request.inputs:
            spec = specs.get(tensor.name)
            if spec is None:
                raise ProtocolError(
                    400, "UnknownInput",
                    f"The model has no input {tensor.name!r}; its inputs are {', '.join(specs)} (see GET /v2/models/{model.name}).",
                )
            if tensor.name in feeds:
                raise ProtocolError(400, "DuplicateInput", f"Input {tensor.name!r} is given twice.")
            if tensor.datatype != spec.datatype:
                raise ProtocolError(
                    400, "DatatypeMismatch",
                    f"Input {tensor.name!r} must have datatype {spec.datatype}, not {tensor.datatype}.",
                )
            shape = tensor.shape
            if spec.datatype == BYTES and model.text:
                if len(shape) == 2 and shape[1] == 1:
                    shape = (shape[0],)
                ok = len(shape) == 1
            else:
                ok = len(shape) == len(spec.shape) and all(w == -1 or w == g for w, g in zip(spec.shape, shape))
            if not ok:
                raise ProtocolError(
                    400, "ShapeMismatch",
                    f"Input {tensor.name!r} has shape {list(tensor.shape)} but the model takes {list(spec.shape)} "
                    "(-1 is any size).",
                )
            n = shape[0] if shape else 1
            if rows not in (-1, n):
                raise ProtocolError(400, "ShapeMismatch", "All inputs must have the same number of rows (first dimension).")
            rows = n
            feeds[tensor.name] = tensor.data
        if len(feeds) != len(specs):
            missing = [n for n in specs if n not in feeds]
            raise ProtocolError(400, "MissingInput", f"The request lacks input(s) {', '.join(missing)}.")
        if rows == 0:
            raise ProtocolError(400, "EmptyBatch", "The request has no rows; send at least one.")
        if request.outputs is not None:
            names = model.output_by_name
            for out in request.outputs:
                if out.name not in names:
                    raise ProtocolError(
                        400, "UnknownOutput",
                        f"The model has no output {out.name!r}; its outputs are {', '.join(names)}.",
                    )
        return feeds, rows

    def _response(self, request: InferRequest, request_id: str, result: BatchResult) -> tuple[bytes, int | None, list]:
        model = self.model
        all_out = [(spec.name, spec.datatype, arr) for spec, arr in zip(model.model_outputs, result.outputs)]
        if model.label_array is not None and result.predicted is not None:
            all_out.append((LABEL_OUTPUT, BYTES, model.label_array[result.predicted].tolist()))
        if request.outputs is None:
            chosen = all_out
            binary = {o[0] for o in all_out} if request.binary_data_output else frozenset()
        else:
            wanted = {o.name: o.binary for o in request.outputs}
            chosen = [o for o in all_out if o[0] in wanted]
            binary = {n for n, b in wanted.items() if b or request.binary_data_output}
        body, header_length = encode_infer_response(self.name, self.version_str, request_id, chosen, binary)
        return body, header_length, all_out

    # -- handlers --------------------------------------------------------------------------------------------

    def _unknown(self, name: str, version: str | None) -> web.Response | None:
        if name != self.name:
            return _error(404, "UnknownModel", f"This server serves model {self.name!r}, not {name!r}.")
        if version is not None and version != self.version_str:
            return _error(
                404, "UnknownVersion", f"Model {self.name!r} is served at version {self.version_str}, not {version!r}."
            )
        return None

    async def infer(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        info = request.match_info
        unknown = self._unknown(info["name"], info.get("version"))
        if unknown is not None:
            return self._finish(t0, unknown)
        if not self.ready:
            return self._finish(t0, _error(503, "NotReady", "The model is not ready; retry when /v2/health/ready is 200."))
        batcher = self.batcher
        metrics = self.metrics
        metrics.in_flight += 1
        batcher.enter()
        queued = False
        try:
            length = request.content_length
            if length is not None and length > self.config.max_body_bytes:
                raise ProtocolError(
                    413, "PayloadTooLarge",
                    f"The body has {length} bytes, over the limit of {self.config.max_body_bytes}; send fewer rows per request.",
                )
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise ProtocolError(
                    413, "PayloadTooLarge",
                    f"The body is over the limit of {self.config.max_body_bytes} bytes; send fewer rows per request.",
                ) from None
            parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
            feeds, rows = self.validate(parsed)
            queued = True
            result = await batcher.submit(feeds, rows)
            request_id = parsed.id or self._id_prefix + str(next(self._ids))
            body, header_length, all_out = self._response(parsed, request_id, result)
        except ProtocolError as exc:
            if not queued:
                batcher.leave()
            metrics.in_flight -= 1
            return self._finish(t0, web.Response(body=exc.body(), status=exc.status, content_type=JSON))
        except BaseException:
            if not queued:
                batcher.leave()
            metrics.in_flight -= 1
            raise
        metrics.in_flight -= 1
        if result.predicted is not None:
            self.feedback.remember(request_id, result.predicted)
        capture = self.capture
        if capture is not None:
            rate = self.config.capture_rate
            if rate >= 1.0 or self._random() < rate:
                capture.offer(
                    ("inference", request_id, time.time(), [(t.name, t.data) for t in parsed.inputs], [(o[0], o[2]) for o in all_out])
                )
        if header_length is None:
            response = web.Response(body=body, content_type=JSON)
        else:
            response = web.Response(
                body=body, content_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)}
            )
        self.metrics.histogram("infer", 200).observe(time.perf_counter() - t0)
        return response

    def _finish(self, t0: float, response: web.Response, endpoint: str = "infer") -> web.Response:
        self.metrics.histogram(endpoint, response.status).observe(time.perf_counter() - t0)
        return response

    async def feedback_handler(self, request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        info = request.match_info
        unknown = self._unknown(info["name"], info.get("version"))
        if unknown is not None:
            return self._finish(t0, unknown, "feedback")
        if not self.ready:
            return self._finish(t0, _error(503, "NotReady", "The model is not ready; retry when /v2/health/ready is 200."), "feedback")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._finish(t0, _error(413, "PayloadTooLarge", f"The body is over the limit of {self.config.max_body_bytes} bytes."), "feedback")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return self._finish(t0, _error(400, "MalformedJson", f"The feedback body is not valid JSON ({exc})."), "feedback")
        try:
            items = self.feedback.parse(doc)
            outcome = self.feedback.record(items)
        except FeedbackError as exc:
            return self._finish(t0, _error(400, exc.reason, exc.message), "feedback")
        m = self.metrics.feedback
        m["correct"] += outcome.correct
        m["incorrect"] += outcome.rows - outcome.correct
        m["unknown_id"] += len(outcome.unknown_ids)
        if self.capture is not None:
            labels = self.model.labels
            now = time.time()
            for request_id, truth in items:
                if request_id not in outcome.unknown_ids:
                    self.capture.offer(("feedback", request_id, now, [labels[i] if i < len(labels) else i for i in truth]))
        accuracy, samples = self.feedback.accuracy()
        doc = {"rows": outcome.rows, "correct": outcome.correct, "unknown_ids": outcome.unknown_ids,
               "live_accuracy": accuracy, "window": samples}
        return self._finish(t0, _json(doc), "feedback")

    async def live(self, request: web.Request) -> web.Response:
        return _json({"live": True})

    async def ready_handler(self, request: web.Request) -> web.Response:
        if self.ready:
            return _json({"ready": True})
        why = "the server is stopping" if self.stopping else self.load_error or "the model is not loaded yet"
        return _json({"ready": False, "error": why}, status=503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return _json({"name": "modelreuse", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(self, request: web.Request) -> web.Response:
        info = request.match_info
        unknown = self._unknown(info["name"], info.get("version"))
        if unknown is not None:
            return unknown
        if self.model is None:
            return _error(503, "NotReady", "The model is still loading; retry when /v2/health/ready is 200.")
        return _json(self.model.metadata())

    async def model_config(self, request: web.Request) -> web.Response:
        info = request.match_info
        unknown = self._unknown(info["name"], info.get("version"))
        if unknown is not None:
            return unknown
        if self.model is None:
            return _error(503, "NotReady", "The model is still loading; retry when /v2/health/ready is 200.")
        model = self.model
        return _json({
            "name": model.name,
            "platform": "onnxruntime_onnx",
            "max_batch_size": self.config.max_batch_size if model.batchable else 0,
            "dynamic_batching": {"max_queue_delay_microseconds": self.config.max_delay_us},
            "input": [{"name": s.name, "data_type": "TYPE_" + ("STRING" if s.datatype == BYTES else s.datatype), "dims": list(s.shape)} for s in model.inputs],
            "output": [{"name": s.name, "data_type": "TYPE_" + ("STRING" if s.datatype == BYTES else s.datatype), "dims": list(s.shape)} for s in model.outputs],
            "labels": model.labels,
        })

    async def model_ready(self, request: web.Request) -> web.Response:
        info = request.match_info
        unknown = self._unknown(info["name"], info.get("version"))
        if unknown is not None:
            return unknown
        if self.ready:
            return _json({"name": self.name, "ready": True})
        return _json({"name": self.name, "ready": False}, status=503)

    async def metrics_handler(self, request: web.Request) -> web.Response:
        payload = generate_latest(self.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi_handler(self, request: web.Request) -> web.Response:
        return _json(openapi.document(self))

    async def not_found(self, request: web.Request) -> web.Response:
        # The catch-all route shadows aiohttp's own 405, so tell a wrong method from a wrong path here.
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource.canonical == "/{tail}":
                continue
            match, methods = await resource.resolve(request)
            if match is None:
                allowed |= methods
        if allowed:
            response = _error(
                405, "MethodNotAllowed", f"{request.path} takes {', '.join(sorted(allowed))}, not {request.method}."
            )
            response.headers["Allow"] = ", ".join(sorted(allowed))
            return response
        return _error(404, "NotFound", f"No endpoint {request.method} {request.path}; see GET /v2/openapi.json.")


def build_app(server: Server) -> web.Application:
    """The aiohttp application; client_max_size enforces --max-body-bytes on chunked bodies too."""
    app = web.Application(client_max_size=server.config.max_body_bytes, handler_args={"max_field_size": 16384})
    r = app.router
    r.add_get("/v2/health/live", server.live)
    r.add_get("/v2/health/ready", server.ready_handler)
    r.add_get("/v2", server.server_metadata)
    r.add_get("/v2/openapi.json", server.openapi_handler)
    r.add_get("/metrics", server.metrics_handler)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        r.add_post(prefix + "/infer", server.infer)
        r.add_post(prefix + "/feedback", server.feedback_handler)
        r.add_get(prefix + "/ready", server.model_ready)
        r.add_get(prefix + "/config", server.model_config)
        r.add_get(prefix, server.model_metadata)
    r.add_route("*", "/{tail:.*}", server.not_found)
    return app


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
