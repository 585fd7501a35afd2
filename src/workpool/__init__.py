"""workpool: bounded concurrent work for Python.

Worker pools, fail-fast task groups, weighted semaphores and multi-stage pipelines over
threads, processes and async code. This module only re-exports the public API.

Example::

    import workpool as wp

    with wp.ThreadPool(8, retry=wp.Retry(attempts=3)) as pool:
        for page in pool.map(fetch, urls, ordered=False):
            print(page)
"""

import typing as _typing

if _typing.TYPE_CHECKING:
    from ._core.context import TaskContext as TaskContext
    from ._core.context import current as current
    from ._core.dynamic import Adaptive as Adaptive
    from ._core.dynamic import Autoscale as Autoscale
    from ._core.exceptions import Cancelled as Cancelled
    from ._core.exceptions import ItemsFailed as ItemsFailed
    from ._core.exceptions import PoolClosed as PoolClosed
    from ._core.exceptions import QueueFull as QueueFull
    from ._core.exceptions import TaskTimeout as TaskTimeout
    from ._core.exceptions import WorkpoolError as WorkpoolError
    from ._core.exceptions import WouldBlock as WouldBlock
    from ._core.failures import CollectedError as CollectedError
    from ._core.outcome import Error as Error
    from ._core.outcome import Value as Value
    from ._core.process_errors import WorkerCrashed as WorkerCrashed
    from ._core.progress import ProgressCounts as ProgressCounts
    from ._core.ratelimit import RateLimit as RateLimit
    from ._core.retry import Retry as Retry
    from ._core.sizing import cpus as cpus
    from ._core.sizing import io_workers as io_workers
    from ._core.sizing import memory_limit as memory_limit
    from ._core.stats import PoolStatistics as PoolStatistics
    from ._engine.async_task import AsyncFuture as AsyncFuture
    from ._groups.async_group import AsyncGroup as AsyncGroup
    from ._groups.group import Group as Group
    from ._pipeline import Pipeline as Pipeline
    from ._pipeline import PipelineReport as PipelineReport
    from ._pipeline import StageReport as StageReport
    from ._pools.async_pool import AsyncPool as AsyncPool
    from ._pools.dask import DaskPool as DaskPool
    from ._pools.executor import ThreadPool as ThreadPool
    from ._pools.process import ProcessPool as ProcessPool
    from ._sync.async_semaphore import AsyncSemaphore as AsyncSemaphore
    from ._sync.memory_budget import MemoryBudget as MemoryBudget
    from ._sync.memory_budget import MemoryBudgetStatistics as MemoryBudgetStatistics
    from ._sync.merge import amerge as amerge
    from ._sync.merge import merge as merge
    from ._sync.semaphore import Semaphore as Semaphore
    from ._sync.semaphore import SemaphoreStatistics as SemaphoreStatistics
    from ._walk import WalkStatistics as WalkStatistics
    from ._walk import awalk as awalk
    from ._walk import walk as walk

__version__ = "0.1.0"

__all__ = [
    "Adaptive",
    "AsyncFuture",
    "AsyncGroup",
    "AsyncPool",
    "AsyncSemaphore",
    "Autoscale",
    "Cancelled",
    "CollectedError",
    "DaskPool",
    "Error",
    "Group",
    "ItemsFailed",
    "MemoryBudget",
    "MemoryBudgetStatistics",
    "Pipeline",
    "PipelineReport",
    "PoolClosed",
    "PoolStatistics",
    "ProcessPool",
    "ProgressCounts",
    "QueueFull",
    "RateLimit",
    "Retry",
    "Semaphore",
    "SemaphoreStatistics",
    "StageReport",
    "TaskContext",
    "TaskTimeout",
    "ThreadPool",
    "Value",
    "WalkStatistics",
    "WorkerCrashed",
    "WorkpoolError",
    "WouldBlock",
    "amerge",
    "awalk",
    "cpus",
    "current",
    "io_workers",
    "memory_limit",
    "merge",
    "walk",
]


# Every name loads on first use (PEP 562), so that ``import workpool`` stays light: the
# ``workpool`` command (``python -m workpool run``) starts without the library, the
# async side brings anyio and asyncio, processes bring multiprocessing (WorkerCrashed
# too: it subclasses BrokenProcessPool), pipelines sqlite3. Names of one family load
# together, and the core family with the first of any. {family: {name: module}}
_LAZY: dict[str, dict[str, str]] = {
    "core": {"TaskContext": "._core.context", "current": "._core.context",
             "Cancelled": "._core.exceptions", "ItemsFailed": "._core.exceptions",
             "PoolClosed": "._core.exceptions", "QueueFull": "._core.exceptions",
             "TaskTimeout": "._core.exceptions", "WorkpoolError": "._core.exceptions",
             "WouldBlock": "._core.exceptions", "Error": "._core.outcome",
             "Value": "._core.outcome", "ProgressCounts": "._core.progress",
             "RateLimit": "._core.ratelimit", "Retry": "._core.retry", "cpus": "._core.sizing",
             "io_workers": "._core.sizing", "memory_limit": "._core.sizing",
             "PoolStatistics": "._core.stats"},
    "threads": {"ThreadPool": "._pools.executor", "Group": "._groups.group",
                "Semaphore": "._sync.semaphore", "SemaphoreStatistics": "._sync.semaphore"},
    "processes": {"ProcessPool": "._pools.process"},
    "dask": {"DaskPool": "._pools.dask"},
    "crashes": {"WorkerCrashed": "._core.process_errors"},
    "failures": {"CollectedError": "._core.failures"},
    "dynamic": {"Adaptive": "._core.dynamic", "Autoscale": "._core.dynamic"},
    "async": {"AsyncPool": "._pools.async_pool", "AsyncFuture": "._engine.async_task",
              "AsyncGroup": "._groups.async_group", "AsyncSemaphore": "._sync.async_semaphore",
              "merge": "._sync.merge", "amerge": "._sync.merge"},
    "memory": {"MemoryBudget": "._sync.memory_budget",
               "MemoryBudgetStatistics": "._sync.memory_budget"},
    "pipelines": {"Pipeline": "._pipeline", "PipelineReport": "._pipeline",
                  "StageReport": "._pipeline"},
    "walks": {"walk": "._walk", "awalk": "._walk", "WalkStatistics": "._walk"},
}
_FAMILY = {name: family for family, names in _LAZY.items() for name in names}


if not _typing.TYPE_CHECKING:  # type checkers see the imports above, and no catch-all

    def __getattr__(name: str) -> object:
        family = _FAMILY.get(name)
        if family is None:
            raise AttributeError(f"module 'workpool' has no attribute {name!r}")
        import importlib

        for loading in dict.fromkeys(("core", family)):
            for member, module in _LAZY[loading].items():
                obj = getattr(importlib.import_module(module, __name__), member)
                _say_workpool(obj)
                globals()[member] = obj
        return globals()[name]

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))


def _say_workpool(obj: object) -> None:
    # Tracebacks and reprs say workpool.X, not workpool._core.module.X.
    if getattr(obj, "__module__", "").startswith("workpool."):
        obj.__module__ = "workpool"

