"""wp.walk and wp.awalk: every node exactly once, bounded frontier, dedup, errors,
cancellation, on threads, processes and event loops."""

from __future__ import annotations

import contextlib
import functools
import http.server
import itertools
import multiprocessing
import os
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workpool as wp
from workpool._bench.bench_walk import Tree
from workpool._walk import _worker
from workpool._walk._common import BATCH
from workpool._walk._slices import SLICE_RESULTS

from . import _walk_tasks as tasks
from ._interrupt import interrupt_when_ready
from ._tasks import consume

BIG = Tree(5, 19)  # 1,046,580 nodes, depth 19 at most
KINDS = ["thread", "process", "ProcessPool"]  # ProcessPool: a pool of yours, passed in


@contextlib.contextmanager
def walking(kind: str, fn: Any, roots: Any, **options: Any) -> Iterator[Any]:
    """``wp.walk`` on two workers of *kind*: threads, processes of its own, or a
    ``wp.ProcessPool`` passed as ``pool=``."""
    if kind == "ProcessPool":
        with wp.ProcessPool(2) as pool, wp.walk(fn, roots, pool=pool, **options) as w:
            yield w
    else:
        with wp.walk(fn, roots, kind=kind, workers=2, **options) as w:
            yield w


@pytest.fixture(scope="module")
def big_nodes() -> set[int]:
    nodes = BIG.nodes()
    assert len(nodes) == 1_046_580
    return set(nodes)


# -- a million nodes, each once ----------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_a_million_node_tree_visits_each_node_once(kind: str, big_nodes: set[int]) -> None:
    with walking(kind, BIG, [0], max_pending=1000) as w:
        got = list(w)
    assert len(got) == len(big_nodes)
    assert set(got) == big_nodes
    stats = w.statistics()
    assert (stats.visited, stats.failed, stats.pending) == (len(big_nodes), 0, 0)
    assert 0 < stats.max_pending <= 1000
    assert stats.max_depth == 19
    if kind != "thread":
        assert stats.messages < len(big_nodes) / 20  # batches, not a message per node


def test_a_million_node_tree_on_an_async_walk(big_nodes: set[int]) -> None:
    async def fn(node: int) -> tuple[int, list[int]]:
        return BIG(node)

    async def main() -> tuple[list[int], wp.WalkStatistics]:
        async with wp.awalk(fn, [0], max_pending=1000) as w:
            return [n async for n in w], w.statistics()

    got, stats = anyio.run(main)
    assert len(got) == len(big_nodes)
    assert set(got) == big_nodes
    assert (stats.visited, stats.pending, stats.max_depth) == (len(big_nodes), 0, 19)
    assert 0 < stats.max_pending <= 100  # the pool's workers: fewer than max_pending


@pytest.mark.parametrize("kind", KINDS)
def test_pending_stays_within_max_pending(kind: str) -> None:
    with walking(kind, tasks.wide, [0], max_pending=4) as w:
        got = list(w)
    assert sorted(got) == sorted(tasks.reachable(tasks.wide, [0]))
    assert 0 < w.statistics().max_pending <= 4


def test_a_full_pool_queue_runs_children_inline_instead_of_blocking() -> None:
    tree = Tree(2, 10)
    with wp.ThreadPool(2, queue_size=0) as pool:
        with wp.walk(tree, [0], pool=pool) as w:
            got = list(w)
        assert sorted(got) == sorted(tree.nodes())
        assert pool.submit(abs, -3).result(timeout=10) == 3  # still open: it is yours


def test_roots_are_read_lazily() -> None:
    read = []

    def roots() -> Iterator[int]:
        for i in range(1_000_000):
            read.append(i)
            yield i

    with wp.walk(lambda n: (n, []), roots(), workers=2, max_pending=8) as w:
        first = [next(w) for _ in range(10)]
    assert len(first) == 10
    assert len(read) < 100


# -- graphs with cycles -----------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_key_deduplicates_a_graph_with_cycles(kind: str) -> None:
    with walking(kind, tasks.graph, [0, 5, 0], key=abs) as w:
        got = list(w)
    expected = tasks.reachable(tasks.graph, [0, 5])
    assert Counter(got) == Counter(expected)  # each once
    assert w.statistics().visited == len(expected)


