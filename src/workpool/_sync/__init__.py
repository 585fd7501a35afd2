"""Synchronisation users build on: the weighted FIFO-fair ``Semaphore`` and its async
twin ``AsyncSemaphore``, the byte budget ``MemoryBudget``, and the fan-in
``merge``/``amerge``. May import ``_core`` and
``_backends.aio`` (the parking lots); no pool.
"""
