"""An upload batch's state machine: transition, failure, retry and the stuck-batch sweep.

Every move of ``UploadBatch.status`` goes through ``upload_batch_transition`` (one history
row per move). Reasons name ids and causes, never file or member names (they may hold PHI).

Quarantine retention: a file whose fate is decided (ingested, duplicate, rejected) leaves
quarantine at once. When a whole batch fails (a crash, or a worker that keeps dying), its
still-undecided originals are kept for INGEST_FAILED_RETENTION_HOURS (24 h by default) so
the provider can retry it; after that the sweep removes them, marks those files rejected
and the provider uploads them again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

import storage
from catalog.exceptions import CatalogError
from catalog.models import Dataset, UploadBatch, UploadBatchStatusChange, UploadFile
from marketplace.exceptions import InvalidTransitionError
from marketplace.models import User
from marketplace.services import audit_record

logger = logging.getLogger(__name__)

Status = UploadBatch.Status


@transaction.atomic
def upload_batch_transition(*, batch: UploadBatch, to: str, acting_user: User | None, reason: str = "") -> UploadBatch:
    """The one service that moves a batch. Locks the row; quiet if already there."""
    locked = UploadBatch.objects.select_for_update().get(pk=batch.pk)
    if locked.status == to:
        return locked
    if to not in UploadBatch.TRANSITIONS[locked.status]:
        raise InvalidTransitionError(
            f"Upload #{locked.pk} cannot move from {locked.get_status_display()} to {Status(to).label}.")
    old = locked.status
    locked.status = to
    fields = ["status"]
    if to in (Status.DONE, Status.FAILED):
        locked.finished = timezone.now()
        fields.append("finished")
    if to == Status.FAILED:
        locked.error = reason[:500]
        fields.append("error")
    if to in (Status.QUEUED, Status.RUNNING):
        locked.error, locked.finished, locked.progressed = "", None, timezone.now()
        fields += ["error", "finished", "progressed"]
    locked.save(update_fields=fields)
    UploadBatchStatusChange.objects.create(batch=locked, old_status=old, new_status=to, acting_user=acting_user,
                                           reason=reason[:500])
    return locked


def upload_batch_figures(batch: UploadBatch) -> dict:
    """What the batch page shows and its polling reads: every number from the counters one
    recount wrote together (upload_batch_recount), so the bar and the counts always agree.
    File counts of the provider's own upload, seen only by its members: exact."""
    return {
        "status": batch.status, "status_label": batch.get_status_display(), "done": batch.done_files,
        "total": batch.total_files, "ok": batch.ok_files, "failed": batch.failed_files,
        "remaining": batch.total_files - batch.done_files, "percent": batch.percent,
    }


def upload_batch_recount(*, batch_id: int) -> None:
    """Set the batch's counters from its file rows (never incremented: a re-run after a
    crash must not count a file twice). An expanded archive is a summary row and not
    counted; an archive refused whole, or not yet expanded, counts as one file."""
    expanded = Exists(UploadFile.objects.filter(source=OuterRef("pk")))
    rows = (UploadFile.objects.filter(batch_id=batch_id).annotate(expanded=expanded)
            .exclude(Q(is_archive=True) & (Q(status=UploadFile.Status.OK) | Q(expanded=True))))
    counts = rows.aggregate(
        total=Count("pk"),
        done=Count("pk", filter=~Q(status=UploadFile.Status.PENDING)),
        ok=Count("pk", filter=Q(status__in=[UploadFile.Status.OK, UploadFile.Status.DUPLICATE])),
        failed=Count("pk", filter=Q(status=UploadFile.Status.REJECTED)),
    )
    UploadBatch.objects.filter(pk=batch_id).update(
        total_files=counts["total"], done_files=counts["done"], ok_files=counts["ok"],
        failed_files=counts["failed"], progressed=timezone.now())