@pytest.mark.parametrize("kind", KINDS)
def test_key_names_nodes_that_differ(kind: str) -> None:
    with walking(kind, tasks.labelled, [(1, "")], key=tasks.key_of_pair) as w:
        got = list(w)
    expected = {n for n, _ in tasks.reachable(tasks.labelled, [(1, "")], tasks.key_of_pair)}
    assert sorted(got) == sorted(expected)


# -- errors -----------------------------------------------------------------------------

BELOW_7 = {15, 16, 31, 32, 33, 34}  # 7's subtree in the 63-node tree, 7 left out


@pytest.mark.parametrize("kind", KINDS)
def test_the_first_error_stops_the_walk_and_is_raised(kind: str) -> None:
    with pytest.raises(ValueError, match="node 7 is bad"), \
            walking(kind, tasks.fail_at_7, [0]) as w:
        list(w)
    assert w.statistics().failed == 1


@pytest.mark.parametrize("kind", KINDS)
def test_on_error_skip_return_collect(kind: str) -> None:
    healthy = set(range(63)) - BELOW_7 - {7}
    with walking(kind, tasks.fail_at_7, [0], on_error="skip") as w:
        assert set(w) == healthy
    assert (w.statistics().visited, w.statistics().failed) == (57, 1)
    with walking(kind, tasks.fail_at_7, [0], on_error="return") as w:
        outcomes = list(w)
    assert {o.value for o in outcomes if isinstance(o, wp.Value)} == healthy
    errors = [o.error for o in outcomes if isinstance(o, wp.Error)]
    assert [str(e) for e in errors] == ["node 7 is bad"]
    with pytest.raises(wp.ItemsFailed) as caught, \
            walking(kind, tasks.fail_at_7, [0], on_error="collect") as w:
        assert set(w) == healthy
    [failure] = caught.value.errors
    assert (failure.stage, failure.item, str(failure.error)) == (
        "walk(fail_at_7)", 7, "node 7 is bad")
    assert "fail_at_7" in failure.traceback


@pytest.mark.parametrize("kind", KINDS)
def test_sys_exit_in_a_node_fails_that_node_alone(kind: str) -> None:
    with walking(kind, tasks.exits_at_2, [0], on_error="return") as w:
        outcomes = list(w)
    assert sorted(o.value for o in outcomes if isinstance(o, wp.Value)) == [0, 1, 3, 4]
    [error] = [o.error for o in outcomes if isinstance(o, wp.Error)]
    assert isinstance(error, SystemExit)
    assert error.args == (3,)


def test_an_error_from_a_worker_process_carries_its_traceback() -> None:
    with pytest.raises(ValueError, match="node 7 is bad") as caught, \
            wp.walk(tasks.fail_at_7, [0], kind="process", workers=1) as w:
        list(w)
    assert 'raise ValueError("node 7 is bad")' in str(caught.value.__cause__)


def test_a_function_that_returns_no_pair_fails_its_node() -> None:
    with pytest.raises(TypeError, match=r"a walk's fn must return a pair \(result, "
                                        r"children\), got int: 1"):
        list(wp.walk(tasks.not_a_pair, [1]))  # type: ignore[arg-type]


def test_a_dead_worker_process_fails_the_walk() -> None:
    with pytest.raises(wp.WorkerCrashed, match=r"a walk's worker process died \(exit "
                                               r"code 9\)"):
        list(wp.walk(tasks.die_at_3, [0], kind="process", workers=2))


def test_a_result_the_caller_cannot_unpickle_fails_the_walk() -> None:
    with pytest.raises(wp.WorkerCrashed, match="the task's results could not be unpickled: "
                                               "RuntimeError: not here"):
        list(wp.walk(tasks.strange_result, [0], kind="process", workers=1))


def test_a_function_a_worker_cannot_unpickle_fails_the_walk() -> None:
    with pytest.raises(wp.WorkerCrashed, match="a walk's worker process could not unpickle "
                                               "the function or key: RuntimeError: cannot "
                                               "be unpickled"):
        list(wp.walk(tasks.FailsToLoad(), [0], kind="process", workers=1))


