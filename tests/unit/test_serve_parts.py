"""The server's parts on their own: dynamic batching, feedback and live accuracy, metrics and drift, capture."""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
from prometheus_client import generate_latest

from modelreuse.runtime.serve.batcher import Batcher, BatchResult
from modelreuse.runtime.serve.capture import CaptureWriter
from modelreuse.runtime.serve.feedback import FeedbackError, FeedbackStore
from modelreuse.runtime.serve.metrics import DriftMonitor, Histogram, ServerMetrics


class Doubler:
    """A batch function that doubles its rows and records every batch it ran."""

    def __init__(self, fail_on: float | None = None):
        self.batches: list[list[int]] = []
        self.fail_on = fail_on

    def __call__(self, inputs: list[dict], rows: list[int]):
        self.batches.append(rows)
        x = np.concatenate([i["x"] for i in inputs])
        if self.fail_on is not None and (x == self.fail_on).any():
            raise RuntimeError("bad batch")
        y = x * 2
        out, start = [], 0
        for n in rows:
            out.append(BatchResult([y[start : start + n]], None))
            start += n
        return out


def run(coro):
    return asyncio.run(coro)


def queue_all(batcher: Batcher, inputs: list[np.ndarray]) -> list[asyncio.Future]:
    """Queue each array as one request (a handler entering, then submitting), all in one loop turn."""
    futures = []
    for x in inputs:
        batcher.enter()
        futures.append(batcher.submit({"x": x}, len(x)))
    return futures


def test_requests_queued_in_one_loop_turn_run_as_one_batch_and_get_their_own_rows():
    fn = Doubler()

    async def main():
        batcher = Batcher(fn, max_batch_size=64, max_delay_s=0.002)
        batcher.start()
        futures = queue_all(batcher, [np.full((i % 3 + 1, 2), float(i)) for i in range(10)])
        results = await asyncio.gather(*futures)
        batcher.close()
        return results

    results = run(main())
    assert fn.batches == [[1, 2, 3, 1, 2, 3, 1, 2, 3, 1]]
    for i, result in enumerate(results):
        assert result.outputs[0].shape == (i % 3 + 1, 2)
        assert (result.outputs[0] == 2.0 * i).all()


def test_batches_respect_max_batch_size_and_an_oversized_request_runs_alone():
    fn = Doubler()

    async def main():
        batcher = Batcher(fn, max_batch_size=4, max_delay_s=0.0)
        batcher.start()
        futures = queue_all(batcher, [np.ones((rows, 1)) for rows in (1, 2, 1, 9, 3, 1, 1)])
        await asyncio.gather(*futures)
        batcher.close()

    run(main())
    assert all(sum(b) <= 4 or b == [9] for b in fn.batches)
    assert [9] in fn.batches
    assert sorted(r for b in fn.batches for r in b) == sorted([1, 2, 1, 9, 3, 1, 1])


def test_a_batch_waits_for_requests_on_their_way_but_not_past_max_delay():
    fn = Doubler()

    async def main():
        batcher = Batcher(fn, max_batch_size=8, max_delay_s=5.0)
        batcher.start()
        batcher.enter()
        batcher.enter()  # a second handler is still reading its body
        first = batcher.submit({"x": np.ones((1, 1))}, 1)
        await asyncio.sleep(0.05)
        assert fn.batches == []  # held for the second request
        second = batcher.submit({"x": np.ones((1, 1))}, 1)
        await asyncio.gather(first, second)
        # A handler that gives up releases the wait too.
        batcher.enter()
        batcher.enter()
        third = batcher.submit({"x": np.ones((1, 1))}, 1)
        await asyncio.sleep(0.05)
        batcher.leave()
        await third
        # And a handler that never arrives holds a batch only max_delay long.
        quick = Batcher(fn, max_batch_size=8, max_delay_s=0.05)
        quick.start()
        quick.enter()
        quick.enter()
        await quick.submit({"x": np.ones((1, 1))}, 1)
        batcher.close()
        quick.close()

    run(main())
    assert fn.batches == [[1, 1], [1], [1]]


def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs():
    fn = Doubler(fail_on=7.0)

    async def main():
        batcher = Batcher(fn, max_batch_size=64, max_delay_s=0.0)
        batcher.start()
        batcher.enter()
        bad = batcher.submit({"x": np.full((1, 1), 7.0)}, 1)
        with pytest.raises(RuntimeError):
            await bad
        batcher.enter()
        good = await batcher.submit({"x": np.full((1, 1), 1.0)}, 1)
        await batcher.drain()
        batcher.close()
        return good

    assert run(main()).outputs[0].tolist() == [[2.0]]


