"""Resumable runs: which source items finished, kept durably in SQLite.

::

    source thread ── key(item) ── finished before? ── skip (the reader connection)
         │ no: Tag(key)
         ▼
    stages carry (value, tag) ── split by flat_map/unbatch, joined by batch ── ...
         │ the last use of a tag (consumed, written by the sink, filtered out)
         ▼
    Book.release ── every tag made from a source item released, none failed
         │                                           ──▶ its key is finished
         ▼
    writer thread: INSERT, COMMIT at least every 100 ms or 256 keys (WAL, synchronous=FULL)
         ▲
    each(fn, transactional=True): fn(connection, item) runs here, in the same open
    transaction as the keys it finishes: the write and the journal entry commit together.

A ``Tag`` counts the live pieces made from a source item (``count``) and points at what
it was made from (``parents``: a batch's tag holds the tags of its items). An item is
finished when its count reaches zero with no piece failed; an item dropped by
``on_error="skip"`` or ``"collect"`` is not recorded, so a rerun tries it again.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import Any, Final

from .._core.chunk import Chunk
from .._core.exceptions import Cancelled
from .._core.ratelimit import TokenBucket
from .._core.retry import Retry

__all__ = ["Book", "Journal", "Reader", "Tag"]

TABLE: Final = "workpool_journal"
COMMIT_EVERY: Final = 0.1  # seconds: the oldest uncommitted key waits at most this long
COMMIT_KEYS: Final = 256  # ... or until this many are pending
_STOP: Final = object()

Key = str | int | bytes


class Tag:
    """The live pieces made from one source item (or, for a batch, from its items)."""

    __slots__ = ("count", "failed", "key", "parents")

    def __init__(self, key: Key | None, parents: list[Tag] | None = None) -> None:
        self.count = 1
        self.failed = False
        self.key = key
        self.parents = parents


class Book:
    """Reference counting from the pieces in flight back to the source items."""

    __slots__ = ("_journal", "_lock")

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._lock = threading.Lock()

    def split(self, tag: Tag, pieces: int) -> None:
        """*tag*'s piece became *pieces* pieces (0: it was dropped)."""
        if pieces == 0:
            self.release([tag])
        elif pieces > 1:
            with self._lock:
                tag.count += pieces - 1

    def release(self, tags: list[Tag], failed: bool = False) -> None:
        """The pieces of *tags* are done (with an error if *failed*); record the source
        items that this finishes."""
        finished: list[Key] = []
        with self._lock:
            stack = [(tag, failed) for tag in tags]
            while stack:
                tag, bad = stack.pop()
                if bad:
                    tag.failed = True
                tag.count -= 1
                if tag.count:
                    continue
                if tag.parents is not None:
                    stack.extend((parent, tag.failed) for parent in tag.parents)
                elif not tag.failed and tag.key is not None:
                    finished.append(tag.key)
        if finished:
            self._journal.record(finished)


