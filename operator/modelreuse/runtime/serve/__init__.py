"""``modelreuse serve``: serve one model version over the Open Inference Protocol v2 (HTTP/REST).

The server binds first (live, not ready), loads the model with its sha256 check, then turns ready. A
model that fails to load (digest mismatch, unreadable URI, no CUDA when asked for) never becomes ready:
the process exits with the reason's exit code and the result JSON in the termination message. SIGTERM
turns ready false, lets in-flight requests finish, runs what is queued and writes every captured record.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys

from pydantic import ValidationError

from modelreuse.api.tasks import ServeTask, WorkloadResult
from modelreuse.runtime.errors import WorkloadError, invalid_task
from modelreuse.runtime.result import emit

log = logging.getLogger("modelreuse.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``modelreuse serve``; any given flag overrides the same field of --task/--task-file."""
    task = parser.add_mutually_exclusive_group()
    task.add_argument("--task", help="the ServeTask as a JSON document")
    task.add_argument("--task-file", help="a file holding the ServeTask JSON document")
    parser.add_argument("--model", help="URI of the ONNX model (any fsspec URI or path)")
    parser.add_argument("--name", help="model name in the /v2/models/{name} routes")
    parser.add_argument("--version", type=int, help="model version (default 1)")
    parser.add_argument("--sha256", help="expected sha256 of the model file; the server refuses to start on a mismatch")
    parser.add_argument("--labels", nargs="+", help="class labels by output index; adds a BYTES 'label' output")
    parser.add_argument("--tokenizer", help="URI of the tokenizer.json of a text model (default: beside the model)")
    parser.add_argument("--reference-stats", help="URI of the evaluation-time feature statistics (JSON) for drift")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a pod)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind; 0 picks a free one (logged on stderr)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto uses CUDA when onnxruntime has it")
    parser.add_argument("--max-batch-size", type=int, help="rows run together at most (default 64)")
    parser.add_argument("--max-delay-us", type=int, help="how long a batch waits for requests on their way (default 2000)")
    parser.add_argument("--capture-uri", help="fsspec URI prefix where sampled requests and responses are written")
    parser.add_argument("--capture-rate", type=float, help="fraction of requests captured, in [0, 1]")
    parser.add_argument("--capture-format", choices=["jsonl", "parquet"], help="capture file format (default jsonl)")
    parser.add_argument("--capture-queue", type=int, default=10_000, help="captured records held before dropping")
    parser.add_argument("--max-body-bytes", type=int, default=16 << 20, help="larger request bodies get 413")
    parser.add_argument("--intra-op-threads", type=int, default=1, help="onnxruntime threads per batch")
    parser.add_argument(
        "--inline-us", type=int, default=300,
        help="batches the warm-up says take less than this many microseconds run on the event loop, not the "
        "inference thread (0: always the thread)",
    )
    parser.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds in-flight requests get on SIGTERM")
    parser.add_argument("--drain-seconds", type=float, default=0.0, help="seconds to stay up not-ready after SIGTERM")
    parser.add_argument("--log-level", default="INFO", help="logging level")


def build_task(args: argparse.Namespace) -> ServeTask:
    """The ServeTask from --task/--task-file with the explicit flags laid over it; raises InvalidTask."""
    doc: dict = {}
    try:
        if args.task:
            doc = json.loads(args.task)
        elif args.task_file:
            with open(args.task_file, encoding="utf-8") as fh:
                doc = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise WorkloadError("InvalidTask", f"The task document cannot be read: {exc}.") from exc
    if not isinstance(doc, dict):
        raise WorkloadError("InvalidTask", "The task document must be a JSON object (a ServeTask).")
    source = dict(doc.get("source") or {})
    for flag, key in (("model", "uri"), ("sha256", "sha256"), ("labels", "labels"), ("tokenizer", "tokenizer")):
        if getattr(args, flag) is not None:
            source[key] = getattr(args, flag)
    if source:
        doc["source"] = source
    for flag, key in (("name", "name"), ("version", "version"), ("device", "device"), ("reference_stats", "referenceStats")):
        if getattr(args, flag) is not None:
            doc[key] = getattr(args, flag)
    batching = dict(doc.get("batching") or {})
    if args.max_batch_size is not None:
        batching["maxBatchSize"] = args.max_batch_size
    if args.max_delay_us is not None:
        batching["maxDelayMicroseconds"] = args.max_delay_us
    doc["batching"] = batching
    capture = dict(doc.get("dataCapture") or doc.get("data_capture") or {})
    doc.pop("data_capture", None)
    for flag, key in (("capture_uri", "uri"), ("capture_rate", "sampleRate"), ("capture_format", "format")):
        if getattr(args, flag) is not None:
            capture[key] = getattr(args, flag)
    doc["dataCapture"] = capture
    try:
        return ServeTask.model_validate(doc)
    except ValidationError as exc:
        raise invalid_task("serve", exc) from None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        task = build_task(args)
    except WorkloadError as exc:
        emit(WorkloadResult(ok=False, command="serve", reason=exc.reason, message=exc.message))
        return exc.exit_code
    for name in ("max_body_bytes", "capture_queue", "intra_op_threads"):
        if getattr(args, name) < 1:
            exc = WorkloadError("InvalidTask", f"--{name.replace('_', '-')} must be at least 1.")
            emit(WorkloadResult(ok=False, command="serve", reason=exc.reason, message=exc.message))
            return exc.exit_code
    if args.inline_us < 0:
        exc = WorkloadError("InvalidTask", "--inline-us must be 0 or more.")
        emit(WorkloadResult(ok=False, command="serve", reason=exc.reason, message=exc.message))
        return exc.exit_code
    try:
        import uvloop
    except ImportError:  # the plain asyncio loop works, a little slower
        uvloop = None
    if uvloop is not None:
        return uvloop.run(_serve(task, args))
    return asyncio.run(_serve(task, args))


