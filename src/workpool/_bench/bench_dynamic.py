"""Dynamic pools: ``wp.Adaptive`` against fixed worker counts on a simulated service.

The service (``SimulatedService``, in-process, asyncio) has a known best concurrency
C*: a request's latency is flat up to C* requests in flight, then grows with the queue
(and a little more: an overloaded service also thrashes), and above a hard cap of
1.5 x C* it answers "429" at once. Halfway through a run its capacity halves (C*/2).

One run, side by side: the adaptive limit from ``min=1``, a sweep of fixed worker
counts (the best of which is the bar), and fixed pools sized too small and too large.
Reported (targets from the feature's contract): windows to reach C* ±10%, overshoot,
windows to settle after the halving, the 429 share in steady state, throughput against
the best fixed count; a PNG plot of the limit and throughput over time
(matplotlib, in the ``bench`` extra) whose path is in the table's title.

Every contender is a ``wp.AsyncPool`` (``workers=wp.Adaptive(...)`` or a fixed count),
in a closed loop through an unbuffered hand-off (``queue_size=0``): a request is sent
as soon as the pool takes one. The burst scenario runs ``workers=wp.Autoscale(...)``
against a fixed pool of its ``max``. The process growth scenario times a task that
needs a new worker in an Autoscale ``ProcessPool``, with its spare process and without.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from multiprocessing import forkserver
from pathlib import Path
from unittest import mock

import workpool as wp
from workpool._backends.process import ProcessBackend
from workpool._core.dynamic import LimitSample

from .harness import Target, compare, scenario

__all__ = ["Overloaded", "ServiceModel", "SimulatedService",
           "adaptive", "autoscale_burst", "autoscale_process_growth"]

BEST = 40  # C*, requests in flight before latency climbs
BASE = 0.05  # seconds: the latency without a queue
BAND = 0.10  # "reached C*" means within ±10%


class Overloaded(Exception):
    """The service's "429 Too Many Requests"."""

    status = 429


def is_overloaded(exc: BaseException) -> bool:
    """The drop predicate the adaptive pool is given: an HTTP 429."""
    return getattr(exc, "status", None) == 429


@dataclass(slots=True)
class ServiceModel:
    """Latency as a function of the requests in flight (this one included).

    Up to ``capacity`` in flight: ``base``. Beyond: the queue stretches it in
    proportion (``n / capacity``), and thrashing by ``1 + thrash * excess``, so that
    throughput falls past the knee as a real overloaded service's does. More than
    ``cap_factor * capacity`` in flight: rejected (429), and a rejection in progress
    weighs ``reject_cost`` of a request on the others (refusing is not free).
    """

    capacity: int
    base: float = BASE
    cap_factor: float = 1.5
    thrash: float = 0.5
    reject_cost: float = 0.25

    @property
    def cap(self) -> int:
        """The most requests in flight the service accepts."""
        return int(self.capacity * self.cap_factor)

    def latency(self, in_flight: float) -> float:
        """Seconds a request takes under a load of *in_flight* requests."""
        c = self.capacity
        excess = max(0, in_flight - c) / c
        return self.base * max(1.0, in_flight / c) * (1 + self.thrash * excess)