# -- stopping ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_close_stops_a_walk_in_the_middle(kind: str) -> None:
    with walking(kind, tasks.slow, range(100)) as w:
        assert isinstance(next(w), int)
        w.close()
        w.close()  # twice is fine
        with pytest.raises(StopIteration):
            next(w)
        visited = w.statistics().visited
        assert visited < 100
    assert w.statistics().visited == visited  # nothing ran after close()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_walk_the_program_drops_is_closed(kind: str) -> None:
    w = wp.walk(tasks.slow, range(100), kind=kind, workers=2)
    assert isinstance(next(w), int)
    del w  # its threads hold the machinery, not the iterator: this closes it
    assert multiprocessing.active_children() == []
    assert not [t for t in threading.enumerate() if t.name.startswith("walk")]


def test_breaking_out_of_a_walk_on_a_pool_of_yours_leaves_it_idle() -> None:
    ran = []

    def fn(n: int) -> tuple[int, list[int]]:
        ran.append(n)
        return n, [n + 1, n + 2]

    with wp.ThreadPool(4) as pool:
        with wp.walk(fn, [0], pool=pool, key=abs) as w:
            for n in w:
                if n > 50:
                    break
        count = len(ran)
        assert pool.submit(abs, -1).result(timeout=10) == 1  # still open: it is yours
        assert len(ran) == count  # nothing of the walk ran after it was closed


def test_ctrl_c_stops_a_process_walk_promptly(tmp_path: Path) -> None:
    result = interrupt_when_ready(tmp_path, """
        import multiprocessing, sys, time
        import workpool as wp

        def slow(n):
            time.sleep(0.2)
            return n, [n * 2 + 1, n * 2 + 2]

        if __name__ == "__main__":
            try:
                for i, n in enumerate(wp.walk(slow, [0], kind="process", workers=2)):
                    if i == 2:
                        print("ready", flush=True)
            except KeyboardInterrupt:
                print("interrupted", multiprocessing.active_children(), flush=True)
                sys.exit(3)
    """)
    assert result.ready == "ready\n"
    assert result.out == "interrupted []\n", (result.out, result.err)
    assert result.returncode == 3
    assert result.seconds < 10


# -- endless trees ----------------------------------------------------------------------

def endless(n: int) -> tuple[int, list[int]]:
    """An endless binary tree: every node has two children, none is visited twice."""
    return n, [2 * n, 2 * n + 1]


def endless_counted(folder: str, n: int) -> tuple[int, list[int]]:
    """``endless`` with a tiny result (1: many fit in a pipe), and each worker process
    writes how many nodes it ran to ``folder/<its pid>``: what ran, whether the parent
    heard of it or not."""
    global _ran
    if _ran is None:
        _ran = [0, os.open(os.path.join(folder, str(os.getpid())), os.O_CREAT | os.O_WRONLY)]
    _ran[0] += 1
    os.pwrite(_ran[1], b"%20d" % _ran[0], 0)
    return 1, endless(n)[1]


_ran: list[int] | None = None  # in a worker process: [nodes run, the file's descriptor]


def _ran_in(folder: Path) -> int:
    return sum(int(f.read_bytes() or b"0") for f in folder.iterdir())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["process", "ProcessPool"])
def test_an_endless_tree_streams_its_results(kind: str) -> None:
    with walking(kind, endless, [1], max_pending=100) as w:
        got = list(itertools.islice(w, 10_000))
    assert len(set(got)) == 10_000
    stats = w.statistics()
    assert stats.visited >= 10_000
    assert 0 < stats.max_pending <= 100
    assert multiprocessing.active_children() == []


def wide(n: int) -> tuple[int, list[int]]:
    """An endless tree: every node has seven children, none is visited twice."""
    return n, [7 * n + i for i in range(1, 8)]


