"""Memory and throughput of a delivery's ZIP archive download (workspaces/bag.py, archive.py).

    python benchmarks/archive_memory_bench.py [--files 2000] [--kb 512] [--rounds 3] [--keep]

Starts a throwaway embedded PostgreSQL, migrates it, writes N files of random bytes into
local storage in a temporary directory as one finished delivery (rows for the dataset,
studies, series, instances, order, delivery and its files; manifest.csv written by the
delivery's own code), then downloads the archive through Django's test client as the
buyer, `--rounds` times, reading the streamed response and throwing the bytes away as a
socket would. Prints, per round, MB/s and the growth of the process's resident memory
(sampled every 64 chunks, against the RSS just before the request), then the median and
range; then one more round under tracemalloc for the peak of Python allocations. The
first round also warms the page cache; HAZARDS says to read the later ones. Numbers
only: no assertions (not part of `make test`).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--kb", type=int, default=512, help="size of each file in KiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="archive-bench-"))
    from config.embedded import ensure_postgres, stop_postgres

    url = ensure_postgres(work / "postgres", durable=False)
    try:
        return _run(args, work, url)
    finally:  # also on Ctrl-C: no PostgreSQL left running
        stop_postgres(work / "postgres")
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def _setup(args: argparse.Namespace, work: Path):  # noqa: ANN202 - (user, delivery)
    from catalog.models import Dataset, Instance, Series, Study
    from marketplace.models import Organization, User
    from orders.models import Order
    from workspaces.grants import delivery_grant_buyer
    from workspaces.models import Delivery, DeliveryFile
    from workspaces.services import _write_manifest

    provider = Organization.objects.create(name="Bench provider", kind=Organization.Kind.PROVIDER)
    dataset = Dataset.objects.create(provider=provider, title="Bench dataset")
    buyer = User.objects.create_user(username="bench-buyer", email="bench@example.org", password=None)
    order = Order.objects.create(buyer=buyer, currency="EUR", payment_method=Order.PaymentMethod.FREE)
    delivery = Delivery.objects.create(order=order, user=buyer, status=Delivery.Status.DONE)
    delivery_grant_buyer(delivery)
    # 50 files a series, 4 series a study: the usual folder depth and fan-out.
    root = work / "var" / "storage"
    instances, files, total = [], [], 0
    series_obj = None
    for i in range(args.files):
        if i % 200 == 0:
            study = Study.objects.create(dataset=dataset, study_uid=f"2.25.{i // 200 + 1}",
                                         pseudo_patient_id=f"P{i // 200}")
        if i % 50 == 0:
            series_obj = Series.objects.create(study=study, series_uid=f"{study.study_uid}.{i // 50 + 1}")
        data = os.urandom(args.kb * 1024)
        path = f"{study.study_uid}/{series_obj.series_uid}/{series_obj.series_uid}.{i + 1}.dcm"
        key = f"{delivery.prefix}/{path}"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
        sha256 = hashlib.sha256(data).hexdigest()
        instances.append(Instance(dataset=dataset, series=series_obj, sop_uid=f"{series_obj.series_uid}.{i + 1}",
                                  storage_key=key, size_bytes=len(data), sha256=sha256))
        files.append((path, key, len(data), sha256))
        total += len(data)
    Instance.objects.bulk_create(instances, batch_size=1000)
    DeliveryFile.objects.bulk_create(
        [DeliveryFile(delivery=delivery, instance=inst, path=p, storage_key=k, size_bytes=s, sha256=h)
         for inst, (p, k, s, h) in zip(instances, files)], batch_size=1000)
    Delivery.objects.filter(pk=delivery.pk).update(total_files=len(files), done_files=len(files), total_bytes=total)
    delivery.refresh_from_db()
    _write_manifest(delivery)
    return buyer, delivery


def _download(client, url: str, *, sample_rss: bool) -> tuple[int, float, int]:  # noqa: ANN001
    """(archive bytes, seconds, RSS growth in bytes) of one download read to the end."""
    import psutil

    process = psutil.Process()
    baseline = peak = process.memory_info().rss
    t0 = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    size = 0
    for n, chunk in enumerate(response.streaming_content):
        size += len(chunk)
        if sample_rss and n % 64 == 0:
            peak = max(peak, process.memory_info().rss)
    seconds = time.perf_counter() - t0
    response.close()
    if sample_rss:
        peak = max(peak, process.memory_info().rss)
    return size, seconds, peak - baseline


def _run(args: argparse.Namespace, work: Path, url: str) -> int:
    os.environ.update(DATABASE_URL=url, VAR_DIR=str(work / "var"), DJANGO_SETTINGS_MODULE="config.settings",
                      DJANGO_DEBUG="True", REDIS_URL="redis://127.0.0.1:9/0")  # no broker is used
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import reset_queries
    from django.test import Client
    from django.urls import reverse

    call_command("migrate", verbosity=0)
    t0 = time.perf_counter()
    buyer, delivery = _setup(args, work)
    payload_mb = delivery.total_bytes / 1e6
    print(f"# {args.files:,} files x {args.kb} KiB = {payload_mb:,.0f} MB payload; set up in "
          f"{time.perf_counter() - t0:.1f} s; 2 shared cores; local storage")
    client = Client()
    client.force_login(buyer)
    target = reverse("delivery_archive", args=[delivery.pk])

    speeds, growths = [], []
    for round_no in range(1, args.rounds + 1):
        reset_queries()  # DEBUG keeps a capped query log; emptied so rounds start alike
        size, seconds, growth = _download(client, target, sample_rss=True)
        speeds.append(size / 1e6 / seconds)
        growths.append(growth / 2**20)
        print(f"round {round_no}: {size / 1e6:,.0f} MB archive in {seconds:.2f} s = {speeds[-1]:,.0f} MB/s; "
              f"RSS growth {growths[-1]:.1f} MiB")
    later_speeds = speeds[1:] or speeds
    later_growths = growths[1:] or growths
    print(f"median of rounds 2..{args.rounds}: {statistics.median(later_speeds):,.0f} MB/s "
          f"(range {min(later_speeds):,.0f}-{max(later_speeds):,.0f}); RSS growth "
          f"{statistics.median(later_growths):.1f} MiB (max {max(growths):.1f} MiB, all rounds)")

    tracemalloc.start()
    size, seconds, _ = _download(client, target, sample_rss=False)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"tracemalloc: peak Python allocations during one download {peak / 2**20:.1f} MiB "
          f"({size / 1e6:,.0f} MB streamed in {seconds:.2f} s under tracing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
