"""The memory readers of _core/memory.py against fake /proc and cgroup trees, and the
RSS of a real child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workpool._core.memory import cgroup_usage, oom_kill_count, rss_tree
from workpool._core.sizing import CgroupDir

PAGE = os.sysconf("SC_PAGE_SIZE")
V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate"
V1_MOUNT = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def statm(resident_pages: int) -> str:
    return f"5000 {resident_pages} 300 10 0 900 0\n"


# -- rss_tree -----------------------------------------------------------------------------

def test_rss_tree_follows_the_children_files(tmp_path: Path) -> None:
    # 100 has two threads; 101 (a child of its second thread) has a child of its own.
    root = write(tmp_path, {
        "/proc/100/statm": statm(10), "/proc/101/statm": statm(20),
        "/proc/102/statm": statm(30), "/proc/103/statm": statm(40),
        "/proc/100/task/100/children": "102 ", "/proc/100/task/105/children": "101",
        "/proc/101/task/101/children": "103", "/proc/102/task/102/children": "",
        "/proc/103/task/103/children": "",
        "/proc/999/statm": statm(1000),  # not ours
    })
    assert rss_tree(root, 100) == 100 * PAGE
    assert rss_tree(root, 101) == 60 * PAGE


def test_rss_tree_without_children_files_reads_each_parent(tmp_path: Path) -> None:
    root = write(tmp_path, {
        "/proc/100/statm": statm(10), "/proc/100/stat": "100 (python) S 1 100 100 0",
        "/proc/101/statm": statm(20), "/proc/101/stat": "101 (a) b) (c) R 100 100 100",
        "/proc/102/statm": statm(30), "/proc/102/stat": "102 (worker) S 101 100 100",
        "/proc/103/statm": statm(40), "/proc/103/stat": "103 (other) S 1 103 103",
        "/proc/104/stat": "104 (gone) Z 100 100 100",  # no statm: counted as 0
        "/proc/self/statm": statm(1),  # not a process number: skipped
    })
    assert rss_tree(root, 100) == 60 * PAGE


@pytest.mark.parametrize("text", [None, "", "garbage", "5000 x 1"])
def test_rss_tree_of_an_unreadable_process_is_none(tmp_path: Path, text: str | None) -> None:
    files = {"/proc/1/stat": "1 (init) S 0 1 1"}
    if text is not None:
        files["/proc/100/statm"] = text
    assert rss_tree(write(tmp_path, files), 100) is None


def test_rss_tree_counts_a_real_child() -> None:
    # The child holds 64 MB (zero-filled: every page resident) until its stdin closes.
    code = "import sys; b = bytearray(64 << 20); print('ready', flush=True); sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            own = rss_tree(Path("/"), os.getpid())
            alone = int(Path(f"/proc/{os.getpid()}/statm").read_text().split()[1]) * PAGE
            assert own is not None
            assert own - alone >= 64 << 20
        finally:
            assert child.stdin is not None
            child.stdin.close()
            assert child.wait(30) == 0


# -- cgroup_usage -------------------------------------------------------------------------

def test_v2_usage_is_current_less_inactive_file(tmp_path: Path) -> None:
    write(tmp_path, {"memory.current": "1000000\n",
                     "memory.stat": "anon 500000\nfile 400000\ninactive_file 300000\n"
                                    "active_file 100000\n"})
    assert cgroup_usage(CgroupDir(2, tmp_path)) == 700000


def test_v1_usage_is_usage_in_bytes_less_total_inactive_file(tmp_path: Path) -> None:
    write(tmp_path, {"memory.usage_in_bytes": "1000000\n",
                     "memory.stat": "inactive_file 10\ntotal_inactive_file 250000\n"})
    assert cgroup_usage(CgroupDir(1, tmp_path)) == 750000


def test_usage_without_memory_stat_is_current(tmp_path: Path) -> None:
    write(tmp_path, {"memory.current": "4096\n"})
    assert cgroup_usage(CgroupDir(2, tmp_path)) == 4096


def test_usage_never_below_zero(tmp_path: Path) -> None:
    write(tmp_path, {"memory.current": "100\n", "memory.stat": "inactive_file 200\n"})
    assert cgroup_usage(CgroupDir(2, tmp_path)) == 0


@pytest.mark.parametrize("text", [None, "", "max", "-5"])
def test_unreadable_usage_is_none(tmp_path: Path, text: str | None) -> None:
    if text is not None:
        write(tmp_path, {"memory.current": text})
    assert cgroup_usage(CgroupDir(2, tmp_path)) is None


# -- oom_kill_count -----------------------------------------------------------------------

def cgroup_tree(root: Path, membership: str, mount: str, files: dict[str, str]) -> Path:
    return write(root, {"/proc/self/cgroup": membership,
                        "/proc/self/mountinfo": mount + "\n", **files})


def test_v2_oom_kill_count_from_memory_events(tmp_path: Path) -> None:
    events = "low 0\nhigh 12\nmax 40\noom 3\noom_kill 2\noom_group_kill 0\n"
    root = cgroup_tree(tmp_path, "0::/app\n", V2_MOUNT,
                       {"/sys/fs/cgroup/app/memory.events": events})
    assert oom_kill_count(root) == 2


def test_v1_oom_kill_count_from_memory_oom_control(tmp_path: Path) -> None:
    control = "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n"
    root = cgroup_tree(tmp_path, "4:memory:/job\n", V1_MOUNT,
                       {"/sys/fs/cgroup/memory/job/memory.oom_control": control})
    assert oom_kill_count(root) == 5


def test_oom_kill_count_from_the_nearest_cgroup_that_has_one(tmp_path: Path) -> None:
    root = cgroup_tree(tmp_path, "0::/a/b\n", V2_MOUNT, {
        "/sys/fs/cgroup/a/memory.events": "oom 1\noom_kill 1\n",
        "/sys/fs/cgroup/memory.events": "oom_kill 9\n"})
    assert oom_kill_count(root) == 1


def test_oom_kill_count_unknown(tmp_path: Path) -> None:
    # A v1 kernel before 4.13: memory.oom_control without oom_kill.
    root = cgroup_tree(tmp_path, "4:memory:/job\n", V1_MOUNT, {
        "/sys/fs/cgroup/memory/job/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n"})
    assert oom_kill_count(root) is None
    assert oom_kill_count(tmp_path / "nothing") is None
