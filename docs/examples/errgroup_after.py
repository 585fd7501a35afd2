"""workpool: Group(limit=8) is errgroup with SetLimit."""

import threading

import workpool as wp

urls = [f"https://example.test/{n}" for n in range(20)]


def fetch(url):
    ctx = wp.current()                   # the group's context
    ctx.sleep(0.01)                      # wakes early if the group is cancelled
    ctx.checkpoint()                     # raises wp.Cancelled once it is
    if url.endswith("/13"):
        raise ConnectionError(url)
    return url.rsplit("/", 1)[1]


try:
    with wp.Group(limit=8) as g:         # g.go blocks while 8 run
        for url in urls:
            g.go(fetch, url)             # returns a concurrent.futures.Future
except ExceptionGroup as eg:             # Wait(): every failure, not only the first
    print("failed:", [str(e) for e in eg.exceptions])

gate = threading.Event()


def wait_for_gate(n):
    gate.wait(timeout=5)
    return n


with wp.Group(limit=2) as g:
    first = g.go(wait_for_gate, 1)
    g.go(wait_for_gate, 2)
    try:
        g.go_nowait(wait_for_gate, 3)    # TryGo: raises instead of waiting
    except wp.WouldBlock:
        print("limit reached")
    gate.set()
print(first.result(), g.results())      # a future per task; results in go order
