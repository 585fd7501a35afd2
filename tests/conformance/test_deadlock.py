"""CPython's ``test.test_concurrent_futures.test_deadlock``, against workpool's pools."""

from tests.conformance._harness import adopt

adopt("test_deadlock", globals())
