"""Prometheus metrics of one serving app, kept in the app's own registry.

A registry per app (not prometheus_client's global one) lets several apps live in one
process, as in tests, without clashing names.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visiontune.data.input_stats import InputStats, RollingInputStats, moments

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
OTHER = "other"  # the endpoint label of paths the app does not serve (bounded cardinality)


class ServingMetrics:
    """Request counts by endpoint and status, request latency, predictions by class, their
    confidence, and the rolling input-drift score of the last ``drift_window`` images
    against ``reference`` (NaN without one)."""

    def __init__(
        self, classes: Iterable[str], reference: InputStats | None, drift_window: int
    ) -> None:
        self.reference = reference
        self.window = RollingInputStats(drift_window)
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "visiontune_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "visiontune_request_duration_seconds",
            "Time from request to complete response, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "visiontune_predictions",
            "Images classified, by predicted class label",
            ["label"],
            registry=self.registry,
        )
        for label in classes:  # every class shows up, at 0 until predicted
            self.predictions.labels(label=label)
        self.confidence = Histogram(
            "visiontune_prediction_confidence",
            "Probability of the predicted class, per image classified",
            buckets=CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        score = Gauge(
            "visiontune_input_drift_score",
            "Largest shift of the input statistics of the last images from the training "
            "reference (0 = none; NaN below the minimum or without a reference)",
            registry=self.registry,
        )
        score.set_function(self.drift_score)
        images = Gauge(
            "visiontune_input_drift_window_images",
            "Images the input drift score is computed over",
            registry=self.registry,
        )
        images.set_function(lambda: len(self.window))

    def observe(
        self,
        labels: Iterable[str],
        confidences: Iterable[float],
        images: np.ndarray,
        sizes: Sequence[str],
        modes: Sequence[str],
    ) -> None:
        """Record classified uint8 ``images`` (N, C, S, S): their predicted labels and
        probabilities, and their input statistics (with source size buckets and modes)."""
        for label in labels:
            self.predictions.labels(label=label).inc()
        for confidence in confidences:
            self.confidence.observe(confidence)
        self.window.add(moments(images), sizes, modes)

    def drift_score(self) -> float:
        """The window's input drift score against the reference."""
        return math.nan if self.reference is None else self.window.score(self.reference)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware: count and time every HTTP request by endpoint and status code.

    ``endpoints`` are the paths the app serves; any other path is labelled ``other``.
    """

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, endpoints: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = frozenset(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in self.endpoints else OTHER
        status = 500  # unless the app starts a response
        start = time.perf_counter()

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - start)
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