class Reader:
    """Looks keys up in the journal, on its own connection (one thread's)."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, timeout=30)
        self._query = f"SELECT 1 FROM {TABLE} WHERE key = ?"

    def finished(self, key: Key) -> bool:
        """Whether an earlier run recorded *key* as finished.

        Raises:
            TypeError: *key* is not a str, int or bytes.
        """
        if not isinstance(key, str | int | bytes):
            raise TypeError(f"key() must return a str, int or bytes, got {key!r}")
        return self._conn.execute(self._query, (key,)).fetchone() is not None

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class Journal:
    """The SQLite file that records finished keys, and its one writer thread."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.error: BaseException | None = None
        self.cancelled = threading.Event()
        self.on_error: Callable[[BaseException], None] = lambda exc: None
        self._ops: SimpleQueue[Any] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._writer_ident = -1
        self._conn: sqlite3.Connection | None = None
        self._pending = 0
        self._since = 0.0

    # -- set-up, in the caller's thread ---------------------------------------------------

    def open(self) -> None:
        """Create the table (WAL mode) and start the writer thread."""
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} "
                         "(key PRIMARY KEY NOT NULL, finished REAL NOT NULL) WITHOUT ROWID")
            conn.commit()
        finally:
            conn.close()
        self._thread = threading.Thread(target=self._write, name="workpool-journal")
        self._thread.start()

    def reader(self) -> Reader:
        """A reader of finished keys, on a connection of the calling thread."""
        return Reader(self.path)

    # -- from any thread --------------------------------------------------------------------

    def record(self, keys: list[Key]) -> None:
        """Record *keys* as finished: at once on the writer thread (inside its open
        transaction), else queued for it."""
        if threading.get_ident() == self._writer_ident:
            self._insert(keys)
        else:
            self._ops.put(keys)

    def submit_sink(self, fn: Callable[[sqlite3.Connection, Any], object], values: list[Any],
                    tags: list[Tag] | None, book: Book, retry: Retry | None,
                    bucket: TokenBucket | None) -> Future[Chunk]:
        """Run ``fn(connection, value)`` for each value on the writer thread, each in a
        savepoint of the journal's transaction, releasing the value's tag there too."""
        future: Future[Chunk] = Future()
        self._ops.put((fn, values, tags, book, retry, bucket, future))
        return future

    def close(self) -> None:
        """Commit what is pending and stop the writer; raise what stopped it early."""
        if self._thread is not None:
            self._ops.put(_STOP)
            self._thread.join()
            self._thread = None

    # -- the writer thread ----------------------------------------------------------------------

    def _write(self) -> None:
        self._writer_ident = threading.get_ident()
        try:
            conn = self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA synchronous=FULL")
        except BaseException as exc:
            self._failed(exc)
            return
        try:
            self._loop()
        except BaseException as exc:
            self._failed(exc)
        finally:
            try:
                self._commit()
            except sqlite3.Error as exc:
                self._failed(exc)
            conn.close()

    def _loop(self) -> None:
        ops = self._ops
        while True:
            wait = None if not self._pending else max(0.0, self._since + COMMIT_EVERY
                                                       - time.monotonic())
            try:
                op = ops.get(timeout=wait)
            except Empty:
                self._commit()
                continue
            if op is _STOP:
                return
            if isinstance(op, list):
                self._insert(op)
            else:
                self._sink(*op)
            if self._pending and (self._pending >= COMMIT_KEYS
                                  or time.monotonic() - self._since >= COMMIT_EVERY):
                self._commit()

    def _begin(self) -> None:
        assert self._conn is not None
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
            self._since = time.monotonic()

    def _insert(self, keys: list[Key]) -> None:
        assert self._conn is not None
        self._begin()
        now = time.time()
        self._conn.executemany(f"INSERT OR IGNORE INTO {TABLE} (key, finished) VALUES (?, ?)",
                               [(key, now) for key in keys])
        self._pending += len(keys)

    def _commit(self) -> None:
        conn = self._conn
        if conn is not None and conn.in_transaction:
            conn.execute("COMMIT")
        self._pending = 0

    def _sink(self, fn: Callable[[sqlite3.Connection, Any], object], values: list[Any],
              tags: list[Tag] | None, book: Book, retry: Retry | None,
              bucket: TokenBucket | None, future: Future[Chunk]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        errors: dict[int, BaseException] = {}
        started = time.perf_counter()
        for index, value in enumerate(values):
            error = self._sink_one(fn, value, retry, bucket)
            if error is not None:
                errors[index] = error
            elif tags is not None:
                book.release([tags[index]])  # finishes keys inside this transaction
        future.set_result(Chunk([None] * len(values), errors or None,
                                time.perf_counter() - started))

    def _sink_one(self, fn: Callable[[sqlite3.Connection, Any], object], value: Any,
                  retry: Retry | None, bucket: TokenBucket | None) -> BaseException | None:
        conn = self._conn
        assert conn is not None
        attempt = 1
        while True:
            if self.cancelled.is_set():
                return Cancelled("the pipeline stopped before this item was written")
            if bucket is not None and not bucket.acquire(self.cancelled):
                continue
            self._begin()
            conn.execute("SAVEPOINT workpool_item")
            try:
                fn(conn, value)
            except BaseException as exc:  # the item's error; the writer goes on
                conn.execute("ROLLBACK TO workpool_item")
                conn.execute("RELEASE workpool_item")
                if retry is None or not retry.should_retry(exc, attempt):
                    return exc
                self._commit()  # nothing waits on a retry's backoff
                if self.cancelled.wait(retry.delay(attempt)):
                    return exc
                attempt += 1
                continue
            conn.execute("RELEASE workpool_item")
            return None

    def _failed(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
            self.on_error(exc)
        # Whatever is still queued will never run: settle the futures that wait on it.
        while True:
            try:
                op = self._ops.get_nowait()
            except Empty:
                return
            if isinstance(op, tuple) and op[-1].set_running_or_notify_cancel():
                op[-1].set_exception(exc)
