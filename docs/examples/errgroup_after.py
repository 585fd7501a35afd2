"""workpool: Group(limit=8) is errgroup with SetLimit."""

import threading

import workpool as wp

urls = [f"https://example.test/{n}" for n in range(20)]


def fetch(url):
    ctx = wp.current()  # the group's context
    ctx.sleep(0.01)  # wakes early once the group is cancelled
    ctx.checkpoint()  # then raises wp.Cancelled
    if url.endswith("/13"):
        raise ConnectionError(url)
    return url.rsplit("/", 1)[1]


# Wait() gives the first error; the block raises them all.
try:
    with wp.Group(limit=8) as g:
        for url in urls:
            g.go(fetch, url)  # blocks while 8 run
except ExceptionGroup as eg:
    print("failed:", [str(e) for e in eg.exceptions])

gate = threading.Event()


def wait_for_gate(n):
    gate.wait(timeout=5)
    return n


with wp.Group(limit=2) as g:
    first = g.go(wait_for_gate, 1)  # a Future
    g.go(wait_for_gate, 2)
    try:
        g.go_nowait(wait_for_gate, 3)  # TryGo
    except wp.WouldBlock:
        print("limit reached")
    gate.set()
print(first.result(), g.results())  # results in go order
