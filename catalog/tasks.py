"""Thin Celery tasks for ingestion: load by id, call one service.

The ingestion services end a batch in FAILED with a reason whatever goes wrong, so these
tasks never raise (a raised error would be logged by Celery with its message, and
zipfile's and pydicom's messages quote file names).
"""
from __future__ import annotations

from celery import shared_task
from django.conf import settings

from catalog.ingestion.fairness import provider_slot
from catalog.ingestion.ingest import upload_batch_ingest, upload_files_ingest
from catalog.ingestion.upload_batches import upload_batches_recover_stuck
from catalog.models import UploadBatch


@shared_task(acks_late=True)
def upload_batch_ingest_task(*, batch_id: int) -> None:
    upload_batch_ingest(batch_id=batch_id, parallel=True)


@shared_task(bind=True, acks_late=True, max_retries=None)
def upload_files_ingest_task(self, *, batch_id: int, upload_file_ids: list[int]) -> None:  # noqa: ANN001
    provider_id = UploadBatch.objects.filter(pk=batch_id).values_list("dataset__provider_id", flat=True).first()
    if provider_id is None:
        return
    with provider_slot(provider_id) as held:
        if not held:  # this provider already has its share of ingest processes: queue behind the others
            raise self.retry(countdown=settings.INGEST_FAIR_RETRY_SECONDS)
        upload_files_ingest(batch_id=batch_id, upload_file_ids=upload_file_ids)


@shared_task(acks_late=True)
def upload_batches_recover_stuck_task() -> dict[str, list[int]]:
    """For Celery beat (every few minutes): re-queue or fail batches whose worker died."""
    result = upload_batches_recover_stuck()
    return {"requeued": result.requeued, "failed": result.failed, "purged": result.purged}


@shared_task(acks_late=True)
def saved_searches_notify_task(*, dataset_id: int) -> int:
    from catalog.discovery.services import saved_searches_notify

    return saved_searches_notify(dataset_id=dataset_id)


@shared_task(acks_late=True)
def dataset_search_refresh_task(*, dataset_id: int) -> None:
    """After a dataset's title or conditions changed: what its keywords match."""
    from catalog.search.vectors import dataset_refresh_search

    dataset_refresh_search(dataset_id=dataset_id)


@shared_task(acks_late=True)
def dataset_search_remove_task(*, dataset_id: int) -> int:
    """After a dataset was deleted: its studies leave the search index (searches already
    skip them: they only count published datasets, read from PostgreSQL)."""
    from catalog.search.elastic import unindex_dataset

    return unindex_dataset(dataset_id=dataset_id)
