"""How much memory is in use, and whether the OOM killer struck: readers of /proc and of
the cgroup files, for ``wp.MemoryBudget`` (usage) and the process backend (OOM kills).
Imports only ``_core.sizing`` (the cgroup walk); psutil is not needed::

    rss_tree(pid)       statm's resident pages of pid and every descendant (children
                        from /proc/<pid>/task/<tid>/children, or else from each
                        process's ppid in /proc/<n>/stat)
    cgroup_usage(dir)   v2 memory.current, v1 memory.usage_in_bytes, less the page cache
                        the kernel can drop at once (memory.stat's inactive_file)
    oom_kill_count()    the oom_kill count of our cgroup: v2 memory.events, v1
                        memory.oom_control (kernel 4.13+)

Each reads a few small files and returns None when they cannot be read. Every function
takes the filesystem's root as a parameter, so tests run them on fake trees.
"""

from __future__ import annotations

import os
from pathlib import Path

from .sizing import CgroupDir, cgroup_dirs, read_text

__all__ = ["cgroup_usage", "oom_kill_count", "rss_tree"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_tree(root: Path, pid: int) -> int | None:
    """The resident bytes of process *pid* and of all its descendants (a shared page
    counts once per process that maps it, so a forked child's pages may count twice:
    an upper bound), or None if *pid*'s own cannot be read."""
    own = _rss(root, pid)
    if own is None:
        return None
    return own + sum(_rss(root, child) or 0 for child in _descendants(root, pid))


def cgroup_usage(cgroup: CgroupDir) -> int | None:
    """The bytes charged to *cgroup* less its inactive page cache (what the kernel
    reclaims before it would OOM-kill), or None if it cannot be read."""
    v2 = cgroup.version == 2
    current = read_text(cgroup.path / ("memory.current" if v2 else "memory.usage_in_bytes"))
    if current is None or not current.isdigit():
        return None
    stat = read_text(cgroup.path / "memory.stat") or ""
    inactive = _field(stat, "inactive_file" if v2 else "total_inactive_file") or 0
    return max(0, int(current) - inactive)


def oom_kill_count(root: Path) -> int | None:
    """How many processes of our cgroup the OOM killer has killed so far (the first
    count found from our cgroup up), or None where no cgroup says."""
    for cgroup in cgroup_dirs(root, "memory", ("memory",)):
        name = "memory.events" if cgroup.version == 2 else "memory.oom_control"
        count = _field(read_text(cgroup.path / name) or "", "oom_kill")
        if count is not None:
            return count
    return None


def _field(text: str, key: str) -> int | None:
    """The value of a ``key value`` line of a cgroup file such as memory.stat."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def _rss(root: Path, pid: int) -> int | None:
    fields = (read_text(root / f"proc/{pid}/statm") or "").split()
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    return int(fields[1]) * _PAGE


def _descendants(root: Path, pid: int) -> list[int]:
    # Without CONFIG_PROC_CHILDREN: every process's parent, read once.
    parents = None if (root / f"proc/{pid}/task/{pid}/children").exists() else _parents(root)
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        kids = _children_from_tasks(root, p) if parents is None else parents.get(p, [])
        found += kids
        todo += kids
    return found


def _children_from_tasks(root: Path, pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = list((root / f"proc/{pid}/task").iterdir())
    except OSError:
        return kids
    for task in tasks:
        kids += [int(k) for k in (read_text(task / "children") or "").split() if k.isdigit()]
    return kids


def _parents(root: Path) -> dict[int, list[int]]:
    """Each process's children, from the ppid in /proc/<n>/stat."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e for e in (root / "proc").iterdir() if e.name.isdigit()]
    except OSError:
        return children
    for entry in entries:
        stat = read_text(entry / "stat")
        if stat is None:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 1:].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children
