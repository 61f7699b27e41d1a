"""Upload: the web request only stores bytes in quarantine and records a batch."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import IO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import storage
from catalog.exceptions import CatalogError
from catalog.ingestion.archives import ArchiveLimits, validate_archive
from catalog.models import Dataset, UploadBatch, UploadFile
from marketplace.models import User
from marketplace.services import audit_record

logger = logging.getLogger(__name__)


def archive_limits() -> ArchiveLimits:
    return ArchiveLimits(
        max_members=settings.UPLOAD_ZIP_MAX_MEMBERS,
        max_total_bytes=settings.UPLOAD_ZIP_MAX_TOTAL_BYTES,
        max_member_bytes=settings.UPLOAD_MAX_FILE_BYTES,
        max_ratio=settings.UPLOAD_ZIP_MAX_RATIO,
    )


def _looks_like_zip(name: str, fileobj: IO[bytes]) -> bool:
    head = fileobj.read(4)
    fileobj.seek(0)
    return name.lower().endswith(".zip") or head == b"PK\x03\x04"


def _refuse_published(dataset: Dataset) -> None:
    if dataset.status == Dataset.Status.PUBLISHED:
        raise CatalogError("This dataset is published; move it back to draft to add images.",
                           code="dataset_published")


def _checked(files: Iterable[tuple[str, IO[bytes]]]) -> list[tuple[str, IO[bytes]]]:
    """The files, each zip checked (paths, member count, declared sizes, ratio) so an unsafe
    archive is refused at once with a clear message; the worker counts real bytes again
    when it expands it."""
    files = list(files)
    if not files:
        raise CatalogError("Choose at least one DICOM file or .zip archive to upload.", code="no_files")
    for name, fileobj in files:
        if _looks_like_zip(name, fileobj):
            validate_archive(fileobj, archive_limits())
    return files


def _store(batch: UploadBatch, files: list[tuple[str, IO[bytes]]]) -> None:
    """Put the files in quarantine under the batch, one UploadFile row each (in the caller's
    transaction: a failure stores no row)."""
    for name, fileobj in files:
        is_archive = _looks_like_zip(name, fileobj)
        upload = UploadFile.objects.create(batch=batch, name=name[:255], is_archive=is_archive)
        key = storage.quarantine_key(provider_id=batch.dataset.provider_id, batch_id=batch.pk, file_id=upload.pk)
        storage.put(key, fileobj)
        upload.quarantine_key = key
        upload.size_bytes = storage.size(key)
        upload.save(update_fields=["quarantine_key", "size_bytes"])


def _queue_ingestion(batch: UploadBatch) -> None:
    from catalog.tasks import upload_batch_ingest_task

    transaction.on_commit(lambda: upload_batch_ingest_task.delay(batch_id=batch.pk))


def upload_batch_create(
    *,
    dataset: Dataset,
    files: Iterable[tuple[str, IO[bytes]]],
    acting_user: User,
    ip: str | None = None,
) -> UploadBatch:
    """Store uploaded files (DICOM or .zip) in quarantine and queue their ingestion: one
    request, one batch (the plain form post).

    Raises UnsafeArchiveError / CatalogError; nothing is stored then.
    """
    _refuse_published(dataset)
    files = _checked(files)
    with transaction.atomic():
        batch = UploadBatch.objects.create(dataset=dataset, uploaded_by=acting_user)
        _store(batch, files)
        batch.total_files = len(files)
        batch.save(update_fields=["total_files"])
        audit_record(actor=acting_user, action="upload.create", obj=batch, ip=ip,
                     detail={"dataset_id": dataset.pk, "files": len(files)})
        _queue_ingestion(batch)
    logger.info("upload batch %s stored %s files for dataset %s", batch.pk, len(files), dataset.pk)
    return batch


# ---- one batch over several requests ---------------------------------------------------
# The page sends a large selection (a folder of thousands of files, or gigabytes) in
# requests of bounded size: each stays well inside the request limits and a failed request
# is retried alone. The batch is opened empty (UPLOADING), receives files, and is closed,
# which queues ingestion; a batch never closed is failed by the stuck sweep.

def upload_batch_open(*, dataset: Dataset, acting_user: User, ip: str | None = None) -> UploadBatch:
    _refuse_published(dataset)
    with transaction.atomic():
        batch = UploadBatch.objects.create(dataset=dataset, uploaded_by=acting_user,
                                           status=UploadBatch.Status.UPLOADING, progressed=timezone.now())
        audit_record(actor=acting_user, action="upload.open", obj=batch, ip=ip, detail={"dataset_id": dataset.pk})
    return batch


def _lock_open(batch: UploadBatch) -> UploadBatch:
    locked = UploadBatch.objects.select_for_update().select_related("dataset").get(pk=batch.pk)
    if locked.status != UploadBatch.Status.UPLOADING:
        raise CatalogError(f"Upload #{locked.pk} is closed ({locked.get_status_display().lower()}); "
                           "start a new upload to add more files.", code="upload_closed")
    _refuse_published(locked.dataset)
    return locked


def upload_batch_append(*, batch: UploadBatch, files: Iterable[tuple[str, IO[bytes]]]) -> UploadBatch:
    """Add files to an open batch. Raises CatalogError (code upload_closed) once it is closed."""
    files = _checked(files)
    with transaction.atomic():
        locked = _lock_open(batch)
        _store(locked, files)
        locked.total_files = locked.files.count()
        locked.progressed = timezone.now()  # the sweep's clock: still receiving
        locked.save(update_fields=["total_files", "progressed"])
    return locked


def upload_batch_close(*, batch: UploadBatch, acting_user: User, ip: str | None = None) -> UploadBatch:
    """Close an open batch and queue its ingestion. An empty batch is refused (no_files)."""
    from catalog.ingestion.upload_batches import upload_batch_transition

    with transaction.atomic():
        locked = _lock_open(batch)
        count = locked.files.count()
        if not count:
            raise CatalogError("Choose at least one DICOM file or .zip archive to upload.", code="no_files")
        locked = upload_batch_transition(batch=locked, to=UploadBatch.Status.QUEUED, acting_user=acting_user,
                                         reason="every file received")
        audit_record(actor=acting_user, action="upload.create", obj=locked, ip=ip,
                     detail={"dataset_id": locked.dataset_id, "files": count})
        _queue_ingestion(locked)
    logger.info("upload batch %s closed with %s files", locked.pk, count)
    return locked


def upload_batch_discard(*, batch: UploadBatch, acting_user: User, ip: str | None = None) -> None:
    """The provider cancelled while sending: the open batch and its quarantined files go."""
    with transaction.atomic():
        locked = _lock_open(batch)
        audit_record(actor=acting_user, action="upload.cancel", obj=locked, ip=ip,
                     detail={"dataset_id": locked.dataset_id, "files": locked.files.count()})
        prefix = storage.quarantine_batch_prefix(provider_id=locked.dataset.provider_id, batch_id=locked.pk)
        locked.delete()
        transaction.on_commit(lambda: storage.delete_tree(prefix))
