"""``python -m bench [options]``: the same as ``workpool bench [options]``."""

import sys

from workpool._cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
