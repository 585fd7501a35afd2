"""The one table of CPython executor tests that the conformance suite does not run.

Only two kinds of test belong here: those that read the stdlib executors' private
attributes (``_threads``, ``_processes``, ``_broken``, ...), which workpool's pools
need not have, and those that patch the stdlib's internals, which workpool does not
use. Every other test of the adopted modules runs, and a failure is a workpool bug.

Keys are ``fnmatch`` patterns over ``<module>.<TestCase>.<test>`` (the module without
its ``test.test_concurrent_futures.`` prefix); every key must match at least one test
(``test_harness.py`` checks it).
"""

from __future__ import annotations

from typing import Final

__all__ = ["SKIPS"]

_THREADS = "reads executor._threads, the stdlib's private set of worker threads"
_PROCESSES = "reads executor._processes, the stdlib's private map of worker processes"

SKIPS: Final[dict[str, str]] = {
    # test_thread_pool
    "test_thread_pool.ThreadPoolExecutorTest.test_saturation": _THREADS,
    "test_thread_pool.ThreadPoolExecutorTest.test_idle_thread_reuse": _THREADS,
    # test_process_pool
    "test_process_pool.*.test_killed_child": _PROCESSES,
    "test_process_pool.*.test_saturation": _PROCESSES,
    "test_process_pool.*.test_idle_process_reuse_one": _PROCESSES,
    "test_process_pool.*.test_idle_process_reuse_multiple": _PROCESSES,
    # The fork variant refuses max_tasks_per_child before it reads anything private.
    "test_process_pool.ProcessPoolForkserver*.test_max_tasks_per_child": _PROCESSES,
    "test_process_pool.ProcessPoolSpawn*.test_max_tasks_per_child": _PROCESSES,
    "test_process_pool.*.test_max_tasks_per_child_defaults_to_spawn_context":
        "reads executor._mp_context, the stdlib's private multiprocessing context",
    "test_process_pool.*.test_python_finalization_error":
        "patches threading._start_joinable_thread, which the stdlib pool's feeder "
        "thread goes through",
    # test_shutdown
    "test_shutdown.ThreadPoolShutdownTest.test_threads_terminate": _THREADS,
    "test_shutdown.ThreadPoolShutdownTest.test_context_manager_shutdown": _THREADS,
    "test_shutdown.ThreadPoolShutdownTest.test_del_shutdown": _THREADS,
    "test_shutdown.ThreadPoolShutdownTest.test_shutdown_no_wait": _THREADS,
    "test_shutdown.ThreadPoolShutdownTest.test_thread_names_assigned": _THREADS,
    "test_shutdown.ThreadPoolShutdownTest.test_thread_names_default": _THREADS,
    "test_shutdown.*.test_processes_terminate": _PROCESSES,
    "test_shutdown.ProcessPool*.test_context_manager_shutdown": _PROCESSES,
    "test_shutdown.ProcessPool*.test_del_shutdown":
        "reads executor._executor_manager_thread, _processes and _call_queue, the "
        "stdlib's private machinery",
    "test_shutdown.ProcessPool*.test_shutdown_no_wait":
        "reads executor._executor_manager_thread, _processes and _call_queue, the "
        "stdlib's private machinery",
    # test_deadlock
    "test_deadlock.*.test_shutdown_deadlock_pickle":
        "reads executor._executor_manager_thread, the stdlib's private manager thread",
    "test_deadlock.*.test_gh105829_should_not_deadlock_if_wakeup_pipe_full":
        "patches concurrent.futures.process._ExecutorManagerThread and _ThreadWakeup "
        "(and its own 300 s SIGALRM would replace the per-test timeout)",
    # test_init
    "test_init.*FailingInitializerTest.test_initializer":
        "polls executor._broken, the stdlib's private broken flag",
    "test_init.FailingInitializerResourcesTest.*":
        "runs *FailingInitializerTest.test_initializer (which polls executor._broken), "
        "then stops and reads multiprocessing's private resource tracker",
}
