"""CPython's ``test.test_concurrent_futures.test_thread_pool``, against workpool's pools."""

from tests.conformance._harness import adopt

adopt("test_thread_pool", globals())
