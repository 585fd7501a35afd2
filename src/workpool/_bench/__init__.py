"""The benchmark suite behind ``workpool bench`` (shipped with the package, not the API).

The suite measures workpool against the stdlib and its peers. The peers come with the
``bench`` extra (``pip install 'workpool[bench]'``) and are imported only where they
are measured: without one, its rows say so and the rest of the suite runs.

Adding a topic: write ``_bench/bench_<topic>.py`` with scenario functions
``def name(quick: bool) -> dict[str, float]`` marked ``@scenario``; each builds its
contenders, ``(name, callable returning seconds or a metric)``, and returns
``compare(contenders, unit=..., baseline=..., targets=[...])``. See ``harness.py``;
``bench_threads.py`` is a worked example. ``workpool bench --list`` shows what it finds.
"""
