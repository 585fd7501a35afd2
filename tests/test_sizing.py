"""wp.cpus() and wp.memory_limit() against fake /proc and /sys/fs/cgroup trees, and
wp.io_workers()."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

import workpool as wp
from workpool._core.sizing import CgroupDir, _cpus_from, memory_limit_from, physical_memory

V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate"
V1_CPU_MOUNT = ("32 31 0:29 {root} /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:7 - "
                "cgroup cgroup rw,cpu,cpuacct")
OTHER_MOUNTS = [
    "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw",
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
]


def make_tree(root: Path, *, cgroup: str | None = None, mounts: list[str] | None = None,
              files: dict[str, str] | None = None) -> Path:
    """Write /proc/self/cgroup, /proc/self/mountinfo and cgroup files under *root*."""
    proc = root / "proc/self"
    proc.mkdir(parents=True)
    if cgroup is not None:
        (proc / "cgroup").write_text(cgroup)
    if mounts is not None:
        (proc / "mountinfo").write_text("\n".join(OTHER_MOUNTS + mounts) + "\n")
    for name, text in (files or {}).items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def v2_tree(root: Path, cgroup_path: str, cpu_max: dict[str, str]) -> Path:
    files = {f"/sys/fs/cgroup{d.rstrip('/')}/cpu.max": v for d, v in cpu_max.items()}
    return make_tree(root, cgroup=f"0::{cgroup_path}\n", mounts=[V2_MOUNT], files=files)


def v1_tree(root: Path, quota: str, period: str = "100000") -> Path:
    mount_dir = "/sys/fs/cgroup/cpu,cpuacct"
    return make_tree(
        root,
        cgroup="12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n",
        mounts=[V1_CPU_MOUNT.format(root="/docker/abc")],
        files={f"{mount_dir}/cpu.cfs_quota_us": quota, f"{mount_dir}/cpu.cfs_period_us": period},
    )


# -- cgroup v2 ---------------------------------------------------------------------------

@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("200000 100000", 2),
    ("150000 100000", 1),     # 1.5 CPUs: rounded down, as automaxprocs
    ("250000 100000", 2),
    ("400000 50000", 8),
    ("10000 100000", 1),      # a tenth of a CPU: never below 1
    ("max 100000", 16),       # no limit: the affinity
])
def test_v2_cpu_max(tmp_path: Path, cpu_max: str, expected: int) -> None:
    root = v2_tree(tmp_path, "/app.slice/app.service", {"/app.slice/app.service": cpu_max})
    assert _cpus_from(root, 16) == expected


def test_v2_root_cgroup_in_a_namespace(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "/", {"/": "300000 100000"})
    assert _cpus_from(root, 8) == 3


def test_v2_quota_on_a_parent_binds_the_child(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "/a/b/c", {"/a": "200000 100000", "/a/b/c": "max 100000"})
    assert _cpus_from(root, 8) == 2


def test_v2_tightest_level_wins(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "/a/b/c",
                   {"/a": "600000 100000", "/a/b": "max 100000", "/a/b/c": "300000 100000"})
    assert _cpus_from(root, 8) == 3


def test_v2_mount_shows_a_subtree(tmp_path: Path) -> None:
    mount = "30 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw"
    root = make_tree(tmp_path, cgroup="0::/kubepods/pod1/ctr\n", mounts=[mount],
                     files={"/sys/fs/cgroup/ctr/cpu.max": "100000 100000"})
    assert _cpus_from(root, 8) == 1


def test_v2_cgroup_outside_the_mount_reads_the_mount_point(tmp_path: Path) -> None:
    root = make_tree(tmp_path, cgroup="0::/../../elsewhere\n", mounts=[V2_MOUNT],
                     files={"/sys/fs/cgroup/cpu.max": "200000 100000"})
    assert _cpus_from(root, 8) == 2


def test_escaped_mount_point(tmp_path: Path) -> None:
    mount = r"30 23 0:26 / /mnt/cgroup\040v2 rw - cgroup2 cgroup2 rw"
    root = make_tree(tmp_path, cgroup="0::/job\n", mounts=[mount],
                     files={"/mnt/cgroup v2/job/cpu.max": "300000 100000"})
    assert _cpus_from(root, 8) == 3


# -- cgroup v1 ---------------------------------------------------------------------------

@pytest.mark.parametrize(("quota", "period", "expected"), [
    ("200000", "100000", 2),
    ("150000", "100000", 1),
    ("5000", "100000", 1),
    ("-1", "100000", 6),      # no limit
    ("bogus", "100000", 6),   # unreadable: ignored
    ("100000", "0", 6),
])
def test_v1_cfs_quota(tmp_path: Path, quota: str, period: str, expected: int) -> None:
    assert _cpus_from(v1_tree(tmp_path, quota, period), 6) == expected


def test_v1_nested_cgroup_path(tmp_path: Path) -> None:
    base = "/sys/fs/cgroup/cpu"
    root = make_tree(
        tmp_path,
        cgroup="3:cpu:/batch/job7\n2:cpuacct:/batch/job7\n",
        mounts=["33 31 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu"],
        files={f"{base}/batch/cpu.cfs_quota_us": "400000",
               f"{base}/batch/cpu.cfs_period_us": "100000",
               f"{base}/batch/job7/cpu.cfs_quota_us": "-1",
               f"{base}/batch/job7/cpu.cfs_period_us": "100000"},
    )
    assert _cpus_from(root, 32) == 4


def test_hybrid_v1_cpu_with_an_empty_unified_hierarchy(tmp_path: Path) -> None:
    # systemd's hybrid layout: controllers on v1, a v2 hierarchy without cpu.max.
    root = make_tree(
        tmp_path,
        cgroup="1:cpu:/\n2:cpuacct:/\n0::/\n",
        mounts=["32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu",
                "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw"],
        files={"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "300000",
               "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"},
    )
    assert _cpus_from(root, 8) == 3


def test_v1_controller_not_mounted_is_ignored(tmp_path: Path) -> None:
    root = make_tree(tmp_path, cgroup="4:memory:/x\n",
                     mounts=["35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory"],
                     files={"/sys/fs/cgroup/memory/x/cpu.cfs_quota_us": "100000",
                            "/sys/fs/cgroup/memory/x/cpu.cfs_period_us": "100000"})
    assert _cpus_from(root, 8) == 8


# -- affinity and fallbacks --------------------------------------------------------------

def test_quota_larger_than_affinity(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "/big", {"/big": "1600000 100000"})
    assert _cpus_from(root, 4) == 4


def test_missing_files_mean_affinity(tmp_path: Path) -> None:
    assert _cpus_from(tmp_path, 5) == 5


def test_cgroup_without_limit_files_means_affinity(tmp_path: Path) -> None:
    root = v2_tree(tmp_path, "/a/b", {})
    assert _cpus_from(root, 3) == 3


def test_never_below_one(tmp_path: Path) -> None:
    assert _cpus_from(tmp_path, 0) == 1


def test_fallback_to_sys_fs_cgroup_v2(tmp_path: Path) -> None:
    root = make_tree(tmp_path, files={"/sys/fs/cgroup/cpu.max": "200000 100000"})
    assert _cpus_from(root, 8) == 2


def test_fallback_to_sys_fs_cgroup_v1(tmp_path: Path) -> None:
    root = make_tree(tmp_path, files={
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "100000",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000",
    })
    assert _cpus_from(root, 8) == 1


def test_malformed_proc_files_are_ignored(tmp_path: Path) -> None:
    root = make_tree(tmp_path, cgroup="garbage\n\n0\n", mounts=["short line", "a - b"],
                     files={"/sys/fs/cgroup/cpu.max": "max"})
    assert _cpus_from(root, 7) == 7


def test_cpus_on_this_machine() -> None:
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    n = wp.cpus()
    assert isinstance(n, int)
    assert 1 <= n <= allowed


# -- memory_limit -----------------------------------------------------------------------

GIB = 2**30
RAM = 16 * GIB  # the physical memory the fake machines have
V1_MEMORY_MOUNT = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory"


def v2_memory_tree(root: Path, cgroup_path: str, memory_max: dict[str, str]) -> Path:
    files = {f"/sys/fs/cgroup{d.rstrip('/')}/memory.max": v for d, v in memory_max.items()}
    return make_tree(root, cgroup=f"0::{cgroup_path}\n", mounts=[V2_MOUNT], files=files)


def test_v2_memory_max_of_our_cgroup(tmp_path: Path) -> None:
    root = v2_memory_tree(tmp_path, "/app.slice/app.service",
                          {"/app.slice/app.service": str(2 * GIB)})
    assert memory_limit_from(root, RAM) == (
        2 * GIB, CgroupDir(2, root / "sys/fs/cgroup/app.slice/app.service"))


def test_v2_nested_limits_the_tightest_binds(tmp_path: Path) -> None:
    root = v2_memory_tree(tmp_path, "/a/b/c", {"/a": str(GIB), "/a/b": "max",
                                               "/a/b/c": str(3 * GIB)})
    assert memory_limit_from(root, RAM) == (GIB, CgroupDir(2, root / "sys/fs/cgroup/a"))


def test_v2_no_limit_anywhere_is_the_physical_memory(tmp_path: Path) -> None:
    root = v2_memory_tree(tmp_path, "/a/b", {"/a": "max", "/a/b": "max"})
    assert memory_limit_from(root, RAM) == (RAM, None)


def test_a_limit_above_the_physical_memory_is_the_physical_memory(tmp_path: Path) -> None:
    root = v2_memory_tree(tmp_path, "/a", {"/a": str(64 * GIB)})
    assert memory_limit_from(root, RAM) == (RAM, None)


def test_v1_memory_limit_in_bytes(tmp_path: Path) -> None:
    mount = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory"
    root = make_tree(tmp_path, cgroup="4:memory:/docker/abc\n3:cpu:/docker/abc\n",
                     mounts=[mount],
                     files={"/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912"})
    assert memory_limit_from(root, RAM) == (
        512 * 2**20, CgroupDir(1, root / "sys/fs/cgroup/memory"))


def test_v1_nested_and_unlimited(tmp_path: Path) -> None:
    # v1 writes a number near 2**63 for "no limit".
    base = "/sys/fs/cgroup/memory"
    root = make_tree(tmp_path, cgroup="4:memory:/batch/job7\n", mounts=[V1_MEMORY_MOUNT],
                     files={f"{base}/memory.limit_in_bytes": "9223372036854771712",
                            f"{base}/batch/memory.limit_in_bytes": str(4 * GIB),
                            f"{base}/batch/job7/memory.limit_in_bytes": "9223372036854771712"})
    assert memory_limit_from(root, RAM) == (4 * GIB, CgroupDir(1, root / f"{base[1:]}/batch"))


def test_hybrid_v1_memory_with_an_empty_unified_hierarchy(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path, cgroup="4:memory:/x\n1:cpu:/\n0::/\n",
        mounts=[V1_MEMORY_MOUNT, "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw"],
        files={"/sys/fs/cgroup/memory/x/memory.limit_in_bytes": str(3 * GIB)})
    assert memory_limit_from(root, RAM)[0] == 3 * GIB


def test_memory_fallback_to_sys_fs_cgroup(tmp_path: Path) -> None:
    v2 = make_tree(tmp_path / "v2", files={"/sys/fs/cgroup/memory.max": str(GIB)})
    v1 = make_tree(tmp_path / "v1",
                   files={"/sys/fs/cgroup/memory/memory.limit_in_bytes": str(2 * GIB)})
    assert memory_limit_from(v2, RAM)[0] == GIB
    assert memory_limit_from(v1, RAM)[0] == 2 * GIB


@pytest.mark.parametrize("text", ["", "max", "-1", "bogus", "1.5e9"])
def test_unreadable_memory_limits_are_ignored(tmp_path: Path, text: str) -> None:
    root = v2_memory_tree(tmp_path, "/a", {"/a": text})
    assert memory_limit_from(root, RAM) == (RAM, None)


def test_memory_limit_on_this_machine() -> None:
    limit = wp.memory_limit()
    assert isinstance(limit, int)
    assert 0 < limit <= physical_memory()


# -- io_workers --------------------------------------------------------------------------

@pytest.mark.parametrize(("throughput", "latency", "expected"), [
    (100, 0.25, 25),
    (10, 0.3, 3),        # 3.0000000000000004 in floating point: still 3
    (1000, 0.01, 10),
    (7, 0.5, 4),         # 3.5 -> 4: round up, or the rate is missed
    (0.1, 0.1, 1),       # at least one worker
    (1e6, 2.0, 2_000_000),
])
def test_io_workers(throughput: float, latency: float, expected: int) -> None:
    assert wp.io_workers(throughput, latency) == expected
    assert wp.io_workers(throughput=throughput, latency=latency) == expected


@pytest.mark.parametrize(("throughput", "latency", "message"), [
    (0, 1.0, "throughput must be > 0, got 0"),
    (-5, 1.0, "throughput must be > 0, got -5"),
    (math.nan, 1.0, "throughput must be > 0, got nan"),
    (math.inf, 1.0, "throughput must be finite, got inf"),
    (10, 0, "latency must be > 0, got 0"),
    (10, -0.5, "latency must be > 0, got -0.5"),
    (10, math.inf, "latency must be finite, got inf"),
])
def test_io_workers_rejects(throughput: float, latency: float, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        wp.io_workers(throughput, latency)