def test_feedback_scores_rows_into_a_rolling_window():
    store = FeedbackStore(["low", "high"], capacity=3, window=4)
    store.remember("a", np.array([0, 1]))
    store.remember("b", np.array([1]))
    outcome = store.record(store.parse({"feedback": [{"id": "a", "labels": ["low", "low"]}, {"id": "b", "label": 1}]}))
    assert (outcome.rows, outcome.correct, outcome.unknown_ids) == (3, 2, [])
    assert store.accuracy() == (pytest.approx(2 / 3), 3)
    store.remember("c", np.array([0, 0]))
    outcome = store.record(store.parse({"id": "c", "labels": [1, 1]}))
    # The window keeps the last 4 rows: [hit, miss, hit] + [miss, miss] -> [miss, hit, miss, miss].
    assert store.accuracy() == (pytest.approx(1 / 4), 4)
    store.remember("d", np.array([1]))  # capacity 3: "a" is forgotten
    outcome = store.record(store.parse({"id": "a", "labels": ["low", "high"]}))
    assert outcome.unknown_ids == ["a"] and outcome.rows == 0


@pytest.mark.parametrize(
    "doc, reason",
    [
        ({"id": "a", "labels": ["medium", "low"]}, "UnknownLabels"),
        ({"id": "a", "labels": ["low"]}, "InvalidFeedback"),  # a predicted 2 rows
        ({"labels": ["low"]}, "InvalidFeedback"),
        ({"id": "a"}, "InvalidFeedback"),
        ({"id": "a", "labels": [1.5, 0]}, "InvalidFeedback"),
        ([1, 2], "InvalidFeedback"),
    ],
)
def test_bad_feedback_is_refused_with_a_reason(doc, reason):
    store = FeedbackStore(["low", "high"])
    store.remember("a", np.array([0, 1]))
    with pytest.raises(FeedbackError) as info:
        store.record(store.parse(doc))
    assert info.value.reason == reason
    assert store.accuracy() == (None, 0)


def test_histogram_buckets_are_cumulative_with_le_semantics():
    hist = Histogram((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 3.0):
        hist.observe(value)
    assert hist.buckets() == [("1.0", 2), ("2.0", 3), ("+Inf", 4)]
    assert hist.sum == 6.0 and hist.count == 4


def test_drift_score_is_the_mean_standardized_shift():
    drift = DriftMonitor.from_document({"features": ["a", "b"], "mean": [0.0, 10.0], "std": [1.0, 2.0]}, width=2)
    assert drift.score() is None
    rng = np.random.default_rng(0)
    drift.update(np.column_stack([rng.normal(0, 1, 4000), rng.normal(10, 2, 4000)]))
    assert drift.score() < 0.1
    for _ in range(20):
        drift.update(np.column_stack([rng.normal(3, 1, 4000), rng.normal(10, 2, 4000)]))
    # Feature a moved by 3 reference stds, b not at all: the mean is about 1.5.
    assert drift.score() == pytest.approx(1.5, abs=0.15)
    per = drift.per_feature()
    assert per[0] > 2.5 and per[1] < 0.2


def test_drift_reference_must_match_the_model_width():
    from modelreuse.runtime.errors import WorkloadError

    with pytest.raises(WorkloadError) as info:
        DriftMonitor.from_document({"features": ["a"], "mean": [0.0], "std": [1.0]}, width=5)
    assert info.value.reason == "InvalidTask"
    doc = {"features": {"a": {"mean": 1.0, "std": 2.0}}}
    assert DriftMonitor.from_document(doc, width=1).features == ["a"]


def test_exposition_passes_promtool_and_counts_what_happened():
    metrics = ServerMetrics("bike", "3", labels=["low", "high"])
    metrics.histogram("infer", 200).observe(0.003)
    metrics.histogram("infer", 400).observe(0.0001)
    metrics.batch_sizes.observe(5)
    metrics.count_predictions(np.array([0, 1, 1, 1]))
    metrics.feedback["correct"] += 2
    metrics.accuracy = lambda: (0.5, 4)
    metrics.drift = DriftMonitor(["a"], np.array([0.0]), np.array([1.0]))
    metrics.drift.update(np.array([[2.0]]))
    metrics.capture_stats = lambda: {"written": 7, "dropped": 1, "queued": 0}
    text = generate_latest(metrics.registry()).decode()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert 'modelreuse_predictions_total{class="high",model="bike",version="3"} 3.0' in text
    assert 'modelreuse_requests_total{code="400",endpoint="infer",model="bike",version="3"} 1.0' in text
    assert 'modelreuse_live_accuracy{model="bike",version="3"} 0.5' in text
    assert 'modelreuse_input_drift_score{model="bike",version="3"} 2.0' in text
    assert 'modelreuse_capture_records_total{model="bike",state="dropped",version="3"} 1.0' in text


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_capture_writes_everything_accepted_and_counts_drops(tmp_path: pathlib.Path, fmt: str):
    writer = CaptureWriter(tmp_path.as_uri(), model="m", version="1", fmt=fmt, max_queue=5, flush_interval_s=60)
    accepted = sum(
        writer.offer(("inference", f"r{i}", 1.0, [("input", np.array([[i, i]], dtype=np.float32))], [("label", ["x"])]))
        for i in range(8)
    )
    assert accepted == 5 and writer.dropped == 3
    writer.start()
    writer.close()
    files = list((tmp_path / "m" / "v1").iterdir())
    assert len(files) == 1 and files[0].suffix == "." + fmt
    if fmt == "jsonl":
        rows = [json.loads(line) for line in files[0].read_text().splitlines()]
        assert rows[4]["inputs"]["input"] == [[4.0, 4.0]]
    else:
        rows = pq.read_table(files[0]).to_pylist()
        assert json.loads(rows[4]["inputs"])["input"] == [[4.0, 4.0]]
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(5)]
    assert writer.stats() == {"written": 5, "dropped": 3, "queued": 0, "failed": 0}


