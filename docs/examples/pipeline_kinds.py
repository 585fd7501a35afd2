"""Pipeline: thread, process and async stages; batch, unbatch, flat_map; on_error."""

import asyncio

import workpool as wp


async def lookup(n):                     # an async stage: coroutines on one event loop
    await asyncio.sleep(0.001)
    return n


def words(n):                            # flat_map: one item in, several out
    return [n] * (n % 3)


def reciprocal(n):
    return 1000 // (n - 7)               # fails for 7


def crunch(batch):                       # a process stage: every CPU
    return [reciprocal(x) for x in batch]


if __name__ == "__main__":
    pipe = (wp.Pipeline(range(20))
            .map(lookup, workers=50, kind="async")
            .flat_map(words)
            .batch(4)
            .map(crunch, workers=2, kind="process", on_error="collect")  # per batch
            .unbatch())
    try:
        print(len(list(pipe)))
    except wp.ItemsFailed as failed:     # raised after everything else went through
        print(len(failed.errors), "failed:", type(failed.errors[0].error).__name__)
        print("report:", failed.report.status)

    report = (wp.Pipeline(range(20))
              .map(lookup, workers=50, kind="async")
              .map(reciprocal, kind="process", on_error="skip")  # 7 fails: dropped
              .run())
    print(report.stage("map(reciprocal)").errors, "skipped,", report.items, "out")
