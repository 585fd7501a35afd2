"""workpool run from a script: a joblog, then --resume-failed reruns only the failures."""

import subprocess
import sys
import tempfile
from pathlib import Path


def workpool_run(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "workpool", "run", *args],
                          check=False, **kwargs)


with tempfile.TemporaryDirectory() as tmp:
    joblog = Path(tmp, "jobs.tsv")
    # A job fails while the file `ready` is missing, for arguments 2 and 4.
    command = ["-k", "--joblog", str(joblog), "test -e ready || test $(({} % 2)) = 1",
               ":::", "1", "2", "3", "4", "5"]
    first = workpool_run(*command, cwd=tmp)
    print("first run: exit status", first.returncode, "(the number of failed jobs)")
    for line in joblog.read_text().splitlines():
        seq, _, _, _, _, _, exitval, _, cmd = line.split("\t")
        print(f"  {seq:>3}  {exitval:>7}  {cmd}")

    Path(tmp, "ready").touch()
    again = workpool_run("--resume-failed", *command, cwd=tmp)
    print("--resume-failed: exit status", again.returncode)
    print("  reran jobs", [line.split("\t")[0] for line in
                           joblog.read_text().splitlines()[6:]])

dry = workpool_run("--dry-run", "convert {} {.}.png", ":::", "my photo.jpg",
                   capture_output=True, text=True)
print("--dry-run:", dry.stdout, end="")
