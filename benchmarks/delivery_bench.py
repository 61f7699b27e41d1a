"""Delivery throughput: delivery_run against a plain copy and a plain read + write of the
same bytes.

    python benchmarks/delivery_bench.py [--instances 10000] [--size-kb 512]
                                        [--storage local|s3|both] [--rounds 3]

Starts a throwaway embedded PostgreSQL and Redis, migrates, builds the fixture world the
tests use (a provider, a published dataset of six ingested CT files, verified buyers), then
adds ``--instances`` DICOM instances of about ``--size-kb`` each to that dataset
(bulk_create rows pointing at stored objects). Delivery writes a fingerprinted copy per
buyer (workspaces/fingerprint.py, byte level in fingerprint_raw.py: split the header into
raw elements, remap the UIDs, add a private tag, write; pixel data copied raw) over
DELIVERY_COPY_THREADS threads (set it in the environment to compare), so the objects must
be DICOM: one template per series is made from an
ingested (de-identified) instance with uncompressed 16-bit random PixelData sized to reach
``--size-kb``, and each instance is that template with its own SOP Instance UID patched in
(same length, in the file meta and the dataset), so every object has its own bytes and
sha256.

Each round places and approves one order for a new buyer and times ``delivery_run``
(claim, read + fingerprint + write, file rows, manifest, certificate, done), then two
baselines over the same source objects, written to other keys:

- plain copy: a shutil.copyfile loop on local storage, a boto3 ``copy_object`` loop on S3
  (server-side). This was the target while delivery copied bytes as they were; a copy that
  is rewritten per buyer cannot be a server-side copy, so on S3 this ratio is not one
  delivery can reach.
- read + write: read each object whole and write it to another key through
  storage.put. The fair lower bound for a per-buyer rewritten copy: delivery does
  this plus the parse and rewrite.

Rounds are interleaved (this machine's speed drifts), dirty pages are flushed before each
timed run and the first round is a warm-up; the table gives medians of the rest with their
range, and delivery time / baseline time (of the medians, and the median of each round's).

S3 is a moto server over HTTP in its own process (as in tests/embedded_services.py), so
it holds the objects in its memory, not ours. With ``--storage both`` each storage runs in
its own child process, so each peak RSS (ru_maxrss, of this process only) is its own.
BENCH_PROFILE=1 prints a cProfile table of each delivery run (its times are then not
comparable). Numbers only: no timed assertions (not part of ``make test``). Generated data lives under
a /tmp folder removed at the end; delivered copies are removed after each round.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # tests/factories: the same fixture world
BUCKET = "delivery-bench"

MOTO = r"""
import sys, time
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"http://{host}:{port}", flush=True)
sys.stdin.read()  # until the parent closes our stdin
server.stop()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--size-kb", type=int, default=512)
    parser.add_argument("--storage", choices=["local", "s3", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one more delivery")
    args = parser.parse_args()
    if args.storage == "both":
        code = 0
        for name in ("local", "s3"):
            code |= subprocess.call([sys.executable, __file__, "--instances", str(args.instances), "--size-kb",
                                     str(args.size_kb), "--storage", name, "--rounds", str(args.rounds),
                                     *(["--profile"] if args.profile else [])])
        return code

    from config.embedded import ensure_postgres, ensure_redis, stop_postgres, stop_redis

    work = Path(tempfile.mkdtemp(prefix="delivery-bench-", dir="/tmp"))
    moto = None
    try:
        url = ensure_postgres(work / "postgres", durable=False)
        redis_url = ensure_redis(work / "redis", durable=False)
        if args.storage == "s3":
            moto = subprocess.Popen([sys.executable, "-c", MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL,
                                    text=True)
            endpoint = moto.stdout.readline().strip()
        else:
            endpoint = ""
        return _run(args, work, url, redis_url, endpoint)
    finally:  # also on Ctrl-C: no server left running, no data left behind
        if moto is not None:
            moto.stdin.close()
            moto.wait(timeout=30)
        stop_redis(work / "redis")
        stop_postgres(work / "postgres")
        shutil.rmtree(work, ignore_errors=True)


def _setup_django(work: Path, url: str, redis_url: str, endpoint: str) -> None:
    from config.embedded import owner_url

    os.environ.update(DATABASE_URL=owner_url(url), REDIS_URL=redis_url, VAR_DIR=str(work / "var"),
                      DJANGO_SETTINGS_MODULE="config.settings", DJANGO_DEBUG="False",
                      DJANGO_SECRET_KEY="delivery-bench-" + "x" * 40)
    if endpoint:
        os.environ.update(S3_BUCKET=BUCKET, S3_ENDPOINT_URL=endpoint, S3_ACCESS_KEY_ID="bench",
                          S3_SECRET_ACCESS_KEY="bench", S3_REGION="us-east-1")
        _s3_client(endpoint).create_bucket(Bucket=BUCKET)
    (work / "var").mkdir(exist_ok=True)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    settings.DISCLOSURE_THRESHOLD = 1  # the fixture dataset has two studies
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # keep the tables readable


def _s3_client(endpoint: str):  # noqa: ANN202 - a boto3 S3 client
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                        aws_secret_access_key="bench")


def _member(username: str, org_name: str, kind: str):  # noqa: ANN202 - (User, Organization)
    """The conftest's make_member: a verified organization and its owner."""
    from django.utils import timezone

    from factories.accounts import ready_account
    from marketplace.models import Membership, Organization, User

    user = User.objects.create_user(username=username, email=f"{username}@example.org", password="pass-1234567")
    org, created = Organization.objects.get_or_create(name=org_name, defaults={"kind": kind})
    if created and kind == Organization.Kind.BUYER:
        Organization.objects.filter(pk=org.pk).update(
            sector=Organization.Sector.COMMERCIAL, country="GB", contact_name="Bench Contact",
            contact_email=f"contact@{username}.example.org")
    Organization.objects.filter(pk=org.pk, approved_at__isnull=True).update(approved_at=timezone.now())
    org.refresh_from_db()
    Membership.objects.create(user=user, organization=org, role=Membership.Role.OWNER)
    ready_account(user, two_factor=kind == Organization.Kind.PROVIDER)
    return user, org


def _templates(series: list, size: int) -> dict:  # noqa: ANN001 - {series pk: (template bytes, placeholder)}
    """One Part 10 file per series, made from an ingested instance of it: uncompressed 16-bit
    random PixelData sized so the file is about ``size`` bytes, and a placeholder SOP
    Instance UID of fixed length that each instance replaces with its own."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    import storage
    from catalog.models import Instance

    out = {}
    for s in series:
        one = Instance.objects.filter(series=s).order_by("id").first()
        with storage.open_read(one.storage_key) as fp:
            ds = pydicom.dcmread(fp)
        placeholder = _sop_uid(0).encode()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = placeholder.decode()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = 1, 512
        ds.PixelData = bytes(1024)
        overhead = len(_part10(ds)) - 1024
        ds.Rows = max(1, round((size - overhead) / 1024))
        ds.PixelData = os.urandom(ds.Rows * 1024)
        data = _part10(ds)
        assert data.count(placeholder) == 2, "SOP Instance UID: once in the file meta, once in the dataset"
        out[s.pk] = (data, placeholder)
    return out


def _part10(ds) -> bytes:  # noqa: ANN001 - a pydicom Dataset
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _sop_uid(i: int) -> str:
    return f"2.25.{10**30 + i}"  # the same length for every i below 9 * 10**30


def _world(n: int, size: int):  # noqa: ANN202 - (dataset, admin, source keys)
    """A published dataset of six ingested CT files plus n stored DICOM objects."""
    from decimal import Decimal

    import storage
    from catalog.datasets.services import dataset_create, dataset_publish, dataset_submit_for_review
    from catalog.ingestion.ingest import upload_batch_ingest
    from catalog.ingestion.uploads import upload_batch_create
    from catalog.models import Instance
    from factories.accounts import ready_account
    from factories.dicom import ct_files
    from marketplace.models import User

    alice, provider = _member("alice", "Alpha Imaging", "provider")
    admin = ready_account(User.objects.create_superuser(username="admin", email="admin@example.org",
                                                        password="admin-pass-123"), two_factor=True)
    dataset = dataset_create(provider=provider, acting_user=alice, title="Delivery bench",
                             description="Benchmark", price_per_study=Decimal("10.00"))
    batch = upload_batch_create(dataset=dataset, files=[(name, io.BytesIO(data)) for name, data in ct_files()],
                                acting_user=alice)
    upload_batch_ingest(batch_id=batch.pk)
    series = list({i.series_id: i.series for i in Instance.objects.filter(dataset=dataset)
                   .select_related("series__study")}.values())
    templates = _templates(series, size)
    rows = []
    for i in range(n):
        s = series[i % len(series)]
        template, placeholder = templates[s.pk]
        sop = _sop_uid(i + 1)
        data = template.replace(placeholder, sop.encode())  # every object distinct, each with its own sha256
        key = storage.catalog_key(dataset_id=dataset.pk, study_uid=s.study.study_uid, series_uid=s.series_uid,
                                  sop_uid=sop)
        storage.put(key, io.BytesIO(data))
        rows.append(Instance(dataset=dataset, series=s, sop_uid=sop, storage_key=key, size_bytes=len(data),
                             sha256=hashlib.sha256(data).hexdigest()))
    Instance.objects.bulk_create(rows, batch_size=1000)
    dataset.refresh_from_db()
    dataset_submit_for_review(dataset=dataset, acting_user=alice)
    dataset = dataset_publish(dataset=dataset, acting_user=admin)
    keys = list(Instance.objects.filter(dataset=dataset).order_by("id").values_list("storage_key", flat=True))
    return dataset, admin, keys


def _deliver(dataset, admin, dua, round_no: int):  # noqa: ANN001, ANN202 - (seconds, Delivery)
    from django.db import transaction

    from factories.orders import approve_for_delivery, place_order
    from workspaces.models import Delivery
    from workspaces.services import delivery_run

    buyer, _ = _member(f"buyer{round_no}", f"Buyer {round_no}", "buyer")
    with transaction.atomic():  # the task queued on commit is sent to a queue no worker reads
        order = approve_for_delivery(place_order(buyer, dataset, dua), admin)
    delivery = Delivery.objects.get(order=order)
    os.sync()  # neither contender pays for the other's dirty pages
    t0 = time.perf_counter()
    if os.environ.get("BENCH_PROFILE"):
        import cProfile
        import pstats
        profile = cProfile.Profile()
        delivery = profile.runcall(delivery_run, delivery_id=delivery.pk)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    else:
        delivery = delivery_run(delivery_id=delivery.pk)
    seconds = time.perf_counter() - t0
    assert delivery is not None and delivery.status == Delivery.Status.DONE, delivery
    return seconds, delivery


def _copy_local(keys: list[str], prefix: str) -> float:
    import storage

    root = Path(storage.default_storage.location)
    t0 = time.perf_counter()
    made: set[Path] = set()
    for key in keys:
        dst = root / prefix / key
        if dst.parent not in made:
            dst.parent.mkdir(parents=True, exist_ok=True)
            made.add(dst.parent)
        shutil.copyfile(root / key, dst)
    return time.perf_counter() - t0


def _copy_s3(client, keys: list[str], prefix: str) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for key in keys:
        client.copy_object(Bucket=BUCKET, Key=f"{prefix}/{key}", CopySource={"Bucket": BUCKET, "Key": key})
    return time.perf_counter() - t0


def _read_write(keys: list[str], prefix: str) -> float:
    """Each object read whole and written to another key through storage.put."""
    import storage

    t0 = time.perf_counter()
    for key in keys:
        with storage.open_read(key) as src:
            data = src.read()
        storage.put(f"{prefix}/{key}", io.BytesIO(data))
    return time.perf_counter() - t0


def _remove(prefix: str, client=None) -> None:  # noqa: ANN001
    import storage

    if client is None:
        shutil.rmtree(Path(storage.default_storage.location) / prefix, ignore_errors=True)
        return
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for i in range(0, len(objects), 1000):
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": objects[i:i + 1000]})


def _verify(delivery) -> None:  # noqa: ANN001
    """Every delivered file is there with the sha256 its row (and the manifest) states."""
    import storage

    files = list(delivery.files.all())
    assert len(files) == delivery.total_files == delivery.done_files
    for f in files[:: max(1, len(files) // 200)]:  # a sample: reading all back would dominate on S3
        assert storage.sha256_of(f.storage_key) == f.sha256


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(args: argparse.Namespace, work: Path, url: str, redis_url: str, endpoint: str) -> int:
    _setup_django(work, url, redis_url, endpoint)
    from orders.selectors import active_dua_template

    t0 = time.perf_counter()
    dataset, admin, keys = _world(args.instances, args.size_kb * 1024)
    dua = active_dua_template()
    total_mb = sum(_sizes(keys)) / 1e6
    client = _s3_client(endpoint) if endpoint else None
    print(f"# {args.storage}: {len(keys):,} files, {total_mb:,.0f} MB, set up in {time.perf_counter() - t0:.1f} s; "
          f"1 warm-up + {args.rounds} rounds; {os.cpu_count()} cores; RSS after setup {_rss_mb():.0f} MB",
          flush=True)

    deliveries, copies, rewrites = [], [], []
    for round_no in range(args.rounds + 1):
        seconds, delivery = _deliver(dataset, admin, dua, round_no)
        _verify(delivery)
        _remove(delivery.prefix, client)
        prefix = f"plain-copy/{round_no}"
        os.sync()
        copy_seconds = _copy_s3(client, keys, prefix) if client else _copy_local(keys, prefix)
        _remove(prefix, client)
        prefix = f"read-write/{round_no}"
        os.sync()
        rw_seconds = _read_write(keys, prefix)
        _remove(prefix, client)
        label = "warm-up" if round_no == 0 else f"round {round_no}"
        print(f"  {label}: delivery {seconds:.2f} s, plain copy {copy_seconds:.2f} s, "
              f"read + write {rw_seconds:.2f} s; delivery / copy {seconds / copy_seconds:.2f}, "
              f"delivery / read + write {seconds / rw_seconds:.2f}", flush=True)
        if round_no:
            deliveries.append(seconds)
            copies.append(copy_seconds)
            rewrites.append(rw_seconds)

    n = len(keys)
    print(f"{'storage':8} {'what':12} {'files/s':>9} {'MB/s':>8} {'seconds (median, range)':>28}")
    for what, times in (("delivery", deliveries), ("plain copy", copies), ("read + write", rewrites)):
        med = statistics.median(times)
        print(f"{args.storage:8} {what:12} {n / med:9.0f} {total_mb / med:8.1f} "
              f"{med:10.2f} ({min(times):.2f}-{max(times):.2f})")
    for what, base in (("plain copy", copies), ("read + write", rewrites)):
        ratio = statistics.median(deliveries) / statistics.median(base)
        paired = sorted(d / c for d, c in zip(deliveries, base))
        print(f"{args.storage:8} delivery / {what}: {ratio:.2f}x of the medians, {statistics.median(paired):.2f}x "
              f"median of the rounds ({paired[0]:.2f}-{paired[-1]:.2f})", flush=True)
    print(f"{args.storage:8} peak RSS {_rss_mb():.0f} MB", flush=True)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        _seconds, delivery = _deliver(dataset, admin, dua, args.rounds + 1)
        profiler.disable()
        _remove(delivery.prefix, client)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    return 0


def _sizes(keys: list[str]) -> list[int]:
    from catalog.models import Instance

    return list(Instance.objects.filter(storage_key__in=keys).values_list("size_bytes", flat=True))


if __name__ == "__main__":
    sys.exit(main())
