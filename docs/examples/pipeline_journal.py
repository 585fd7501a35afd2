"""Pipeline: a journal makes a run resumable; a transactional sink is exactly-once."""

import os
import sqlite3
import tempfile

import workpool as wp

broken = True                            # the first run meets a failure at item 60
fetched = []                             # the items fetch ran on


def fetch(n):
    fetched.append(n)
    if broken and n == 60:
        raise ConnectionError("the service went away")
    return (n, n * n)


def save(db: sqlite3.Connection, rows):
    # Runs in the journal's own transaction: the rows and the keys commit together.
    db.execute("CREATE TABLE IF NOT EXISTS squares (n INTEGER PRIMARY KEY, sq INTEGER)")
    db.executemany("INSERT INTO squares VALUES (?, ?)", rows)


def pipeline(path):
    return (wp.Pipeline(range(100), journal=path, key=str)
            .map(fetch, workers=4)
            .batch(10)
            .each(save, transactional=True))


with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "run.sqlite")
    try:
        pipeline(path).run()
    except ConnectionError as exc:
        print("first run failed:", exc)
    broken = False
    fetched.clear()
    report = pipeline(path).run()        # skips what the first run recorded
    print(report.status, "- skipped + fetched again:", report.resumed + len(fetched))
    db = sqlite3.connect(path)
    print("rows:", db.execute("SELECT COUNT(*), SUM(sq) FROM squares").fetchone())
    db.close()