@pytest.mark.parametrize("cost_s, inline", [(1e-5, True), (1.0, False)], ids=["cheap-inline", "costly-thread"])
def test_cheap_batches_run_on_the_event_loop_and_costly_ones_in_the_thread(cost_s, inline):
    fn = Doubler()
    threads = []

    def recording(inputs, rows):
        import threading

        threads.append(threading.current_thread().name)
        return fn(inputs, rows)

    async def main():
        batcher = Batcher(recording, max_batch_size=4, max_delay_s=0.0, cost=lambda rows: cost_s * rows, inline_budget_s=1e-3)
        batcher.start()
        futures = queue_all(batcher, [np.full((1, 1), float(i)) for i in range(6)])
        results = await asyncio.gather(*futures)
        batcher.close()
        return batcher.inline_batches, results

    inline_batches, results = run(main())
    assert [r.outputs[0].item() for r in results] == [2.0 * i for i in range(6)]
    assert sorted(r for b in fn.batches for r in b) == [1] * 6
    assert all(sum(b) <= 4 for b in fn.batches)
    if inline:
        assert inline_batches == len(fn.batches) and set(threads) == {"MainThread"}
    else:
        assert inline_batches == 0 and set(threads) == {"modelreuse-infer"}


def test_a_caller_that_hung_up_leaves_the_queue_without_a_model_run():
    fn = Doubler()

    async def main():
        batcher = Batcher(fn, max_batch_size=64, max_delay_s=0.0)
        batcher.start()
        futures = queue_all(batcher, [np.full((1, 1), float(i)) for i in range(3)])
        futures[1].cancel()  # what aiohttp's handler cancellation does when a client disconnects
        first, last = await futures[0], await futures[2]
        batcher.close()
        return first, last

    first, last = run(main())
    assert fn.batches == [[1, 1]]
    assert (first.outputs[0].item(), last.outputs[0].item()) == (0.0, 4.0)


def test_drift_reads_the_feature_stats_evaluate_writes():
    from modelreuse.runtime.evaluate import FeatureStats

    rng = np.random.default_rng(1)
    stats = FeatureStats(["hr", "temp"])
    stats.update(np.column_stack([rng.normal(12, 4, 5000), rng.normal(20, 5, 5000)]))
    doc = json.loads(json.dumps(stats.to_dict()))
    drift = DriftMonitor.from_document(doc, width=2)
    assert drift.features == ["hr", "temp"]
    drift.update(np.column_stack([rng.normal(12, 4, 5000), rng.normal(30, 5, 5000)]))
    per = drift.per_feature()
    assert per[0] < 0.1 and per[1] == pytest.approx(2.0, abs=0.1)
