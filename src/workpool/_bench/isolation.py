"""Run a function in a fresh interpreter, so its memory and threads are its own.

``isolated(fn, *args)`` runs ``python -c`` (this interpreter) with the folder that holds
the workpool package first on ``sys.path`` (``src/`` of a checkout, or site-packages);
the child imports *fn* by module and name, resets its peak-RSS count, calls it, and
prints one JSON line back: seconds, peak RSS growth and whatever *fn* returned.
``in_child`` is the same trip for any entry point of the bench that prints its answer
as a JSON line (the harness runs a whole scenario so: ``scenario(own_process=True)``).
"""

from __future__ import annotations

import gc
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["in_child", "isolated", "resolve"]

_ROOT = Path(__file__).resolve().parents[2]  # what holds workpool: src/, or site-packages


def isolated(fn: Callable[..., object], *args: object, timeout: float = 600) -> dict[str, float]:
    """Run ``fn(*args)`` once in a fresh interpreter (this one's executable).

    Returns ``seconds`` (the call's wall time), ``rss_growth_mb`` (the peak resident
    memory of the process minus its resident memory just before the call) and, if *fn*
    returned a mapping of numbers, those too. *fn* must be a module-level function of an
    importable module, *args* JSON values. One scenario's garbage never reaches another.
    """
    out: dict[str, float] = in_child(_child, fn, list(args), timeout=timeout)
    return out


def in_child(entry: Callable[[list[Any]], None], fn: Callable[..., object], args: Any,
             timeout: float = 600) -> Any:
    """Call ``entry([paths, module, qualname, args])`` in a fresh interpreter, where
    ``resolve`` finds *fn* again by its module and name; return the JSON value of the
    last line *entry* printed.

    Raises:
        RuntimeError: the child failed (its last line of stderr says how).
    """
    module = sys.modules[fn.__module__]
    paths = [str(_ROOT)]
    if "." not in fn.__module__ and getattr(module, "__file__", None):
        paths.append(str(Path(str(module.__file__)).parent))
    payload = json.dumps([paths, fn.__module__, fn.__qualname__, args])
    code = (f"import sys, json; from {entry.__module__} import {entry.__name__} as entry; "
            "entry(json.loads(sys.argv[1]))")
    proc = subprocess.run(
        [sys.executable, "-c", code, payload], capture_output=True, text=True,
        timeout=timeout, cwd=str(_ROOT),  # python -c puts the cwd first on sys.path
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise RuntimeError(f"isolated {fn.__qualname__} failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def resolve(payload: list[Any]) -> tuple[Any, Any]:
    """In the child: the function *payload* names (``in_child``), and its args."""
    paths, module_name, qualname, args = payload
    sys.path[:0] = paths
    fn: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    return fn, args


def _child(payload: list[Any]) -> None:
    fn, args = resolve(payload)
    gc.collect()
    before = _rss_mb()
    peak = _reset_peak()
    t0 = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "rss_growth_mb": peak() - before}
    if isinstance(result, Mapping):
        out.update({str(k): float(v) for k, v in result.items()})
    print(json.dumps(out))


def _reset_peak() -> Callable[[], float]:
    """Start a fresh peak-RSS count; return the function that reads it (MiB).

    Linux resets the high-water mark on request (``clear_refs``), so imports before the
    call cannot inflate it; elsewhere the process's lifetime peak is the best there is.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_mb("VmHWM")
    except (OSError, ValueError):
        return _peak_rss_mb
    return lambda: _status_mb("VmHWM")


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 2**10  # kB
    raise ValueError(f"no {key} in /proc/self/status")


def _rss_mb() -> float:
    """Resident memory now (the peak so far where the OS does not say)."""
    try:
        return _status_mb("VmRSS")
    except (OSError, ValueError):
        return _peak_rss_mb()


def _peak_rss_mb() -> float:
    import resource  # Unix only; imported here so the harness loads everywhere

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes / KiB
