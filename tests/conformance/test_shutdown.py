"""CPython's ``test.test_concurrent_futures.test_shutdown``, against workpool's pools."""

from tests.conformance._harness import adopt

adopt("test_shutdown", globals())
