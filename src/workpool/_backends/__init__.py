"""Ways of running work, one module each, behind one contract: ``_engine.contract``
(``Backend``), composed into the one engine: threads (``thread``), child processes
(``process``), tasks of an event loop (``async_backend``); ``aio`` is the ``Lot``, the
parking primitive of every async wait."""
