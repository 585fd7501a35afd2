"""The registry of what opted in to be monitored (``metrics=True`` or a name): every
live pool, group and pipeline run created with it, held weakly, so an exporter
(``workpool.exporters.prometheus``) can read each one's statistics at a scrape.

An object registers itself once, under a name: the name it was given (``metrics=
"ingest"``) or its own (``metrics=True``). A name stands for one object at a time: a
later object registered under a name in use takes its place (a pool re-created in a
loop keeps one series). What a scrape sees of an object is its ``samples``: a
``MetricsSample`` per thing that has statistics (one for a pool, one per stage of a
pipeline run). Imports nothing of workpool above ``_core``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, final

from .stats import PoolStatistics

__all__ = ["MetricsSample", "check_metrics", "live_samples", "pool_samples", "register"]


@final
@dataclass(frozen=True, slots=True)
class MetricsSample:
    """What one monitored pool (or stage) shows at a scrape.

    Attributes:
        name: its series' ``pool`` label.
        kind: what it is ("ThreadPool", "ProcessPool", "AsyncPool", "Group",
            "AsyncGroup", "stage").
        statistics: its counters and latency histograms now.
        limit: the most tasks it runs at once (a pool's workers, a group's limit), or
            None for no limit.
    """

    name: str
    kind: str
    statistics: PoolStatistics
    limit: int | None


Samples = Callable[[Any, str], list[MetricsSample]]

_lock = threading.Lock()
_live: dict[str, tuple[weakref.ref[Any], Samples]] = {}


def check_metrics(metrics: object) -> None:
    """Validate a ``metrics=`` argument: False (the default), True (under the object's
    own name) or a non-empty name.

    Raises:
        TypeError: not a bool or a str.
        ValueError: an empty name.
    """
    if isinstance(metrics, bool):
        return
    if not isinstance(metrics, str):
        raise TypeError(f"metrics must be True, False or a name (a str), got {metrics!r}")
    if not metrics:
        raise ValueError("metrics must be a non-empty name, got ''")


def register(obj: Any, metrics: bool | str, own_name: str,
             samples: Samples | None = None) -> None:
    """Show *obj* to exporters, if *metrics* says so (see ``check_metrics``), under
    its name (*own_name* for ``metrics=True``), until it is garbage collected or
    another object takes the name. *samples* says what *obj* shows (default:
    ``pool_samples``)."""
    check_metrics(metrics)
    if metrics is False:
        return
    name = own_name if metrics is True else metrics

    def forget(ref: weakref.ref[Any]) -> None:
        with _lock:
            if _live.get(name, (None,))[0] is ref:
                del _live[name]

    with _lock:
        _live[name] = (weakref.ref(obj, forget), pool_samples if samples is None else samples)


def pool_samples(pool: Any, name: str) -> list[MetricsSample]:
    """The sample of a pool: its ``statistics()``, its ``workers`` as the limit."""
    return [MetricsSample(name, type(pool).__name__, read_statistics(pool), pool.workers)]


def read_statistics(pool: Any) -> PoolStatistics:
    """``pool.statistics()``, from any thread: an ``AsyncPool`` counts its queue in
    its event loop's thread, so a read from elsewhere that meets the loop changing it
    (RuntimeError) is read again."""
    attempts = 3
    while True:
        try:
            stats: PoolStatistics = pool.statistics()
            return stats
        except RuntimeError:
            attempts -= 1
            if not attempts:
                raise


def live_samples() -> list[MetricsSample]:
    """The samples of every live registered object, by name."""
    with _lock:
        entries = sorted(_live.items())
    found: list[MetricsSample] = []
    for name, (ref, samples) in entries:
        obj = ref()
        if obj is not None:
            found += samples(obj, name)
    return found
