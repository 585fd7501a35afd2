"""The job behind ``workpool demo``: a real multi-stage pipeline, end to end, on this machine.

::

    local HTTP server (127.0.0.1, an ephemeral port; some pages slow, some 503 at random)
        │
    fetch   16 threads, RateLimit, Retry with backoff on 503
        │
    parse   processes (one per CPU): title, words, links, a digest
        │
    batch   100 pages, or what came in 0.5 s
        │
    write   one writer: INSERT into the journal's own SQLite database, in the journal's
            transaction (exactly-once); ``--resume`` skips the pages already written

Nothing leaves the machine: the server listens on 127.0.0.1 only, and the fetch stage
reads only from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import random
import re
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import workpool as wp

__all__ = ["DatabaseError", "DemoResult", "ServiceUnavailable", "fetch", "parse", "run_demo",
           "serve"]

_WORDS = (
    "pipeline", "stage", "worker", "queue", "batch", "thread", "process", "async", "journal",
    "resume", "retry", "backoff", "rate", "limit", "buffer", "memory", "flat", "crash", "kill",
    "timeout", "order", "chunk", "report", "bottleneck", "busy", "latency", "throughput",
    "sqlite", "commit", "writer", "reader", "page", "link",
)
_TITLE = re.compile(r"<title>(.*?)</title>")
_LINK = re.compile(r'href="/page/(\d+)"')
_TAG = re.compile(r"<[^>]+>")


class ServiceUnavailable(Exception):
    """The server answered 503: worth another try after a backoff."""


# -- the server -----------------------------------------------------------------------------------

@dataclass
class ServerStats:
    """What the demo server did (its request threads count under a lock)."""

    requests: int = 0
    unavailable: int = 0
    slow: int = 0


def page_html(n: int, seed: int, pages: int) -> str:
    """Page *n*: the same text for the same seed, a few KB, with links to other pages."""
    rng = random.Random(f"{seed}-{n}")
    paragraphs = []
    for _ in range(rng.randint(4, 12)):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(30, 90)))
        paragraphs.append(f"<p>{words}</p>")
    links = " ".join(f'<a href="/page/{rng.randrange(pages)}">more</a>'
                     for _ in range(rng.randint(1, 6)))
    return (f"<html><head><title>Page {n}: {rng.choice(_WORDS)}</title></head>"
            f"<body>{''.join(paragraphs)}<nav>{links}</nav></body></html>")


def _handler(pages: int, seed: int, unavailable: float, stats: ServerStats,
             lock: threading.Lock) -> type[http.server.BaseHTTPRequestHandler]:
    rng = random.Random(seed)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib's name for it
            match = re.fullmatch(r"/page/(\d+)", self.path)
            if match is None or int(match[1]) >= pages:
                self.send_error(404)
                return
            n = int(match[1])
            with lock:
                stats.requests += 1
                busy = rng.random() < unavailable
                stats.unavailable += busy
                slow = n % 20 == 7  # one page in 20 takes its time
                stats.slow += slow and not busy
            if busy:
                self.send_error(503, "busy, try again")
                return
            if slow:
                time.sleep(0.05 + (n % 5) * 0.05)
            body = page_html(n, seed, pages).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the live view is the log

    return Handler


@contextlib.contextmanager
def serve(pages: int, *, seed: int = 1,
          unavailable: float = 0.1) -> Iterator[tuple[str, ServerStats]]:
    """Serve *pages* generated pages on 127.0.0.1 (an ephemeral port) in a thread; yield
    the base URL and the server's counters. Leaving the block stops the server and
    waits for its request threads."""
    stats, lock = ServerStats(), threading.Lock()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), _handler(pages, seed, unavailable, stats, lock))
    server.daemon_threads = False  # server_close() then waits for the request threads
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="workpool-demo-server")
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}", stats
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


# -- the stages -----------------------------------------------------------------------------------

def fetch(url: str) -> tuple[str, str]:
    """GET *url* (the demo server only); ``ServiceUnavailable`` on a 503."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return url, response.read().decode()
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 503:
            raise ServiceUnavailable(f"{url}: 503") from None
        raise


