"""ThreadPool: what a failed item does under each on_error."""

import workpool as wp


def invert(x):
    return 1 / x


with wp.ThreadPool(4) as pool:
    try:
        list(pool.map(invert, [1, 0, 2]))           # "raise": the first error, in order
    except ZeroDivisionError as exc:
        print("raise:", exc)

    for outcome in pool.map(invert, [1, 0, 2], on_error="return"):
        print("return:", outcome)                    # wp.Value(...) or wp.Error(...)

    print("skip:", list(pool.map(invert, [1, 0, 2], on_error="skip")))

    try:
        for x in pool.map(invert, [1, 0, 2, 0], on_error="collect"):
            print("collect got", x)
    except wp.ItemsFailed as failed:                 # every failure, at the end
        print("collect:", [f.item for f in failed.errors])
