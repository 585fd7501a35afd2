"""The worker-thread driver: backends whose workers are threads of this process.

Owns how a thread per worker runs the engine's step: ``ThreadedBackend`` implements
the ``Backend`` contract's worker half (spawn, resume, release, interrupt, give_up)
with one thread per worker, and leaves what a task is to its subclass: ``initialize``
(per worker, in its thread), ``execute`` (run one task, blocking) and ``finalize``.
May import ``_core``, ``contract`` and ``engine``.

::

    spawn ── thread ── initialize ── loop: begin ── execute ── end ──┬─ next task
                                                                     ├─ parked: wait
                                                                     │  on the inbox,
                                                                     │  then woke()
                                                                     └─ leaving

A parked worker waits on its own ``SimpleQueue`` (a C primitive), which ``resume``
puts the next task into and ``release`` puts None into. The hand-off is lazy
(``lazy_wake``): a woken worker calls ``Engine.woke`` first (while ``Engine.waking``
says so), which passes on what was queued while it woke up.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from queue import SimpleQueue
from typing import Any

from .contract import Backend, Task, Worker

__all__ = ["ThreadWorker", "ThreadedBackend"]


class ThreadWorker(Worker):
    """A worker run by a thread of its own; parked, it waits on ``inbox``."""

    __slots__ = ("inbox",)

    def __init__(self, worker_id: int) -> None:
        super().__init__(worker_id)
        self.inbox: SimpleQueue[Task | None] = SimpleQueue()


class ThreadedBackend(Backend):
    """A thread per worker, blocking in ``execute`` while it runs a task."""

    # A thread's wake-up costs several microseconds, more than a tiny task.
    lazy_wake = True

    def new_worker(self, worker_id: int) -> Worker:
        return ThreadWorker(worker_id)

    @abstractmethod
    def initialize(self, worker: Worker) -> bool:
        """Per-worker set-up, in the worker's thread; False if the pool cannot run
        (its initializer failed)."""

    @abstractmethod
    def execute(self, worker: Worker, task: Task) -> tuple[int, Any]:
        """Run *task* in *worker*'s thread; return (TASK_OK | TASK_FAILED, value or
        error)."""

    def finalize(self, worker: Worker) -> None:
        """Release what *worker* holds as it leaves."""

    def spawn(self, worker: Worker) -> None:
        # A daemon thread: one the pool gave up on (stuck past its timeout) must not
        # keep the interpreter alive. The others are joined at exit by the pools' exit
        # hook (``_pools.executor._python_exit``), as the stdlib joins its workers.
        thread = threading.Thread(target=self._work, args=(worker,), daemon=True,
                                  name=f"{self.engine.name}_{worker.slot.worker_id}")
        worker.thread = thread
        # Started outside the engine's lock: a thread start costs ~100 us, which would
        # stall every worker picking its next task. join() waits for threads not yet
        # started.
        thread.start()

    def resume(self, worker: Worker, task: Task) -> None:
        assert isinstance(worker, ThreadWorker)
        worker.inbox.put(task)

    def release(self, worker: Worker) -> None:
        assert isinstance(worker, ThreadWorker)
        worker.inbox.put(None)

    def interrupt(self, worker: Worker, task: Task) -> None:
        ctx = worker.slot.ctx
        if ctx is not None:
            ctx.cancel()

    def give_up(self, worker: Worker, task: Task, error: BaseException) -> None:
        self.engine.abandon(worker, task, error)

    def close(self) -> None:
        """Nothing to let go of: a thread starts with its worker."""

    def after_fork_in_child(self) -> None:
        """Nothing to forget: the engine forgets the parent's workers."""

    def _work(self, worker: Worker) -> None:
        try:
            self._loop(worker)
        finally:
            # The worker leaves the set join() waits on only once its resources are
            # released.
            self.finalize(worker)
            self.engine.left(worker)

    def _loop(self, worker: Worker) -> None:
        assert isinstance(worker, ThreadWorker)
        engine = self.engine
        task, worker.first = worker.first, None
        if not self.initialize(worker):
            engine.failed_to_start(worker, task)
            return
        if task is None:  # a replacement: take queued work or park
            task = engine.next_task(worker)
        inbox = worker.inbox
        begin, end, execute, woke = engine.begin, engine.end, self.execute, engine.woke
        perf = time.perf_counter
        # The hot loop: one lock round per task (in end), in which the task's end is
        # counted and the next task picked.
        while True:
            if task is None:
                if worker.leaving:
                    return
                task = inbox.get()
                if task is None:
                    return
                if engine.waking:  # it was woken while others are parked
                    woke()
            # A task end() handed back begun is run as is.
            outcome = None if worker.task is task else begin(worker, task)
            # When it started: read only for a task whose latency is sampled, or one
            # under an adaptive limit (a clock read is 45 ns of a tiny task's 1 us).
            started = perf() if task.enqueued or worker.limited else 0.0
            if outcome is None:
                outcome = execute(worker, task)
            kind, value = outcome
            task = end(worker, task, kind, value, started)
            del outcome, value  # a parked worker keeps no result alive