def _load_reference(uri: str) -> dict | None:
    """The evaluation-time feature statistics, or None (logged) when they cannot be read: a missing drift
    gauge must not keep a model from serving."""
    from modelreuse.runtime import storage

    try:
        doc = json.loads(storage.read_bytes(uri))
    except WorkloadError as exc:
        log.warning("no drift score: %s", exc.message)
        return None
    except ValueError as exc:
        log.warning("no drift score: the reference statistics at %s are not JSON (%s)", uri, exc)
        return None
    if not isinstance(doc, dict):
        log.warning("no drift score: the reference statistics at %s are not a JSON object", uri)
        return None
    return doc


async def _serve(task: ServeTask, args: argparse.Namespace) -> int:
    from aiohttp import web

    from modelreuse.runtime.serve import model as model_mod
    from modelreuse.runtime.serve.app import ServeConfig, Server, build_app

    config = ServeConfig(
        max_batch_size=task.batching.max_batch_size,
        max_delay_us=task.batching.max_delay_microseconds,
        max_body_bytes=args.max_body_bytes,
        capture_uri=task.data_capture.uri,
        capture_rate=task.data_capture.sample_rate,
        capture_format=task.data_capture.format,
        capture_queue=args.capture_queue,
    )
    server = Server(task.name, task.version, config)
    # handler_cancellation: a client that hangs up cancels its request, which then leaves the batch queue
    # instead of costing a model run nobody reads (a backlog of those would stall a slow model for minutes).
    runner = web.AppRunner(
        build_app(server), access_log=None, handle_signals=False, shutdown_timeout=args.shutdown_timeout,
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        error = WorkloadError("InvalidTask", f"Cannot listen on {args.host}:{args.port} ({exc.strerror}); pick another --port.")
        emit(WorkloadResult(ok=False, command="serve", reason=error.reason, message=error.message))
        return error.exit_code
    for host, port in (a[:2] for a in runner.addresses):
        log.info("listening on http://%s:%s", host, port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    source = task.source

    def load():
        reference = _load_reference(task.reference_stats) if task.reference_stats else None
        served = model_mod.load(
            source, name=task.name, version=task.version, device=task.device, intra_op_threads=args.intra_op_threads
        )
        if task.text_input and not served.text:
            raise WorkloadError(
                "ModelInputMismatch",
                f"The task serves text but the model at {source.uri} takes no input_ids; serve the text model.",
            )
        cost = served.warm_up(task.batching.max_batch_size) if args.inline_us > 0 else None
        return served, reference, cost

    loading = loop.run_in_executor(None, load)
    waiting = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, waiting], return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():
        waiting.cancel()
        await runner.cleanup()
        emit(WorkloadResult(ok=False, command="serve", reason="InvalidTask", message="Stopped before the model was loaded."))
        return 0
    try:
        served, reference, cost = loading.result()
        server.config.reference_stats = reference
        server.config.inline_us = args.inline_us
        await server.attach(served, cost)
    except WorkloadError as exc:
        waiting.cancel()
        server.load_error = exc.message
        log.error("%s: %s", exc.reason, exc.message)
        await runner.cleanup()
        emit(WorkloadResult(ok=False, command="serve", reason=exc.reason, message=exc.message, model_uri=source.uri))
        return exc.exit_code
    # Everything loaded so far (libraries, the model, the routes) lives as long as the process: move it out of
    # the garbage collector's reach, so that a full collection scans only what requests allocate (a pause of
    # milliseconds otherwise, the p99 of a busy server).
    gc.collect()
    gc.freeze()
    log.info("model %s version %s ready", task.name, task.version)
    await waiting
    log.info("stopping: not ready; in-flight requests get up to %ss", args.shutdown_timeout)
    server.ready = False
    server.stopping = True
    if args.drain_seconds > 0:
        await asyncio.sleep(args.drain_seconds)
    await runner.cleanup()
    await server.shutdown()
    answered = sum(h.count for (endpoint, code), h in server.metrics.requests.items() if endpoint == "infer" and code == "200")
    extra = {"inferences": answered}
    if server.capture is not None:
        extra |= {"captured": server.capture.written, "captureDropped": server.capture.dropped}
    emit(WorkloadResult(
        ok=True, command="serve", reason="Stopped", message="The server stopped on a signal after answering what was in flight.",
        model_uri=source.uri, model_digest=served.digest, extra=extra,
    ))
    return 0
