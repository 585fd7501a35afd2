"""The benchmark suite behind ``workpool bench`` (a source checkout only, not the API).

Adding a topic: write ``bench/bench_<topic>.py`` with scenario functions
``def name(quick: bool) -> dict[str, float]`` marked ``@scenario``; each builds its
contenders, ``(name, callable returning seconds or a metric)``, and returns
``compare(contenders, unit=..., baseline=..., targets=[...])``. See ``harness.py``;
``bench_threads.py`` is a worked example. ``workpool bench --list`` shows what it finds.
"""
