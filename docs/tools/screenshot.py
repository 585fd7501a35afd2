"""Open the built site in a headless browser and screenshot its main pages.

    python docs/tools/screenshot.py [--site site] [--out DIR] [--chromium PATH]

Serves ``site/`` (``make docs`` builds it) on 127.0.0.1 at a free port, loads each
main page in headless Chromium (playwright; a system chromium is used when given or
found, since playwright's own browser download may be unavailable), checks that it
rendered (its title, its heading, no failed request for the page's own files, and
the API reference's entries), and writes a PNG of each into ``--out``; then opens
the site from disk (``file://``) and follows a link, as a reader offline would.
Exits 1 if a page did not render. A developer tool, not part of the test suite nor
of any extra: ``pip install playwright``, then a Chromium (``apt-get install chromium``,
found on PATH, or ``python -m playwright install chromium``).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

# (page, text its main heading must contain, a selector that must be on the page)
PAGES = (
    ("index.html", "workpool", "table"),
    ("getting-started.html", "Getting started", "pre code"),
    ("guides/thread-pool.html", "ThreadPool", "pre code"),
    ("guides/pipelines.html", "Pipelines", "pre code"),
    ("coming-from/concurrent-futures.html", "concurrent.futures", ".grid pre"),
    ("architecture.html", "How workpool is built", "pre"),
    ("reference/pools.html", "Pools", "[id='workpool.ThreadPool']"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=Path("site"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/workpool-docs-shots"))
    parser.add_argument("--chromium", default=shutil.which("chromium")
                        or shutil.which("chromium-browser"))
    args = parser.parse_args()
    if not (args.site / "index.html").exists():
        parser.error(f"{args.site}/index.html not found: run `make docs` first")
    args.out.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_QuietHandler, directory=str(args.site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, name="docs-server")
        thread.start()
        try:
            return _shoot(f"http://127.0.0.1:{server.server_address[1]}/", args)
        finally:
            server.shutdown()
            thread.join()


def _shoot(base: str, args: argparse.Namespace) -> int:
    failures = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            broken: list[str] = []
            page.on("response", lambda r: broken.append(r.url) if r.status >= 400 else None)
            for path, heading, selector in PAGES:
                broken.clear()
                page.goto(base + path, wait_until="networkidle")
                h1 = page.locator("article h1").first.inner_text()
                problems = [f"heading {h1!r}"] if heading not in h1 else []
                if page.locator(selector).count() == 0:
                    problems.append(f"no {selector}")
                problems += [f"failed {url}" for url in broken if url.startswith(base)]
                shot = args.out / (path.replace("/", "-").removesuffix(".html") + ".png")
                page.screenshot(path=str(shot), full_page=False)
                print(f"{'FAIL' if problems else 'ok  '} {path:40} {shot}"
                      + (f"  ({'; '.join(problems)})" if problems else ""))
                failures += bool(problems)
            # Offline: the same files open straight from disk, links between pages too.
            page.goto((args.site.resolve() / "index.html").as_uri())
            page.locator("a[href='getting-started.html']").first.click()
            offline = page.locator("article h1").first.inner_text()
            ok = offline.startswith("Getting started")
            print(f"{'ok  ' if ok else 'FAIL'} file:// index.html -> {offline!r}")
            failures += not ok
        finally:
            browser.close()
    return 1 if failures else 0


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