def parse(page: tuple[str, str]) -> tuple[int, str, int, int, str, str]:
    """Page id, title, word count, links, most common word and a digest (some CPU work:
    this is the stage the processes are for)."""
    url, html = page
    title_match = _TITLE.search(html)
    title = title_match[1] if title_match else ""
    text = _TAG.sub(" ", html)
    words = text.split()
    counts: dict[str, int] = {}
    for word in words:
        counts[word] = counts.get(word, 0) + 1
    top = max(counts, key=lambda w: (counts[w], w)) if counts else ""
    digest = hashlib.sha256(text.encode()).digest()
    for _ in range(2000):  # a stand-in for real parsing work, a few ms a page
        digest = hashlib.sha256(digest).digest()
    page_id = int(url.rsplit("/", 1)[1])
    return page_id, title, len(words), len(_LINK.findall(html)), top, digest.hex()[:16]


def save(db: sqlite3.Connection, rows: list[tuple[int, str, int, int, str, str]]) -> None:
    """Write a batch of parsed pages (inside the journal's transaction)."""
    db.executemany("INSERT INTO pages (id, title, words, links, top_word, digest) "
                   "VALUES (?, ?, ?, ?, ?, ?)", rows)


# -- the job --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoResult:
    """What one demo run did."""

    report: wp.PipelineReport
    stored: int  # pages in the database after the run
    requests: int
    unavailable: int
    slow: int


class DatabaseError(Exception):
    """The demo's database cannot be opened or made (``str()`` says which and why)."""


def prepare(db: Path, resume: bool) -> None:
    """Start afresh (no ``--resume``: remove the old database), then make sure the
    pages table exists.

    Raises:
        DatabaseError: *db* cannot be removed, opened or written, or is not SQLite.
    """
    try:
        if not db.parent.is_dir():
            raise DatabaseError(f"cannot open database {db}: no such directory {db.parent}")
        if not resume:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{db}{suffix}")
        conn = sqlite3.connect(db)
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS pages (id INTEGER PRIMARY KEY, "
                         "title TEXT, words INTEGER, links INTEGER, top_word TEXT, "
                         "digest TEXT)")
            conn.commit()
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise DatabaseError(f"cannot open database {db}: {reason}") from exc


def run_demo(*, pages: int = 3000, rate: float = 250.0, fetchers: int = 16,
             db: Path = Path("workpool-demo.sqlite"), resume: bool = False, seed: int = 1,
             unavailable: float = 0.1, progress: bool = True,
             out: TextIO | None = None, metrics: bool = False) -> DemoResult:
    """Serve *pages* pages locally and run fetch -> parse -> batch -> write over them;
    with *metrics*, the pipeline's stages show as ``demo/fetch`` and ``demo/parse`` to
    the Prometheus exporter.

    Raises:
        DatabaseError: *db* cannot be opened (checked before anything starts).
        KeyboardInterrupt: Ctrl-C; every stage has stopped, and what was written and
            recorded stays (``resume=True`` goes on from there).
    """
    prepare(db, resume)
    with serve(pages, seed=seed, unavailable=unavailable) as (base, stats):
        urls = (f"{base}/page/{n}" for n in range(pages))
        pipe = (wp.Pipeline(urls, journal=db, key=_page_id, metrics="demo" if metrics else False)
                .map(fetch, workers=fetchers, rate=wp.RateLimit(per_second=rate),
                     retry=wp.Retry(attempts=8, backoff=0.05, on=(ServiceUnavailable,)),
                     ordered=False, name="fetch")
                .map(parse, workers=1.0, kind="process", ordered=False, name="parse")
                .batch(100, timeout=0.5, name="batch")
                .each(save, transactional=True, name="write"))
        report = _run(pipe, progress, out)
    conn = sqlite3.connect(db)
    try:
        (stored,) = conn.execute("SELECT COUNT(*) FROM pages").fetchone()
    finally:
        conn.close()
    return DemoResult(report, stored, stats.requests, stats.unavailable, stats.slow)


def _run(pipe: wp.Pipeline[Any], progress: bool, out: TextIO | None) -> wp.PipelineReport:
    if not progress:
        return pipe.run()
    from ._pipeline._progress import Progress

    items = iter(pipe)
    view = Progress(items._run, out=out or sys.stdout)
    view.start()
    try:
        for _ in items:
            pass
    finally:
        items.close()
        view.stop()
    return items.report()


def _page_id(url: str) -> int:
    return int(url.rsplit("/", 1)[1])
