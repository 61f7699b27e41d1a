"""The broker (the embedded Redis, without persistence) restarts mid-delivery under `make
run`'s supervisor and loses every queued and unacknowledged message. The stuck-job sweep
(beat → housekeeping worker) finds the delivery and sends it again: a delivery whose worker
was killed with it finishes exactly once with every checksum matching, and a queued
delivery whose message was lost is taken after all.
"""
from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

import embedded_services
import storage
from config import devserver
from config.embedded import _redis_pid, _redis_server_bin, redis_port, stop_redis
from e2e.test_worker_kill import _more_instances
from e2e.worker import _database_url, wait_for
from factories.orders import approve_for_delivery, place_order
from workspaces.models import Delivery, DeliveryStatusChange

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("tiny_threshold")]

STUCK_SECONDS, SWEEP_SECONDS = "5", "2"
WORKERS = ("worker-delivery", "worker-housekeeping", "beat")


def _restart_redis() -> None:
    """Stop the test run's Redis and start an empty one on the same port (the workers'
    REDIS_URL stays right): what a broker restart without persistence leaves."""
    data_dir = embedded_services.STARTED.get("redis")
    if data_dir is None:
        pytest.skip("REDIS_URL points at a Redis this test run did not start")
    port = redis_port(data_dir)
    stop_redis(data_dir)
    subprocess.run([str(_redis_server_bin()), "--bind", "127.0.0.1", "--port", str(port), "--daemonize", "yes",
                    "--pidfile", str(data_dir / "redis.pid"), "--dir", str(data_dir), "--logfile",
                    str(data_dir / "redis.log"), "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=30,
                   start_new_session=True)
    wait_for(lambda: _redis_pid(data_dir) is not None, timeout=10, interval=0.05, what="Redis to start again")
    (data_dir / "redis.port").write_text(f"{port}\n")
    wait_for(lambda: redis_port(data_dir) == port, timeout=10, interval=0.05, what="Redis to answer")


@pytest.fixture
def supervisor():
    """A supervisor for the delivery and housekeeping workers and beat, as `make run` starts
    them; ``start_some(*names)`` starts some of them, ``supervise()`` then watches them
    (restarting the dead) from a thread: children are all started before it runs."""
    env = dict(os.environ, DATABASE_URL=_database_url(connection.settings_dict), PYTHONUNBUFFERED="1",
               DELIVERY_STUCK_SECONDS=STUCK_SECONDS, STUCK_SWEEP_SECONDS=SWEEP_SECONDS)
    sup = devserver.Supervisor(env, cwd=devserver.REPO)
    children = {c.name: c for c in devserver.child_commands(sys.executable, "127.0.0.1", 0,
                                                             Path(os.environ["VAR_DIR"]))}
    thread = threading.Thread(target=sup.wait, kwargs={"poll": 0.1}, daemon=True)

    def start_some(*names: str) -> None:
        assert not thread.is_alive()
        for name in names:
            sup.start(name, children[name].argv, children[name].restart)

    sup.start_some, sup.supervise = start_some, thread.start
    try:
        yield sup
    finally:
        sup.request_stop(signal.SIGTERM)
        if thread.is_alive():
            thread.join(10)
        sup.terminate_all(timeout=10)


def _assert_delivered_once(done: Delivery, files_expected: int) -> None:
    files = list(done.files.all())
    assert done.done_files == done.total_files == len(files) == files_expected
    assert len({f.instance_id for f in files}) == len(files)
    manifest = list(csv.DictReader(io.StringIO(b"".join(storage.iter_chunks(done.manifest_key)).decode())))
    assert len(manifest) == len(files)
    for row in manifest:
        assert storage.sha256_of(f"{done.prefix}/{row['path']}") == row["sha256"]


def test_a_delivery_killed_with_the_broker_restarted_finishes_exactly_once(
        published_dataset, bob, admin_user, dua, supervisor):
    supervisor.start_some(*WORKERS)
    supervisor.supervise()
    _more_instances(published_dataset, 400)
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    delivery = Delivery.objects.get(order=order)
    wait_for(lambda: Delivery.objects.get(pk=delivery.pk).done_files > 0, timeout=60, interval=0.02,
             what="the delivery to be under way")
    worker = supervisor.children["worker-delivery"]
    os.killpg(worker.pid, signal.SIGKILL)
    _restart_redis()  # the task, unacknowledged, is gone with the broker's memory
    killed_at = time.monotonic()
    before = Delivery.objects.get(pk=delivery.pk)
    assert before.status == Delivery.Status.RUNNING and before.done_files < before.total_files
    recorded = {f.storage_key: os.stat(storage.default_storage.path(f.storage_key)).st_mtime_ns
                for f in before.files.all()}

    done = wait_for(lambda: Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.DONE).first(),
                    timeout=45, interval=0.1, what="the delivery to complete after the broker restart")
    sys.stdout.write(f"\nkill + broker restart → done {time.monotonic() - killed_at:.1f} s "
                     f"({before.done_files} of {before.total_files} files recorded before)\n")
    _assert_delivered_once(done, 406)
    for key, mtime in recorded.items():  # recorded before the kill: never written again
        assert os.stat(storage.default_storage.path(key)).st_mtime_ns == mtime
    reasons = list(DeliveryStatusChange.objects.filter(delivery=done).values_list("new_status", "reason"))
    assert any(status == Delivery.Status.QUEUED and "No progress" in reason for status, reason in reasons)


def test_a_queued_delivery_whose_message_the_broker_lost_is_sent_again(
        published_dataset, bob, admin_user, dua, supervisor):
    supervisor.start_some("worker-housekeeping", "beat")  # no delivery worker yet: the task waits in Redis
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    delivery = Delivery.objects.get(order=order)
    _restart_redis()
    supervisor.start_some("worker-delivery")
    supervisor.supervise()

    done = wait_for(lambda: Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.DONE).first(),
                    timeout=40, interval=0.1, what="the lost delivery to be sent again and complete")
    _assert_delivered_once(done, 6)
    assert done.run_number == 1 and done.restarts == 0  # taken once, never restarted
