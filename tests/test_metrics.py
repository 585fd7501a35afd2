"""``metrics=`` and ``workpool.exporters.prometheus``: the latency histograms of the
statistics, the registry of what opted in, and real scrapes of the exporter's HTTP
server parsed with ``prometheus_client``'s own parser."""

from __future__ import annotations

import gc
import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import workpool as wp
from workpool._core.metrics import live_samples
from workpool._core.stats import BUCKETS, StatsRecorder

prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from workpool.exporters import prometheus  # noqa: E402

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def scrape() -> Iterator[Any]:
    """A function that scrapes the exporter's HTTP server (on a fresh registry, port
    0) and returns every sample of the ``pool`` asked for, by name and labels."""
    registry = CollectorRegistry()
    server, thread = prometheus.start_http_server(0, registry=registry)

    def get(pool: str) -> Series:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        series: Series = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = dict(sample.labels)
                if labels.pop("pool", None) == pool:
                    series[sample.name, tuple(sorted(labels.items()))] = sample.value
        return series

    yield get
    server.shutdown()
    server.server_close()
    thread.join(10)


def outcomes(series: Series) -> dict[str, float]:
    return {labels[0][1]: value for (name, labels), value in series.items()
            if name == "workpool_tasks_total"}


def one(series: Series, name: str, **labels: str) -> float:
    return series[name, tuple(sorted(labels.items()))]


def sleep_a_little(x: int) -> int:
    time.sleep(0.001)  # over 0.1 ms: every task is sampled, with weight 1
    return x


def fail(x: int) -> int:
    raise ValueError(x)


def exit_on_three(x: int) -> int:
    if x == 3:
        os._exit(1)
    return x


# -- the histograms in the statistics ------------------------------------------------------


def test_buckets_count_each_sample_by_its_weight_cumulatively() -> None:
    recorder = StatsRecorder()
    recorder.sample(0.0, 0.00001, 1.0)  # on a bound: counted in that bucket (le)
    recorder.sample(0.002, 0.3, 2.0, 16)
    recorder.sample(100.0, 0.3, 3.0, 2)  # past the last bound: only +Inf
    stats = recorder.snapshot(queued=0, running=0, workers=1, busy=0, stuck=0)
    assert len(stats.run_time_buckets) == len(BUCKETS) + 1
    runs = dict(zip([*BUCKETS, float("inf")], stats.run_time_buckets, strict=True))
    assert (runs[0.00001], runs[0.25], runs[0.5], runs[float("inf")]) == (1, 1, 19, 19)
    waits = dict(zip([*BUCKETS, float("inf")], stats.queue_wait_buckets, strict=True))
    assert (waits[0.00001], waits[0.001], waits[0.0025], waits[60.0], waits[float("inf")]) == (
        1, 1, 17, 17, 19)
    assert stats.run_time_sum == pytest.approx(0.00001 + 16 * 0.3 + 2 * 0.3)
    assert stats.queue_wait_sum == pytest.approx(16 * 0.002 + 200.0)


def test_a_fresh_pool_has_empty_histograms() -> None:
    with wp.ThreadPool(1) as pool:
        stats = pool.statistics()
    assert stats.run_time_buckets == (0,) * (len(BUCKETS) + 1)
    assert (stats.crashed, stats.restarts, stats.run_time_sum) == (0, 0, 0.0)


# -- the registry ---------------------------------------------------------------------------


