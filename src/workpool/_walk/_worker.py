"""The loop of a walk's worker process, and the messages it exchanges with the parent.

Two threads: the main one runs nodes, the listener answers the parent at once, even
while a long node runs (a steal never waits for the victim's current node)::

    listener thread                       main thread
      WORK(items)  -> local deque,          pop the newest node (LIFO), run fn:
                      wake the main thread    result -> batch; children (claimed
      STEAL        -> GIVE(the oldest half    first, with key=) -> the local deque
                      of the deque, and the   while it holds fewer than `cap`, the
                      children not yet        rest run inline, depth first
                      counted); if it is    every BATCH results or FLUSH_SECONDS,
                      empty, the main thread  and whenever the deque runs dry: one
                      gives once it has some  BATCH message (results, counts; "idle"
      CLAIMED(ok)  -> the main thread's       when the deque is empty), even in the
                      claim                   middle of an inline subtree; with
      ACK(n)       -> n more BATCH messages   WINDOW of them not acknowledged, wait
                      may go                  (the consumer is behind)
      PLACED(n)    -> n children given reached another deque: until then they count
                      against this deque's cap (the walk's total stays within max_pending)
      STOP / EOF   -> stop

Messages are pickled tuples; user objects inside travel as bytes pickled by
``_backends._child`` (by reference where they can, by value with cloudpickle where
they must), so the parent and the worker agree with the process pool on what crosses.
Imports ``_backends._child`` and ``_walk._common``: what a worker process loads.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Final

from .._backends import _child
from ._common import BATCH, Failure, pair

# parent -> worker
WORK: Final = 0  # (WORK, bytes of [(item, depth), ...])
STEAL: Final = 1  # (STEAL,)
CLAIMED: Final = 2  # (CLAIMED, [bool per key asked])
STOP: Final = 3  # (STOP,)
ACK: Final = 4  # (ACK, how many BATCH messages with results the consumer took)
PLACED: Final = 5  # (PLACED, n): n children this worker gave reached another deque
# worker -> parent
BATCH_MSG: Final = 10  # (BATCH_MSG, bytes of (entries, items up), counts, idle)
GIVE: Final = 11  # (GIVE, bytes of [(item, depth), ...], children made, not counted)
CLAIM: Final = 12  # (CLAIM, bytes of [key, ...])
FATAL: Final = 13  # (FATAL, the error): fn or key could not be unpickled here

# Results go up at most this often (while nodes run): each message wakes the parent,
# which on a machine with no spare core preempts a worker.
FLUSH_SECONDS: Final = 0.05
# A worker runs at most this many BATCH messages with results ahead of the consumer
# (the parent acknowledges them as the consumer takes them, a quarter at a time): what
# a slow consumer has not taken yet is bounded, and so is the worker's memory. Wide
# enough that a worker never waits for a consumer that keeps up (an ACK may wait for
# the parent's GIL for milliseconds).
WINDOW: Final = 256
# The listener answers a steal once the main thread lets go of the GIL: within this
# (the interpreter's default is 5 ms), even while a node runs pure Python.
SWITCH_INTERVAL: Final = 0.0005

_END = object()
_NONE: Iterator[Any] = iter(())


def main(conn: Any, fn_bytes: bytes, key_bytes: bytes | None, cap: int, steal: bool,
         on_error: str, window: int) -> None:
    """Entry point of a walk's worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True,
                     name="workpool-walk-parent-watch").start()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        fn = pickle.loads(fn_bytes)
        key = None if key_bytes is None else pickle.loads(key_bytes)
    except BaseException as exc:  # reported: the walk fails with it
        conn.send_bytes(_child.dumps_reply((FATAL, _child.with_traceback(exc))))
        return
    loop = _Loop(conn, fn, key, cap, steal, on_error, window)
    threading.Thread(target=loop.listen_or_die, daemon=True,
                     name="workpool-walk-listener").start()
    loop.run()


