"""Upload: the web request only stores bytes in quarantine and records a batch."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import IO

from django.conf import settings
from django.db import transaction

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


def upload_batch_create(
    *,
    dataset: Dataset,
    files: Iterable[tuple[str, IO[bytes]]],
    acting_user: User,
    ip: str | None = None,
) -> UploadBatch:
    """Store uploaded files (DICOM or .zip) in quarantine and queue their ingestion.

    A zip is checked here (paths, member count, declared sizes, ratio) so an unsafe
    archive is refused at once with a clear message; the worker counts real bytes again
    when it expands it. Raises UnsafeArchiveError / CatalogError; nothing is stored then.
    """
    if dataset.status == Dataset.Status.PUBLISHED:
        raise CatalogError("This dataset is published; move it back to draft to add images.",
                           code="dataset_published")
    files = list(files)
    if not files:
        raise CatalogError("Choose at least one DICOM file or .zip archive to upload.", code="no_files")
    for name, fileobj in files:
        if _looks_like_zip(name, fileobj):
            validate_archive(fileobj, archive_limits())

    with transaction.atomic():
        batch = UploadBatch.objects.create(dataset=dataset, uploaded_by=acting_user)
        for name, fileobj in files:
            is_archive = _looks_like_zip(name, fileobj)
            upload = UploadFile.objects.create(batch=batch, name=name[:255], is_archive=is_archive)
            key = storage.quarantine_key(provider_id=dataset.provider_id, batch_id=batch.pk, file_id=upload.pk)
            storage.put(key, fileobj)
            upload.quarantine_key = key
            upload.size_bytes = storage.size(key)
            upload.save(update_fields=["quarantine_key", "size_bytes"])
        batch.total_files = len(files)
        batch.save(update_fields=["total_files"])
        audit_record(actor=acting_user, action="upload.create", obj=batch, ip=ip,
                     detail={"dataset_id": dataset.pk, "files": len(files)})

        from catalog.tasks import upload_batch_ingest_task

        transaction.on_commit(lambda: upload_batch_ingest_task.delay(batch_id=batch.pk))
    logger.info("upload batch %s stored %s files for dataset %s", batch.pk, len(files), dataset.pk)
    return batch
