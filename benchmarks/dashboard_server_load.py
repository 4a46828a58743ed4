"""The live dashboard under many parallel requests (2-core CPU figures in the report).

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/dashboard_server_load.py [--requests 200]``.
Serves a small test study (tests/results_tests/_studies.MIXED) on 127.0.0.1, sends
``--requests`` parallel ``GET /data.json`` and as many ``GET /`` (the page, plotly inline), and
prints the slowest and the median answer time and how often the study view was computed.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pikenas.results.dashboard._server as server_module
from tests.results_tests._studies import MIXED, make_run


def _timed_get(port: int, path: str) -> float:
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 200, response.status
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    computed: list[int] = []
    real = server_module.dashboard_data

    def counted(*a: Any, **k: Any) -> dict[str, Any]:
        computed.append(1)
        return real(*a, **k)

    server_module.dashboard_data = counted  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        make_run(run, MIXED)
        server = server_module.serve(run, port=0)
        port = int(server._httpd.server_address[1])
        try:
            for path in ("/data.json", "/"):
                with ThreadPoolExecutor(args.requests) as pool:
                    count = args.requests
                    times = list(pool.map(_timed_get, [port] * count, [path] * count))
                print(f"{args.requests} parallel GET {path}: slowest {max(times):.2f} s, "
                      f"median {statistics.median(times):.2f} s")
        finally:
            server.shutdown()
    print(f"study view computed {len(computed)} time(s)")


if __name__ == "__main__":
    main()
