"""awalk: crawl a small site (a local http.server) with 10 requests at once."""

import asyncio
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urljoin, urlsplit

import workpool as wp

LINKS = {"/": ["/blog", "/about"], "/blog": ["/blog/1", "/blog/2", "/"],
         "/blog/1": ["/blog/2", "/about"], "/blog/2": ["/blog/1", "/missing"],
         "/about": ["/"]}


class Site(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path not in LINKS:
            self.send_error(404)
            return
        body = "".join(f'<a href="{link}">{link}</a>\n' for link in LINKS[self.path])
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):       # quiet
        pass


async def fetch(url):
    """GET one page: (its URL and status, the links on it)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"GET {parts.path} HTTP/1.0\r\n\r\n".encode())
    page = (await reader.read()).decode()
    writer.close()
    await writer.wait_closed()
    status = int(page.split()[1])
    return (url, status), [urljoin(url, link) for link in re.findall(r'href="([^"]+)"', page)]


async def main(site):
    async with wp.awalk(fetch, [site + "/"], workers=10, key=str) as pages:
        found = [page async for page in pages]
    for url, status in sorted(found):
        print(status, url.removeprefix(site))
    print("pages:", pages.statistics().visited)


server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
try:
    asyncio.run(main(f"http://127.0.0.1:{server.server_port}"))
finally:
    server.shutdown()
    server.server_close()
