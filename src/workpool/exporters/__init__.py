"""Exporters of workpool's statistics to monitoring systems, each an optional extra:
``workpool.exporters.prometheus`` (extra ``prometheus``). Nothing in workpool imports
them; they read the objects that opted in with ``metrics=`` through ``_core.metrics``.
"""
