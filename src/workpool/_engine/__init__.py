"""The scheduler: one bounded priority intake, workers, deadlines and retries, the
shutdown steps and the statistics, for every pool.

``intake`` holds the records (``Task``, ``Worker``) and the way in (``put``), ``engine``
the workers and the shutdown state machine that threads drive; ``async_*`` is the same
scheduler's event-loop side (``AsyncPool``'s queue, worker tasks and policies). How one
unit of work runs (a thread, a child process, a coroutine) is a backend's
(``workpool._backends``). May import ``_core`` and ``_backends``' leaf helpers; never a
pool, a group, the pipeline or the CLI.
"""
