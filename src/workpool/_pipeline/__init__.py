"""Pipelines: stages on pools of their own kind, bounded channels between them.

::

    source ──▶ [source thread] ──ch0──▶ stage 1 ──ch1──▶ stage 2 ──ch2──▶ ... ──chN──▶ consumer
      any iterable, or async       │                                            for / async for
      (a task of the run's loop)   │ journal: skip finished keys                 / run()
                                   ▼
    a pooled stage (thread / process):                 an async stage:
      ch_in ─▶ dispatcher ─chunks─▶ ThreadPool|ProcessPool   ch_in ─▶ dispatcher task ─▶ AsyncPool
                  ▲ slots: 2 x workers chunks   │               (the run's one event-loop thread)
                  └──── freed after ch_out took them ◀─ emitter (order, error policy) ─▶ ch_out
    batch / unbatch: one thread, ch_in ─▶ lists (flushed by size, timeout or end) ─▶ ch_out
    each(transactional=True): the dispatcher hands chunks to the journal's writer thread

Every channel is bounded (its capacity is the upstream stage's ``buffer``) and every
stage has at most two chunks per worker in flight, so memory is bounded by workers and
buffers, never by the input's length: a full channel blocks its writer, and that
back-pressure reaches the source thread, which then stops reading.

Stopping goes one way whoever starts it (the consumer leaving, Ctrl-C, the first
unhandled error): every channel is aborted, so every blocked reader and writer wakes
with ``Aborted``; each pool cancels what is queued and asks what runs to stop (threads
through ``wp.current()``, processes killed, async tasks cancelled); then every thread
and pool is joined. Modules: ``_pipe`` (the public ``Pipeline``), ``_run`` (one run,
its source and iterators), ``_stages`` and ``_async_stage`` (stage runtimes),
``_channel``, ``_journal`` (resumable runs), ``_report`` and ``_progress``.
"""

from ._pipe import Pipeline
from ._report import CollectedError, PipelineReport, StageReport
from ._run import AsyncPipelineIterator, PipelineIterator

__all__ = [
    "AsyncPipelineIterator",
    "CollectedError",
    "Pipeline",
    "PipelineIterator",
    "PipelineReport",
    "StageReport",
]
