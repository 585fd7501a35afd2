"""CPython's ``test.test_concurrent_futures.test_init``, against workpool's pools."""

from tests.conformance._harness import adopt

adopt("test_init", globals())
