"""Peak memory of the web server while it streams a whole delivery as one archive.

    python benchmarks/archive_server_bench.py [--files 10000] [--size-kb 512] [--downloads 2]

Starts a throwaway embedded PostgreSQL and Redis, builds the world of delivery_bench.py
(``--files`` DICOM instances of about ``--size-kb`` each, local storage: 10,000 × 512 KB is
about 5 GB), delivers one order and signs its buyer in (a session row, as a browser login
leaves). Then serves the product with gunicorn as the Dockerfile does (gthread workers;
2 workers × 4 threads here) and downloads ``/workspace/deliveries/<id>/archive.zip`` with
curl into /dev/null, ``--downloads`` times one after the other, while sampling the resident
memory (VmRSS) of every gunicorn worker every 20 ms.

Prints, per download: bytes, seconds, MB/s, and each worker's RSS before, its peak during
the download and the growth; the target is a peak under 100 MB. Numbers only: no timed
assertions (not part of ``make test``). Everything lives under a /tmp folder removed at the
end.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import delivery_bench as bench  # noqa: E402 - the same world and helpers
import fetch_bench  # noqa: E402 - the same server

TARGET_MB = 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size-kb", type=int, default=512)
    parser.add_argument("--downloads", type=int, default=2)
    args = parser.parse_args()

    from config.embedded import ensure_postgres, ensure_redis, stop_postgres, stop_redis

    work = Path(tempfile.mkdtemp(prefix="archive-server-bench-", dir="/tmp"))
    server = None
    try:
        url = ensure_postgres(work / "postgres", durable=False)
        redis_url = ensure_redis(work / "redis", durable=False)
        bench._setup_django(work, url, redis_url, "")
        delivery_id, cookie, total = _delivery_and_session(args)
        port = fetch_bench._free_port()
        server = fetch_bench._serve("gunicorn", port, work)
        base = f"http://127.0.0.1:{port}"
        _wait_up(base)
        return _run(args, server, f"{base}/workspace/deliveries/{delivery_id}/archive.zip", cookie, total)
    finally:  # also on Ctrl-C: no server left running, no data left behind
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        stop_redis(work / "redis")
        stop_postgres(work / "postgres")
        shutil.rmtree(work, ignore_errors=True)


def _delivery_and_session(args: argparse.Namespace) -> tuple[int, str, int]:
    """A finished delivery of the bench dataset, the buyer's session cookie, its bytes."""
    from django.conf import settings
    from django.test import Client

    from orders.selectors import active_dua_template

    t0 = time.perf_counter()
    dataset, admin, _keys = bench._world(args.files, args.size_kb * 1024)
    seconds, delivery = bench._deliver(dataset, admin, active_dua_template(), 0)
    client = Client()
    client.force_login(delivery.order.buyer)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    total = sum(delivery.files.values_list("size_bytes", flat=True))
    print(f"# {delivery.files.count():,} files, {total / 1e6:,.0f} MB delivered (delivery {seconds:.1f} s), "
          f"set up in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} cores", flush=True)
    return delivery.pk, cookie, total


def _wait_up(base: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/", timeout=10).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _workers(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _Sampler(threading.Thread):
    """Each worker's highest VmRSS while running."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak = pids, {pid: _rss_mb(pid) for pid in pids}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], _rss_mb(pid))
            time.sleep(0.02)


def _run(args: argparse.Namespace, server: subprocess.Popen, url: str, cookie: str, total: int) -> int:
    pids = _workers(server.pid)
    print(f"# gunicorn master {server.pid}, workers {pids}; archive {url}", flush=True)
    worst = 0.0
    for n in range(1, args.downloads + 1):
        before = {pid: _rss_mb(pid) for pid in pids}
        sampler = _Sampler(pids)
        sampler.start()
        t0 = time.perf_counter()
        result = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                 "-H", f"Cookie: {cookie}", url], capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        sampler.done.set()
        sampler.join()
        status, size = result.stdout.split() if result.stdout else ("?", "0")
        print(f"  download {n}: HTTP {status}, {int(size) / 1e6:,.0f} MB of archive for {total / 1e6:,.0f} MB of "
              f"files in {seconds:.1f} s ({int(size) / 1e6 / seconds:,.0f} MB/s) {result.stderr.strip()}", flush=True)
        for pid in pids:
            growth = sampler.peak[pid] - before[pid]
            worst = max(worst, sampler.peak[pid])
            print(f"    worker {pid}: RSS {before[pid]:.1f} MB before, peak {sampler.peak[pid]:.1f} MB, "
                  f"growth {growth:+.1f} MB", flush=True)
    print(f"peak worker RSS {worst:.1f} MB (target < {TARGET_MB} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
