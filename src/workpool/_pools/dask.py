"""``DaskPool``: the workpool contract on a Dask cluster.

The front end over the engine and the dask backend (``_backends.dask``): which client
the pool runs on (one passed in, one connected to an address, or a ``LocalCluster`` it
starts and closes), per-task placement (``resources``, ``workers``) and closing what it
started. May import ``_core``, ``_engine``, ``_backends``, ``_sync``, ``executor`` and
``distributed``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import BrokenExecutor, Future
from typing import Any, Final, TypeVar, final

from .._core.options import Workers, check_pool_options, pool_workers
from .._core.ratelimit import RateLimit
from .._core.retry import Retry
from .._engine.contract import Backend
from .._sync.semaphore import Semaphore
from .executor import ExecutorPool

try:
    import distributed
except ImportError as exc:  # pragma: no cover - the dask extra is not installed
    raise ImportError("wp.DaskPool needs Dask distributed: pip install 'workpool[dask]'"
                      ) from exc

from .._backends.dask import DaskBackend, Placed, forget_remote

__all__ = ["DaskPool", "default_client", "local_client"]

T = TypeVar("T")


def default_client() -> distributed.Client | None:
    """The current default ``distributed.Client`` (the last one created, or the one
    ``set_as_default`` made so), or None."""
    try:
        client: distributed.Client = distributed.default_client()
    except ValueError:
        return None
    return client


# Seconds a Ctrl-C leaves the running tasks of a pool with a cluster of its own.
_OWN_GRACE: Final = 1.0


def local_client() -> distributed.Client:
    """A client of a ``LocalCluster`` of its own (Dask's defaults, its dashboard on a
    free port), not the default client; closing it closes the cluster."""
    return distributed.Client(set_as_default=False, dashboard_address=":0")


def _check_resources(resources: Mapping[str, float] | None) -> dict[str, float] | None:
    if resources is None:
        return None
    if not isinstance(resources, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in resources.items()):
        raise TypeError("resources must be a mapping of resource names to amounts, such "
                        f"as {{'GPU': 1}}, or None, got {resources!r}")
    for name, amount in resources.items():
        if amount <= 0:
            raise ValueError(f"resources must be > 0, got {name}={amount!r}")
    return dict(resources)


def _check_workers(workers: str | Sequence[str] | None) -> list[str] | None:
    if workers is None:
        return None
    names = [workers] if isinstance(workers, str) else workers
    if not isinstance(names, Sequence) or not names or not all(
            isinstance(w, str) for w in names):
        raise TypeError("workers must be a Dask worker's address or name, or a non-empty "
                        f"list of them, or None, got {workers!r}")
    return list(names)


@final
class DaskPool(ExecutorPool):
    """A bounded pool over a Dask cluster; a ``concurrent.futures.Executor``.

    Same contract as ``ThreadPool`` and ``ProcessPool`` (``submit``, ``schedule``,
    lazy ``map``, ``on_error``, rate limit, statistics, the three shutdown flavours,
    Ctrl-C), on a ``distributed.Client``:

    - bounded in flight: at most ``workers`` tasks (or ``map`` chunks) are on the
      cluster at once; the rest wait here, in priority order, so that an endless
      generator maps in flat memory on the client and on the scheduler;
    - ``map`` batches tiny tasks into chunks sized from their measured run time
      (``chunksize="auto"`` aims at about 100 ms per chunk, where Dask's per-task
      overhead, about a millisecond, is small);
    - every call runs: two identical calls run twice (Dask's ``pure=False``);
    - retries are the pool's (``wp.Retry``, with backoff): a waiting retry holds no
      slot and no cluster thread;
    - a task past its ``timeout`` fails with ``wp.TaskTimeout`` at once and its cluster
      task is cancelled: if it has not started it never does; if it runs, its
      ``wp.current()`` context is cancelled on its worker (``cancelled`` turns true,
      ``checkpoint()`` raises, ``wp.current().sleep()`` wakes). Dask cannot stop a
      thread that runs Python code: a task that never checks runs to its end on its
      worker (its result is dropped). The timeout counts from the task's submission to
      the cluster;
    - a task whose workers die (``distributed.scheduler.allowed-failures`` times, Dask's
      ``KilledWorker``) fails with ``wp.WorkerCrashed``, caused by Dask's error (a
      whole ``map`` chunk fails with it).

    Functions, arguments and results travel as Dask sends them (pickle, cloudpickle for
    lambdas and ``__main__``); arguments are passed as they are (a Dask future among
    them is not resolved), and what cannot be pickled fails its task's future. Memory
    stays flat on the client and the scheduler but for what Dask keeps for debugging:
    the last 1000 messages of each connection (``distributed.admin.low-level-log-
    length``), which hold each task's pickled call (a few bytes per ``map`` item).

    Args:
        client: the ``distributed.Client`` to run on (the pool neither closes it nor
            its cluster).
        address: a scheduler's address to connect a client of the pool's own to
            (closed at shutdown). With neither, the pool starts a
            ``distributed.LocalCluster`` (Dask's defaults, its dashboard on a free
            port) and closes it at shutdown.
        workers: the most tasks or chunks in flight on the cluster (default: twice the
            cluster's threads when the pool starts, at least 2, so that each thread has
            its next task at hand).
        max_workers: the stdlib's name for *workers*.
        queue_size: tasks that may wait for a slot, as for ``ThreadPool``.
        timeout: seconds a task may run, counted from its submission to the cluster
            (see above).
        retry: a ``wp.Retry`` policy, as for ``ThreadPool`` (a waiting retry holds no
            slot).
        rate: a ``wp.RateLimit`` on the tasks sent to the cluster, as for
            ``ThreadPool``.
        name: names the pool in its ``repr`` and its driver thread.
        budget: a ``wp.Semaphore`` every task takes ``cost`` tokens of, as for
            ``ThreadPool``.
        initializer: called once per Dask worker, before the first task of this pool
            runs there, with *initargs*; its value is ``wp.current().state`` there. If it
            fails, the task fails with ``BrokenExecutor`` (caused by its error) and the
            next task on that worker calls it again.
        resources: Dask resources every task of the pool needs (``{"GPU": 1}``).

    Example::

        from distributed import Client

        with Client("tcp://scheduler:8786") as client, wp.DaskPool(client) as pool:
            for score in pool.map(score_document, read_documents(), ordered=False):
                save(score)
    """

    _broken_type = BrokenExecutor
    _chunk_target = 0.1
    _max_chunk = 8192

    def __init__(self, client: distributed.Client | None = None, *, address: str | None = None,
                 workers: Workers | None = None, max_workers: int | None = None,
                 queue_size: int = 1024, timeout: float | None = None,
                 retry: Retry | None = None, rate: RateLimit | None = None,
                 initializer: Callable[..., Any] | None = None,
                 initargs: tuple[Any, ...] = (), name: str | None = None,
                 budget: Semaphore | None = None,
                 resources: Mapping[str, float] | None = None) -> None:
        if client is not None:
            if not isinstance(client, distributed.Client):
                raise TypeError(f"client must be a distributed.Client or None, got {client!r}")
            if client.asynchronous:
                raise ValueError("client must be a synchronous distributed.Client (the pool "
                                 "calls it from its own thread), got an asynchronous one")
            if client.status in ("closing", "closed"):
                raise ValueError(f"client must be open, got a {client.status} one")
        if address is not None:
            if client is not None:
                raise TypeError("pass client or address, not both")
            if not isinstance(address, str):
                raise TypeError(f"address must be a str or None, got {address!r}")
        if workers is not None or max_workers is not None:
            pool_workers(workers, max_workers, 1)  # bad counts fail before a cluster starts
        check_pool_options(queue_size, retry, rate, initializer)
        self._resources = _check_resources(resources)
        # The client the pool started (closing it closes its LocalCluster, if any).
        self._owned: distributed.Client | None = None
        self._closer: threading.Thread | None = None
        self._closing = threading.Lock()  # a shutdown and the closer thread may race
        if client is None:
            client = self._owned = (local_client() if address is None else
                                    distributed.Client(address, set_as_default=False))
        self._client = client
        try:
            super().__init__(workers, max_workers=max_workers, queue_size=queue_size,
                             timeout=timeout, retry=retry, rate=rate, initializer=initializer,
                             initargs=initargs, name=name, budget=budget)
        except BaseException:
            if self._owned is not None:
                self._owned.close()
            raise

    @property
    def client(self) -> distributed.Client:
        """The ``distributed.Client`` the pool runs on."""
        return self._client

    def _default_workers(self) -> int:
        threads: dict[str, int] = self._client.nthreads()
        return max(2, 2 * sum(threads.values()))

    def _make_backend(self, initializer: Callable[..., Any] | None,
                      initargs: tuple[Any, ...]) -> Backend:
        self._dask = DaskBackend(self._client, initializer=initializer, initargs=initargs,
                                 resources=self._resources)
        return self._dask

    def schedule(self, fn: Callable[..., T], args: Iterable[Any] = (),
                 kwargs: dict[str, Any] | None = None, *, priority: int = 0,
                 timeout: float | None = None, retry: Retry | None = None,
                 key: Any = None, block: bool = True, cost: int = 1,
                 resources: Mapping[str, float] | None = None,
                 workers: str | Sequence[str] | None = None) -> Future[T]:
        """Submit with per-task options: those of ``ThreadPool.schedule`` and where the
        task may run.

        Args:
            fn: the callable; *args* and *kwargs* are passed to it.
            priority: higher runs first, FIFO within a priority: orders the tasks
                waiting here, and is passed to Dask for those on the cluster.
            timeout: seconds this task may run (overrides the pool's).
            retry: this task's retry policy (overrides the pool's).
            key: a caller's identifier for the task, kept with it.
            block: False raises ``wp.QueueFull`` instead of waiting for room, as for
                ``ThreadPool.schedule``.
            cost: tokens of the pool's ``budget`` the task holds, as for
                ``ThreadPool.schedule``.
            resources: the Dask resources this task needs (instead of the pool's).
            workers: the Dask worker (address or name), or the list of them, that may
                run this task.

        Example::

            future = pool.schedule(train, (params,), resources={"GPU": 1}, priority=5)
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        needs, where = _check_resources(resources), _check_workers(workers)
        if needs is not None or where is not None:
            fn = Placed(fn, needs, where)
        return super().schedule(fn, args, kwargs, priority=priority, timeout=timeout,
                                retry=retry, key=key, block=block, cost=cost)

    # -- what the pool started -----------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False,
                 timeout: float | None = None) -> None:
        """As ``ThreadPool.shutdown``; then the client and cluster the pool started
        are closed (with ``wait=False``, by a thread once the work has ended). A
        client passed in stays open."""
        super().shutdown(wait, cancel_futures=cancel_futures, timeout=timeout)
        if wait:
            self._close_owned()
        elif self._owned is not None and self._closer is None:
            self._closer = threading.Thread(target=self._close_when_done, daemon=True,
                                            name=f"{self._name}_closer")
            self._closer.start()

    def _escalate(self) -> None:
        """Ctrl-C. A cluster of the pool's own runs its workers in processes of the
        terminal's process group, which the same Ctrl-C interrupted: its running tasks
        may never end, so they get ``_OWN_GRACE`` seconds, then are given up on.
        Otherwise as every pool: a second Ctrl-C gives up on them."""
        try:
            if self._owned is not None:
                self.shutdown(wait=True, cancel_futures=True, timeout=_OWN_GRACE)
            else:
                super()._escalate()
        finally:
            self._close_owned()

    def _close_when_done(self) -> None:
        self._engine.join(None)
        self._close_owned()

    def _close_owned(self) -> None:
        """Forget the initializer's values on the workers; close what the pool started."""
        dask = self._dask
        if dask.init is not None and self._client.status == "running":
            with contextlib.suppress(Exception):  # its cluster is gone: nothing is kept
                self._client.run(forget_remote, dask.token, on_error="ignore")
        with self._closing:
            owned, self._owned = self._owned, None
        if owned is not None:
            owned.close()

    def __enter__(self) -> DaskPool:
        return self
