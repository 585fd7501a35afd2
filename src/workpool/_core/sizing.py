"""Pool sizing: the CPUs and the memory this process may really use, and Little's law
for I/O work. Imports nothing of workpool.

``os.cpu_count()`` counts the machine, not what the process is allowed: a container
limited to 2 CPUs on a 64-core host would start 64 workers that the kernel then
throttles. ``cpus()`` does what Go's automaxprocs does, and ``memory_limit()`` the same
for memory (psutil and /proc/meminfo report the host's memory, not the container's)::

    affinity (sched_getaffinity)         the CPUs the scheduler may run us on
        |
        +-- min --> cgroup CPU quota     v2 cpu.max, v1 cpu.cfs_quota_us / cfs_period_us,
                                         our cgroup and each ancestor up to the mount
                                         (found via /proc/self/cgroup + mountinfo)

    physical memory (SC_PHYS_PAGES)
        |
        +-- min --> cgroup memory limit  v2 memory.max, v1 memory.limit_in_bytes, our
                                         cgroup and each ancestor, the same way

``cgroup_dirs`` is that walk, for ``_core.memory`` too (usage, OOM kills).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CgroupDir", "cgroup_dirs", "cpus", "io_workers", "memory_limit", "memory_limit_from",
           "physical_memory", "read_text"]

_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo writes " " as \040, and so on
_V1_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")  # where v1 mounts the cpu controller


def cpus() -> int:
    """Return how many CPUs this process may use: its CPU affinity, further limited by
    a cgroup CPU quota (containers, systemd slices) rounded down, and always >= 1.

    This is the default worker count of ``wp.ProcessPool``. It reads a few small files
    under /proc and /sys/fs/cgroup on each call (tens of microseconds); nothing is cached,
    so a changed affinity or quota is seen at once.

    Example::

        with wp.ProcessPool(wp.cpus()) as pool:   # 2 in a container limited to 2.5 CPUs
            ...
    """
    return _cpus_from(Path("/"), _affinity())


def io_workers(throughput: float, latency: float) -> int:
    """Return the workers that sustain *throughput* tasks per second when each task
    takes *latency* seconds, by Little's law: ``ceil(throughput * latency)``, at least 1.

    Args:
        throughput: the target rate, in tasks per second (> 0).
        latency: the time one task takes, in seconds (> 0).

    Raises:
        ValueError: *throughput* or *latency* is not a finite number > 0.

    Example::

        wp.io_workers(throughput=100, latency=0.25)   # 100 req/s at 250 ms each -> 25
    """
    _check_positive("throughput", throughput)
    _check_positive("latency", latency)
    product = throughput * latency
    nearest = round(product)
    # 10 * 0.3 is 3.0000000000000004 in binary floating point: that is 3 workers, not 4.
    if math.isclose(product, nearest, rel_tol=1e-9):
        return max(1, nearest)
    return max(1, math.ceil(product))


def memory_limit() -> int:
    """Return the bytes of memory this process may use: the tightest cgroup memory limit
    over its cgroup and that cgroup's ancestors (v2 ``memory.max``, else v1
    ``memory.limit_in_bytes``), and never more than the physical memory.

    In a container this is the container's limit, which the OOM killer enforces, where
    ``psutil.virtual_memory()`` reports the host's. It reads a few small files under /proc
    and /sys/fs/cgroup on each call; nothing is cached. ``wp.MemoryBudget(limit="80%")``
    takes its capacity from it.

    Example::

        wp.memory_limit()   # 2147483648 in a container started with --memory=2g
    """
    return memory_limit_from(Path("/"), physical_memory())[0]


def _check_positive(name: str, value: float) -> None:
    if not value > 0:  # also catches NaN
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


def _affinity() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - not Linux


def _cpus_from(root: Path, affinity: int) -> int:
    """``cpus()`` with the filesystem rooted at *root* and the given affinity."""
    limit = max(1, affinity)
    quota = _quota(root)
    if quota is not None:
        limit = min(limit, max(1, quota))
    return limit


@dataclass(frozen=True, slots=True)
class _Mount:
    root: str  # the cgroup path that the mount point shows
    point: str
    fstype: str
    options: frozenset[str]


@dataclass(frozen=True, slots=True)
class CgroupDir:
    """One cgroup directory of ours: ``version`` 2 (unified) or 1 (per controller)."""

    version: int
    path: Path


def cgroup_dirs(root: Path, controller: str, v1_fallback: tuple[str, ...]) -> list[CgroupDir]:
    """Our cgroup's directories that *controller*'s files may be in, each cgroup before
    its ancestors (up to the mount): the v2 hierarchy's, then v1's. Without /proc to say
    where our cgroup is, the usual mount points: ``/sys/fs/cgroup`` (v2) and the
    *v1_fallback* directories under it."""
    memberships = _proc_cgroups(root)
    found: list[CgroupDir] = []
    matched = False
    for mount in _mountinfo(root):
        if mount.fstype == "cgroup2" and "" in memberships:
            found += [CgroupDir(2, d) for d in _walk(root, mount, memberships[""])]
        elif (mount.fstype == "cgroup" and controller in mount.options
              and controller in memberships):
            found += [CgroupDir(1, d) for d in _walk(root, mount, memberships[controller])]
        else:
            continue
        matched = True
    if not matched:
        base = root / "sys/fs/cgroup"
        found = [CgroupDir(2, base)] + [CgroupDir(1, base / name) for name in v1_fallback]
    return found


def _quota(root: Path) -> int | None:
    """The tightest cgroup CPU quota over our cgroups and their ancestors, in whole
    CPUs rounded down (may be 0), or None without one."""
    limits = [(_v2_limit if d.version == 2 else _v1_limit)(d.path)
              for d in cgroup_dirs(root, "cpu", _V1_DIRS)]
    return min((limit for limit in limits if limit is not None), default=None)


def memory_limit_from(root: Path, physical: int) -> tuple[int, CgroupDir | None]:
    """``memory_limit()`` with the filesystem rooted at *root* and *physical* bytes of
    RAM, with the cgroup whose limit it is (None: the physical memory)."""
    best: tuple[int, CgroupDir | None] = (physical, None)
    for d in cgroup_dirs(root, "memory", ("memory",)):
        name = "memory.max" if d.version == 2 else "memory.limit_in_bytes"
        text = read_text(d.path / name)
        # v2 writes "max" for no limit; v1 a number near 2**63 (above any RAM).
        if text is not None and text.isdigit() and int(text) < best[0]:
            best = (int(text), d)
    return best


def physical_memory() -> int:
    """The bytes of RAM of the machine (or of the VM)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _proc_cgroups(root: Path) -> dict[str, str]:
    """Map each controller to our cgroup path; the v2 unified hierarchy maps from ""."""
    text = read_text(root / "proc/self/cgroup")
    memberships: dict[str, str] = {}
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            memberships[""] = path
        for controller in controllers.split(","):
            if controller:
                memberships[controller] = path
    return memberships