def test_bad_metrics_are_refused_at_the_call() -> None:
    with pytest.raises(TypeError, match=r"^metrics must be True, False or a name \(a str\), "
                                        r"got 3$"):
        wp.ThreadPool(1, metrics=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^metrics must be a non-empty name, got ''$"):
        wp.Group(metrics="")
    with wp.ThreadPool(1) as pool, pytest.raises(
            ValueError, match=r"^metrics= shows the group's own pool: with pool=, pass "
                              r"metrics= to that pool instead$"):
        wp.Group(pool=pool, metrics=True)
    with pytest.raises(TypeError, match=r"^metrics must be True"):
        wp.Pipeline([1], metrics=1.5)  # type: ignore[call-overload]


def test_only_live_objects_that_opted_in_are_seen() -> None:
    with wp.ThreadPool(1, name="quiet"):
        pass
    pool = wp.ThreadPool(1, name="loud", metrics=True)
    named = wp.ThreadPool(1, metrics="custom")
    names = {s.name for s in live_samples()}
    assert {"loud", "custom"} <= names
    assert "quiet" not in names
    pool.shutdown()
    named.shutdown()
    del pool, named
    gc.collect()
    assert not {"loud", "custom"} & {s.name for s in live_samples()}


def test_a_name_stands_for_the_newest_object() -> None:
    first = wp.ThreadPool(1, metrics="again")
    second = wp.ThreadPool(2, metrics="again")
    assert [s.limit for s in live_samples() if s.name == "again"] == [2]
    first.shutdown()
    del first
    gc.collect()
    assert [s.limit for s in live_samples() if s.name == "again"] == [2]
    second.shutdown()


# -- scrapes -------------------------------------------------------------------------------


def test_thread_pool_scrape(scrape: Any) -> None:
    with wp.ThreadPool(4, metrics="threads") as pool:
        ok = [pool.submit(sleep_a_little, i) for i in range(5)]
        bad = [pool.submit(fail, i) for i in range(2)]
        assert [f.result() for f in ok] == list(range(5))
        assert all(isinstance(f.exception(), ValueError) for f in bad)
        series = scrape("threads")
    assert outcomes(series) == {"success": 5, "error": 2, "timeout": 0, "cancelled": 0,
                                "crashed": 0}
    assert one(series, "workpool_task_retries_total") == 0
    assert one(series, "workpool_worker_restarts_total") == 0
    assert one(series, "workpool_queue_depth") == 0
    assert one(series, "workpool_concurrency_limit") == 4
    assert one(series, "workpool_workers", state="busy") == 0
    assert one(series, "workpool_workers", state="stuck") == 0
    assert one(series, "workpool_pool_info", kind="ThreadPool") == 1
    # Successful runs are the samples: 5, each over 1 ms and under a second.
    assert one(series, "workpool_task_duration_seconds_count") == 5
    assert one(series, "workpool_task_duration_seconds_bucket", le="0.001") == 0
    assert one(series, "workpool_task_duration_seconds_bucket", le="1.0") == 5
    assert one(series, "workpool_task_duration_seconds_bucket", le="+Inf") == 5
    assert 0.005 <= one(series, "workpool_task_duration_seconds_sum") < 5.0
    assert one(series, "workpool_task_queue_wait_seconds_count") == 5


def test_timeouts_and_retries_are_counted(scrape: Any) -> None:
    release = threading.Event()
    with wp.ThreadPool(2, timeout=0.05, metrics="slow") as slow_pool:
        stuck = slow_pool.submit(release.wait, 10)
        with pytest.raises(wp.TaskTimeout):
            stuck.result(10)
        release.set()
    with wp.ThreadPool(1, retry=wp.Retry(attempts=3, backoff=0.001),
                       metrics="retried") as pool:
        with pytest.raises(ValueError, match=r"^7$"):
            pool.submit(fail, 7).result(10)
        retried = scrape("retried")
        slow = scrape("slow")
    assert outcomes(slow)["timeout"] == 1
    assert outcomes(retried)["error"] == 1
    assert one(retried, "workpool_task_retries_total") == 2


def test_process_pool_crashes_and_restarts(scrape: Any) -> None:
    with wp.ProcessPool(1, metrics="procs") as pool:
        with pytest.raises(wp.WorkerCrashed):
            pool.submit(exit_on_three, 3).result(30)
        assert pool.submit(exit_on_three, 1).result(30) == 1
        out = list(pool.map(exit_on_three, range(8), chunksize=4, on_error="return"))
        assert [type(x).__name__ for x in out].count("Error") == 1
        series = scrape("procs")
        stats = pool.statistics()
    # The crash in the chunk reran its items one by one: only item 3 failed.
    assert outcomes(series) == {"success": 8, "error": 0, "timeout": 0, "cancelled": 0,
                                "crashed": 2}
    assert (stats.crashed, stats.failed) == (2, 2)
    assert one(series, "workpool_worker_restarts_total") == stats.restarts == 3
    assert one(series, "workpool_pool_info", kind="ProcessPool") == 1


def test_group_scrape(scrape: Any) -> None:
    with wp.Group(limit=3, metrics="group") as g:
        for i in range(6):
            g.go(sleep_a_little, i)
    assert g.results() == list(range(6))
    series = scrape("group")
    assert outcomes(series)["success"] == 6
    assert one(series, "workpool_concurrency_limit") == 3
    assert one(series, "workpool_pool_info", kind="Group") == 1


def test_a_group_shows_nothing_before_it_has_a_pool(scrape: Any) -> None:
    group = wp.Group(metrics="not-yet")
    assert scrape("not-yet") == {}
    del group


def test_pipeline_stages_scrape(scrape: Any) -> None:
    pipe = (wp.Pipeline(range(20), metrics="etl").map(sleep_a_little, workers=2)
            .filter(lambda x: x % 2 == 0).batch(5).unbatch())
    results = iter(pipe)
    assert sorted(results) == list(range(0, 20, 2))
    stage = scrape("etl/map(sleep_a_little)")
    assert outcomes(stage)["success"] == 20
    assert one(stage, "workpool_concurrency_limit") == 2
    assert one(stage, "workpool_pool_info", kind="stage") == 1
    assert outcomes(scrape("etl/filter(<lambda>)"))["success"] == 20
    assert scrape("etl/unbatch") == {}  # runs in line: no pool
    del results


@pytest.mark.anyio
async def test_async_pool_and_group_samples() -> None:
    async def work(x: int) -> int:
        return x

    async with wp.AsyncPool(3, metrics="async") as pool:
        assert [x async for x in pool.map(work, range(10))] == list(range(10))
        async with wp.AsyncGroup(limit=2, metrics="agroup") as g:
            for i in range(4):
                await g.go(work, i)
        samples = {s.name: s for s in live_samples()}
    assert samples["async"].statistics.completed == 10
    assert (samples["async"].kind, samples["async"].limit) == ("AsyncPool", 3)
    assert samples["agroup"].statistics.completed == 4
    assert (samples["agroup"].kind, samples["agroup"].limit) == ("AsyncGroup", 2)


def test_register_is_idempotent_and_the_port_is_checked() -> None:
    registry = CollectorRegistry()
    assert prometheus.register(registry) is prometheus.register(registry)
    with pytest.raises(ValueError, match=r"^port must be in 0\.\.65535 \(0: any free port\), "
                                         r"got 70000$"):
        prometheus.start_http_server(70000, registry=registry)
    with pytest.raises(TypeError, match=r"^port must be an int, got '9100'$"):
        prometheus.start_http_server("9100", registry=registry)  # type: ignore[arg-type]


def test_the_demo_shows_its_stages(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from workpool import _demo

    seen: list[set[str]] = []
    save = _demo.save

    def save_and_look(db: Any, rows: Any) -> None:
        seen.append({s.name for s in live_samples()})
        save(db, rows)

    monkeypatch.setattr(_demo, "save", save_and_look)
    result = _demo.run_demo(pages=20, rate=2000, db=tmp_path / "d.sqlite", progress=False,
                            metrics=True)
    assert result.stored == 20
    assert {"demo/fetch", "demo/parse"} <= seen[0]


def test_demo_metrics_option(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from workpool._cli import main

    db = tmp_path / "demo.sqlite"
    assert main(["demo", "--pages", "10", "--rate", "2000", "--db", str(db), "--no-progress",
                 "--metrics", "0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^metrics: http://127\.0\.0\.1:\d+/metrics \(stages demo/fetch and "
                     r"demo/parse\)$", out, re.MULTILINE), out
    assert main(["demo", "--metrics", "70000"]) == 2
    assert "argument --metrics: must be a port in 0..65535, got 70000" in capsys.readouterr().err
