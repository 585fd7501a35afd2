"""CPython's ``test.test_concurrent_futures.test_wait``, against workpool's pools."""

from tests.conformance._harness import adopt

adopt("test_wait", globals())
