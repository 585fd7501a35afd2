"""Task functions and objects for process pool tests: what fails to pickle or unpickle,
and where (after CPython's ``test_concurrent_futures/test_deadlock.py``)."""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any


def crash() -> None:
    """Die of a segfault, without faulthandler's report."""
    import ctypes
    import faulthandler

    faulthandler.disable()
    ctypes.string_at(0)


def crash_after(seconds: float) -> None:
    time.sleep(seconds)
    crash()


def crash_with_data(data: str) -> None:
    crash()


def exit_one() -> None:
    sys.exit(1)


def raise_error(kind: type[BaseException]) -> None:
    raise kind("cannot be unpickled")


def raise_runtime_error() -> None:
    raise RuntimeError("in the task")


def return_instance(cls: type[Any]) -> Any:
    return cls()


class CrashAtPickle:
    """Segfaults whoever pickles it."""

    def __reduce__(self) -> Any:
        crash()


class CrashAtUnpickle:
    """Segfaults whoever unpickles it."""

    def __reduce__(self) -> Any:
        return crash, ()


class ExitAtPickle:
    """Calls sys.exit(1) while being pickled."""

    def __reduce__(self) -> Any:
        exit_one()


class ExitAtUnpickle:
    """Calls sys.exit(1) while being unpickled."""

    def __reduce__(self) -> Any:
        return exit_one, ()


class ErrorAtPickle:
    """Raises PicklingError while being pickled."""

    def __reduce__(self) -> Any:
        raise pickle.PicklingError("Error in pickle")


class ErrorAtUnpickle:
    """Raises UnpicklingError while being unpickled."""

    def __reduce__(self) -> Any:
        return raise_error, (pickle.UnpicklingError,)


def identity(x: Any) -> Any:
    return x


def bad_result_at(x: int, bad: int, kind: type[Any]) -> Any:
    """x * x, but an instance of *kind* for the item *bad*."""
    return kind() if x == bad else x * x


def unpicklable() -> Any:
    """An object the stdlib's pickle refuses (a lock)."""
    import threading

    return threading.Lock()


def read_all(f: Any) -> str:
    return str(f.read())


class Held:
    """An object whose collection a test watches."""

    def method(self, other: Any = None) -> int:
        return os.getpid()


def make_held(_: Any = None) -> Held:
    return Held()


def double(x: int) -> int:
    return 2 * x


def sum_doubles_in_a_pool_of_its_own(n: int) -> int:
    """A task that starts processes of its own (its worker is not a daemon)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        return sum(pool.map(double, range(n)))


def remember_queue(queue: Any) -> Any:
    """An initializer whose argument only multiprocessing can send (a Queue)."""
    queue.put("initialized")
    return queue


def say_through_state(word: str) -> bool:
    import workpool as wp

    wp.current().state.put(word)
    return True


def block_in_start(folder: str, blocking: int) -> None:
    """An initializer: each child leaves a file named by its pid in *folder*; the first
    *blocking* children then block (until the test kills them), the others go on."""
    Path(folder, str(os.getpid())).touch()
    if len(os.listdir(folder)) <= blocking:
        time.sleep(60)