@dataclass(slots=True)
class SimulatedService:
    """The model served in this event loop; it records every answer ``(time, ok)``."""

    model: ServiceModel
    seed: int = 1
    in_flight: int = 0
    rejecting: int = 0
    answers: list[tuple[float, bool]] = field(default_factory=list)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def halve(self) -> None:
        """The service loses half its capacity (and of its hard cap)."""
        self.model = replace(self.model, capacity=self.model.capacity // 2)

    async def request(self) -> None:
        """One request: its latency, or ``Overloaded`` after one base latency."""
        model = self.model
        if self.in_flight >= model.cap:
            self.rejecting += 1
            try:
                await asyncio.sleep(model.base)
            finally:
                self.rejecting -= 1
            self.answers.append((time.monotonic(), False))
            raise Overloaded("429 Too Many Requests")
        self.in_flight += 1
        try:
            jitter = 1 + self._rng.uniform(-0.02, 0.02)
            load = self.in_flight + model.reject_cost * self.rejecting
            await asyncio.sleep(model.latency(load) * jitter)
        finally:
            self.in_flight -= 1
        self.answers.append((time.monotonic(), True))


def _pool(workers: int | wp.Adaptive) -> wp.AsyncPool:
    # An unbuffered hand-off: the closed loop below submits only as the pool takes.
    return wp.AsyncPool(workers=workers, queue_size=0)


# -- one run ---------------------------------------------------------------------------

@dataclass(slots=True)
class Run:
    """What one pool did against the service: its answers, and its limit history."""

    start: float
    halved_at: float
    end: float
    answers: list[tuple[float, bool]]
    history: tuple[LimitSample, ...] = ()

    def rate(self, t0: float, t1: float, *, ok: bool = True) -> float:
        """Answers of the kind *ok* per second between *t0* and *t1* (run seconds)."""
        n = sum(1 for t, good in self.answers
                if good == ok and t0 <= t - self.start < t1)
        return n / (t1 - t0) if t1 > t0 else 0.0


async def _run(workers: int | wp.Adaptive, phase: float) -> Run:
    service = SimulatedService(ServiceModel(BEST))

    async def call() -> None:
        await service.request()

    loop = asyncio.get_running_loop()
    async with _pool(workers) as pool:
        start = time.monotonic()
        loop.call_later(phase, service.halve)
        while time.monotonic() - start < 2 * phase:
            await pool.submit(call)
        history = pool.statistics().limit_history
    return Run(start, start + phase, start + 2 * phase, service.answers, history)


def run(workers: int | wp.Adaptive, phase: float) -> Run:
    """Run *workers* against a fresh service: *phase* seconds at C*, as long at C*/2."""
    return asyncio.run(_run(workers, phase))


# -- what the adaptive run reached -------------------------------------------------------

def _in_band(limit: int, best: float) -> bool:
    return abs(limit - best) <= BAND * best


def windows_to_reach(history: tuple[LimitSample, ...], best: float) -> int | None:
    """1-based count of windows until the limit first falls within ±10% of *best*."""
    return next((i + 1 for i, s in enumerate(history) if _in_band(s.limit, best)), None)


def windows_to_settle(history: tuple[LimitSample, ...], best: float, hold: int = 5) -> (
        int | None):
    """1-based count of windows until the limit is within ±10% of *best* and stays
    there for *hold* windows (fewer if the history ends sooner)."""
    for i in range(len(history)):
        if all(_in_band(s.limit, best) for s in history[i:i + hold]):
            return i + 1
    return None


@dataclass(frozen=True, slots=True)
class Dynamics:
    """The adaptive run's numbers."""

    reach: float  # windows from min=1 to C* ±10% (inf: never)
    overshoot: float  # % above C* at the highest limit before the halving
    settle: float  # windows after the halving to settle at C*/2 ±10% (inf: never)
    steady_429: float  # % of answers that were 429 outside the two transients
    windows: int


def dynamics(r: Run) -> Dynamics:
    """Read ``Dynamics`` off an adaptive run."""
    first = tuple(s for s in r.history if s.time < r.halved_at)
    second = tuple(s for s in r.history if s.time >= r.halved_at)
    reach = windows_to_reach(first, BEST)
    settle = windows_to_settle(second, BEST / 2)
    top = max((s.limit for s in first), default=0)
    steady = []
    if reach is not None:
        steady.append((first[reach - 1].time, r.halved_at))
    if settle is not None:
        steady.append((second[settle - 1].time, r.end))
    answered = [ok for t, ok in r.answers if any(a <= t < b for a, b in steady)]
    share = 100 * answered.count(False) / len(answered) if answered else math.nan
    return Dynamics(math.inf if reach is None else reach, 100 * (top / BEST - 1),
                    math.inf if settle is None else settle, share, len(r.history))


# -- the plot ----------------------------------------------------------------------------

def plot(r: Run, fixed: dict[str, Run], path: Path) -> Path | None:
    """Draw the adaptive run's limit and throughput over time (and the throughput of
    the *fixed* runs) into *path*; None when matplotlib is not installed."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phase = r.halved_at - r.start
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    times = [s.time - r.start for s in r.history]
    top.step(times, [s.limit for s in r.history], where="post", label="Adaptive limit")
    top.plot([0, phase, phase, 2 * phase], [BEST, BEST, BEST / 2, BEST / 2], "k--",
             label="C* (best concurrency)")
    top.set_ylabel("concurrency")
    top.legend(loc="upper right")
    for name, run_ in [("Adaptive", r), *fixed.items()]:
        length = run_.end - run_.start
        step = length / 40
        edges = [i * step for i in range(40)]
        scale = 2 * phase / length  # shorter fixed runs, stretched
        bottom.plot([t * scale for t in edges], [run_.rate(t, t + step) for t in edges],
                    label=name, linewidth=2 if name == "Adaptive" else 1)
    bottom.set_xlabel("seconds (capacity halves at the middle)")
    bottom.set_ylabel("requests/s (OK)")
    bottom.legend(loc="upper right", fontsize="small")
    fig.suptitle(f"wp.Adaptive on a simulated service: C* = {BEST}, then {BEST // 2}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the scenario ------------------------------------------------------------------------

def _throughput(r: Run) -> float:
    """OK answers per second over a run, each half's rate weighted alike (so that the
    shorter fixed runs compare with the adaptive one)."""
    half = r.halved_at - r.start
    return (r.rate(0, half) + r.rate(half, 2 * half)) / 2


@scenario
def adaptive(quick: bool) -> dict[str, float]:
    """Adaptive concurrency against fixed worker counts on a service whose capacity halves."""
    phase, fixed_phase = (8.0, 1.0) if quick else (12.0, 2.0)
    spec = wp.Adaptive(min=1, max=4 * BEST, window=0.1, drop=is_overloaded)
    sweep = [20, 30, 40, 50] if quick else [20, 25, 30, 35, 40, 45, 50, 60]
    ours = run(spec, phase)
    fixed = {f"fixed {n}": run(n, fixed_phase) for n in sweep}
    small, large = BEST // 8, 3 * BEST
    edges = {f"fixed {small} (too small)": run(small, fixed_phase),
             f"fixed {large} (too large)": run(large, fixed_phase)}
    rates = {name: _throughput(r) for name, r in {**fixed, **edges}.items()}
    best = max(fixed, key=lambda name: rates[name])
    d = dynamics(ours)
    path = plot(ours, {best: fixed[best], **edges},
                Path(tempfile.gettempdir()) / "workpool-bench" / "dynamic-adaptive.png")
    shown = f"plot: {path}" if path else "no plot: matplotlib not installed"
    adaptive_rate = _throughput(ours)
    contenders: list[tuple[str, Callable[[], float]]] = [
        ("wp.Adaptive", lambda: adaptive_rate),
        *[(f"{name} (best)" if name == best else name, lambda r=rate: r)
          for name, rate in rates.items()]]
    got = compare(contenders, unit="requests/s", baseline=f"{best} (best)",
                  higher_is_better={"requests/s"}, repeats=1,
                  title=f"throughput over the run, {BEST} then {BEST // 2}; {shown}",
                  targets=[Target("wp.Adaptive", ">=", 0.9)])
    got |= compare(
        [("wp.Adaptive", lambda: {
            "windows to C*": d.reach, "overshoot %": d.overshoot,
            "windows to settle": d.settle, "429 % steady": d.steady_429})],
        unit="windows to C*", repeats=1,
        title=f"the limit, {d.windows} windows of >= {spec.window} s",
        targets=[Target("wp.Adaptive", "<=", 20, on="value"),
                 Target("wp.Adaptive", "<=", 25, on="value", unit="overshoot %"),
                 Target("wp.Adaptive", "<=", 5, on="value", unit="windows to settle"),
                 Target("wp.Adaptive", "<", 1, on="value", unit="429 % steady")])
    return got


# -- Autoscale on a burst ------------------------------------------------------------------

async def _burst(workers: wp.Autoscale, n: int, task_s: float) -> dict[str, float]:
    async def task() -> None:
        await asyncio.sleep(task_s)

    async with wp.AsyncPool(workers=workers) as pool:
        await asyncio.sleep(0.05)  # idle before the burst
        t0 = time.monotonic()
        for _ in range(n):
            await pool.submit(task)
        while pool.statistics().completed < n:
            await asyncio.sleep(0.001)
        done = time.monotonic()
        deadline = done + workers.idle_timeout + 1.5
        while pool.statistics().workers > workers.min and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        history = pool.statistics().workers_history
        back = next((t for t, w in reversed(history) if w == workers.min and t >= done),
                    math.inf)
        peak = max(w for _, w in history)
    return {"tasks/s": n / (done - t0), "s back to min": back - done, "peak workers": peak}


@scenario
def autoscale_burst(quick: bool) -> dict[str, float]:
    """Autoscale on a burst of 10,000 tasks after idle, against a fixed pool of its max."""
    top, idle_timeout = 100, 1.0
    n, task_s = (10_000, 0.01) if quick else (10_000, 0.02)
    scaled = wp.Autoscale(min=0, max=top, idle_timeout=idle_timeout)
    fixed = wp.Autoscale(min=top, max=top, idle_timeout=idle_timeout)
    got = compare(
        [(f"fixed {top}", lambda: asyncio.run(_burst(fixed, n, task_s))["tasks/s"]),
         ("wp.Autoscale", lambda: asyncio.run(_burst(scaled, n, task_s)))],
        unit="tasks/s", baseline=f"fixed {top}", higher_is_better={"tasks/s"},
        title=f"{n:,} tasks of {task_s * 1000:g} ms; Autoscale(min=0, max={top}, "
              f"idle_timeout={idle_timeout:g})",
        targets=[Target("wp.Autoscale", ">=", 0.95),
                 Target("wp.Autoscale", "<=", idle_timeout + 1, on="value",
                        unit="s back to min")])
    return got


# -- Autoscale processes: a task that needs a new worker ---------------------------------

def _wait(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10.0
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after 10 s")
        time.sleep(0.001)


def _running(pool: wp.ProcessPool, n: int) -> bool:
    return pool.statistics().running == n


def _spare_ready(backend: ProcessBackend) -> bool:
    spares = backend._spares
    return len(spares) == 1 and not backend._starting and bool(spares[0][1].poll())


def _growth(top: int, hold: float, spare: bool, method: str | None) -> float:
    """Median seconds from submitting a task that needs a new worker (every other
    worker busy) to its start in the new process, over the growth from 1 to *top*
    workers; *spare*: as the pool is (one spare process ready), or with its spare
    turned off; *method*: the start method (None: the default, forkserver on Linux).
    The tasks are builtins (``time.sleep`` holds a worker, ``time.monotonic`` returns
    when it started: one clock for every process), so that no import is timed."""
    latencies = []
    context = None if method is None else multiprocessing.get_context(method)
    pool = wp.ProcessPool(workers=wp.Autoscale(min=0, max=top, idle_timeout=30.0),
                          mp_context=context)
    backend = pool._engine.backend
    assert isinstance(backend, ProcessBackend)
    try:
        pool.submit(time.sleep, hold)
        for busy in range(1, top):
            _wait(partial(_running, pool, busy), "worker busy")
            if spare:  # started, and said it is ready (its message waits to be read)
                _wait(partial(_spare_ready, backend), "spare")
            else:
                time.sleep(0.1 if method == "spawn" else 0.05)  # a spare's start, or so
            submitted = time.monotonic()
            started: float = pool.submit(time.monotonic).result(10.0)
            latencies.append(started - submitted)
            pool.submit(time.sleep, hold)  # the new worker, parked, takes it
    finally:
        pool.shutdown(cancel_futures=True)
    return statistics.median(latencies)


def _growth_without_spare(top: int, hold: float, method: str | None) -> float:
    with mock.patch.object(ProcessBackend, "_keep_spare", return_value=None):
        return _growth(top, hold, False, method)


@scenario
def autoscale_process_growth(quick: bool) -> dict[str, float]:
    """An Autoscale ProcessPool's growth: the start of a task that needs a new worker."""
    top, hold = 4, 0.5
    forkserver.ensure_running()  # started once per program: not in the first sample
    got: dict[str, float] = {}
    for method, hold_ in ((None, hold), ("spawn", 2 * hold)):
        name = "default context" if method is None else f"{method} context"
        got |= compare(
            [(f"no spare, {name}",
              lambda m=method, h=hold_: _growth_without_spare(top, h, m)),  # type: ignore[misc]
             (f"wp.Autoscale (spare), {name}",
              lambda m=method, h=hold_: _growth(top, h, True, m))],  # type: ignore[misc]
            unit="ms", scale=1000.0, baseline=f"no spare, {name}",
            repeats=3 if quick else 7,
            title=f"submit to start of a task that needs a new worker, 1 to {top} "
                  f"workers; Autoscale(min=0, max={top}), {name}",
            targets=[Target(f"wp.Autoscale (spare), {name}", ">=", 1.5)])
    return got