@pytest.mark.timeout(30)
def test_steals_keep_an_endless_walk_on_four_processes_within_max_pending() -> None:
    # With more than two workers, steals asked of several busy workers for one idle
    # one may all be answered: what they give waits in the parent until a worker is
    # idle, and counts against the deque of the worker that gave it until then. No
    # deque holds more than max_pending // workers (10 here), whatever was stolen.
    bound = 4 * (42 // 4)
    pending: list[int] = []
    steals = 0
    for _ in range(8):  # each walk starts afresh: its early steals differ
        with wp.walk(wide, [1], kind="process", workers=4, max_pending=42) as w:
            got = []
            for node in itertools.islice(w, 2000):
                got.append(node)
                if len(got) % 50 == 0:
                    pending.append(w.statistics().pending)
        stats = w.statistics()
        assert len(set(got)) == 2000
        pending.append(stats.max_pending)
        steals += stats.steals
    assert steals > 0
    assert 0 < max(pending) <= bound
    assert multiprocessing.active_children() == []


COMB = 20_000


def comb(n: int) -> tuple[int, list[int]]:
    """A path 1 .. COMB down, with leaves -n before and -n - COMB after each step:
    3 x COMB nodes, and a subtree run inline leaves a child on every level it goes
    down."""
    if n < 0:
        return n, []
    return n, [-n, *([n + 1] if n < COMB else []), -n - COMB]


@pytest.mark.parametrize("kind", ["process", "ProcessPool"])
def test_a_deep_subtree_run_inline_is_cut_and_still_visits_each_node_once(
        kind: str) -> None:
    with walking(kind, comb, [1], max_pending=4) as w:
        got = list(w)
    assert sorted(got) == list(range(-2 * COMB, 0)) + list(range(1, COMB + 1))
    stats = w.statistics()
    assert (stats.visited, stats.pending, stats.max_depth) == (3 * COMB, 0, COMB)


# How far the workers may run ahead of the consumer: on processes of the walk's own,
# WINDOW batches per worker not acknowledged (4 here: small next to what the pipes
# hold), the batch each one gathers, and the consumer's batch; on a pool, 2 slices per
# worker in flight and the consumer's.
AHEAD = {"process": 2 * (4 + 1) * BATCH + BATCH, "ProcessPool": (2 * 2 + 1) * SLICE_RESULTS}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["process", "ProcessPool"])
def test_a_slow_consumer_holds_back_the_workers_of_an_endless_tree(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_worker, "WINDOW", 4)
    fn = functools.partial(endless_counted, str(tmp_path))
    taken = 0
    with walking(kind, fn, [1], max_pending=100) as w:
        for pause in range(3):
            taken += len(list(itertools.islice(w, 3000)))
            # The consumer stops for a while: the workers may run AHEAD, no further.
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                heard = w.statistics().visited  # the parent heard of no more than ran
                ran = _ran_in(tmp_path)
                assert heard <= ran <= taken + AHEAD[kind], pause
    assert taken == 9000
    assert ran > taken  # they ran ahead, within the bound
    assert multiprocessing.active_children() == []


# -- arguments --------------------------------------------------------------------------

