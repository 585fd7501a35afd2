"""CPython's ``test.test_concurrent_futures.test_as_completed``, against workpool's pools."""

from tests.conformance._harness import adopt

adopt("test_as_completed", globals())
