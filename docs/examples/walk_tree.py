"""walk: every directory of a tree, listed on 8 threads, with the bytes each holds."""

import os
import tempfile

import workpool as wp


def scan(path):
    """One directory: (its path and the bytes of its files, its subdirectories)."""
    size, subdirs = 0, []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                size += entry.stat().st_size
    return (path, size), subdirs        # (result, children)


with tempfile.TemporaryDirectory() as top:
    for d in ["src/app", "src/lib/util", "docs", "tests"]:
        os.makedirs(os.path.join(top, d))
    for f, text in [("README", "hi\n"), ("src/app/main.py", "print()\n"),
                    ("src/lib/util/x.py", "x = 1\n"), ("docs/index.md", "# docs\n")]:
        with open(os.path.join(top, f), "w") as out:
            out.write(text)

    with wp.walk(scan, [top], workers=8) as dirs:   # results in completion order
        sizes = {os.path.relpath(path, top): size for path, size in dirs}
    for path in sorted(sizes):
        print(f"{path:14} {sizes[path]:3} bytes")
    stats = dirs.statistics()
    print("directories:", stats.visited, "deepest:", stats.max_depth, "failed:", stats.failed)
