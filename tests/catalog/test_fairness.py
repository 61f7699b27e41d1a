"""Workers: one provider's upload cannot hold every ingest process, hostile files cost a
bounded decode time, and each queue has its own time limits."""
from __future__ import annotations

import time

import pytest
from celery.exceptions import Retry

from catalog.ingestion import fairness
from catalog.ingestion.fairness import provider_slot


@pytest.fixture
def slots(settings):
    settings.INGEST_PROVIDER_SLOTS = 1
    client = fairness._client(settings.REDIS_URL)
    for key in client.scan_iter("ingest:provider-slots:*"):
        client.delete(key)
    return client


def test_a_provider_holds_at_most_its_slots_while_others_still_get_one(slots):
    with provider_slot(1) as first:
        with provider_slot(1) as second, provider_slot(2) as other:
            assert (first, second, other) == (True, False, True)
    with provider_slot(1) as again:
        assert again  # released on exit


def test_a_slot_a_killed_worker_never_released_lapses(slots, settings):
    slots.zadd(fairness._key(7), {"dead-worker": time.time() - 1})  # its lapse time has passed
    with provider_slot(7) as held:
        assert held


@pytest.mark.django_db
def test_a_chunk_of_a_busy_provider_is_requeued_behind_the_others(slots, dataset, alice, settings, monkeypatch):
    from catalog.models import UploadBatch
    from catalog.tasks import upload_files_ingest_task

    settings.INGEST_FAIR_RETRY_SECONDS = 3
    batch = UploadBatch.objects.create(dataset=dataset, uploaded_by=alice)
    ran: list[int] = []
    monkeypatch.setattr("catalog.tasks.upload_files_ingest", lambda *, batch_id, upload_file_ids: ran.append(batch_id))

    def retry(*, countdown: int) -> Retry:
        return Retry(when=countdown)

    monkeypatch.setattr(upload_files_ingest_task, "retry", retry)
    with provider_slot(dataset.provider_id):
        with pytest.raises(Retry) as caught:
            upload_files_ingest_task.run(batch_id=batch.pk, upload_file_ids=[])
    assert caught.value.when == 3 and ran == []
    upload_files_ingest_task.run(batch_id=batch.pk, upload_file_ids=[])  # the slot is free again
    assert ran == [batch.pk]


def test_decodes_run_under_the_configured_time_limit(settings):
    import deid.pixels

    assert deid.pixels.DECODE_TIMEOUT_SECONDS == settings.DEID_DECODE_TIMEOUT_SECONDS == 10


@pytest.mark.parametrize(("task", "queue"), [
    ("catalog.tasks.upload_batch_ingest_task", "ingest"),
    ("catalog.tasks.upload_files_ingest_task", "ingest"),
    ("catalog.tasks.saved_searches_notify_task", "housekeeping"),
    ("catalog.tasks.upload_batches_recover_stuck_task", "housekeeping"),
    ("workspaces.tasks.delivery_run_task", "delivery"),
    ("workspaces.tasks.deliveries_recover_stuck_task", "housekeeping"),
    ("marketplace.tasks.webhook_delivery_send_task", "housekeeping"),
    ("marketplace.tasks.webhook_deliveries_sweep_task", "housekeeping"),
])
def test_each_task_goes_to_its_queue_with_that_queues_time_limits(settings, task, queue):
    from config.celery import app, queue_of

    assert queue_of(task, settings.CELERY_TASK_ROUTES, settings.CELERY_TASK_DEFAULT_QUEUE) == queue
    assert app.amqp.router.route({}, task)["queue"].name == queue
    if task in app.tasks:
        soft, hard = settings.CELERY_QUEUE_TIME_LIMITS[queue]
        assert (app.tasks[task].soft_time_limit, app.tasks[task].time_limit) == (soft, hard)


def test_the_visibility_timeout_outlasts_the_longest_task(settings):
    longest = max(hard for _soft, hard in settings.CELERY_QUEUE_TIME_LIMITS.values())
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    assert options["visibility_timeout"] > longest
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 10
