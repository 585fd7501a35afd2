"""Prometheus metrics of every live pool, group and pipeline stage that opted in with
``metrics=True`` (or a name): a ``prometheus_client`` collector, and an HTTP server for
it. Needs the ``prometheus`` extra (``pip install workpool[prometheus]``).

Everything is read in this process, at the scrape, from each object's
``statistics()``: a ``ProcessPool`` counts its tasks in the parent, so no
multiprocess mode is needed. Every series has a ``pool`` label, the object's name
(a pipeline stage's is ``pipeline/stage``)::

    workpool_tasks_total{pool,outcome}        tasks ended: success, error, timeout,
                                              cancelled, crashed (worker process died)
    workpool_task_retries_total{pool}         retries scheduled
    workpool_worker_restarts_total{pool}      worker processes replaced
    workpool_queue_depth{pool}                tasks waiting for a worker
    workpool_workers{pool,state}              workers busy, idle, stuck
    workpool_concurrency_limit{pool}          most tasks at once (absent: no limit)
    workpool_task_duration_seconds{pool}      histogram of run times
    workpool_task_queue_wait_seconds{pool}    histogram of the waits for a worker
    workpool_pool_info{pool,kind}             1, with what the object is

The histograms count latency samples since the pool started, each standing for the
tasks it samples (tiny tasks are sampled 1 in 16 and count 16; a ``map`` chunk's run
counts once per item, at the chunk's run time), so their counts and sums add up across
pools and scrapes.

Example::

    from workpool.exporters import prometheus

    server, thread = prometheus.start_http_server(9108)
    with wp.ThreadPool(16, metrics="fetch") as pool:
        ...

May import the public API and ``_core``; nothing imports this module.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import exposition
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, CollectorRegistry

from .._core.metrics import MetricsSample, live_samples
from .._core.stats import BUCKETS

__all__ = ["WorkpoolCollector", "register", "start_http_server"]

_BOUNDS = [*(repr(b) for b in BUCKETS), "+Inf"]


class WorkpoolCollector:
    """A ``prometheus_client`` collector of every live object with ``metrics=``
    (see the module docstring for the metrics). Register it once per registry
    (``register()`` does that); each scrape reads the objects alive then."""

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples (for the registry's name checks)."""
        return iter(_Families().all())

    def collect(self) -> Iterator[Metric]:
        """The metric families with a sample set per live object."""
        families = _Families()
        for sample in live_samples():
            families.add(sample)
        return iter(families.all())


class _Families:
    """The metric families of one scrape."""

    def __init__(self) -> None:
        pool = ["pool"]
        self.tasks = CounterMetricFamily("workpool_tasks", "Tasks ended, by outcome.",
                                         labels=["pool", "outcome"])
        self.retries = CounterMetricFamily("workpool_task_retries",
                                           "Retries of failed tasks scheduled.", labels=pool)
        self.restarts = CounterMetricFamily(
            "workpool_worker_restarts",
            "Worker processes started in place of one that died, was killed or retired.",
            labels=pool)
        self.queue = GaugeMetricFamily("workpool_queue_depth", "Tasks waiting for a worker.",
                                       labels=pool)
        self.workers = GaugeMetricFamily("workpool_workers",
                                         "Workers, by state (busy, idle, stuck).",
                                         labels=["pool", "state"])
        self.limit = GaugeMetricFamily("workpool_concurrency_limit",
                                       "The most tasks run at once.", labels=pool)
        self.duration = HistogramMetricFamily("workpool_task_duration_seconds",
                                              "Task run times.", labels=pool)
        self.wait = HistogramMetricFamily("workpool_task_queue_wait_seconds",
                                          "Time tasks waited for a worker.", labels=pool)
        self.info = GaugeMetricFamily("workpool_pool_info", "What each monitored object is.",
                                      labels=["pool", "kind"])

    def all(self) -> list[Metric]:
        return [self.tasks, self.retries, self.restarts, self.queue, self.workers,
                self.limit, self.duration, self.wait, self.info]

    def add(self, sample: MetricsSample) -> None:
        """The series of one pool, group or stage."""
        s = sample.statistics
        name = sample.name
        for outcome, count in (("success", s.completed), ("error", s.failed - s.crashed),
                               ("timeout", s.timed_out), ("cancelled", s.cancelled),
                               ("crashed", s.crashed)):
            self.tasks.add_metric([name, outcome], count)
        self.retries.add_metric([name], s.retried)
        self.restarts.add_metric([name], s.restarts)
        self.queue.add_metric([name], s.queued)
        for state, count in (("busy", s.busy), ("idle", s.idle), ("stuck", s.stuck)):
            self.workers.add_metric([name, state], count)
        if sample.limit is not None:
            self.limit.add_metric([name], sample.limit)
        self.duration.add_metric([name], list(zip(_BOUNDS, s.run_time_buckets, strict=True)),
                                 s.run_time_sum)
        self.wait.add_metric([name], list(zip(_BOUNDS, s.queue_wait_buckets, strict=True)),
                             s.queue_wait_sum)
        self.info.add_metric([name, sample.kind], 1)


_lock = threading.Lock()
_registered: weakref.WeakKeyDictionary[CollectorRegistry, WorkpoolCollector] = (
    weakref.WeakKeyDictionary())


def register(registry: CollectorRegistry = REGISTRY) -> WorkpoolCollector:
    """Register workpool's collector with *registry* (``prometheus_client``'s default
    one unless told), once: a second call returns the collector registered first.

    Example::

        from prometheus_client import make_wsgi_app
        from workpool.exporters import prometheus

        prometheus.register()
        app = make_wsgi_app()       # serves workpool's metrics with the others
    """
    with _lock:
        collector = _registered.get(registry)
        if collector is None:
            collector = _registered[registry] = WorkpoolCollector()
            registry.register(collector)
        return collector


def start_http_server(port: int, addr: str = "127.0.0.1",
                      registry: CollectorRegistry = REGISTRY
                      ) -> tuple[WSGIServer, threading.Thread]:
    """Serve *registry* (with workpool's collector registered) at
    ``http://addr:port/metrics`` from a daemon thread; port 0 picks a free port
    (``server.server_port``). Listens on the loopback interface unless *addr* says
    otherwise (``"0.0.0.0"``: every interface).

    Returns:
        The server and its thread: ``server.shutdown()`` then ``server.server_close()``
        stop it.

    Raises:
        TypeError: *port* is not an int.
        ValueError: *port* is not in 0..65535.
        OSError: the port is taken.
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535 (0: any free port), got {port}")
    register(registry)
    return exposition.start_http_server(port, addr, registry)
