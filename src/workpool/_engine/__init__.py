"""The scheduler: one bounded priority intake, workers, deadlines and retries, the
shutdown steps and the statistics, for every pool.

``engine`` is the one state machine (intake, queue, counts, deadlines, retries,
shutdown, statistics) of every pool, sync and async; ``contract`` its records
(``Task``, ``Run``, ``Worker``, the ``TaskFuture`` a task settles) and the ``Backend``
contract composed into it; ``threaded`` the thread-per-worker driver of its step;
``async_task`` the handle ``AsyncPool`` hands out (``AsyncFuture``) and its tasks'
options (``Spec``). How one unit of work runs (a thread, a child process, a task of an
event loop) is a backend's (``workpool._backends``), which drives the engine's step.
May import ``_core`` and ``_backends``' leaf helpers; never a pool, a group, the
pipeline or the CLI.
"""
