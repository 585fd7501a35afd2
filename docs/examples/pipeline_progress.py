"""Pipeline: the live view, and the report it ends with."""

import workpool as wp


def fetch(n):
    wp.current().sleep(0.002)
    return n


def parse(n):
    wp.current().sleep(0.004)            # the slowest stage per worker
    return n * 2


def save(batch):
    pass                                 # stands for a database write


report = (wp.Pipeline(range(300))
          .map(fetch, workers=8)
          .map(parse, workers=2)
          .batch(50)
          .each(save)
          .run(progress=True))           # a live table in a terminal, lines otherwise
print(report)
print("bottleneck:", report.bottleneck.name)