def _mountinfo(root: Path) -> list[_Mount]:
    text = read_text(root / "proc/self/mountinfo")
    mounts = []
    for line in (text or "").splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 4 or fields[sep + 1] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(_Mount(root=_unescape(fields[3]), point=_unescape(fields[4]),
                             fstype=fields[sep + 1],
                             options=frozenset(fields[sep + 3].split(","))))
    return mounts


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _walk(root: Path, mount: _Mount, cgroup: str) -> list[Path]:
    """Our cgroup's directory and each ancestor's up to the mount, ours first: a limit
    set on a parent (a systemd slice, say) binds its children too."""
    top = root / mount.point.lstrip("/")
    rel = _relative(mount.root, cgroup)
    parts = [] if rel is None else [p for p in rel.split("/") if p]
    return [top.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _relative(mount_root: str, cgroup: str) -> str | None:
    """*cgroup* relative to what the mount shows, or None if the mount does not show it
    (then the mount point itself is read, as it is our cgroup in most containers)."""
    if ".." in cgroup.split("/"):
        return None
    if mount_root == "/":
        return cgroup
    if cgroup == mount_root or cgroup.startswith(mount_root + "/"):
        return cgroup[len(mount_root):]
    return None


def _v2_limit(directory: Path) -> int | None:
    # cpu.max holds "$QUOTA $PERIOD" in microseconds; "max" means no limit.
    fields = (read_text(directory / "cpu.max") or "").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _whole_cpus(fields[0], fields[1])


def _v1_limit(directory: Path) -> int | None:
    # cpu.cfs_quota_us is -1 when there is no limit.
    quota = read_text(directory / "cpu.cfs_quota_us")
    period = read_text(directory / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _whole_cpus(quota, period)


def _whole_cpus(quota: str, period: str) -> int | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:
        return None
    return q // p


def read_text(path: Path) -> str | None:
    """The stripped text of a small file, or None if it cannot be read."""
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None

