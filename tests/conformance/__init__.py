"""CPython's ``test.test_concurrent_futures`` suite, run against workpool's pools.

Each ``test_<name>.py`` here adopts the CPython module of that name (as shipped with
the Python running the tests, never copied) through ``_harness.adopt``; ``skips.py``
is the one table of tests left out, each with its reason.
"""
