"""The pools a user touches: ``ThreadPool`` and the shared executor front end
(``executor``), ``ProcessPool`` (``process``), ``AsyncPool`` (``async_pool``), and their
lazy windowed ``map`` (``map``, ``async_map``). Thin front ends: argument checks and the
public methods over an engine (``workpool._engine``) and a backend
(``workpool._backends``). May import ``_core``, ``_engine``, ``_backends`` and ``_sync``.
"""