def upload_batch_fail(*, batch_id: int, reason: str, acting_user: User | None = None) -> UploadBatch | None:
    """End an open, queued or running batch in FAILED with ``reason`` (shown to the provider).

    Files not yet decided stay pending with the reason and keep their quarantined bytes
    for the retention period, so a retry can pick them up. None if the batch is gone or
    already finished."""
    with transaction.atomic():
        batch = UploadBatch.objects.select_for_update().filter(pk=batch_id).first()
        if batch is None or batch.status not in (Status.UPLOADING, Status.QUEUED, Status.RUNNING):
            return None
        batch = upload_batch_transition(batch=batch, to=Status.FAILED, acting_user=acting_user, reason=reason)
        batch.files.filter(status=UploadFile.Status.PENDING).update(
            reason=f"not processed: {reason}"[:500])
        upload_batch_recount(batch_id=batch.pk)
        audit_record(actor=acting_user, action="upload.failed", obj=batch,
                     detail={"dataset_id": batch.dataset_id, "reason": reason})
    logger.warning("upload batch %s failed", batch_id)
    batch.refresh_from_db()
    return batch


def upload_batch_retry(*, batch: UploadBatch, acting_user: User, ip: str | None = None) -> UploadBatch:
    """Queue a failed batch again; its files not yet decided are ingested, nothing twice.

    Idempotent: retrying a batch already queued or running again does nothing (no second
    task). Raises CatalogError when the batch did not fail, its originals were already
    removed (retention over), or its dataset is published."""
    with transaction.atomic():
        # The lock makes two clicks (or two tabs) queue one task, not two.
        locked = UploadBatch.objects.select_for_update().select_related("dataset").get(pk=batch.pk)
        if locked.status in (Status.QUEUED, Status.RUNNING):
            return locked
        if locked.status != Status.FAILED:
            raise CatalogError("Only a failed upload can be retried.", code="upload_not_failed")
        if locked.quarantine_removed is not None:
            raise CatalogError(
                f"This upload failed more than {settings.INGEST_FAILED_RETENTION_HOURS} hours ago and its files "
                "were removed; upload them again.", code="upload_expired")
        if locked.dataset.status == Dataset.Status.PUBLISHED:
            raise CatalogError("This dataset is published; move it back to draft to add images.",
                               code="dataset_published")
        locked = upload_batch_transition(batch=locked, to=Status.QUEUED, acting_user=acting_user,
                                         reason="retried by the provider")
        locked.attempts = 0
        locked.save(update_fields=["attempts"])
        locked.files.filter(status=UploadFile.Status.PENDING).update(reason="")
        audit_record(actor=acting_user, action="upload.retry", obj=locked, ip=ip,
                     detail={"dataset_id": locked.dataset_id})
        _queue(locked.pk)
    return locked


@dataclass(frozen=True)
class RecoveryResult:
    requeued: list[int]
    failed: list[int]
    purged: list[int]


def _quiet_needed(attempts: int, base: timedelta) -> timedelta:
    """How long a batch started ``attempts`` times must show no progress before the sweep
    acts: ``base`` for the first restart, then twice as long each time (15, 30, 60 minutes
    by default), so a batch whose worker keeps dying is not restarted in a tight loop. The
    count is on the row (UploadBatch.attempts); deciding to fail it waits only ``base``."""
    if attempts >= settings.INGEST_MAX_ATTEMPTS:
        return base
    return base * 2 ** max(attempts - 1, 0)


def _quiet(cutoff_for, now: datetime) -> Q:  # noqa: ANN001 - cutoff_for: attempts -> timedelta
    quiet = Q()
    for attempts in range(settings.INGEST_MAX_ATTEMPTS + 1):
        cutoff = now - cutoff_for(attempts)
        same = Q(attempts__gte=attempts) if attempts == settings.INGEST_MAX_ATTEMPTS else Q(attempts=attempts)
        quiet |= same & (Q(progressed__lt=cutoff) | Q(progressed__isnull=True, created__lt=cutoff))
    return quiet


# An open batch (the page still sending files) that received nothing for this long was
# abandoned (tab closed, connection lost). Longer than the stuck-ingestion time: one
# request of a large selection over a slow link takes minutes.
OPEN_QUIET = timedelta(hours=1)


def upload_batches_fail_abandoned(*, now: datetime | None = None) -> list[int]:
    """Fail open batches that received no file for OPEN_QUIET: what was received is kept
    for the retention period, so the provider can retry (ingest it) or upload again."""
    cutoff = (now or timezone.now()) - OPEN_QUIET
    failed = []
    abandoned = UploadBatch.objects.filter(status=Status.UPLOADING, progressed__lt=cutoff)
    for batch_id in abandoned.values_list("pk", flat=True)[:500]:
        if upload_batch_fail(batch_id=batch_id, reason=(
                "the upload stopped before every file was sent; retry to ingest the files received, "
                "or upload them again")):
            failed.append(batch_id)
    return failed


