"""Dask: ``wp.DaskPool`` against Dask's own ``Client.map`` and ``ClientExecutor``.

Every scenario runs on a ``distributed.LocalCluster`` of 2 worker processes of one
thread each, started before the clock (and shared by a scenario's contenders), with
the contenders interleaved (A B C, A B C, ...). Contracts from issue 13:

- ``tiny_tasks``: 100,000 tiny tasks (``x * x``): ``DaskPool.map`` at least 10x the
  throughput of ``Client.map`` and of ``ClientExecutor.map``, from batching. Dask's
  rows, a scheduler round trip per item, run fewer items, as their names say; the
  unit, tasks/s, keeps the ratios comparable.
- ``throughput``: 1,000 tasks of 50 ms: ``DaskPool.map`` at least 0.95 of the ideal
  throughput (2 workers / 50 ms).
- ``memory``: 1,000,000 items from a generator through ``DaskPool.map``: the client's
  peak RSS growth under 50 MB (the client process holds the scheduler too, as a
  LocalCluster's does); ``Client.map`` over fewer items, for scale (it refuses an
  iterator: the generator is read into a list, inside the count). Each in a fresh
  interpreter, the cluster started and warmed up before the count starts.

Dask is imported only when a scenario runs (the ``bench`` extra installs it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import workpool as wp

from .harness import Contender, Target, compare, isolated, scenario

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["memory", "memory_child", "nap", "square", "throughput", "tiny_tasks"]

_WORKERS = 2
_NAP = 0.05


def square(x: int) -> int:
    """The tiny task."""
    return x * x


def nap(x: int) -> int:
    """A 50 ms task."""
    time.sleep(_NAP)
    return x


@contextmanager
def _cluster() -> Iterator[Client]:
    """A LocalCluster of 2 one-thread worker processes, and a client of it."""
    from distributed import Client, LocalCluster

    with (LocalCluster(n_workers=_WORKERS, threads_per_worker=1, processes=True,
                       dashboard_address=":0") as cluster,
          Client(cluster, set_as_default=False) as client):
        client.gather(client.map(square, range(4 * _WORKERS), pure=False))  # warmed up
        yield client


def _squares(n: int) -> int:
    return (n - 1) * n * (2 * n - 1) // 6


def _ours(client: Client, n: int) -> int:
    with wp.DaskPool(client) as pool:
        return sum(pool.map(square, range(n)))


def _client_map(client: Client, n: int) -> int:
    return sum(client.gather(client.map(square, range(n), pure=False)))


def _client_executor(client: Client, n: int) -> int:
    with client.get_executor(pure=False) as executor:
        return sum(executor.map(square, range(n)))


def _rate(run: Callable[[int], int], n: int) -> dict[str, float]:
    started = time.perf_counter()
    total = run(n)
    elapsed = time.perf_counter() - started
    if total != _squares(n):
        raise AssertionError(f"wrong sum of results over {n} items")
    return {"tasks/s": n / elapsed}


@scenario(own_process=True)
def tiny_tasks(quick: bool) -> dict[str, float]:
    """100k tiny tasks on a 2-worker LocalCluster: DaskPool.map against Dask's own maps"""
    n = 20_000 if quick else 100_000
    few = 1_000 if quick else 5_000
    ours, client_map = "DaskPool.map", f"Client.map ({few:,})"
    executor = f"ClientExecutor.map ({few:,})"
    with _cluster() as client:
        contenders: list[Contender] = [
            (client_map, lambda: _rate(lambda k: _client_map(client, k), few)),
            (executor, lambda: _rate(lambda k: _client_executor(client, k), few)),
            (ours, lambda: _rate(lambda k: _ours(client, k), n)),
        ]
        return compare(
            contenders, unit="tasks/s", higher_is_better={"tasks/s"}, baseline=client_map,
            targets=[Target(ours, ">=", 10)],
            title=f"{n:,} items (fewer where a row says), pure=False everywhere",
        )


def _efficiency(run: Callable[[int], Any], n: int) -> dict[str, float]:
    started = time.perf_counter()
    got = run(n)
    elapsed = time.perf_counter() - started
    if got != n:
        raise AssertionError(f"{got} results of {n}")
    return {"of ideal": n * _NAP / _WORKERS / elapsed}


@scenario(own_process=True)
def throughput(quick: bool) -> dict[str, float]:
    """1,000 tasks of 50 ms on 2 workers: the fraction of the ideal throughput"""
    n = 200 if quick else 1_000
    with _cluster() as client:
        def ours(k: int) -> int:
            with wp.DaskPool(client) as pool:
                return sum(1 for _ in pool.map(nap, range(k)))

        def theirs(k: int) -> int:
            return len(client.gather(client.map(nap, range(k), pure=False)))

        return compare(
            [("Client.map", lambda: _efficiency(theirs, n)),
             ("DaskPool.map", lambda: _efficiency(ours, n))],
            unit="of ideal", higher_is_better={"of ideal"}, baseline="Client.map",
            targets=[Target("DaskPool.map", ">=", 0.95, on="value")],
            title=f"{n:,} tasks of 50 ms; ideal: {_WORKERS} workers / 50 ms",
            repeats=3,  # a round is 2 x 25 s: 3 rounds bound the scenario to minutes
        )


def memory_child(kind: str, n: int) -> dict[str, float]:
    """*n* generated items through *kind*'s map (run by ``isolated``): the peak RSS
    growth of the map alone, the cluster started and warmed up first."""
    from .isolation import _reset_peak, _rss_mb

    with _cluster() as client:
        before = _rss_mb()
        peak = _reset_peak()
        started = time.perf_counter()
        items = (i for i in range(n))
        if kind == "DaskPool.map":
            with wp.DaskPool(client) as pool:
                total = sum(pool.map(square, items))
        else:  # Client.map refuses an iterator: it maps a list
            total = sum(client.gather(client.map(square, list(items), pure=False)))
        seconds = time.perf_counter() - started
        growth = peak() - before
    if total != _squares(n):
        raise AssertionError(f"wrong sum of results over {n} items")
    return {"map_mb": growth, "map_seconds": seconds}


def _memory(kind: str, n: int) -> dict[str, float]:
    out = isolated(memory_child, kind, n)
    return {"MB": out["map_mb"], "us/item": out["map_seconds"] * 1e6 / n}


@scenario
def memory(quick: bool) -> dict[str, float]:
    """1M generated items through map: the client's peak RSS growth, fresh process each"""
    big = 200_000 if quick else 1_000_000
    small = 5_000 if quick else 20_000
    ours = f"DaskPool.map {big:,}"
    return compare(
        [(f"Client.map {small:,}", lambda: _memory("Client.map", small)),
         (ours, lambda: _memory("DaskPool.map", big))],
        unit="MB", baseline=f"Client.map {small:,}",
        targets=[Target(ours, "<", 50, on="value")],
        title="2-worker LocalCluster; the client process holds the scheduler",
        repeats=1,
    )
