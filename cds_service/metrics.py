"""Prometheus metrics: what the service counts, and how it shows them at ``/metrics``.

Label values are bounded and free of patient data: service ids only for known
services (else ``unknown``), rule ids and indicators from the knowledge, Flask
endpoint names, HTTP status codes, fixed outcome words.

Several gunicorn workers share one view through prometheus-client's
multiprocess mode: each process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` adds them up. The gunicorn master
sets that folder up (``gunicorn_settings``, called from ``cds_service.server``
for ``cds-service serve`` and the container alike) before the workers fork.
The metric objects are made on first use, so that a process that switched to
multiprocess mode after importing this module still gets file-backed values.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, wraps
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: From a cached discovery call (~5 ms) to a hook call that fetches from a slow FHIR server.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# ``*_created`` series exist only in single-process mode; leave them out in both.
prometheus_client.disable_created_metrics()


@dataclass(frozen=True)
class _Metrics:
    requests: Counter
    latency: Histogram
    cards: Counter
    fhir_fetches: Counter
    fhir_latency: Histogram
    jwt_rejections: Counter
    feedback: Counter


@cache
def _metrics() -> _Metrics:
    return _Metrics(
        requests=Counter("cds_requests", "HTTP requests answered",
                         ["endpoint", "service", "status"]),
        latency=Histogram("cds_request_duration_seconds", "Time to answer an HTTP request",
                          ["endpoint", "service"], buckets=LATENCY_BUCKETS),
        cards=Counter("cds_cards", "Cards returned", ["service", "rule", "indicator"]),
        fhir_fetches=Counter("cds_fhir_fetches", "FHIR reads and searches for data not "
                             "prefetched (all pages of a search count once)",
                             ["interaction", "outcome"]),
        fhir_latency=Histogram("cds_fhir_fetch_duration_seconds", "Time of one FHIR read or "
                               "search, all pages and retries included", ["interaction"],
                               buckets=LATENCY_BUCKETS),
        jwt_rejections=Counter("cds_jwt_rejections", "Calls refused for want of a valid "
                               "CDS Hooks JWT", ["endpoint"]),
        feedback=Counter("cds_feedback", "Card feedback items stored", ["service", "outcome"]),
    )


# -- recording --------------------------------------------------------------


def _best_effort(record: Callable[..., None]) -> Callable[..., None]:
    """Metrics never fail a call: a recording error (say, the multiprocess folder was
    removed) is logged once and dropped."""

    @wraps(record)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            record(*args, **kwargs)
        except Exception as exc:
            if record.__name__ not in _failed:
                _failed.add(record.__name__)
                log.warning("metrics: %s failed (%s: %s); further failures are not logged",
                            record.__name__, type(exc).__name__, exc)

    return guarded


_failed: set[str] = set()


@_best_effort
def record_request(endpoint: str, service: str, status: int, seconds: float) -> None:
    metrics = _metrics()
    metrics.requests.labels(endpoint, service, str(status)).inc()
    metrics.latency.labels(endpoint, service).observe(seconds)


@_best_effort
def record_cards(service: str, cards: Iterable[Any]) -> None:
    """Count cards (objects with ``rule_id`` and ``indicator``) by rule and indicator."""
    counter = _metrics().cards
    for card in cards:
        counter.labels(service, card.rule_id, card.indicator).inc()


@_best_effort
def record_jwt_rejection(endpoint: str) -> None:
    _metrics().jwt_rejections.labels(endpoint).inc()


@_best_effort
def record_feedback(service: str, outcomes: Iterable[str]) -> None:
    counter = _metrics().feedback
    for outcome in outcomes:
        counter.labels(service, outcome).inc()


@contextmanager
def fhir_fetch(interaction: str) -> Iterator[None]:
    """Count and time one FHIR ``read`` or ``search``: ``failed`` when it raises."""
    started = time.perf_counter()
    outcome = "failed"
    try:
        yield
        outcome = "ok"
    finally:
        _record_fhir_fetch(interaction, outcome, time.perf_counter() - started)


@_best_effort
def _record_fhir_fetch(interaction: str, outcome: str, seconds: float) -> None:
    metrics = _metrics()
    metrics.fhir_fetches.labels(interaction, outcome).inc()
    metrics.fhir_latency.labels(interaction).observe(seconds)


# -- exposition -------------------------------------------------------------


def exposition() -> bytes:
    """The Prometheus text format: this process's metrics, or every worker's."""
    _metrics()  # every family is listed, even before its first sample
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


# -- several worker processes -------------------------------------------------


def enable_multiprocess(directory: str) -> None:
    """Keep values in files under ``directory``, shared by this process and its forks."""
    os.environ[MULTIPROC_ENV] = directory
    # prometheus-client chooses its value class when it is imported, which happened
    # with this module; choose again now that the folder is set.
    values.ValueClass = values.get_value_class()


def gunicorn_settings(workers: int) -> dict[str, Callable[..., None]]:
    """Gunicorn hooks that keep ``/metrics`` whole across ``workers`` processes.

    With more than one worker and no ``PROMETHEUS_MULTIPROC_DIR`` given, a fresh
    temporary folder is used and removed when the server exits; folders left by
    servers that were killed are removed first. A folder given by the operator is
    used as it is and kept (wipe it between runs).
    """
    given = os.environ.get(MULTIPROC_ENV)
    if workers <= 1 and not given:
        return {}
    hooks: dict[str, Callable[..., None]] = {"child_exit": _forget_worker}
    if not given:
        _remove_folders_of_dead_servers()
        directory = tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-")
        hooks["on_exit"] = lambda _server: shutil.rmtree(directory, ignore_errors=True)
        given = directory
    enable_multiprocess(given)
    return hooks


_FOLDER_PREFIX = "cds-metrics-"


def _remove_folders_of_dead_servers() -> None:
    """``cds-metrics-<pid>-*`` folders whose server process is gone (killed, not stopped)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_FOLDER_PREFIX}*-*"):
        pid = folder.name.removeprefix(_FOLDER_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _forget_worker(_server: object, worker: Any) -> None:
    """A dead worker's live gauges no longer count (its counters still do)."""
    multiprocess.mark_process_dead(worker.pid)
