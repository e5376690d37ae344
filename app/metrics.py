"""Prometheus metrics, every name under ``deardiary_``.

With several worker processes, prometheus-client's multiprocess mode keeps
each process's samples in files of one shared directory and ``/metrics``
adds them up. The mode is chosen by ``PROMETHEUS_MULTIPROC_DIR`` in the
environment before this module is first imported; the server's supervisor
sets it for its workers (see app.serve). In a single process the samples
live in memory and the default registry serves them.

Labels stay few and bounded: HTTP routes by their pattern (``/model/{id}``),
never by their path, and MongoDB commands by name.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from app.schemas import Stage

__all__ = ["CONTENT_TYPE_LATEST", "exposition", "scrape_registry"]

# Seconds: a registry call is milliseconds; an outage answers in seconds.
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

HTTP_REQUESTS = Counter(
    "deardiary_http_requests_total",
    "HTTP requests answered, by method, route pattern and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "deardiary_http_request_duration_seconds",
    "Time from a request's arrival to its answer, by method and route pattern.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
MONGO_LATENCY = Histogram(
    "deardiary_mongo_command_duration_seconds",
    "Duration of MongoDB commands, by command name and outcome (ok, error).",
    ["command", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
TRANSACTION_RETRIES = Counter(
    "deardiary_transaction_retries_total",
    "Transactions run again: after a transient error (transient), or after "
    "a change lost a race to another (conflict).",
    ["cause"],
)
PROMOTIONS = Counter(
    "deardiary_promotions_total",
    "Model version updates that set a stage, by the stage set.",
    ["stage"],
)
REGISTRATIONS = Counter(
    "deardiary_registrations_total",
    "Model versions registered.",
)


# Series that exist from the start at zero, so that a dashboard sees them
# before the first event.
for _cause in ("transient", "conflict"):
    TRANSACTION_RETRIES.labels(_cause)
for _stage in Stage:
    PROMOTIONS.labels(_stage.name)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    count, latency = _request_series(method, route, status)
    count.inc()
    latency.observe(seconds)


# Finding a labelled series takes a lock and a few conversions; every
# request of one route and status feeds the same two, so they are kept.
# Routes are patterns and statuses few: the cache stays small.
@functools.lru_cache(maxsize=1024)
def _request_series(method: str, route: str, status: int) -> tuple[Any, Any]:
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_LATENCY.labels(
        method, route
    )


def observe_command(command: str, ok: bool, seconds: float) -> None:
    """Record one MongoDB command's duration."""
    MONGO_LATENCY.labels(command, "ok" if ok else "error").observe(seconds)


def count_retry(cause: str) -> None:
    """Count a transaction that runs again, ``transient`` or ``conflict``."""
    TRANSACTION_RETRIES.labels(cause).inc()


def count_promotion(stage: str) -> None:
    """Count a model version moved to ``stage`` (its name)."""
    PROMOTIONS.labels(stage).inc()


def count_registration() -> None:
    """Count a model version registered."""
    REGISTRATIONS.inc()


def scrape_registry(multiprocess_dir: Path | None) -> CollectorRegistry:
    """What ``/metrics`` reports: every worker's samples, or this process's."""
    if multiprocess_dir is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(  # type: ignore[no-untyped-call]
        registry, path=str(multiprocess_dir)
    )
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's samples in Prometheus's text format."""
    return generate_latest(registry)
