"""walk: what a node that raises does under each on_error (its children are not visited)."""

import workpool as wp

TREE = {"/": ["/etc", "/home", "/root"], "/etc": ["/etc/ssl"], "/home": ["/home/ann"],
        "/root": ["/root/.ssh"], "/etc/ssl": [], "/home/ann": [], "/root/.ssh": []}


def listdir(path):
    if path == "/root":
        raise PermissionError(f"cannot read {path}")
    return path, TREE[path]


try:
    with wp.walk(listdir, ["/"]) as paths:          # "raise": the walk stops
        list(paths)
except PermissionError as exc:
    print("raise:", exc)

with wp.walk(listdir, ["/"], on_error="return") as outcomes:
    errors = [o for o in outcomes if isinstance(o, wp.Error)]   # others: wp.Value
print("return:", errors)

with wp.walk(listdir, ["/"], on_error="skip") as paths:
    print("skip:", sorted(paths), "failed:", paths.statistics().failed)

found = []
try:
    with wp.walk(listdir, ["/"], on_error="collect") as paths:
        found.extend(paths)
except wp.ItemsFailed as failed:                    # at the end, after every result
    print("collect:", len(found), "results, then", failed)
