"""Pipeline: stages on workers of their own, bounded buffers between them."""

import workpool as wp


def fetch(n):
    wp.current().sleep(0.001)           # stands for I/O: threads
    return f"page {n}"


def parse(page):
    return int(page.split()[1])         # stands for CPU work


def is_even(n):
    return n % 2 == 0


pipe = (wp.Pipeline(range(100))
        .map(fetch, workers=16)
        .map(parse, workers=2)
        .filter(is_even)
        .batch(10))
batches = list(pipe)                    # or: for batch in pipe: ...
print(len(batches), sum(len(b) for b in batches))

report = pipe.run()                     # run it again, for its report
print(report.status, report.items_read, [s.name for s in report.stages])
print(report.stage("map(fetch)").items_out)
