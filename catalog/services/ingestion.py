"""Ingestion (worker): quarantine → de-identify + verify → catalog rows and clean object.

Every step is idempotent per file: a file is claimed by a conditional update, instances
are unique per dataset and SOP Instance UID, and a re-run batch skips finished files.
Rejection reasons come from deid and name tags and causes, never values (no PHI).
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

import deid
from catalog import storage
from catalog.archives import iter_members
from catalog.exceptions import UnsafeArchiveError
from catalog.models import Dataset, Instance, Series, Study, UploadBatch, UploadFile, age_band_for
from catalog.services.uploads import archive_limits
from marketplace.services import audit_record

logger = logging.getLogger(__name__)

SPOOL_BYTES = 32 * 1024 * 1024


def provider_key(dataset: Dataset) -> bytes:
    return bytes.fromhex(dataset.provider.deid_secret)


def deid_options(dataset: Dataset) -> deid.Options:
    # deid's defaults: patient characteristics and shifted dates kept, descriptors cleaned,
    # device identity (station, serial) removed; manufacturer and model stay (allow-list).
    return deid.Options(accept_burned_in_risk=dataset.burned_in_risk_accepted,
                        accept_patient_free_text_risk=frozenset(dataset.patient_free_text_kept))


def upload_batch_ingest(*, batch_id: int, parallel: bool = False) -> UploadBatch | None:
    """Ingest every pending file of a batch; safe to run again after a crash.

    In-process (the default) the batch is finished on return. With ``parallel`` the
    pending files are queued in chunks for the worker pool and the last chunk to finish
    closes the batch (upload_batch_finish).
    """
    updated = UploadBatch.objects.filter(
        pk=batch_id, status__in=[UploadBatch.Status.QUEUED, UploadBatch.Status.RUNNING]
    ).update(status=UploadBatch.Status.RUNNING)
    if not updated:
        logger.info("upload batch %s is gone or finished; nothing to do", batch_id)
        return None
    batch = UploadBatch.objects.select_related("dataset__provider").get(pk=batch_id)

    for archive in batch.files.filter(is_archive=True, status=UploadFile.Status.PENDING):
        _expand_archive(batch, archive)
    pending = list(batch.files.filter(status=UploadFile.Status.PENDING, is_archive=False)
                   .order_by("pk").values_list("pk", flat=True))
    chunk = settings.INGEST_CHUNK_FILES
    if parallel and len(pending) > chunk:
        from catalog.tasks import upload_files_ingest_task

        for start in range(0, len(pending), chunk):
            upload_files_ingest_task.delay(batch_id=batch_id, upload_file_ids=pending[start:start + chunk])
        return batch
    return upload_files_ingest(batch_id=batch_id, upload_file_ids=pending)


def upload_files_ingest(*, batch_id: int, upload_file_ids: list[int]) -> UploadBatch | None:
    """Ingest some files of a batch, then close the batch if none is left pending."""
    for upload_id in upload_file_ids:
        upload_file_ingest(upload_file_id=upload_id)
    return upload_batch_finish(batch_id=batch_id)


def upload_batch_finish(*, batch_id: int) -> UploadBatch | None:
    """Close a batch whose files are all decided: dataset statistics, final counts, audit.

    The batch shows "done" only once the statistics are current, so a provider who
    submits the dataset the moment the upload finishes sees its images counted.
    """
    from catalog.services.stats import dataset_refresh_stats

    with transaction.atomic():
        # Two chunks finishing together both get here: the row lock lets one close it.
        batch = UploadBatch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.status != UploadBatch.Status.RUNNING:
            return None
        if batch.files.filter(status=UploadFile.Status.PENDING).exists():
            return None  # another chunk is still working; it will close the batch
        dataset_refresh_stats(dataset_id=batch.dataset_id)
        # Expanded archives are summary rows; a refused archive counts as one failed file.
        counts = batch.files.exclude(is_archive=True, status=UploadFile.Status.OK).values_list("status", flat=True)
        ok = sum(1 for s in counts if s in (UploadFile.Status.OK, UploadFile.Status.DUPLICATE))
        batch.status, batch.finished = UploadBatch.Status.DONE, timezone.now()
        batch.ok_files, batch.failed_files = ok, len(counts) - ok
        batch.done_files = batch.total_files = len(counts)
        batch.save(update_fields=["status", "finished", "ok_files", "failed_files", "done_files", "total_files"])
        audit_record(actor=batch.uploaded_by, action="upload.ingested", obj=batch,
                     detail={"dataset_id": batch.dataset_id, "ok": batch.ok_files, "failed": batch.failed_files})
    logger.info("upload batch %s done: %s ok, %s failed", batch_id, batch.ok_files, batch.failed_files)
    return batch


def _expand_archive(batch: UploadBatch, archive: UploadFile) -> None:
    """Turn a zip into one pending UploadFile per member, counting real bytes as we go."""
    created: list[UploadFile] = []
    try:
        with storage.open_read(archive.quarantine_key) as fh, tempfile.TemporaryFile() as local:
            # zipfile needs to seek; copy the archive to a local temp file first.
            while chunk := fh.read(storage.CHUNK):
                local.write(chunk)
            local.seek(0)
            for name, reader in iter_members(local, archive_limits()):
                member = UploadFile.objects.create(batch=batch, name=name[:255])
                key = storage.quarantine_key(provider_id=batch.dataset.provider_id, batch_id=batch.pk,
                                             file_id=member.pk)
                with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
                    while chunk := reader.read(storage.CHUNK):  # the reader enforces the size caps
                        spool.write(chunk)
                    spool.seek(0)
                    storage.put(key, spool)
                member.quarantine_key = key
                member.size_bytes = storage.size(key)
                member.save(update_fields=["quarantine_key", "size_bytes"])
                created.append(member)
    except UnsafeArchiveError as exc:
        for member in created:
            storage.delete(member.quarantine_key)
            member.delete()
        _finish_file(archive, UploadFile.Status.REJECTED, str(exc))
        return
    # The archive itself becomes a summary row; its members carry the per-file results.
    _finish_file(archive, UploadFile.Status.OK, f"archive expanded into {len(created)} files")
    UploadBatch.objects.filter(pk=batch.pk).update(total_files=F("total_files") + len(created) - 1)


@dataclass(frozen=True)
class CleanInstance:
    metadata: dict[str, Any]
    actions: dict[str, int]
    sha256: str
    size: int


def upload_file_ingest(*, upload_file_id: int) -> UploadFile | None:
    """De-identify, verify and catalogue one quarantined file. Never raises for bad input."""
    # Two workers racing on one file both produce the same SOP UID; the unique constraint
    # on (dataset, sop_uid) lets exactly one catalogue it.
    if not UploadFile.objects.filter(pk=upload_file_id, status=UploadFile.Status.PENDING).exists():
        return None
    upload = UploadFile.objects.select_related("batch__dataset__provider").get(pk=upload_file_id)
    dataset = upload.batch.dataset
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as clean:
        try:
            with storage.open_read(upload.quarantine_key) as src:
                report = deid.deidentify_file(src, clean, key=provider_key(dataset), options=deid_options(dataset))
        except deid.DeidError as exc:
            # deid's messages name tags and causes only, never values.
            return _finish_file(upload, UploadFile.Status.REJECTED, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop the batch
            logger.error("upload file %s failed with %s", upload.pk, exc.__class__.__name__)
            return _finish_file(upload, UploadFile.Status.REJECTED,
                                f"internal error while processing this file (reference {upload.pk})")
        if not report.verified:
            return _finish_file(upload, UploadFile.Status.REJECTED, "de-identification could not be verified")
        # A file cut at an element boundary parses cleanly but lacks the UIDs the catalog is
        # keyed by (and its storage key would be malformed); reject it instead of crashing.
        missing = [tag for tag, field in (("StudyInstanceUID", "study_uid"), ("SeriesInstanceUID", "series_uid"),
                                          ("SOPInstanceUID", "sop_uid")) if not report.metadata.get(field)]
        if missing:
            return _finish_file(upload, UploadFile.Status.REJECTED,
                                f"incomplete DICOM file (truncated?): missing {', '.join(missing)}")
        clean_instance = _measure(clean, report)
        clean.seek(0)
        return _catalogue(upload, dataset, clean, clean_instance)


def _measure(clean: IO[bytes], report: Any) -> CleanInstance:
    clean.seek(0)
    digest, size = hashlib.sha256(), 0
    while chunk := clean.read(storage.CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return CleanInstance(metadata=report.metadata, actions=dict(report.actions), sha256=digest.hexdigest(), size=size)


def _catalogue(upload: UploadFile, dataset: Dataset, clean: IO[bytes], item: CleanInstance) -> UploadFile:
    meta = item.metadata
    if Instance.objects.filter(dataset=dataset, sop_uid=meta["sop_uid"]).exists():
        return _finish_file(upload, UploadFile.Status.DUPLICATE,
                            "this image is already in the dataset", actions=item.actions)
    key = storage.catalog_key(dataset_id=dataset.pk, study_uid=meta["study_uid"],
                              series_uid=meta["series_uid"], sop_uid=meta["sop_uid"])
    storage.put(key, clean)
    try:
        with transaction.atomic():
            study = _study_for(dataset, meta)
            series = _series_for(study, meta)
            instance = Instance.objects.create(
                dataset=dataset, series=series, sop_uid=meta["sop_uid"],
                sop_class_uid=meta.get("sop_class_uid") or "", instance_number=_int(meta.get("instance_number")),
                storage_key=key, size_bytes=item.size, sha256=item.sha256,
            )
    except IntegrityError:
        # Another worker catalogued the same SOP instance first; same content, same key.
        return _finish_file(upload, UploadFile.Status.DUPLICATE, "this image is already in the dataset",
                            actions=item.actions)
    return _finish_file(upload, UploadFile.Status.OK, "", instance=instance, actions=item.actions)


def _study_for(dataset: Dataset, meta: dict[str, Any]) -> Study:
    age = _age_years(meta.get("patient_age"))
    study, _ = Study.objects.get_or_create(
        dataset=dataset, study_uid=meta["study_uid"],
        defaults={
            "pseudo_patient_id": meta.get("patient_id") or "",
            "patient_age": age,
            "age_band": age_band_for(age),
            "patient_sex": (meta.get("patient_sex") or "").upper()[:8],
            "study_date": meta.get("study_date"),
            "description": (meta.get("study_description") or "")[:200],
            "body_part": (meta.get("body_part") or "").upper()[:64],
            "manufacturer": (meta.get("manufacturer") or "")[:64],
            "model": (meta.get("model") or "")[:64],
            "ethnicity": (meta.get("ethnic_group") or "").strip().upper()[:64],
            "study_year": meta["study_date"].year if meta.get("study_date") else None,
        },
    )
    changed = _study_updates(study, meta)
    if changed:
        study.save(update_fields=changed)
    return study


# Series of these modalities make a study "with reports" / "with annotations".
REPORT_MODALITIES = {"SR", "DOC"}
ANNOTATION_MODALITIES = {"SEG", "RTSTRUCT", "PR", "ANN"}


def _study_updates(study: Study, meta: dict[str, Any]) -> list[str]:
    """Fold one more instance's series-level facts into its study; the changed fields."""
    changed = []
    modality = (meta.get("modality") or "").upper()[:16]
    if modality and modality not in study.modalities:
        study.modalities = [*study.modalities, modality]
        changed.append("modalities")
    if modality in REPORT_MODALITIES and not study.has_report:
        study.has_report = True
        changed.append("has_report")
    if modality in ANNOTATION_MODALITIES and not study.has_annotation:
        study.has_annotation = True
        changed.append("has_annotation")
    thickness = meta.get("slice_thickness")
    if thickness and thickness > 0 and (study.slice_thickness is None or thickness < study.slice_thickness):
        study.slice_thickness = thickness  # the thinnest series is what a buyer asks about
        changed.append("slice_thickness")
    strength = meta.get("field_strength")
    if strength and strength > 0 and study.field_strength != strength:
        study.field_strength = max(strength, study.field_strength or 0)
        changed.append("field_strength")
    return changed


