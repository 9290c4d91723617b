"""Dynamic batching: requests queued on the event loop, run together in batches.

When to run a batch: as soon as it holds ``max_batch_size`` rows; otherwise once the event loop has
read every request that was already waiting (one loop turn), so a lone request is not held back; and
while handlers that have started but not yet queued their tensors are still on the way, the batch waits
for them at most ``max_delay`` seconds. While a batch runs, requests pile up and run together next.

Where a batch runs: in the single inference thread, which concatenates inputs, runs the session, splits
outputs and computes the per-batch statistics; or, when the model's measured cost for that many rows is
below ``inline_budget_s``, right on the event loop: for a small model a thread hand-off (a wake-up each way
and a wait for the GIL) costs more than the inference itself.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("modelreuse.serve")


@dataclass(slots=True)
class BatchResult:
    """What one request gets back: its slice of every model output and of the predictions."""

    outputs: list[np.ndarray]
    predicted: np.ndarray | None  # class index per row, when the model has class scores


class Batcher:
    """Queue of pending requests and the single inference thread that drains it."""

    def __init__(
        self,
        run_batch: Callable[[list[dict], list[int]], list[BatchResult | BaseException]],
        *,
        max_batch_size: int,
        max_delay_s: float,
        on_batch: Callable[[int], None] | None = None,
        batchable: bool = True,
        cost: Callable[[int], float] | None = None,
        inline_budget_s: float = 0.0,
    ):
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size if batchable else 1
        self.max_delay_s = max_delay_s
        self._on_batch = on_batch
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[dict, int, asyncio.Future]] = []
        self._pending_rows = 0
        self._busy = False
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._first_at = 0.0
        self.arriving = 0  # handlers started that have not queued (or given up) yet
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = asyncio.Event()
        # rows -> expected seconds of one batch (from the warm-up); None: always use the thread.
        self._cost = cost
        self.inline_budget_s = inline_budget_s
        self.inline_batches = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle.set()
        self._thread = threading.Thread(target=self._worker, name="modelreuse-infer", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def enter(self) -> None:
        """A handler started: a batch may wait (up to max_delay) for it to queue or leave."""
        self.arriving += 1

    def submit(self, inputs: dict, rows: int) -> asyncio.Future:
        """Queue one request's inputs (after ``enter``); the future resolves to its BatchResult."""
        self.arriving -= 1
        loop = self._loop
        fut = loop.create_future()
        if not self._pending:
            self._first_at = loop.time()
        self._pending.append((inputs, rows, fut))
        self._pending_rows += rows
        self._idle.clear()
        if not self._busy:
            if self._pending_rows >= self.max_batch_size:
                self._dispatch()
            elif not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._turn)
        return fut

    def _turn(self) -> None:
        self._scheduled = False
        if self._busy or not self._pending:
            return
        if self.arriving > 0 and self.max_delay_s > 0 and self._pending_rows < self.max_batch_size:
            wait = self._first_at + self.max_delay_s - self._loop.time()
            if wait > 0:
                # The handlers on their way call submit (or leave), which brings us back here.
                if self._timer is None:
                    self._timer = self._loop.call_later(wait, self._on_timer)
                return
        self._dispatch()

    def leave(self) -> None:
        """A handler counted in ``arriving`` gave up before queueing (bad input)."""
        self.arriving -= 1
        if self._pending and not self._busy and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._turn)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._busy and self._pending:
            self._dispatch()

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        take, rows = [], 0
        pending = self._pending
        if any(p[2].done() for p in pending):
            # Callers that hung up (their futures are cancelled) are not worth a model run.
            kept = [p for p in pending if not p[2].done()]
            pending[:] = kept
            self._pending_rows = sum(p[1] for p in kept)
            if not pending:
                self._idle.set()
                return
        # Always take at least one request, even one larger than max_batch_size (it runs alone).
        i = 0
        while i < len(pending) and (i == 0 or rows + pending[i][1] <= self.max_batch_size):
            rows += pending[i][1]
            i += 1
        take = pending[:i]
        del pending[:i]
        self._pending_rows -= rows
        self._busy = True
        if self._on_batch is not None:
            self._on_batch(rows)
        if self._cost is not None and self._cost(rows) <= self.inline_budget_s:
            self.inline_batches += 1
            try:
                results, error = self._run_batch([t[0] for t in take], [t[1] for t in take]), None
            except Exception as exc:  # delivered to each caller, who answers 5xx
                log.exception("inference failed on a batch of %d requests", len(take))
                results, error = None, exc
            self._done(take, results, error, inline=True)
        else:
            self._jobs.put(take)

    def _worker(self) -> None:
        loop = self._loop
        while True:
            take = self._jobs.get()
            if take is None:
                return
            try:
                results = self._run_batch([t[0] for t in take], [t[1] for t in take])
                error = None
            except BaseException as exc:  # delivered to each caller, who answers 5xx
                log.exception("inference failed on a batch of %d requests", len(take))
                results, error = None, exc
            loop.call_soon_threadsafe(self._done, take, results, error)

    def _done(self, take, results, error, inline: bool = False) -> None:
        if error is None:
            for (_, _, fut), result in zip(take, results):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
        else:
            for _, _, fut in take:
                if not fut.done():
                    fut.set_exception(error)
        self._busy = False
        if self._pending:
            if inline:
                # Not from here: a run of inline batches would recurse; the next loop turn picks them up.
                if not self._scheduled:
                    self._scheduled = True
                    self._loop.call_soon(self._turn)
            elif self._pending_rows >= self.max_batch_size or self.arriving == 0:
                self._dispatch()
            else:
                self._turn()
        else:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until every queued request has run."""
        while self._pending or self._busy:
            self._idle.clear()
            await self._idle.wait()

    def close(self) -> None:
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)


def concat_rows(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
