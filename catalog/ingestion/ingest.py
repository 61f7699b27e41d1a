"""Ingestion (worker): quarantine → de-identify + verify → catalog rows and clean object.

Every step is idempotent per file: a file is claimed by a conditional update, instances
are unique per dataset and SOP Instance UID, and a re-run batch skips finished files.
Rejection reasons come from deid and name tags and causes, never values (no PHI).
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
import time
import traceback
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

import deid
import storage
from catalog.exceptions import ArchiveMemberError, UnsafeArchiveError
from catalog.ingestion.archives import Member, copy_member, list_members, validate_archive
from catalog.ingestion.descriptions import display_description
from catalog.ingestion.upload_batches import (
    upload_batch_fail,
    upload_batch_recount,
    upload_batch_transition,
)
from catalog.ingestion.uploads import archive_limits
from catalog.models import (
    Dataset,
    Instance,
    Series,
    Study,
    UploadBatch,
    UploadFile,
    age_band_for,
)
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


class _Progress:
    """Recounts the batch from its file rows at most once a second (and on ``flush``): the
    page's counters and the stuck sweep's "last progress" without a query per file."""

    def __init__(self, batch_id: int) -> None:
        self.batch_id, self.last = batch_id, 0.0

    def tick(self) -> None:
        if time.monotonic() - self.last >= 1.0:
            self.flush()

    def flush(self) -> None:
        upload_batch_recount(batch_id=self.batch_id)
        self.last = time.monotonic()


@contextmanager
def _failing_visibly(batch_id: int) -> Iterator[None]:
    """Any error escaping ingestion ends the batch in FAILED with a reason, never "running"
    forever. Only ids and the error's class and frames are logged: messages of zipfile,
    pydicom or storage errors may quote file names (PHI)."""
    try:
        yield
    except SoftTimeLimitExceeded:
        logger.error("upload batch %s: stopped by the task time limit", batch_id)
        upload_batch_fail(batch_id=batch_id, reason=(
            "ingestion took longer than the worker's time limit; retry, or split the upload into smaller ones"))
    except Exception as exc:  # noqa: BLE001 - the batch must end visibly, whatever failed
        logger.error("upload batch %s: ingestion stopped by %s\n%s", batch_id, type(exc).__name__,
                     "".join(traceback.format_tb(exc.__traceback__)))
        upload_batch_fail(batch_id=batch_id, reason=(
            f"ingestion stopped by an internal error (reference upload {batch_id}); retry the upload"))


def upload_batch_ingest(*, batch_id: int, parallel: bool = False) -> UploadBatch | None:
    """Ingest every pending file of a batch; safe to run again after a crash.

    In-process (the default) the batch is finished on return. With ``parallel`` the
    pending files are queued in chunks for the worker pool and the last chunk to finish
    closes the batch (upload_batch_finish). Never raises for bad input: a failure ends the
    batch in FAILED with a reason.
    """
    with transaction.atomic():
        # Claim under the lock: a batch re-delivered after a worker died (acks_late) is
        # still RUNNING and is taken again; its finished work is skipped below.
        batch = UploadBatch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.status not in (UploadBatch.Status.QUEUED, UploadBatch.Status.RUNNING):
            logger.info("upload batch %s is gone or finished; nothing to do", batch_id)
            return None
        batch = upload_batch_transition(batch=batch, to=UploadBatch.Status.RUNNING, acting_user=None,
                                        reason="worker started")
        batch.attempts, batch.progressed = batch.attempts + 1, timezone.now()
        batch.save(update_fields=["attempts", "progressed"])
    with _failing_visibly(batch_id):
        return _ingest(batch_id, parallel=parallel)
    return UploadBatch.objects.filter(pk=batch_id).first()  # failed: the handler recorded why


def _ingest(batch_id: int, *, parallel: bool) -> UploadBatch | None:
    batch = UploadBatch.objects.select_related("dataset__provider").get(pk=batch_id)
    progress = _Progress(batch_id)
    for archive in batch.files.filter(is_archive=True, status=UploadFile.Status.PENDING):
        _expand_archive(batch, archive, progress)
    progress.flush()
    pending = list(batch.files.filter(status=UploadFile.Status.PENDING, is_archive=False)
                   .order_by("pk").values_list("pk", flat=True))
    chunk = settings.INGEST_CHUNK_FILES
    if parallel and len(pending) > chunk:
        from catalog.tasks import upload_files_ingest_task

        for start in range(0, len(pending), chunk):
            upload_files_ingest_task.delay(batch_id=batch_id, upload_file_ids=pending[start:start + chunk])
        return batch
    return _ingest_files(batch_id, pending)


def upload_files_ingest(*, batch_id: int, upload_file_ids: list[int]) -> UploadBatch | None:
    """Ingest some files of a running batch, then close the batch if none is left pending."""
    if not UploadBatch.objects.filter(pk=batch_id, status=UploadBatch.Status.RUNNING).exists():
        logger.info("upload batch %s is not running; chunk skipped", batch_id)
        return None
    with _failing_visibly(batch_id):
        return _ingest_files(batch_id, upload_file_ids)
    return UploadBatch.objects.filter(pk=batch_id).first()


def _ingest_files(batch_id: int, upload_file_ids: list[int]) -> UploadBatch | None:
    progress = _Progress(batch_id)
    for upload_id in upload_file_ids:
        upload_file_ingest(upload_file_id=upload_id)
        progress.tick()
    progress.flush()
    return upload_batch_finish(batch_id=batch_id)


def upload_batch_finish(*, batch_id: int) -> UploadBatch | None:
    """Close a batch whose files are all decided: dataset statistics, final counts, audit.

    The batch shows "done" only once the statistics are current, so a provider who
    submits the dataset the moment the upload finishes sees its images counted.
    """
    from catalog.ingestion.after import dataset_refresh_stats

    with transaction.atomic():
        # Two chunks finishing together both get here: the row lock lets one close it.
        batch = UploadBatch.objects.select_for_update().select_related("dataset").filter(pk=batch_id).first()
        if batch is None or batch.status != UploadBatch.Status.RUNNING:
            return None
        if batch.files.filter(status=UploadFile.Status.PENDING).exists():
            return None  # another chunk is still working; it will close the batch
        dataset_refresh_stats(dataset_id=batch.dataset_id)
        upload_batch_recount(batch_id=batch_id)
        batch = upload_batch_transition(batch=batch, to=UploadBatch.Status.DONE, acting_user=None)
        audit_record(actor=batch.uploaded_by, action="upload.ingested", obj=batch,
                     detail={"dataset_id": batch.dataset_id, "ok": batch.ok_files, "failed": batch.failed_files})
        provider_id = batch.dataset.provider_id
    # Every file is decided; whatever a crash left behind in quarantine goes now.
    storage.delete_tree(storage.quarantine_batch_prefix(provider_id=provider_id, batch_id=batch_id))
    logger.info("upload batch %s done: %s ok, %s failed", batch_id, batch.ok_files, batch.failed_files)
    return batch


def _expand_archive(batch: UploadBatch, archive: UploadFile, progress: _Progress) -> None:
    """Turn a zip into one pending UploadFile per member, counting real bytes as we go.

    Resumable: a member row is unique per (archive, position), so after a crash the rows
    already made are found and only the rest is extracted. A damaged member (bad CRC,
    broken data, a header that lies about its size) is rejected alone with a reason; the
    other members go on. Only an archive-wide problem (unreadable listing, limits) refuses
    the whole archive.
    """
    limits = archive_limits()
    try:
        with storage.open_read(archive.quarantine_key) as fh, tempfile.TemporaryFile() as local:
            # zipfile needs to seek; copy the archive to a local temp file first.
            while chunk := fh.read(storage.CHUNK):
                local.write(chunk)
            local.seek(0)
            validate_archive(local, limits)
            with zipfile.ZipFile(local) as zf:
                budget = [limits.max_total_bytes]
                made = {row.member_index: row for row in archive.members.all()}
                for member in list_members(zf):
                    row = made.get(member.index)
                    if row is not None and (row.status != UploadFile.Status.PENDING or row.quarantine_key):
                        budget[0] -= row.size_bytes  # extracted by an earlier run
                        continue
                    if row is None:
                        row, _ = UploadFile.objects.get_or_create(
                            source=archive, member_index=member.index,
                            defaults={"batch": batch, "name": member.name[:255]})
                    _extract_member(batch, zf, member, row, limits.max_member_bytes, budget)
                    progress.tick()
    except UnsafeArchiveError as exc:
        # The archive is the one failed file: members made so far (pending or rejected) go.
        for member_row in archive.members.all():
            storage.delete(member_row.quarantine_key)
            member_row.delete()
        _finish_file(archive, UploadFile.Status.REJECTED, exc.message)
        return
    # The archive itself becomes a summary row; its members carry the per-file results.
    _finish_file(archive, UploadFile.Status.OK, f"archive expanded into {archive.members.count()} files")


def _extract_member(batch: UploadBatch, zf: zipfile.ZipFile, member: Member, row: UploadFile,
                    max_member_bytes: int, budget: list[int]) -> None:
    key = storage.quarantine_key(provider_id=batch.dataset.provider_id, batch_id=batch.pk, file_id=row.pk)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        try:
            size = copy_member(zf, member, spool, max_member_bytes=max_member_bytes, budget=budget)
        except ArchiveMemberError as exc:
            _finish_file(row, UploadFile.Status.REJECTED, f"zip member {member.index + 1}: {exc.message}")
            return
        spool.seek(0)
        storage.put(key, spool)
    row.quarantine_key, row.size_bytes = key, size
    row.save(update_fields=["quarantine_key", "size_bytes"])


@dataclass(frozen=True)
class CleanInstance:
    metadata: dict[str, Any]
    actions: dict[str, int]
    sha256: str
    size: int


def upload_file_ingest(*, upload_file_id: int) -> UploadFile | None:
    """De-identify, verify and catalogue one quarantined file. Never raises for bad input."""
    # Two workers racing on one file both produce the same SOP UID; the unique constraint
    # on (dataset, sop_uid) lets exactly one catalogue it, and a file is decided once
    # (_finish_file updates only a pending row).
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
        problem = _pixel_problem(clean, upload.pk)
        if problem:
            return _finish_file(upload, UploadFile.Status.REJECTED, problem)
        clean_instance = _measure(clean, report)
        clean.seek(0)
        return _catalogue(upload, dataset, clean, clean_instance)


def _pixel_problem(clean: IO[bytes], upload_id: int) -> str:
    """Why the clean file's pixel data cannot be published ("" when it can): structure
    checked frame by frame, then decoded in a child process under a time limit."""
    # imported when used: pydicom and numpy cost a web worker about 40 MB, and only the
    # ingest worker reads images (the web imports this module for deid_options and the
    # upload services).
    import pydicom

    from deid.pixelcheck import check_pixel_data

    clean.seek(0)
    try:
        ds = pydicom.dcmread(clean)  # our own de-identified output, already verified
        check_pixel_data(ds, timeout=settings.INGEST_DECODE_TIMEOUT_SECONDS)
    except deid.DeidError as exc:
        return str(exc)  # names the problem and sizes, never values
    except Exception as exc:  # noqa: BLE001 - an unreadable image is rejected, not a crash
        logger.error("upload file %s: pixel check failed with %s", upload_id, exc.__class__.__name__)
        return f"pixel data could not be checked ({exc.__class__.__name__})"
    finally:
        clean.seek(0)
    return ""


def _measure(clean: IO[bytes], report: Any) -> CleanInstance:
    clean.seek(0)
    digest, size = hashlib.sha256(), 0
    while chunk := clean.read(storage.CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return CleanInstance(metadata=report.metadata, actions=dict(report.actions), sha256=digest.hexdigest(), size=size)


class _AlreadyDecided(Exception):
    """Another worker decided this file first; roll back what we catalogued."""


def _catalogue(upload: UploadFile, dataset: Dataset, clean: IO[bytes], item: CleanInstance) -> UploadFile:
    meta = item.metadata
    if Instance.objects.filter(dataset=dataset, sop_uid=meta["sop_uid"]).exists():
        return _finish_file(upload, UploadFile.Status.DUPLICATE,
                            "this image is already in the dataset", actions=item.actions)
    key = storage.catalog_key(dataset_id=dataset.pk, study_uid=meta["study_uid"],
                              series_uid=meta["series_uid"], sop_uid=meta["sop_uid"])
    storage.put(key, clean)  # same content and key on a re-run: overwriting is harmless
    try:
        # The instance and the file's "ingested" are one transaction: a worker killed in
        # between leaves neither, so the re-run catalogues the file instead of calling it
        # a duplicate of itself.
        with transaction.atomic():
            study = _study_for(dataset, meta)
            series = _series_for(study, meta)
            instance = Instance.objects.create(
                dataset=dataset, series=series, sop_uid=meta["sop_uid"],
                sop_class_uid=meta.get("sop_class_uid") or "", instance_number=_int(meta.get("instance_number")),
                storage_key=key, size_bytes=item.size, sha256=item.sha256,
            )
            if not _decide(upload, UploadFile.Status.OK, "", instance=instance, actions=item.actions):
                raise _AlreadyDecided
    except _AlreadyDecided:
        return upload
    except IntegrityError:
        # Another worker catalogued the same SOP instance first; same content, same key.
        return _finish_file(upload, UploadFile.Status.DUPLICATE, "this image is already in the dataset",
                            actions=item.actions)
    _drop_quarantine(upload)
    return upload


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
            "description": display_description(meta.get("study_description")),
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
            "description": display_description(meta.get("series_description")),
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
    """Decide a pending file once, then drop its PHI original from quarantine."""
    if _decide(upload, status, reason, instance=instance, actions=actions):
        _drop_quarantine(upload)
    return upload


def _decide(upload: UploadFile, status: str, reason: str, *, instance: Instance | None = None,
            actions: dict[str, int] | None = None) -> bool:
    """Record a pending file's fate; False if another worker decided it first. Counters
    are not touched here: upload_batch_recount derives them from these rows."""
    # Uploaded names often carry MRNs or UIDs; keep them only where the provider needs
    # them to find and fix a rejected file.
    name = upload.name if status == UploadFile.Status.REJECTED or upload.is_archive else ""
    updated = UploadFile.objects.filter(pk=upload.pk, status=UploadFile.Status.PENDING).update(
        name=name, status=status, reason=reason[:500], instance=instance, deid_actions=actions or {})
    if updated:
        upload.name, upload.status, upload.reason, upload.instance = name, status, reason[:500], instance
        upload.deid_actions = actions or {}
    return bool(updated)


def _drop_quarantine(upload: UploadFile) -> None:
    # After the decision is stored: a crash in between leaves bytes that the batch's
    # finish (or the failed-batch purge) removes with the batch's quarantine folder.
    storage.delete(upload.quarantine_key)
    UploadFile.objects.filter(pk=upload.pk).update(quarantine_key="")
    upload.quarantine_key = ""


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
