"""Prometheus metrics of the server, exposed through a prometheus-client registry.

The hot path only bumps plain Python numbers (a list slot, an int); the registry's collector turns them
into metric families when /metrics is scraped. That keeps a request's metric cost to a few hundred
nanoseconds, where a labelled prometheus-client child with its lock costs microseconds.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from modelreuse.runtime.errors import WorkloadError

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Histogram:
    """Bucket counts and a sum; ``observe`` is a bisect and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip(self.bounds, self.counts):
            running += count
            out.append((_fmt(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _fmt(bound: float) -> str:
    return repr(float(bound))


class DriftMonitor:
    """Input drift against the feature statistics recorded at evaluation time.

    Live per-feature means and variances are exponentially decayed over about ``half_life`` rows; the score
    is the mean over features of |live mean - reference mean| / reference std (0 = no shift; 1 = a shift of
    one reference standard deviation on average).
    """

    def __init__(self, features: list[str], mean: np.ndarray, std: np.ndarray, half_life: float = 10_000.0):
        self.features = features
        self.ref_mean = np.asarray(mean, dtype=np.float64)
        self.ref_std = np.where(np.asarray(std, dtype=np.float64) > 0, std, 1.0)
        self.half_life = half_life
        self.weight = 0.0
        self.sum = np.zeros(len(features))
        self.rows = 0

    @classmethod
    def from_document(cls, doc: dict, width: int | None) -> DriftMonitor:
        """Accepts evaluate's feature-stats.json ({"features": [{"name", "mean", "std", ...}]}),
        {"features": [...], "mean": [...], "std": [...]} or {"features": {name: {"mean", "std"}}}."""
        try:
            feats = doc["features"]
            if isinstance(feats, list) and feats and all(isinstance(f, dict) for f in feats):
                names = [str(f["name"]) for f in feats]
                mean = [float(f["mean"]) for f in feats]
                std = [float(f["std"]) for f in feats]
            elif isinstance(feats, dict):
                names = list(feats)
                mean = [float(feats[n]["mean"]) for n in names]
                std = [float(feats[n]["std"]) for n in names]
            elif feats and isinstance(feats[0], dict):  # evaluate's feature-stats.json
                names = [str(f["name"]) for f in feats]
                mean = [float(f["mean"]) for f in feats]
                std = [float(f["std"]) for f in feats]
            else:
                names = [str(n) for n in feats]
                mean = [float(v) for v in doc["mean"]]
                std = [float(v) for v in doc["std"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkloadError(
                "InvalidTask",
                f"The reference feature statistics lack {exc}; give features with their mean and std.",
            ) from None
        if not (len(names) == len(mean) == len(std)) or (width is not None and width > 0 and len(names) != width):
            raise WorkloadError(
                "InvalidTask",
                f"The reference statistics describe {len(names)} features but the model takes {width}; "
                "record them from the same feature columns.",
            )
        return cls(names, np.asarray(mean), np.asarray(std))

    def update(self, rows: np.ndarray) -> None:
        """Called from the inference thread with one batch's feature rows."""
        if rows.ndim != 2 or rows.shape[1] != len(self.features) or rows.shape[0] == 0:
            return
        n = rows.shape[0]
        decay = 0.5 ** (n / self.half_life)
        self.sum = self.sum * decay + rows.sum(axis=0, dtype=np.float64)
        self.weight = self.weight * decay + n
        self.rows += n

    def per_feature(self) -> np.ndarray | None:
        if self.weight <= 0:
            return None
        return np.abs(self.sum / self.weight - self.ref_mean) / self.ref_std

    def score(self) -> float | None:
        shifts = self.per_feature()
        return None if shifts is None else float(np.mean(shifts))


class ServerMetrics:
    """All counters of one served model version."""

    def __init__(self, model: str, version: str, labels: list[str] | None = None, num_classes: int | None = None):
        self.model = model
        self.version = version
        self.requests: dict[tuple[str, str], Histogram] = {}  # (endpoint, code) -> latency histogram
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        width = num_classes or len(labels or []) or 0
        self.class_names = list(labels or []) or [str(i) for i in range(width)]
        self.predictions = np.zeros(max(width, 1), dtype=np.int64)
        self.feedback: dict[str, int] = {"correct": 0, "incorrect": 0, "unknown_id": 0}
        self.accuracy: Callable[[], tuple[float | None, int]] | None = None
        self.queue_depth: Callable[[], int] = lambda: 0
        self.in_flight = 0
        self.ready: Callable[[], bool] = lambda: False
        self.drift: DriftMonitor | None = None
        self.capture_stats: Callable[[], dict[str, int]] | None = None
        self.digest = ""

    def histogram(self, endpoint: str, code: int) -> Histogram:
        """The latency histogram of one (endpoint, status code); create once, then observe directly."""
        key = (endpoint, str(code))
        hist = self.requests.get(key)
        if hist is None:
            hist = self.requests[key] = Histogram(LATENCY_BUCKETS)
        return hist

    def count_predictions(self, predicted: np.ndarray) -> None:
        """Called from the inference thread with one batch's class indices."""
        if predicted.size == 0:
            return
        counts = np.bincount(predicted, minlength=self.predictions.size)
        if counts.size > self.predictions.size:
            grown = np.zeros(counts.size, dtype=np.int64)
            grown[: self.predictions.size] = self.predictions
            self.predictions = grown
            self.class_names += [str(i) for i in range(len(self.class_names), counts.size)]
        self.predictions[: counts.size] += counts

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return registry


class _Collector(Collector):
    def __init__(self, metrics: ServerMetrics):
        self.m = metrics

    def collect(self) -> Iterable:
        m = self.m
        base = [m.model, m.version]
        requests = CounterMetricFamily(
            "modelreuse_requests", "Requests answered, by endpoint and HTTP status code.",
            labels=["model", "version", "endpoint", "code"],
        )
        latency = HistogramMetricFamily(
            "modelreuse_request_duration_seconds",
            "Time from reading a request to its response, by endpoint and HTTP status code.",
            labels=["model", "version", "endpoint", "code"],
        )
        for (endpoint, code), hist in sorted(m.requests.items()):
            labels = base + [endpoint, code]
            buckets = hist.buckets()
            requests.add_metric(labels, buckets[-1][1])
            latency.add_metric(labels, buckets, hist.sum)
        yield requests
        yield latency
        batch = HistogramMetricFamily(
            "modelreuse_batch_size_rows", "Rows per batch run by the model.", labels=["model", "version"]
        )
        batch.add_metric(base, m.batch_sizes.buckets(), m.batch_sizes.sum)
        yield batch
        yield _gauge("modelreuse_queue_depth_requests", "Requests waiting for the next batch.", base, m.queue_depth())
        yield _gauge("modelreuse_in_flight_requests", "Inference requests being handled.", base, m.in_flight)
        yield _gauge("modelreuse_model_ready", "1 when the model is loaded and the server accepts inference.", base, 1 if m.ready() else 0)
        info = GaugeMetricFamily("modelreuse_model_info", "The served model's digest.", labels=["model", "version", "digest"])
        info.add_metric(base + [m.digest], 1)
        yield info
        predictions = CounterMetricFamily(
            "modelreuse_predictions", "Predicted rows by class.", labels=["model", "version", "class"]
        )
        for name, count in zip(m.class_names, m.predictions.tolist()):
            predictions.add_metric(base + [name], count)
        yield predictions
        feedback = CounterMetricFamily(
            "modelreuse_feedback", "Ground-truth labels received, by outcome against the prediction.",
            labels=["model", "version", "outcome"],
        )
        for outcome, count in m.feedback.items():
            feedback.add_metric(base + [outcome], count)
        yield feedback
        if m.accuracy is not None:
            value, samples = m.accuracy()
            yield _gauge("modelreuse_live_accuracy_samples", "Labelled rows in the rolling accuracy window.", base, samples)
            if value is not None:
                yield _gauge("modelreuse_live_accuracy", "Rolling accuracy of predictions that got feedback.", base, value)
        if m.drift is not None:
            shifts = m.drift.per_feature()
            if shifts is not None:
                yield _gauge(
                    "modelreuse_input_drift_score",
                    "Mean standardized shift of the live feature means from the evaluation-time reference.",
                    base, float(np.mean(shifts)),
                )
                per = GaugeMetricFamily(
                    "modelreuse_feature_drift_score", "Standardized shift of one feature's live mean.",
                    labels=["model", "version", "feature"],
                )
                for name, value in zip(m.drift.features, shifts.tolist()):
                    per.add_metric(base + [name], value if math.isfinite(value) else 0.0)
                yield per
        if m.capture_stats is not None:
            stats = m.capture_stats()
            records = CounterMetricFamily(
                "modelreuse_capture_records", "Captured request/response records, by fate.",
                labels=["model", "version", "state"],
            )
            for state in ("written", "dropped"):
                records.add_metric(base + [state], stats.get(state, 0))
            yield records
            yield _gauge("modelreuse_capture_queue_records", "Captured records waiting to be written.", base, stats.get("queued", 0))


def _gauge(name: str, text: str, labels: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=["model", "version"])
    family.add_metric(labels, value)
    return family
