"""Prometheus: a pool with metrics= is scraped at /metrics, read in this process."""

import urllib.request

import workpool as wp
from workpool.exporters import prometheus


def fetch(n):
    if n % 10 == 0:
        raise ValueError(f"bad item {n}")
    return n


server, thread = prometheus.start_http_server(0)      # 0: any free port
url = f"http://127.0.0.1:{server.server_port}/metrics"
try:
    with wp.ThreadPool(4, metrics="fetch") as pool:   # the series' pool label
        results = list(pool.map(fetch, range(100), on_error="skip"))
        with urllib.request.urlopen(url, timeout=5) as response:
            scrape = response.read().decode()
finally:
    server.shutdown()
    server.server_close()

for line in scrape.splitlines():
    if line.startswith(("workpool_tasks_total", "workpool_queue_depth",
                        "workpool_concurrency_limit", "workpool_pool_info")):
        print(line)
