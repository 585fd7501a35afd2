"""``Group`` and ``AsyncGroup``: Go's errgroup with ``SetLimit``, a limit and a
fail-fast error policy over a pool. May import ``_core``, ``_engine`` and ``_pools``.
"""
