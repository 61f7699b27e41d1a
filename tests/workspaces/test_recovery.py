"""Deliveries survive lost workers: one transition service with history, a stuck-job sweep,
admin restart/fail with a reason, and a resumed run that copies no file twice."""
from __future__ import annotations

import io
import os
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

import storage
from factories.orders import approve_for_delivery, place_order
from marketplace.exceptions import InvalidTransitionError
from orders.models import Order
from workspaces import services
from workspaces.exceptions import DeliveryError
from workspaces.models import Delivery, DeliveryStatusChange
from workspaces.services import (
    deliveries_recover_stuck,
    delivery_fail,
    delivery_restart,
    delivery_run,
    delivery_transition,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

S = Delivery.Status


@pytest.fixture
def delivery(published_dataset, bob, admin_user, dua) -> Delivery:
    """Bob's approved order: a queued delivery of 6 files (no worker runs in these tests)."""
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    return Delivery.objects.get(order=order)


@pytest.fixture(autouse=True)
def file_by_file(monkeypatch, settings) -> None:
    """Copy and record each file on its own, so "killed after n files" leaves n rows and a
    hook in storage.put may read the test's transaction (a copy thread has its own
    connection); batched recording and copy threads are tested on their own below."""
    monkeypatch.setattr(services, "RECORD_EVERY", 1)
    settings.DELIVERY_COPY_THREADS = 1


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """Delivery ids handed to the broker (after commit)."""
    from workspaces.tasks import delivery_run_task

    ids: list[int] = []
    monkeypatch.setattr(delivery_run_task, "delay", lambda *, delivery_id: ids.append(delivery_id))
    return ids


def _data_puts(monkeypatch, on_put=None) -> list[str]:  # noqa: ANN001
    """Record the keys of delivered DICOM files written from now on (the buyer's copies are
    written with storage.put); ``on_put(key)`` runs after each."""
    real_put, written = storage.put, []

    def put(key: str, content) -> None:  # noqa: ANN001
        real_put(key, content)
        if key.endswith(".dcm"):
            written.append(key)
            if on_put is not None:
                on_put(key)

    monkeypatch.setattr(storage, "put", put)
    return written


def _killed_after(delivery: Delivery, monkeypatch, files: int) -> str:  # noqa: ANN001
    """Run the delivery until its worker "dies" while writing file number files+1: that file
    is already at its key but not recorded. Returns that key."""
    real_put = storage.put

    def die(key: str) -> None:
        if len(written) > files:
            raise KeyboardInterrupt("worker killed")

    written = _data_puts(monkeypatch, die)
    with pytest.raises(KeyboardInterrupt):
        delivery_run(delivery_id=delivery.pk)
    monkeypatch.setattr(storage, "put", real_put)
    return written[-1]


def _fingerprinted(delivery_file) -> str:  # noqa: ANN001
    """SHA-256 of the buyer's copy made afresh from the catalog object."""
    import hashlib
    import io

    from workspaces.fingerprint import fingerprint_file

    out = io.BytesIO()
    with storage.open_read(delivery_file.instance.storage_key) as src:
        fingerprint_file(src, out, order_id=delivery_file.delivery.order_id)
    return hashlib.sha256(out.getvalue()).hexdigest()


def _age(delivery: Delivery, seconds: int) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(progressed=timezone.now() - timedelta(seconds=seconds))


# ---- the transition table ------------------------------------------------------------------
ALLOWED = [(S.QUEUED, S.RUNNING), (S.QUEUED, S.FAILED), (S.RUNNING, S.QUEUED), (S.RUNNING, S.DONE),
           (S.RUNNING, S.FAILED), (S.FAILED, S.QUEUED)]
FORBIDDEN = [(S.QUEUED, S.DONE), (S.FAILED, S.RUNNING), (S.FAILED, S.DONE), (S.DONE, S.QUEUED),
             (S.DONE, S.RUNNING), (S.DONE, S.FAILED)]


@pytest.mark.parametrize(("old", "new"), ALLOWED)
def test_it_allows_each_move_in_the_table_and_records_it(delivery, admin_user, old, new):
    Delivery.objects.filter(pk=delivery.pk).update(status=old)
    delivery_transition(delivery=delivery, to=new, acting_user=admin_user, reason="why")
    assert Delivery.objects.get(pk=delivery.pk).status == new
    change = DeliveryStatusChange.objects.get(delivery=delivery)
    assert (change.old_status, change.new_status, change.acting_user, change.reason) == (old, new, admin_user, "why")


@pytest.mark.parametrize(("old", "new"), FORBIDDEN)
def test_it_rejects_each_move_outside_the_table(delivery, admin_user, old, new):
    Delivery.objects.filter(pk=delivery.pk).update(status=old)
    with pytest.raises(InvalidTransitionError):
        delivery_transition(delivery=delivery, to=new, acting_user=admin_user)
    assert Delivery.objects.get(pk=delivery.pk).status == old
    assert not DeliveryStatusChange.objects.exists()


def test_it_is_quiet_when_the_delivery_is_already_there(delivery):
    delivery_transition(delivery=delivery, to=S.QUEUED, acting_user=None)
    assert not DeliveryStatusChange.objects.exists()


# ---- a run and its history -------------------------------------------------------------------
def test_a_run_leaves_a_history_from_claim_to_done(delivery):
    delivery_run(delivery_id=delivery.pk)
    moves = list(DeliveryStatusChange.objects.filter(delivery=delivery).values_list("old_status", "new_status"))
    assert moves == [(S.QUEUED, S.RUNNING), (S.RUNNING, S.DONE)]
    delivery.refresh_from_db()
    assert (delivery.done_files, delivery.run_number) == (6, 1)


def test_a_second_run_leaves_a_delivery_with_fresh_progress_alone(delivery, monkeypatch):
    _killed_after(delivery, monkeypatch, files=2)  # RUNNING, progress just now: its worker may be alive
    assert delivery_run(delivery_id=delivery.pk) is None
    assert Delivery.objects.get(pk=delivery.pk).status == S.RUNNING


def test_a_resumed_run_writes_no_recorded_file_again_and_every_checksum_is_right(delivery, monkeypatch, settings):
    in_flight = _killed_after(delivery, monkeypatch, files=3)
    recorded = {f.storage_key: os.stat(storage.default_storage.path(f.storage_key)).st_mtime_ns
                for f in delivery.files.all()}
    in_flight_mtime = os.stat(storage.default_storage.path(in_flight)).st_mtime_ns
    assert len(recorded) == 3 and in_flight not in recorded
    _age(delivery, settings.DELIVERY_STUCK_SECONDS + 1)  # the worker is gone: no progress since

    copies = _data_puts(monkeypatch)
    delivery_run(delivery_id=delivery.pk)  # the broker handed the task back

    delivery.refresh_from_db()
    assert delivery.status == S.DONE and delivery.done_files == delivery.total_files == 6
    assert len(copies) == 2 and in_flight not in copies  # 6 - 3 recorded - 1 verified in place
    assert delivery.total_bytes == sum(delivery.files.values_list("size_bytes", flat=True))
    for key, mtime in recorded.items():
        assert os.stat(storage.default_storage.path(key)).st_mtime_ns == mtime
    assert os.stat(storage.default_storage.path(in_flight)).st_mtime_ns == in_flight_mtime
    for f in delivery.files.all():
        # The buyer's copy, not the catalog's bytes, and the same copy a fresh run would write.
        assert storage.sha256_of(f.storage_key) == f.sha256 == _fingerprinted(f) != f.instance.sha256
    assert Order.objects.get(pk=delivery.order_id).fulfilment_status == Order.FulfilmentStatus.FULFILLED
    reasons = list(DeliveryStatusChange.objects.filter(delivery=delivery).values_list("new_status", "reason"))
    assert reasons[1][0] == S.QUEUED and "No progress" in reasons[1][1]


def test_a_partly_written_file_is_copied_again(delivery, monkeypatch, settings):
    in_flight = _killed_after(delivery, monkeypatch, files=1)
    with open(storage.default_storage.path(in_flight), "r+b") as fh:
        fh.truncate(100)  # the worker died mid-write
    _age(delivery, settings.DELIVERY_STUCK_SECONDS + 1)
    delivery_run(delivery_id=delivery.pk)
    for f in Delivery.objects.get(pk=delivery.pk).files.all():
        assert storage.sha256_of(f.storage_key) == f.sha256


def test_a_superseded_run_stops_at_its_next_file(delivery, admin_user, monkeypatch):
    def fail(key: str) -> None:
        if not Delivery.objects.filter(pk=delivery.pk, status=S.FAILED).exists():
            delivery_fail(delivery=delivery, acting_user=admin_user, reason="Buyer withdrew")

    _data_puts(monkeypatch, fail)
    assert delivery_run(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == S.FAILED and delivery.error == "Buyer withdrew"
    assert delivery.files.count() == 0  # the fence is checked before its file is recorded


# ---- files recorded in batches ---------------------------------------------------------------
def test_a_run_killed_mid_batch_resumes_with_no_file_twice_and_every_checksum_right(delivery, monkeypatch, settings):
    monkeypatch.setattr(services, "RECORD_EVERY", 4)
    in_flight = _killed_after(delivery, monkeypatch, files=5)  # one batch recorded, two files not yet
    assert delivery.files.count() == 4 and Delivery.objects.get(pk=delivery.pk).done_files == 4
    _age(delivery, settings.DELIVERY_STUCK_SECONDS + 1)

    # The resumed run writes nothing again: the two files of the dead worker's unrecorded
    # batch are checked by sha256 and kept.
    written = _data_puts(monkeypatch)
    delivery_run(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == S.DONE and delivery.done_files == delivery.total_files == delivery.files.count() == 6
    assert written == []
    assert in_flight in set(delivery.files.values_list("storage_key", flat=True))
    assert delivery.total_bytes == sum(delivery.files.values_list("size_bytes", flat=True))
    for f in delivery.files.all():
        assert storage.sha256_of(f.storage_key) == f.sha256 == _fingerprinted(f)


def test_a_superseded_run_records_nothing_of_its_batch(delivery, admin_user, monkeypatch):
    monkeypatch.setattr(services, "RECORD_EVERY", 4)

    def fail_once(key: str) -> None:
        if not Delivery.objects.filter(pk=delivery.pk, status=S.FAILED).exists():
            delivery_fail(delivery=delivery, acting_user=admin_user, reason="Buyer withdrew")

    _data_puts(monkeypatch, fail_once)
    assert delivery_run(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == S.FAILED and delivery.files.count() == delivery.done_files == 0


def test_a_slow_copy_still_marks_progress_within_record_seconds(delivery, monkeypatch):
    monkeypatch.setattr(services, "RECORD_EVERY", 1000)
    monkeypatch.setattr(services, "RECORD_SECONDS", 0.0)  # every copy is "slow"
    marks = []
    # Read as each file is written, before it is recorded.
    _data_puts(monkeypatch, lambda key: marks.append(Delivery.objects.get(pk=delivery.pk).done_files))
    delivery_run(delivery_id=delivery.pk)
    assert marks == [0, 1, 2, 3, 4, 5]


# ---- the stuck-job sweep --------------------------------------------------------------------
def test_the_sweep_requeues_a_delivery_without_progress_and_sends_it_again(
        delivery, monkeypatch, settings, sent, django_capture_on_commit_callbacks):
    _killed_after(delivery, monkeypatch, files=2)
    _age(delivery, settings.DELIVERY_STUCK_SECONDS + 5)
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_recover_stuck() == {"requeued": 1, "failed": 0}
    delivery.refresh_from_db()
    assert delivery.status == S.QUEUED and delivery.restarts == 1 and sent == [delivery.pk]
    change = DeliveryStatusChange.objects.filter(delivery=delivery).last()
    assert change.acting_user is None and "No progress for" in change.reason and "restart 1 of 3" in change.reason


def test_the_sweep_leaves_deliveries_with_recent_progress_alone(delivery, monkeypatch, settings, sent):
    _killed_after(delivery, monkeypatch, files=2)
    _age(delivery, settings.DELIVERY_STUCK_SECONDS - 10)
    assert deliveries_recover_stuck() == {"requeued": 0, "failed": 0}
    assert Delivery.objects.get(pk=delivery.pk).status == S.RUNNING


def test_the_sweep_fails_a_delivery_after_its_last_restart_with_the_reason(delivery, monkeypatch, settings, sent):
    settings.DELIVERY_MAX_RESTARTS = 2
    _killed_after(delivery, monkeypatch, files=1)
    Delivery.objects.filter(pk=delivery.pk).update(restarts=2)
    _age(delivery, services._quiet_needed(2) + 1)  # noqa: SLF001 - the back-off after two restarts
    assert deliveries_recover_stuck() == {"requeued": 0, "failed": 1}
    delivery.refresh_from_db()
    assert delivery.status == S.FAILED
    assert "after 2 automatic restart(s)" in delivery.error


def test_the_sweep_waits_longer_before_each_further_restart(delivery, monkeypatch, settings, sent):
    _killed_after(delivery, monkeypatch, files=2)
    Delivery.objects.filter(pk=delivery.pk).update(restarts=1)  # restarted once already
    _age(delivery, settings.DELIVERY_STUCK_SECONDS + 1)
    assert deliveries_recover_stuck() == {"requeued": 0, "failed": 0}  # inside its back-off
    _age(delivery, settings.DELIVERY_RESTART_BACKOFF_SECONDS[0] + 1)
    assert deliveries_recover_stuck() == {"requeued": 1, "failed": 0}
    delivery.refresh_from_db()
    assert delivery.restarts == 2
    change = DeliveryStatusChange.objects.filter(delivery=delivery).last()
    assert f"the next one after {settings.DELIVERY_RESTART_BACKOFF_SECONDS[1]} s" in change.reason


def test_the_sweep_sends_a_queued_delivery_no_worker_took_again(
        delivery, settings, sent, django_capture_on_commit_callbacks):
    """A broker restart loses queued messages: the delivery stays queued with no task."""
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_recover_stuck() == {"requeued": 0, "failed": 0}  # just queued
        _age(delivery, settings.DELIVERY_STUCK_SECONDS + 1)
        assert deliveries_recover_stuck() == {"requeued": 1, "failed": 0}
        assert deliveries_recover_stuck() == {"requeued": 0, "failed": 0}  # not again at once
    assert sent == [delivery.pk]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.restarts) == (S.QUEUED, 0)
    delivery_run(delivery_id=delivery.pk)
    delivery_run(delivery_id=delivery.pk)  # a duplicate message does nothing
    delivery.refresh_from_db()
    assert delivery.status == S.DONE and delivery.run_number == 1 and delivery.files.count() == 6


def test_the_buyer_sees_why_a_delivery_failed(client, delivery, bob, monkeypatch, settings):
    settings.DELIVERY_MAX_RESTARTS = 0
    _killed_after(delivery, monkeypatch, files=1)
    _age(delivery, settings.DELIVERY_STUCK_SECONDS + 1)
    deliveries_recover_stuck()
    client.force_login(bob)
    page = client.get("/workspace/").content.decode()
    assert "This delivery stopped: The copy stopped making progress" in page
    progress = client.get(f"/workspace/deliveries/{delivery.pk}/progress/").json()
    assert progress["status"] == S.FAILED and "stopped making progress" in progress["error"]


# ---- admin: restart or fail with a reason ------------------------------------------------------
def test_an_admin_restarts_a_failed_delivery_with_a_reason(
        delivery, admin_user, sent, django_capture_on_commit_callbacks):
    Delivery.objects.filter(pk=delivery.pk).update(status=S.FAILED, error="old", restarts=3)
    with pytest.raises(DeliveryError):
        delivery_restart(delivery=delivery, acting_user=admin_user, reason=" ")
    with django_capture_on_commit_callbacks(execute=True):
        delivery_restart(delivery=delivery, acting_user=admin_user, reason="Storage fixed")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.error, delivery.restarts) == (S.QUEUED, "", 0)
    assert sent == [delivery.pk]
    change = DeliveryStatusChange.objects.get(delivery=delivery)
    assert (change.acting_user, change.reason) == (admin_user, "Storage fixed")
    delivery_run(delivery_id=delivery.pk)
    assert Delivery.objects.get(pk=delivery.pk).status == S.DONE


def test_an_admin_cannot_restart_a_finished_delivery(delivery, admin_user):
    delivery_run(delivery_id=delivery.pk)
    with pytest.raises(InvalidTransitionError):
        delivery_restart(delivery=delivery, acting_user=admin_user, reason="again")


def test_the_admin_actions_restart_and_fail_through_the_service(client, delivery, admin_user, sent):
    client.force_login(admin_user)
    url = "/admin/workspaces/delivery/"
    response = client.post(url, {"action": "fail", "_selected_action": [delivery.pk], "reason": ""}, follow=True)
    assert "Give a reason" in response.content.decode()
    assert Delivery.objects.get(pk=delivery.pk).status == S.QUEUED
    client.post(url, {"action": "fail", "_selected_action": [delivery.pk], "reason": "Bad order"})
    assert Delivery.objects.get(pk=delivery.pk).error == "Bad order"
    client.post(url, {"action": "restart", "_selected_action": [delivery.pk], "reason": "Retry"})
    assert Delivery.objects.get(pk=delivery.pk).status == S.QUEUED
    assert [c.reason for c in DeliveryStatusChange.objects.filter(delivery=delivery)] == ["Bad order", "Retry"]
    page = client.get(f"{url}{delivery.pk}/change/").content.decode()
    assert "Bad order" in page and "Retry" in page


def test_a_delivery_page_has_no_add_button(client, admin_user):
    client.force_login(admin_user)
    assert client.get("/admin/workspaces/delivery/add/").status_code == 403


def test_services_module_exposes_the_sweep_for_beat():
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["deliveries-recover-stuck"]
    assert entry["task"] == "workspaces.tasks.deliveries_recover_stuck_task"
    assert callable(services.deliveries_recover_stuck)


# ---- copy threads ----------------------------------------------------------------------------
def test_copy_threads_deliver_every_file_once_in_order_with_the_right_checksum(delivery, monkeypatch, settings):
    settings.DELIVERY_COPY_THREADS = 4
    monkeypatch.setattr(services, "RECORD_EVERY", 4)
    threads = set()
    _data_puts(monkeypatch, lambda key: threads.add(threading.current_thread().name))
    delivery_run(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == S.DONE and delivery.done_files == delivery.files.count() == 6
    assert all(name.startswith("delivery-copy") for name in threads) and len(threads) > 1
    for f in delivery.files.all():
        assert storage.sha256_of(f.storage_key) == f.sha256 == _fingerprinted(f)


def test_a_threaded_run_killed_mid_chunk_resumes_with_every_file_once(delivery, monkeypatch, settings):
    settings.DELIVERY_COPY_THREADS = 2  # chunks of 4 files
    monkeypatch.setattr(services, "RECORD_EVERY", 4)
    written = _data_puts(monkeypatch, lambda key: (_ for _ in ()).throw(KeyboardInterrupt("killed"))
                         if len(written) > 5 else None)
    with pytest.raises(KeyboardInterrupt):
        delivery_run(delivery_id=delivery.pk)
    assert delivery.files.count() == 4  # the first chunk recorded; the second written, not recorded
    _age(delivery, settings.DELIVERY_STUCK_SECONDS + 1)
    monkeypatch.undo()
    settings.DELIVERY_COPY_THREADS = 2
    delivery_run(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    assert delivery.status == S.DONE and delivery.files.count() == delivery.done_files == 6
    assert len(set(delivery.files.values_list("instance_id", flat=True))) == 6
    for f in delivery.files.all():
        assert storage.sha256_of(f.storage_key) == f.sha256 == _fingerprinted(f)


def test_a_file_that_cannot_be_copied_fails_the_threaded_run_with_its_reason(delivery, settings):
    settings.DELIVERY_COPY_THREADS = 3
    broken = delivery.order.lines.first().dataset.studies.first().series.first().instances.order_by("id").last()
    storage.put(broken.storage_key, io.BytesIO(b"not a DICOM file at all"))
    result = delivery_run(delivery_id=delivery.pk)
    assert result.status == S.FAILED
    assert f"Catalog instance {broken.pk} could not be copied" in result.error
