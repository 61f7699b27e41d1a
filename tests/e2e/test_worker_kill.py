"""A whole delivery worker is killed mid-delivery under `make run`'s supervisor (the real
config.devserver code: same worker and beat commands). The supervisor starts it again, the
stuck-job sweep (beat → housekeeping worker) re-queues the delivery, and it completes: every
stored file matches the manifest's sha256 and no file recorded before the kill is copied again.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest
from django.db import connection

import storage
from catalog.models import Instance
from config import devserver
from e2e.worker import _database_url, wait_for
from factories.orders import approve_for_delivery, place_order
from workspaces.models import Delivery, DeliveryStatusChange

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tiny_threshold")]

EXTRA_FILES = 400
KILL_AFTER = 40
# Shortened for the test; `make run` uses the settings' defaults (30 s, 15 s): README "Workers".
STUCK_SECONDS = os.environ.get("KILL_TEST_STUCK_SECONDS", "5")
SWEEP_SECONDS = os.environ.get("KILL_TEST_SWEEP_SECONDS", "2")


def _more_instances(dataset, n: int) -> None:  # noqa: ANN001
    """n more instances in the dataset's first series (copies of its first instance under new
    SOP Instance UIDs: each buyer's copy is rewritten, so they must be DICOM): a delivery
    long enough to be killed in the middle."""
    first = Instance.objects.filter(dataset=dataset).select_related("series__study").first()
    series = first.series
    template = pydicom.dcmread(io.BytesIO(b"".join(storage.iter_chunks(first.storage_key))))
    rows = []
    for i in range(n):
        sop = f"2.25.{9000 + i}"
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = sop
        out = io.BytesIO()
        template.save_as(out, enforce_file_format=True)
        data = out.getvalue()
        key = storage.catalog_key(dataset_id=dataset.pk, study_uid=series.study.study_uid,
                                  series_uid=series.series_uid, sop_uid=sop)
        storage.put(key, io.BytesIO(data))
        rows.append(Instance(dataset=dataset, series=series, sop_uid=sop, storage_key=key, size_bytes=len(data),
                             sha256=hashlib.sha256(data).hexdigest()))
    Instance.objects.bulk_create(rows)


@pytest.fixture
def supervised_workers(tmp_path):
    """The delivery and housekeeping workers and beat, as `make run` starts them."""
    env = dict(os.environ, DATABASE_URL=_database_url(connection.settings_dict), PYTHONUNBUFFERED="1",
               DELIVERY_STUCK_SECONDS=STUCK_SECONDS, STUCK_SWEEP_SECONDS=SWEEP_SECONDS)
    supervisor = devserver.Supervisor(env, cwd=devserver.REPO)
    var_dir = Path(os.environ["VAR_DIR"])
    for child in devserver.child_commands(sys.executable, "127.0.0.1", 0, var_dir):
        if child.name in ("worker-delivery", "worker-housekeeping", "beat"):
            supervisor.start(child.name, child.argv, child.restart)
    thread = threading.Thread(target=supervisor.wait, kwargs={"poll": 0.1}, daemon=True)
    thread.start()
    try:
        yield supervisor
    finally:
        supervisor.request_stop(signal.SIGTERM)
        thread.join(10)
        supervisor.terminate_all(timeout=10)


def test_a_killed_delivery_worker_is_restarted_and_the_delivery_completes_exactly_once(
        published_dataset, bob, admin_user, dua, supervised_workers):
    _more_instances(published_dataset, EXTRA_FILES)
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)  # queues the delivery
    delivery = Delivery.objects.get(order=order)

    wait_for(lambda: Delivery.objects.get(pk=delivery.pk).done_files >= KILL_AFTER, timeout=60, interval=0.02,
             what="the delivery to be under way")
    worker = supervised_workers.children["worker-delivery"]
    os.killpg(worker.pid, signal.SIGKILL)  # main process and its pool processes at once
    killed_at = time.monotonic()
    time.sleep(0.3)
    before = Delivery.objects.get(pk=delivery.pk)
    assert before.status == Delivery.Status.RUNNING and before.done_files < before.total_files
    recorded = {f.storage_key: os.stat(storage.default_storage.path(f.storage_key)).st_mtime_ns
                for f in before.files.all()}

    wait_for(lambda: supervised_workers.children["worker-delivery"].pid != worker.pid, timeout=30, interval=0.05,
             what="the supervisor to start the worker again")
    restarted_at = time.monotonic()
    done = wait_for(lambda: Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.DONE).first(),
                    timeout=float(STUCK_SECONDS) + 55, interval=0.1,
                    what="the delivery to complete after the restart")
    done_at = time.monotonic()
    sys.stdout.write(f"\nkill→restart {restarted_at - killed_at:.1f} s, restart→done {done_at - restarted_at:.1f} s, "
                     f"kill→done {done_at - killed_at:.1f} s ({before.done_files} of {before.total_files} files "
                     f"copied before the kill)\n")

    files = list(done.files.all())
    assert done.done_files == done.total_files == len(files) == EXTRA_FILES + 6
    assert len({f.instance_id for f in files}) == len(files)
    for key, mtime in recorded.items():  # copied before the kill: never written again
        assert os.stat(storage.default_storage.path(key)).st_mtime_ns == mtime
    manifest = list(csv.DictReader(io.StringIO(b"".join(storage.iter_chunks(done.manifest_key)).decode())))
    assert len(manifest) == len(files)
    for row in manifest:
        assert storage.sha256_of(f"{done.prefix}/{row['path']}") == row["sha256"]
    reasons = list(DeliveryStatusChange.objects.filter(delivery=done).values_list("new_status", "reason"))
    assert any(status == Delivery.Status.QUEUED and "No progress" in reason for status, reason in reasons)
    assert reasons[-1][0] == Delivery.Status.DONE
