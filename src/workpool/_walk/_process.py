"""The walk on processes: ``ProcessRun``, worker processes that steal work.

Each worker process keeps the children it produces in a local deque and runs the
newest first (``_worker``); nothing of that crosses to the parent but results, in
batches. The parent's one coordinator thread hands roots to idle workers, and when a
worker runs dry with no root left, asks the busiest worker for the oldest half of its
deque (the FIFO end: the shallowest nodes, the biggest subtrees) and passes it on::

    consumer ◀── results ── coordinator thread (parent) ◀─ BATCH ── worker 1 ─┐ local
    (next())     batches     │ roots (lazy) ─ WORK ───────────────▶ worker 2  │ deques,
                             │ worker 2 idle: STEAL ─▶ worker 1                │ LIFO
                             │               ◀─ GIVE(oldest half) ─┘           │
                             └─ WORK(those) ─▶ worker 2 ───────────────────────┘
                             with key=: CLAIM(keys) ◀─▶ CLAIMED (the parent's one set)

Termination is a count: ``roots sent + children created - nodes visited``, where a
worker reports a node's visit and its children in the same message, so the count is 0
exactly when no node runs or waits anywhere (a child a worker holds inline was counted
with its parent: a BATCH from the middle of a subtree keeps the count above 0).

Bounded: a worker's deque holds at most ``cap`` (``max_pending // workers``) nodes,
counting those it gave (``lent``) until they reach another deque: the parent sends the
giver ``PLACED`` as it hands them on, and hands an idle worker others' nodes only while
its own deque has room for them. So the walk never holds more than ``workers x cap``
nodes waiting, even while what several steals gave waits here for an idle worker.

Backpressure: the consumer's thread acknowledges a worker's batches as it takes them
(``ACK``, a quarter of ``_worker.WINDOW`` at a time), and a worker with ``WINDOW``
batches not acknowledged waits, so what a slow consumer has not taken is bounded.

With stealing off (``steal=False``, the benchmark's central-queue baseline) every child
goes up to the parent, which hands them out one at a time.

Why not ProcessPool tasks: a task is a call that returns; a worker's deque must
outlive its tasks and answer steals while a node runs, which takes a loop of its own
per process. The pickling and the worker's conventions are the process pool's
(``_backends._child``, ``_backends._pickling``). Imports ``_core``, those two and
``multiprocessing``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import queue
import signal
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from multiprocessing.connection import wait
from typing import Any

from .._backends import _child
from .._backends._pickling import raise_send_error, unpicklable
from .._core.forking import can_fork_safely
from .._core.process_errors import WorkerCrashed
from . import _worker
from ._common import WalkStatistics

__all__ = ["ProcessRun"]

ROOTS_PER_MESSAGE = 64
_KILL_GRACE = 1.0  # seconds a stopped worker gets before it is killed


class _Worker:
    __slots__ = ("conn", "idle", "lent", "local", "process", "sent", "stealing", "taken")

    def __init__(self, process: Any, conn: Any) -> None:
        self.process = process
        self.conn = conn
        self.sent = 0  # WORK messages sent
        self.idle = True
        self.local = 0  # its deque, as last reported
        self.stealing = False  # a STEAL is on its way to it
        self.taken = 0  # its batches the consumer took, not acknowledged yet
        self.lent = 0  # children it gave that wait in the frontier (its deque counts them)


class ProcessRun:
    """A walk on worker processes (the ``Run`` behind ``wp.walk(kind="process")``'s
    iterator)."""

    def __init__(self, fn: Callable[[Any], Any], roots: Iterable[Any], workers: int,
                 max_pending: int, key: Callable[[Any], Hashable] | None, on_error: str,
                 steal: bool = True) -> None:
        self._fn_bytes = _dumps("the function", fn)
        self._key_bytes = None if key is None else _dumps("key", key)
        self._roots: Iterator[Any] | None = iter(roots)
        self._key = key
        self._seen: set[Hashable] = set()
        self._count = workers
        self._cap = max(1, max_pending // workers)
        self._steal = steal
        self._on_error = on_error
        self._workers: list[_Worker] = []
        # (node, depth, the worker that gave it): stolen, or up (no stealing: None).
        self._frontier: deque[tuple[Any, int, _Worker | None]] = deque()
        self._lock = threading.Lock()
        self._has_output = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._out: deque[tuple[_Worker, list[Any]]] = deque()
        self._room = 4 * workers
        self._end: BaseException | None = None
        self._over = False  # the coordinator left
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake: tuple[Any, Any] | None = None  # close() wakes the coordinator
        # The coordinator never blocks on a send (a worker whose pipe is full may be
        # waiting for the coordinator to read): a thread of its own delivers.
        self._outbox: queue.SimpleQueue[tuple[_Worker, bytes] | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._outstanding = 0  # roots sent + children created - nodes visited
        self._stats = {"visited": 0, "failed": 0, "max_pending": 0, "max_depth": 0,
                       "steals": 0, "messages": 0}
        self._acks = 0  # ACK messages (sent by the consumer's thread)
        self._window = _worker.WINDOW
        self._ack_every = max(1, self._window // 4)
        self._ack = pickle.dumps((_worker.ACK, self._ack_every), protocol=_child.PROTOCOL)

    # -- the consumer -----------------------------------------------------------------

    def next_batch(self) -> list[Any] | None:
        """Wait for the next batch of results; None once the walk is over."""
        if self._thread is None and not self._closed:
            self._start()
        with self._lock:
            while not self._out and not self._over and not self._closed:
                self._has_output.wait()
            if self._out:
                self._has_room.notify()
                worker, entries = self._out.popleft()
                worker.taken += 1
                if worker.taken == self._ack_every:  # the worker may run on
                    worker.taken = 0
                    self._acks += 1
                    self._outbox.put((worker, self._ack))
                return entries
            end, self._end = self._end, None
        if end is not None:
            raise end
        return None

    def close(self) -> None:
        """Stop: the worker processes are stopped (killed if they do not leave
        within a second) and joined."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._has_room.notify_all()
        if self._thread is not None:
            assert self._wake is not None
            with contextlib.suppress(OSError):
                self._wake[1].send_bytes(b"")
            self._thread.join()  # it stops the workers
            for end in self._wake:
                end.close()
        self._out.clear()

    def statistics(self) -> WalkStatistics:
        """A snapshot of the counts."""
        with self._lock:
            stats = {**self._stats, "messages": self._stats["messages"] + self._acks}
            return WalkStatistics(pending=self._pending(), **stats)

    def _pending(self) -> int:
        return len(self._frontier) + sum(w.local for w in self._workers)

    # -- starting ---------------------------------------------------------------------

    def _start(self) -> None:
        ctx = _context()
        self._wake = ctx.Pipe(duplex=False)
        try:
            for _ in range(self._count):
                parent_conn, child_conn = ctx.Pipe()
                process = ctx.Process(
                    target=_worker.main, name="workpool-walk", daemon=True,
                    args=(child_conn, self._fn_bytes, self._key_bytes, self._cap,
                          self._steal, self._on_error, self._window))
                try:
                    process.start()
                finally:
                    child_conn.close()
                self._workers.append(_Worker(process, parent_conn))
        except BaseException:
            self._stop_workers(kill=True)
            for end in self._wake:
                end.close()
            self._wake = None
            raise
        self._sender = threading.Thread(target=self._deliver, daemon=True,
                                        name="workpool-walk-sender")
        self._sender.start()
        self._thread = threading.Thread(target=self._coordinate, daemon=True,
                                        name="workpool-walk-coordinator")
        self._thread.start()

    # -- the coordinator thread -------------------------------------------------------

    def _coordinate(self) -> None:
        end: BaseException | None = None
        try:
            self._schedule()
            while not self._done():
                self._step()
        except BaseException as exc:  # a worker died, a message that could not be read
            end = exc
        finally:
            self._stop_workers(kill=end is not None or self._closed)
            with self._lock:
                self._end = None if self._closed else end
                self._over = True
                self._has_output.notify_all()

    def _done(self) -> bool:
        return self._closed or (self._outstanding == 0 and self._roots is None)

    def _step(self) -> None:
        by_conn = {w.conn: w for w in self._workers}
        by_sentinel = {w.process.sentinel: w for w in self._workers}
        assert self._wake is not None
        for ready in wait([*by_conn, *by_sentinel, self._wake[0]]):
            worker = by_conn.get(ready)
            if worker is None:
                if ready in by_sentinel and not self._closed:
                    process = by_sentinel[ready].process
                    process.join(_KILL_GRACE)  # its exit code, once reaped
                    raise WorkerCrashed(f"a walk's worker process died "
                                        f"({_death(process.exitcode)}); the nodes it "
                                        "held are lost")
                return
            try:
                data = worker.conn.recv_bytes()
            except (EOFError, OSError):
                continue  # it died: its sentinel says so
            self._stats["messages"] += 1
            self._on_message(worker, pickle.loads(data))
        self._schedule()

    def _on_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        op = message[0]
        if op == _worker.BATCH_MSG:
            _, body, counts, idle = message
            try:
                entries, up = pickle.loads(body)
            except Exception as exc:  # a result of a class this process cannot load
                raise unpicklable("results", exc) from exc
            visited, failed, created, deepest, local = counts
            self._outstanding += created - visited
            self._frontier.extend((item, depth, None) for item, depth in up)
            worker.local = local
            worker.idle = idle == worker.sent
            if worker.idle:
                worker.stealing = False  # it dropped the steal as it ran dry
            stats = self._stats
            with self._lock:
                stats["visited"] += visited
                stats["failed"] += failed
                stats["max_depth"] = max(stats["max_depth"], deepest)
                stats["max_pending"] = max(stats["max_pending"], self._pending())
            if entries:
                self._hand_over(worker, entries)
        elif op == _worker.GIVE:
            worker.stealing = False
            self._outstanding += message[2]
            given = pickle.loads(message[1])
            worker.local = max(0, worker.local - len(given))
            self._stats["steals"] += 1
            self._frontier.extend((item, depth, worker) for item, depth in given)
            worker.lent += len(given)
        elif op == _worker.FATAL:
            raise WorkerCrashed("a walk's worker process could not unpickle the function "
                                f"or key: {type(message[1]).__name__}: {message[1]}"
                                ) from message[1]
        else:  # CLAIM
            keys = pickle.loads(message[1])
            seen = self._seen
            answer = [k not in seen for k in keys]
            seen.update(keys)
            self._send(worker, (_worker.CLAIMED, answer))

    def _hand_over(self, worker: _Worker, entries: list[Any]) -> None:
        with self._lock:
            while len(self._out) >= self._room and not self._closed:
                self._has_room.wait()
            self._out.append((worker, entries))
            self._has_output.notify()

    def _schedule(self) -> None:
        """Give idle workers work: what was stolen (or sent up), else roots, else steal
        for them from the busiest."""
        idle = [w for w in self._workers if w.idle]
        for n, worker in enumerate(idle):
            left = len(idle) - n
            if self._frontier:
                items = self._share(worker, 1 if not self._steal else
                                    -(-len(self._frontier) // left))
            else:
                items = self._take_roots()
            if items:
                worker.idle = False
                worker.sent += 1
                self._send(worker, (_worker.WORK, _child.dumps(items)))
        hungry = sum(w.idle for w in self._workers)
        if not self._steal or not hungry:
            return
        # A victim with an empty deque (as far as we know) keeps the request until it
        # has children to give: no round trip wasted, no wait for its next report.
        victims = sorted((w for w in self._workers if not w.idle and not w.stealing),
                         key=lambda w: -w.local)
        for victim in victims[:hungry]:
            victim.stealing = True
            self._send(victim, (_worker.STEAL,))

    def _share(self, worker: _Worker, share: int) -> list[tuple[Any, int]]:
        """Up to *share* nodes of the frontier, oldest first, for the idle *worker*.

        A worker's deque counts the children it gave until they reach another deque
        (its ``lent``, which the ``PLACED`` sent here releases): *worker* takes its own
        back, and others' only while its deque, its own lent included, has room. So no
        deque ever holds more than ``cap`` nodes, and the walk no more than ``workers x
        cap`` (max_pending), steals included."""
        frontier = self._frontier
        room, own = self._cap - worker.lent, worker.lent
        items: list[tuple[Any, int]] = []
        skipped: list[tuple[Any, int, _Worker | None]] = []
        placed: dict[_Worker, int] = {}
        while frontier and len(items) < share and (room > 0 or own > 0):
            entry = frontier.popleft()
            item, depth, giver = entry
            if giver is worker:
                own -= 1
            elif room > 0:
                room -= 1
            else:  # no room for others' children: look for its own further on
                skipped.append(entry)
                continue
            if giver is not None:
                placed[giver] = placed.get(giver, 0) + 1
            items.append((item, depth))
        frontier.extendleft(reversed(skipped))
        for giver, n in placed.items():  # before the WORK: the giver may be *worker*
            giver.lent -= n
            self._send(giver, (_worker.PLACED, n))
        return items

    def _take_roots(self) -> list[tuple[Any, int]]:
        items: list[tuple[Any, int]] = []
        roots = self._roots
        while roots is not None and len(items) < min(ROOTS_PER_MESSAGE, self._cap):
            root = next(roots, _END)
            if root is _END:
                self._roots = roots = None
            elif self._key is None or _first(self._seen, self._key(root)):
                items.append((root, 0))
        self._outstanding += len(items)
        return items

    def _send(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        self._stats["messages"] += 1
        self._outbox.put((worker, pickle.dumps(message, protocol=_child.PROTOCOL)))

    def _deliver(self) -> None:
        while (job := self._outbox.get()) is not None:
            worker, data = job
            with contextlib.suppress(OSError):  # it died: its sentinel says so
                worker.conn.send_bytes(data)

    def _stop_workers(self, kill: bool) -> None:
        for worker in self._workers:
            if kill:  # a send blocked on its pipe fails now
                worker.process.terminate()
            else:
                self._outbox.put((worker, _STOP))
        if self._sender is not None:
            self._outbox.put(None)
            self._sender.join()
        for worker in self._workers:
            worker.process.join(_KILL_GRACE)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.process.close()
            worker.conn.close()


def _first(seen: set[Hashable], k: Hashable) -> bool:
    if k in seen:
        return False
    seen.add(k)
    return True


def _dumps(what: str, obj: Any) -> bytes:
    try:
        return _child.dumps(obj)
    except Exception as exc:
        raise_send_error(exc, [(what, obj)], "")


def _context() -> Any:
    """As the process pool starts its first workers: fork while this process has one
    thread (fast, and nothing can hold a lock), else forkserver where it exists, else
    spawn."""
    if can_fork_safely():
        return multiprocessing.get_context("fork")
    if "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


_END = object()
_STOP = pickle.dumps((_worker.STOP,), protocol=_child.PROTOCOL)