def _watch_parent(parent: int) -> None:
    # The parent died (even by SIGKILL): leave, as the pool's workers do.
    while True:
        time.sleep(0.1)
        if os.getppid() != parent:
            os._exit(70)


class _Loop:
    def __init__(self, conn: Any, fn: Callable[[Any], Any], key: Callable[[Any], Hashable] | None,
                 cap: int, steal: bool, on_error: str, window: int) -> None:
        self.conn = conn
        self.fn = fn
        self.key = key
        self.seen: set[Hashable] = set()  # keys claimed or refused: no need to ask again
        self.cap = cap
        self.steal = steal
        self.skip = on_error == "skip"
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.send_lock = threading.Lock()
        self.local: deque[tuple[Any, int]] = deque()
        # Children given (GIVE) that wait in the parent: they count against the deque's
        # cap until they reach another deque (PLACED), so the walk's total stays within
        # max_pending while the deque refills.
        self.lent = 0
        self.received = 0  # WORK messages taken into the deque
        self.wanted = False  # a steal waits for the deque to hold something
        self.stopped = False
        self.unacked = 0  # BATCH messages with results the consumer has not taken
        self.window = window  # ... at most (WINDOW)
        self.claims: queue.SimpleQueue[list[bool] | None] = queue.SimpleQueue()
        # What the next BATCH message carries.
        self.entries: list[Any] = []  # results and Failures
        self.items: list[Any] = []  # the node of each entry (to name an unsendable one)
        self.up: list[tuple[Any, int]] = []  # children for the parent (no stealing)
        self.visited = self.failed = self.created = self.deepest = 0

    # -- the listener thread ----------------------------------------------------------

    def listen_or_die(self) -> None:
        try:
            self.listen()
        except BaseException:  # pragma: no cover - a bug: die, the parent says so
            os._exit(71)

    def listen(self) -> None:
        conn = self.conn
        while True:
            try:
                message = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                message = (STOP,)
            op = message[0]
            if op == WORK:
                items = pickle.loads(message[1])
                with self.wake:
                    self.local.extend(items)
                    self.received += 1
                    self.wake.notify()
            elif op == STEAL:
                with self.lock:
                    if self.local:
                        self._give()
                    else:  # the main thread gives as soon as it has something
                        self.wanted = True
            elif op == CLAIMED:
                self.claims.put(message[1])
            elif op == PLACED:
                with self.lock:
                    self.lent -= message[1]
            elif op == ACK:
                with self.wake:
                    self.unacked -= message[1]
                    self.wake.notify()
            else:
                with self.wake:
                    self.stopped = True
                    self.wake.notify()
                self.claims.put(None)
                return

    def _give(self) -> None:
        """Send the parent the oldest half of the deque (the caller holds the lock)."""
        local = self.local
        given = [local.popleft() for _ in range((len(local) + 1) // 2)]
        self.wanted = False
        try:
            body = _child.dumps_reply(given)
        except Exception:  # a child that cannot travel runs here, where it was made
            local.extendleft(reversed(given))
            given = []
            body = _child.dumps_reply(given)
        self.lent += len(given)
        # The children made so far go with them: a stolen child must never be
        # reported visited before its parent's children are counted.
        created, self.created = self.created, 0
        self._send((GIVE, body, created))

    def _send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send_bytes(pickle.dumps(message, protocol=_child.PROTOCOL))

    # -- the main thread ----------------------------------------------------------------

    def run(self) -> None:
        since = time.perf_counter()
        while True:
            with self.wake:
                node = self.local.pop() if self.local else None
                if node is None:
                    idle = self.received
                    self.wanted = False  # idle: the parent steals for it elsewhere
            if node is None:
                self._flush(idle)
                with self.wake:
                    # New work, even if a steal took it before this thread woke (then
                    # it says idle again, with the new count).
                    while self.received == idle and not self.stopped:
                        self.wake.wait()
                since = time.perf_counter()
            elif not self.stopped:
                since = self._subtree(*node, since)
            if self.stopped:
                return

    def _subtree(self, item: Any, depth: int, since: float) -> float:
        """Run *item*, then the children the deque has no room for, depth first; the
        results go up every BATCH of them or FLUSH_SECONDS, even in the middle of a
        subtree (which may be endless). Returns when results last went up."""
        stack = [(self._visit(item, depth), depth + 1)]
        while True:  # one round a node visited
            if len(self.entries) >= BATCH or time.perf_counter() - since > FLUSH_SECONDS:
                # Consistent at any point between visits: a child waiting on the stack
                # was counted as created when its parent ran, before this count.
                self._flush(-1)
                since = time.perf_counter()
            child = _END
            while stack and not self.stopped:
                rest, d = stack[-1]
                child = next(rest, _END)
                if child is not _END:
                    break
                stack.pop()
            if child is _END or self.stopped:
                return since
            stack.append((self._visit(child, d), d + 1))

    def _visit(self, item: Any, depth: int) -> Iterator[Any]:
        """Run *item*; its children go to the deque (or the parent), and those that
        find no room there are returned, for this thread to run inline."""
        self.visited += 1
        if depth > self.deepest:
            self.deepest = depth
        try:
            result, children = pair(self.fn(item))
            children = list(children)
            if self.key is not None:
                children = self._claim(children)
        except BaseException as exc:  # even sys.exit() fails its node alone
            self.failed += 1
            if not self.skip:
                self.entries.append(Failure(item, _child.with_traceback(exc)))
                self.items.append(item)
            return _NONE
        self.entries.append(result)
        self.items.append(item)
        if not children:
            return _NONE
        d = depth + 1
        with self.lock:
            self.created += len(children)
            if not self.steal:
                self.up.extend((child, d) for child in children)
                return _NONE
            room = self.cap - len(self.local) - self.lent
            if room > 0:
                self.local.extend((child, d) for child in children[:room])
                if self.wanted:
                    self._give()
        return _NONE if room >= len(children) else iter(children[max(room, 0):])

    def _claim(self, children: list[Any]) -> list[Any]:
        """The children whose key no worker claimed before (the parent keeps them)."""
        assert self.key is not None
        keys = [self.key(child) for child in children]
        fresh = [i for i, k in enumerate(keys) if k not in self.seen]
        if not fresh:
            return []
        asked = [keys[i] for i in fresh]
        self.seen.update(asked)
        self._send((CLAIM, _child.dumps_reply(asked)))
        answer = self.claims.get()
        if answer is None:  # stopped
            return []
        return [children[i] for i, ok in zip(fresh, answer, strict=True) if ok]

    def _flush(self, idle: int) -> None:
        """Send what ran since the last BATCH message; *idle*: the WORK messages taken
        when the deque was found empty (-1: not idle). With *window* messages of results
        not taken by the consumer, wait (steals are still answered) until it takes some."""
        body = self._dump()
        results = bool(self.entries)
        self.entries, self.items, self.up = [], [], []
        with self.wake:  # sent under the lock too: no GIVE overtakes the count it carries
            counts = (self.visited, self.failed, self.created, self.deepest, len(self.local))
            self.visited = self.failed = self.created = 0
            self._send((BATCH_MSG, body, counts, idle))
            self.unacked += results
            while self.unacked >= self.window and not self.stopped:
                self.wake.wait()

    def _dump(self) -> bytes:
        """The entries and children up, pickled; an entry that cannot be pickled
        becomes the failure of its node."""
        try:
            return _child.dumps_reply((self.entries, self.up))
        except Exception:  # find the culprits, below
            pass
        entries = []
        for entry, item in zip(self.entries, self.items, strict=True):
            try:
                _child.dumps_reply(entry)
            except Exception as exc:
                exc.add_note("(raised while pickling the node's result to send it back)")
                entry = Failure(_Unsendable(repr(item)), _child.with_traceback(exc))
            entries.append(entry)
        return _child.dumps_reply((entries, self.up))


class _Unsendable:
    """In place of a node that could not be sent back with its failure: its repr."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text