def test_bad_arguments_are_refused_at_the_call() -> None:
    with pytest.raises(TypeError, match="fn must be callable, got 3"):
        wp.walk(3, [0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pending must be >= 1, got 0"):
        wp.walk(tasks.graph, [0], max_pending=0)
    with pytest.raises(ValueError, match="kind must be 'thread' or 'process', got 'async'"):
        wp.walk(tasks.graph, [0], kind="async")
    with pytest.raises(ValueError, match="on_error must be one of"):
        wp.walk(tasks.graph, [0], on_error="ignore")
    with pytest.raises(TypeError, match="key must be callable or None, got 'id'"):
        wp.walk(tasks.graph, [0], key="id")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"wp\.walk's pool must be a wp\.ThreadPool or a "
                                        r"wp\.ProcessPool, got <AsyncPool"):
        wp.walk(tasks.graph, [0], pool=wp.AsyncPool(1))
    with wp.ThreadPool(1) as threads, pytest.raises(
            ValueError, match=r"wp\.walk takes pool= or workers=, not both"):
        wp.walk(tasks.graph, [0], pool=threads, workers=2)
    lock = threading.Lock()
    with pytest.raises(TypeError, match="cannot send key to a worker process"):
        wp.walk(tasks.graph, [0], kind="process", key=lambda n: lock)
    with pytest.raises(TypeError, match=r"wp\.awalk's pool must be a wp\.AsyncPool"):
        wp.awalk(tasks.graph, [0], pool=threads)


def test_nodes_and_results_larger_than_a_pipe_travel_both_ways() -> None:
    payload = b"x" * 200_000
    roots = [(0, payload), (0, payload)]  # twice: two root subtrees, 120 nodes
    with wp.walk(tasks.big, roots, kind="process", workers=2, max_pending=8) as w:
        results = list(w)
    assert len(results) == 120
    assert {len(r) for r in results} == {200_000}
    assert sorted(r[-1] for r in results) == sorted([ord("x")] * 2 + list(range(1, 60)) * 2)


def test_lambdas_travel_to_worker_processes_by_value() -> None:
    offset = 1000
    with wp.walk(lambda n: (n + offset, [n + 1] if n < 20 else []), [0],
                 kind="process", workers=2) as w:
        assert sorted(w) == list(range(1000, 1021))


# -- the invariant, over random trees ---------------------------------------------------

@st.composite
def trees(draw: st.DrawFn) -> dict[int, list[int]]:
    size = draw(st.integers(1, 60))
    parents = [draw(st.integers(0, i - 1)) for i in range(1, size)]
    children: dict[int, list[int]] = {i: [] for i in range(size)}
    for child, parent in enumerate(parents, start=1):
        children[parent].append(child)
    return children


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), data=st.data())
def test_every_node_ends_exactly_once(tree: dict[int, list[int]], data: st.DataObject) -> None:
    failing = data.draw(st.sets(st.sampled_from(sorted(tree))))
    on_error = data.draw(st.sampled_from(["skip", "return", "collect", "raise"]))
    stop_after = data.draw(st.none() | st.integers(0, len(tree)))
    max_pending = data.draw(st.integers(1, 5))
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def fn(n: int) -> tuple[int, list[int]]:
        with lock:
            calls[n] += 1
        if n in failing:
            raise KeyError(n)
        return n, tree[n]

    below_failed = _below(tree, failing)
    with wp.walk(fn, [0], workers=3, max_pending=max_pending, on_error=on_error) as w:
        out, error = consume(w, stop_after, (KeyError, wp.ItemsFailed))
    after_close = dict(calls)
    assert max(calls.values()) == 1  # never twice
    assert not set(calls) & below_failed  # below a failed node, nothing runs
    assert w.statistics().visited == sum(calls.values())
    assert w.statistics().max_pending <= max_pending
    stopped_early = (stop_after is not None and len(out) > stop_after) or (
        on_error == "raise" and failing)
    if not stopped_early:
        assert set(calls) == set(tree) - below_failed  # every node ran
        values = [x.value if isinstance(x, wp.Value) else x for x in out
                  if not isinstance(x, wp.Error)]
        assert sorted(values) == sorted(set(calls) - failing)
        if on_error == "return":
            assert sorted(x.error.args[0] for x in out if isinstance(x, wp.Error)) == sorted(
                failing & set(calls))
        if on_error == "collect" and failing:
            assert isinstance(error, wp.ItemsFailed)
            assert sorted(f.item for f in error.errors) == sorted(failing & set(calls))
    if on_error == "raise" and failing and stop_after is None:
        assert isinstance(error, KeyError)
    assert dict(calls) == after_close  # nothing ran after the walk was closed


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), data=st.data())
def test_every_node_ends_exactly_once_on_processes(tree: dict[int, list[int]],
                                                   data: st.DataObject) -> None:
    failing = frozenset(data.draw(st.sets(st.sampled_from(sorted(tree)))))
    stop_after = data.draw(st.none() | st.integers(0, len(tree)))
    max_pending = data.draw(st.integers(2, 6))
    fn = functools.partial(tasks.in_tree, tree, failing)
    out: list[Any] = []
    with wp.walk(fn, [0], kind="process", workers=2, max_pending=max_pending,
                 on_error="return") as w:
        for x in w:
            out.append(x.value if isinstance(x, wp.Value) else x.error.args[0])
            if stop_after is not None and len(out) > stop_after:
                break
    assert multiprocessing.active_children() == []
    assert len(out) == len(set(out))  # never twice
    if stop_after is None or len(out) <= stop_after:
        assert sorted(out) == sorted(set(tree) - _below(tree, set(failing)))
        assert w.statistics().visited == len(out)
    assert not set(out) & _below(tree, set(failing))


