"""Group: Go's errgroup with SetLimit, in threads."""

import threading

import workpool as wp

lock = threading.Lock()
running = peak = 0


def notify(user):
    global running, peak
    with lock:
        running += 1
        peak = max(peak, running)
    wp.current().sleep(0.01)            # stands for a call to another service
    with lock:
        running -= 1
    return f"notified {user}"


with wp.Group(limit=3) as g:            # at most 3 at once; leaving waits for all
    for user in ["ann", "bob", "cy", "dee", "eve"]:
        g.go(notify, user)
print(g.results())                       # in go order
print("at most 3 at once:", peak <= 3)


def check(n):
    if n == 2:
        raise ValueError(f"item {n} is bad")
    wp.current().sleep(5)               # cancelled by the first failure: wakes at once
    return n


try:
    with wp.Group(limit=4) as g:
        for n in range(4):
            g.go(check, n)
except ExceptionGroup as eg:             # every real failure; cancellations are not
    print(eg.message, [str(e) for e in eg.exceptions])