def upload_batches_recover_stuck(*, older_than: timedelta | None = None) -> RecoveryResult:
    """Find running batches with no progress for ``older_than`` (INGEST_STUCK_MINUTES by
    default, longer after each restart: _quiet_needed): their worker died. Re-queue each
    (ingestion is idempotent), or fail it with a reason once it was started
    INGEST_MAX_ATTEMPTS times. Batches queued that long were never taken (their message was
    lost, e.g. by a broker restart): their task is sent again (a duplicate is harmless: the
    claim is under the row lock). Also fails open batches the page stopped sending to
    (upload_batches_fail_abandoned) and removes the quarantined originals of batches that
    failed longer ago than INGEST_FAILED_RETENTION_HOURS.

    Safe to run from several schedulers at once: each batch is re-checked under its lock.
    """
    older_than = older_than if older_than is not None else timedelta(minutes=settings.INGEST_STUCK_MINUTES)
    stale = Q(status__in=[Status.RUNNING, Status.QUEUED]) & _quiet(
        lambda attempts: _quiet_needed(attempts, older_than), timezone.now())
    requeued, failed = [], []
    for batch_id in UploadBatch.objects.filter(stale).order_by("progressed").values_list("pk", flat=True)[:500]:
        with transaction.atomic():
            # A worker may have made progress since the query: re-check under the lock.
            batch = UploadBatch.objects.select_for_update().filter(pk=batch_id).filter(stale).first()
            if batch is None:
                continue
            if batch.status == Status.QUEUED:
                # The next resend waits a full quiet time again (a long queue is not flooded).
                UploadBatch.objects.filter(pk=batch.pk).update(progressed=timezone.now())
                _queue(batch.pk)
                requeued.append(batch.pk)
                continue
            if batch.attempts >= settings.INGEST_MAX_ATTEMPTS:
                upload_batch_fail(batch_id=batch.pk, reason=(
                    f"ingestion stopped without finishing {batch.attempts} times; retry the upload, "
                    "and if it stops again split it into smaller uploads"))
                failed.append(batch.pk)
                continue
            waited = _quiet_needed(batch.attempts, older_than)
            upload_batch_transition(batch=batch, to=Status.QUEUED, acting_user=None,
                                    reason=f"no progress for {int(waited.total_seconds() // 60)} minutes; "
                                           f"queued again (start {batch.attempts + 1} of "
                                           f"{settings.INGEST_MAX_ATTEMPTS})")
            _queue(batch.pk)
            requeued.append(batch.pk)
    failed += upload_batches_fail_abandoned()
    purged = upload_batches_purge_failed()
    if requeued or failed or purged:
        logger.warning("stuck upload batches: requeued %s, failed %s, quarantine purged %s", requeued, failed, purged)
    return RecoveryResult(requeued=requeued, failed=failed, purged=purged)


def upload_batches_purge_failed(*, now: datetime | None = None) -> list[int]:
    """Remove the quarantined originals of batches failed longer than the retention ago."""
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.INGEST_FAILED_RETENTION_HOURS)
    purged = []
    expired = UploadBatch.objects.filter(status=Status.FAILED, finished__lt=cutoff, quarantine_removed__isnull=True)
    for batch in expired.select_related("dataset")[:500]:
        storage.delete_tree(storage.quarantine_batch_prefix(provider_id=batch.dataset.provider_id, batch_id=batch.pk))
        with transaction.atomic():
            batch.files.filter(status=UploadFile.Status.PENDING).update(
                status=UploadFile.Status.REJECTED, quarantine_key="",
                reason=(f"not processed: the upload failed and its files were removed after "
                        f"{settings.INGEST_FAILED_RETENTION_HOURS} hours; upload this file again"))
            UploadBatch.objects.filter(pk=batch.pk).update(quarantine_removed=now)
            upload_batch_recount(batch_id=batch.pk)
        purged.append(batch.pk)
    return purged


def _queue(batch_id: int) -> None:
    from catalog.tasks import upload_batch_ingest_task

    transaction.on_commit(lambda: upload_batch_ingest_task.delay(batch_id=batch_id))
