"""Download throughput: the command-line client's ``fetch`` against curl, over the product's
web server.

    python benchmarks/fetch_bench.py [--files 300] [--size-kb 512] [--jobs 4] [--rounds 3]
                                     [--server gunicorn|runserver]

Starts a throwaway embedded PostgreSQL and Redis, migrates, builds the world of
delivery_bench.py (``--files`` DICOM instances of about ``--size-kb`` each, local storage),
places and approves one order, runs ``delivery_run`` and creates an API token (read,
download) for the buyer. Then serves the product on a free local port: gunicorn with gthread
workers as in the Dockerfile (2 workers × 4 threads here, for 2 cores), or Django's
runserver. Each round times, one after the other:

- fetch: ``python -m marketplace_client fetch ORDER DEST --jobs N --quiet`` (client/ on
  PYTHONPATH), which lists the files, asks for their download URLs, downloads, and checks
  every file's size and sha256 against the manifest before moving it into place.
- curl: the same files (data files, manifest.csv, certificate.json, certificate.pdf): their
  URLs from ``POST /api/orders/<id>/delivery/download-urls/`` (at most 500 paths a request),
  then one ``curl --parallel --parallel-max N -K config`` (url/output pairs, the bearer
  token as a header) when curl has --parallel, else curl on each file in turn. No checksums.
  The table shows curl with and without the URL requests; the ratio is against the former,
  which is the same work as fetch's minus verification.

The first round is a warm-up; medians of the rest. Numbers only: no timed assertions (not
part of ``make test``). Everything lives under a /tmp folder removed at the end; each
round's downloads are removed after it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import delivery_bench as bench  # noqa: E402 - the same world and helpers

ROOT = bench.ROOT
MAX_PATHS_PER_REQUEST = 500  # workspaces/api.py
DOCUMENTS = ("manifest.csv", "certificate.json", "certificate.pdf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--size-kb", type=int, default=512)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--server", choices=["gunicorn", "runserver"], default="gunicorn")
    args = parser.parse_args()

    from config.embedded import ensure_postgres, ensure_redis, stop_postgres, stop_redis

    work = Path(tempfile.mkdtemp(prefix="fetch-bench-", dir="/tmp"))
    server = None
    try:
        url = ensure_postgres(work / "postgres", durable=False)
        redis_url = ensure_redis(work / "redis", durable=False)
        bench._setup_django(work, url, redis_url, "")
        order_id, token, total_bytes, n_files = _order(args)
        port = _free_port()
        server = _serve(args.server, port, work)
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, token, order_id)
        return _run(args, work, base, token, order_id, total_bytes, n_files)
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


def _order(args: argparse.Namespace) -> tuple[int, str, int, int]:
    """A finished delivery of the bench dataset for a new buyer, and a token of theirs."""
    from marketplace.models import ApiToken
    from marketplace.tokens import api_token_create
    from orders.selectors import active_dua_template

    t0 = time.perf_counter()
    dataset, admin, _keys = bench._world(args.files, args.size_kb * 1024)
    seconds, delivery = bench._deliver(dataset, admin, active_dua_template(), 0)
    _token, secret = api_token_create(user=delivery.order.buyer, name="fetch bench",
                                      scopes=[ApiToken.Scope.READ, ApiToken.Scope.DOWNLOAD], expires=None)
    files = list(delivery.files.values_list("size_bytes", flat=True))
    print(f"# {len(files):,} files, {sum(files) / 1e6:,.0f} MB delivered (delivery {seconds:.1f} s), "
          f"set up in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} cores", flush=True)
    return delivery.order_id, secret, sum(files), len(files)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(kind: str, port: int, work: Path) -> subprocess.Popen:
    env = dict(os.environ, DJANGO_SECURE_SSL_REDIRECT="False", API_USER_RATE="1000000/hour",
               API_ANON_RATE="1000000/hour")
    if kind == "gunicorn":
        command = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application",
                   "--bind", f"127.0.0.1:{port}", "--workers", "2", "--worker-class", "gthread",
                   "--threads", "4", "--timeout", "60"]
    else:
        command = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    log = open(work / "server.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _api(base: str, token: str, path: str, body: object | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}{path}", data=data, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json",
        **({"Content-Type": "application/json"} if data else {})})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _wait_ready(base: str, token: str, order_id: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            _api(base, token, f"/api/orders/{order_id}/delivery/")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _fetch(base: str, token: str, order_id: int, dest: Path, jobs: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "client"))
    t0 = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "marketplace_client", "fetch", str(order_id), str(dest),
                            "--url", base, "--token", token, "--jobs", str(jobs), "--quiet"], env=env,
                           stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    if code:
        print(f"  fetch exited with {code}", flush=True)
    return seconds


def _paths(base: str, token: str, order_id: int) -> list[str]:
    paths, page = [], 1
    while True:
        answer = _api(base, token, f"/api/orders/{order_id}/delivery/files/?page={page}&page_size=1000")
        paths += [row["path"] for row in answer["results"]]
        if not answer.get("next"):
            return paths + list(DOCUMENTS)
        page += 1


def _curl(base: str, token: str, order_id: int, dest: Path, jobs: int, parallel: bool,
          config: Path) -> tuple[float, float]:
    """(seconds with the URL requests, seconds of curl alone)."""
    t0 = time.perf_counter()
    paths = _paths(base, token, order_id)
    urls: dict[str, str] = {}
    for i in range(0, len(paths), MAX_PATHS_PER_REQUEST):
        answer = _api(base, token, f"/api/orders/{order_id}/delivery/download-urls/",
                      {"paths": paths[i:i + MAX_PATHS_PER_REQUEST]})
        urls.update(answer["urls"])
    lines = [f'header = "Authorization: Bearer {token}"']
    for path, url in urls.items():
        lines += [f'url = "{url}"', f'output = "{dest / path}"']
    config.write_text("\n".join(lines) + "\n")
    t1 = time.perf_counter()
    common = ["curl", "--silent", "--no-progress-meter", "--show-error", "--fail", "--create-dirs"]
    if parallel:
        code = subprocess.call([*common, "--parallel", "--parallel-max", str(jobs), "-K", str(config)])
    else:
        code = 0
        for path, url in urls.items():
            one = config.with_suffix(".one")
            one.write_text(f'header = "Authorization: Bearer {token}"\n')
            code |= subprocess.call([*common, "-K", str(one), "-o", str(dest / path), url])
    t2 = time.perf_counter()
    if code:
        print(f"  curl exited with {code}", flush=True)
    return t2 - t0, t2 - t1


def _curl_parallel() -> bool:
    try:
        return "--parallel" in subprocess.run(["curl", "--help", "all"], capture_output=True, text=True).stdout
    except OSError:
        return False


def _run(args: argparse.Namespace, work: Path, base: str, token: str, order_id: int, total_bytes: int,
         n_files: int) -> int:
    parallel = _curl_parallel()
    mb = total_bytes / 1e6
    print(f"# server {args.server} at {base}; --jobs {args.jobs}; curl "
          f"{'--parallel --parallel-max ' + str(args.jobs) if parallel else 'sequential (no --parallel)'}; "
          f"1 warm-up + {args.rounds} rounds", flush=True)
    fetches, curls, curls_only = [], [], []
    for round_no in range(args.rounds + 1):
        dest = work / f"fetch-{round_no}"
        os.sync()
        fetch_seconds = _fetch(base, token, order_id, dest, args.jobs)
        complete = sum(1 for p in dest.rglob("*") if p.is_file() and not p.name.endswith(".part"))
        shutil.rmtree(dest, ignore_errors=True)
        dest = work / f"curl-{round_no}"
        os.sync()
        curl_seconds, curl_only = _curl(base, token, order_id, dest, args.jobs, parallel, work / "curl.cfg")
        got = sum(1 for p in dest.rglob("*") if p.is_file())
        shutil.rmtree(dest, ignore_errors=True)
        label = "warm-up" if round_no == 0 else f"round {round_no}"
        print(f"  {label}: fetch {fetch_seconds:.2f} s ({complete} files), curl {curl_seconds:.2f} s "
              f"({curl_only:.2f} s without the URL requests; {got} files), "
              f"ratio {fetch_seconds / curl_seconds:.2f}", flush=True)
        if round_no:
            fetches.append(fetch_seconds)
            curls.append(curl_seconds)
            curls_only.append(curl_only)

    n = n_files + len(DOCUMENTS)
    print(f"{'what':24} {'files/s':>9} {'MB/s':>8} {'seconds (median, range)':>28}")
    for what, times in (("fetch (verified)", fetches), ("curl (URLs + download)", curls),
                        ("curl (download only)", curls_only)):
        med = statistics.median(times)
        print(f"{what:24} {n / med:9.0f} {mb / med:8.1f} {med:10.2f} ({min(times):.2f}-{max(times):.2f})")
    for what, base_times in (("curl (URLs + download)", curls), ("curl (download only)", curls_only)):
        ratio = statistics.median(fetches) / statistics.median(base_times)
        paired = sorted(f / c for f, c in zip(fetches, base_times))
        print(f"fetch / {what}: {ratio:.2f}x of the medians, {statistics.median(paired):.2f}x median of the "
              f"rounds ({paired[0]:.2f}-{paired[-1]:.2f}) (target <= 1.5x)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
