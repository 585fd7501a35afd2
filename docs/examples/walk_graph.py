"""walk with key=: a dependency graph with cycles; each package is visited once."""

import workpool as wp

REQUIRES = {                            # app -> web -> http -> tls -> http: a cycle
    "app": ["web", "db"],
    "web": ["http", "templates"],
    "db": ["pool", "log"],
    "http": ["tls", "log"],
    "tls": ["http", "crypto"],
    "templates": ["log"],
    "pool": ["db"],                     # another cycle
    "log": [],
    "crypto": [],
}


def resolve(name):
    return name, REQUIRES[name]        # (result, children)


with wp.walk(resolve, ["app"], key=lambda name: name) as packages:
    needed = sorted(packages)
print(needed)
stats = packages.statistics()
print("visited:", stats.visited, "deepest:", stats.max_depth)
