"""``python -m workpool``: the same as the ``workpool`` command."""

from workpool._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
