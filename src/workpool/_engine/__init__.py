"""The scheduler: one bounded priority intake, workers, deadlines and retries, the
shutdown steps and the statistics, for every pool.

``engine`` is the sync state machine (intake, queue, counts, deadlines, retries,
shutdown, statistics); ``contract`` its records (``Task``, ``Run``, ``Worker``) and the
``Backend`` contract composed into it; ``threaded`` the thread-per-worker driver of
its step; ``async_*`` is the same
scheduler's event-loop side (``AsyncPool``'s queue, worker tasks and policies). How one
unit of work runs (a thread, a child process, a coroutine) is a backend's
(``workpool._backends``). May import ``_core`` and ``_backends``' leaf helpers; never a
pool, a group, the pipeline or the CLI.
"""