def _series_for(study: Study, meta: dict[str, Any]) -> Series:
    series, _ = Series.objects.get_or_create(
        study=study, series_uid=meta["series_uid"],
        defaults={
            "modality": (meta.get("modality") or "").upper()[:16],
            "body_part": (meta.get("body_part") or "").upper()[:64],
            "manufacturer": (meta.get("manufacturer") or "")[:64],
            "model": (meta.get("model") or "")[:64],
            "description": (meta.get("series_description") or "")[:200],
            "series_number": _int(meta.get("series_number")),
        },
    )
    return series


def _finish_file(
    upload: UploadFile,
    status: str,
    reason: str,
    *,
    instance: Instance | None = None,
    actions: dict[str, int] | None = None,
) -> UploadFile:
    # The PHI original leaves quarantine as soon as its fate is decided.
    storage.delete(upload.quarantine_key)
    if status != UploadFile.Status.REJECTED and not upload.is_archive:
        # Uploaded names often carry MRNs or UIDs; keep them only where the provider needs
        # them to find and fix a rejected file.
        upload.name = ""
    upload.status, upload.reason, upload.instance = status, reason[:500], instance
    upload.deid_actions = actions or {}
    upload.quarantine_key = ""
    upload.save(update_fields=["name", "status", "reason", "instance", "deid_actions", "quarantine_key"])
    if not upload.is_archive:
        ok = status in (UploadFile.Status.OK, UploadFile.Status.DUPLICATE)
        UploadBatch.objects.filter(pk=upload.batch_id).update(
            done_files=F("done_files") + 1,
            ok_files=F("ok_files") + (1 if ok else 0),
            failed_files=F("failed_files") + (0 if ok else 1),
        )
    return upload


def _age_years(value: Any) -> int | None:
    """DICOM AS ("045Y", "006M", "010W", "003D") → whole years."""
    if not value:
        return None
    text = str(value).strip().upper()
    try:
        number, unit = int(text[:-1]), text[-1]
    except (ValueError, IndexError):
        return None
    return {"Y": number, "M": number // 12, "W": number // 52, "D": number // 365}.get(unit)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