def _below(tree: dict[int, list[int]], failing: set[int]) -> set[int]:
    """The nodes under a failed node (whose parent chain meets *failing*)."""
    out: set[int] = set()
    stack = [c for n in failing for c in tree[n]]
    while stack:
        n = stack.pop()
        out.add(n)
        stack.extend(tree[n])
    return out


# -- an async crawl of a local site ------------------------------------------------------

PAGES = 120


class _Site(http.server.BaseHTTPRequestHandler):
    """Page i links to pages 2i+1, 3i+2 and 0 (modulo PAGES): cycles everywhere."""

    def do_GET(self) -> None:
        i = int(self.path.strip("/") or 0)
        links = {(2 * i + 1) % PAGES, (3 * i + 2) % PAGES, 0}
        body = "".join(f'<a href="/{j}">page {j}</a>\n' for j in sorted(links)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="test-site")
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def _get(address: str, path: str) -> str:
    host, port = address.split(":")
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        chunks = []
        try:
            while True:
                chunks.append(await stream.receive())
        except anyio.EndOfStream:
            pass
    return b"".join(chunks).decode()


@pytest.mark.anyio
async def test_an_async_walk_crawls_a_local_site(site: str) -> None:
    async def page(path: str) -> tuple[str, list[str]]:
        text = await _get(site, path)
        assert text.startswith("HTTP/1.0 200")
        return path, re.findall(r'href="([^"]+)"', text)

    async with wp.AsyncPool(8) as pool, wp.awalk(page, ["/0"], pool=pool, key=str) as pages:
        got = [p async for p in pages]
    expected = tasks.reachable(lambda p: (p, [f"/{j}" for j in _links(p)]), ["/0"])
    assert Counter(got) == Counter(expected)
    assert pages.statistics().visited == len(expected)


def _links(path: str) -> set[int]:
    i = int(path.strip("/"))
    return {(2 * i + 1) % PAGES, (3 * i + 2) % PAGES, 0}


@pytest.mark.anyio
async def test_an_async_walk_stops_at_the_first_error_and_cancels_the_rest() -> None:
    started = anyio.Event()

    async def fn(n: int) -> tuple[int, list[int]]:
        if n == 0:
            return 0, [1, 2]
        if n == 1:
            await started.wait()
            raise ValueError("one")
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("not reached")

    async def run() -> Any:
        async with wp.awalk(fn, [0], workers=4) as w:
            async for _ in w:
                pass
        return w  # not reached

    with pytest.raises(ValueError, match="one"):
        await run()


@pytest.mark.anyio
async def test_an_async_walk_reads_async_roots_and_keeps_failures() -> None:
    async def roots() -> AsyncIterator[int]:
        for root in (0, 100):
            yield root

    async def fn(n: int) -> tuple[int, list[int]]:
        if n in (3, 103):
            raise ValueError(f"bad {n}")
        return n, [c for c in (n + 1, n + 2) if c % 100 < 6]

    got: list[int] = []
    walk = wp.awalk(fn, roots(), workers=3, key=abs, on_error="collect")

    async def run() -> None:
        async with walk as w:
            async for n in w:
                got.append(n)

    with pytest.raises(wp.ItemsFailed) as caught:
        await run()
    assert sorted(got) == [0, 1, 2, 4, 5, 100, 101, 102, 104, 105]
    assert sorted(f.item for f in caught.value.errors) == [3, 103]
    assert (walk.statistics().visited, walk.statistics().failed) == (12, 2)


@pytest.mark.anyio
async def test_an_async_walk_of_its_own_pool_needs_async_with() -> None:
    async def fn(n: int) -> tuple[int, list[int]]:
        return n, []

    with pytest.raises(RuntimeError, match=r"an awalk with a pool of its own runs inside "
                                           r"`async with wp\.awalk\(\.\.\.\) as w:`"):
        async for _ in wp.awalk(fn, [0]):
            pass
    async with wp.AsyncPool(2) as pool:
        assert sorted([n async for n in wp.awalk(fn, [0, 1], pool=pool)]) == [0, 1]


@pytest.mark.anyio
async def test_an_async_walk_runs_a_plain_function_in_a_thread() -> None:
    async with wp.awalk(tasks.fail_at_7, [8], workers=2) as w:
        got = sorted([n async for n in w])
    assert got == [8, 17, 18, 35, 36, 37, 38]
