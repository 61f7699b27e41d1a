"""Deliveries into per-user workspaces and signed, expiring download links."""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import logging
import re
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

import storage
from catalog.licence import ACCESS_VIEW_ONLY
from catalog.models import Dataset, Instance
from marketplace.exceptions import InvalidTransitionError, NotFoundError, PermissionDeniedError
from marketplace.models import ApiToken, User
from marketplace.services import audit_record
from orders.models import Order, OrderLine
from orders.transitions import order_move
from workspaces.bag import DeliveryBag
from workspaces.certificate import (
    CERTIFICATE_JSON_NAME,
    CERTIFICATE_PDF_NAME,
    certificate_for,
    certificate_json_bytes,
    certificate_pdf,
)
from workspaces.exceptions import DeliveryError, DeliveryNotReadyError
from workspaces.fingerprint import (
    MANIFEST_COLUMN,
    NotFingerprintableError,
    fingerprint_file,
    fingerprint_uid,
    order_marker,
    order_uid_key,
)
from workspaces.grants import deliveries_downloadable_by, delivery_grant_buyer
from workspaces.models import Delivery, DeliveryFile, DeliveryStatusChange
from workspaces.notices import delivery_ended_notify

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
# UIDs are those of the delivered copies (workspaces/fingerprint.py); the last column is the
# order's fingerprint tag, the same on every row.
MANIFEST_COLUMNS = ["path", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "bytes", "sha256",
                    MANIFEST_COLUMN]
# A delivered copy is built in memory up to this size, then in a temporary file.
SPOOL_BYTES = 32 * 1024 * 1024
# Written beside the data at the end of a delivery, each downloadable by its name from the
# workspace: name -> content type. Data files live under study/series folders, so no
# delivered file has one of these names.
DELIVERY_DOCUMENTS = {
    MANIFEST_NAME: "text/csv",
    CERTIFICATE_JSON_NAME: "application/json",
    CERTIFICATE_PDF_NAME: "application/pdf",
}
_SIGNING_SALT = "workspaces.download"


@transaction.atomic
def delivery_create(*, order: Order, acting_user: User | None) -> Delivery:
    """Record the delivery and queue the copy once the transaction commits. Idempotent."""
    delivery, created = Delivery.objects.get_or_create(
        order=order, defaults={"user_id": order.buyer_id, "progressed": timezone.now()})
    if created:
        # One grant per delivery: a view-only line makes the whole delivery view-only (never
        # the other way round, which would let its files be downloaded).
        view_only = any((terms or {}).get("access") == ACCESS_VIEW_ONLY
                        for terms in order.lines.values_list("licence_terms", flat=True))
        delivery_grant_buyer(delivery, view_only=view_only, acting_user=acting_user)
        _enqueue_after_commit(delivery.pk)
    return delivery


def _enqueue_after_commit(delivery_id: int) -> None:
    from workspaces.tasks import delivery_run_task

    transaction.on_commit(lambda: delivery_run_task.delay(delivery_id=delivery_id))


@transaction.atomic
def delivery_transition(*, delivery: Delivery, to: str, acting_user: User | None, reason: str = "",
                        buyer_reason: str = "") -> Delivery:
    """The one service that moves a delivery (Delivery.TRANSITIONS). Locks the row, writes a
    DeliveryStatusChange, returns quietly when the delivery is already there. Queues no
    work: callers that re-queue it also send the task (delivery_restart,
    deliveries_recover_stuck). A move to DONE or FAILED tells the buyer (workspaces/notices.py),
    with ``buyer_reason`` when the failure is one they can act on; otherwise a general text."""
    locked = Delivery.objects.select_for_update(of=("self",)).select_related("order", "user").get(pk=delivery.pk)
    if locked.status == to:
        return locked
    if to not in Delivery.TRANSITIONS[locked.status]:
        raise InvalidTransitionError(
            f"Delivery of order #{locked.order_id} cannot move from {locked.get_status_display()} "
            f"to {Delivery.Status(to).label}.")
    old, now = locked.status, timezone.now()
    locked.status = to
    fields = ["status"]
    if to == Delivery.Status.RUNNING:
        locked.run_number += 1  # fences off any older run of this delivery
        locked.progressed = now
        fields += ["run_number", "progressed"]
    elif to == Delivery.Status.QUEUED:
        locked.progressed, locked.error, locked.finished = now, "", None
        fields += ["progressed", "error", "finished"]
    elif to == Delivery.Status.DONE:
        locked.finished, locked.error = now, ""
        fields += ["finished", "error"]
    elif to == Delivery.Status.FAILED:
        locked.finished, locked.error = now, reason[:500]
        fields += ["finished", "error"]
    locked.save(update_fields=fields)
    DeliveryStatusChange.objects.create(delivery=locked, old_status=old, new_status=to, acting_user=acting_user,
                                        reason=reason)
    # Under the row lock and after the early return above: each real end is told once.
    delivery_ended_notify(locked, buyer_reason=buyer_reason)
    return locked


@transaction.atomic
def delivery_restart(*, delivery: Delivery, acting_user: User, reason: str) -> Delivery:
    """Admin: queue a failed or stuck delivery again. Files already copied are kept; a run
    still going stops at its next file (its run number no longer matches)."""
    if not reason.strip():
        raise DeliveryError("Give a reason for restarting a delivery.", code="reason_required")
    delivery = delivery_transition(delivery=delivery, to=Delivery.Status.QUEUED, acting_user=acting_user,
                                   reason=reason.strip())
    Delivery.objects.filter(pk=delivery.pk).update(restarts=0)  # a fresh allowance of automatic restarts
    _enqueue_after_commit(delivery.pk)
    audit_record(actor=acting_user, action="delivery.restart", obj=delivery,
                 detail={"order_id": delivery.order_id, "reason": reason.strip()})
    return delivery


@transaction.atomic
def delivery_fail(*, delivery: Delivery, acting_user: User, reason: str) -> Delivery:
    """Admin: stop a queued or running delivery for good, with the reason shown to staff."""
    if not reason.strip():
        raise DeliveryError("Give a reason for failing a delivery.", code="reason_required")
    delivery = delivery_transition(delivery=delivery, to=Delivery.Status.FAILED, acting_user=acting_user,
                                   reason=reason.strip())
    audit_record(actor=acting_user, action="delivery.fail", obj=delivery,
                 detail={"order_id": delivery.order_id, "reason": reason.strip()})
    return delivery


def delivery_continue(*, delivery_id: int) -> None:
    """A run that used up its time slice (the delivery queue's soft limit): queue the rest."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None or delivery.status != Delivery.Status.RUNNING:
            return
        delivery_transition(delivery=delivery, to=Delivery.Status.QUEUED, acting_user=None,
                            reason="Time slice used up; continuing in a new task.")
        _enqueue_after_commit(delivery_id)


def _quiet_needed(restarts: int) -> int:
    """Seconds without progress after which the sweep restarts a delivery that was restarted
    automatically ``restarts`` times: DELIVERY_STUCK_SECONDS at first, then longer each time
    (DELIVERY_RESTART_BACKOFF_SECONDS), so a delivery that keeps losing its worker is not
    restarted in a tight loop. The count is on the row (Delivery.restarts)."""
    steps = [settings.DELIVERY_STUCK_SECONDS, *settings.DELIVERY_RESTART_BACKOFF_SECONDS]
    return max(settings.DELIVERY_STUCK_SECONDS, steps[min(restarts, len(steps) - 1)])


def _recover_locked(delivery: Delivery, *, quiet_seconds: int) -> Delivery:
    """A running delivery (row locked by the caller) whose worker stopped: back to QUEUED,
    or FAILED once it used up DELIVERY_MAX_RESTARTS. The reason is shown to the buyer."""
    if delivery.restarts >= settings.DELIVERY_MAX_RESTARTS:
        return delivery_transition(
            delivery=delivery, to=Delivery.Status.FAILED, acting_user=None,
            reason=f"The copy stopped making progress {delivery.restarts + 1} times (no progress for "
                   f"{quiet_seconds} s after {delivery.restarts} automatic restart(s)); our staff restart it "
                   "from the admin once the cause is fixed.")
    delivery = delivery_transition(
        delivery=delivery, to=Delivery.Status.QUEUED, acting_user=None,
        reason=f"No progress for {quiet_seconds} s (worker lost?); restart "
               f"{delivery.restarts + 1} of {settings.DELIVERY_MAX_RESTARTS}; the next one after "
               f"{_quiet_needed(delivery.restarts + 1)} s without progress.")
    Delivery.objects.filter(pk=delivery.pk).update(restarts=F("restarts") + 1)
    return delivery


def _quiet_seconds(delivery: Delivery) -> int:
    if delivery.progressed is None:
        return _quiet_needed(delivery.restarts)
    return int((timezone.now() - delivery.progressed).total_seconds())


def _stuck(delivery: Delivery) -> bool:
    return delivery.status == Delivery.Status.RUNNING and _quiet_seconds(delivery) >= _quiet_needed(delivery.restarts)


def _lost(delivery: Delivery) -> bool:
    """Queued, and not taken by any worker for the quiet time: its message may be gone (a
    broker restarted without its data loses the queue)."""
    return delivery.status == Delivery.Status.QUEUED and _quiet_seconds(delivery) >= _quiet_needed(delivery.restarts)


SWEEP_BATCH = 200


def _quiet_filter(now: datetime) -> Q:
    """Rows quiet for at least _quiet_needed(their restarts) (the SQL side of _stuck/_lost)."""
    steps = [settings.DELIVERY_STUCK_SECONDS, *settings.DELIVERY_RESTART_BACKOFF_SECONDS]
    quiet = Q(progressed__isnull=True)
    for restarts in range(len(steps)):
        cutoff = now - timedelta(seconds=_quiet_needed(restarts))
        if restarts == len(steps) - 1:
            quiet |= Q(restarts__gte=restarts, progressed__lte=cutoff)
        else:
            quiet |= Q(restarts=restarts, progressed__lte=cutoff)
    return quiet


def deliveries_recover_stuck() -> dict[str, int]:
    """Beat job. A delivery "running" without progress for its quiet time lost its worker:
    re-queue it (its copied files are kept) or fail it after DELIVERY_MAX_RESTARTS, each with
    a status change saying why. A delivery "queued" that long was never taken (its message
    was lost, e.g. by a broker restart): send it again, counted with the re-queues (a
    duplicate message is harmless: the claim takes it once). The quiet time grows with each
    automatic restart (_quiet_needed). At most SWEEP_BATCH per call (a few ms each); the next
    sweep takes the rest."""
    candidates = list(
        Delivery.objects.filter(status__in=[Delivery.Status.RUNNING, Delivery.Status.QUEUED])
        .filter(_quiet_filter(timezone.now())).order_by("progressed").values_list("pk", flat=True)[:SWEEP_BATCH])
    counts = {"requeued": 0, "failed": 0}
    for pk in candidates:
        with transaction.atomic():
            # Locked and checked again: the run may have copied a file since the query.
            delivery = Delivery.objects.select_for_update().filter(pk=pk).first()
            if delivery is None:
                continue
            if _lost(delivery):
                # The next resend waits a full quiet time again (a long queue is not flooded).
                Delivery.objects.filter(pk=pk).update(progressed=timezone.now())
                _enqueue_after_commit(pk)
                counts["requeued"] += 1
                logger.warning("delivery %s was queued without a worker taking it; sent again", pk)
                continue
            if not _stuck(delivery):
                continue
            delivery = _recover_locked(delivery, quiet_seconds=_quiet_seconds(delivery))
            if delivery.status == Delivery.Status.QUEUED:
                _enqueue_after_commit(pk)
                counts["requeued"] += 1
            else:
                counts["failed"] += 1
            logger.warning("delivery %s had no progress; now %s", pk, delivery.status)
    return counts


def _held_studies(order: Order):  # noqa: ANN202 - a queryset of study ids
    """Studies of the order's lines whose access has not ended (refunds end a line's access)."""
    return OrderLine.studies.through.objects.filter(
        orderline__order=order, orderline__access_ended_at__isnull=True).values("study_id")


def _instances_for(order: Order):  # noqa: ANN202 - a queryset of Instance
    return (
        Instance.objects.filter(series__study__in=_held_studies(order))
        .select_related("series__study").order_by("id")
    )


# How many files are copied between two checks that the order may still be delivered.
STOP_CHECK_EVERY = 200
# Copied files are recorded (rows, progress mark, fence check) in one transaction per
# RECORD_EVERY files, or sooner once RECORD_SECONDS have passed (well inside
# DELIVERY_STUCK_SECONDS, so slow copies still show progress). Per file, those database
# round trips took several times longer than copying a 512 KB file (benchmarks/delivery_bench.py).
RECORD_EVERY = 100
RECORD_SECONDS = 1.0


def _stop_reason(order_id: int, *, lock: bool = False) -> str:
    """Why this order's delivery must not finish ("" if it may): a cancelled order, or one
    of its datasets withdrawn from publication (to draft or review) before delivery."""
    orders = Order.objects.all()
    if lock:  # the same row locks dataset_transition takes: withdrawal and completion serialise
        orders = orders.select_for_update()
    order = orders.get(pk=order_id)
    if order.status == Order.Status.CANCELLED:
        return "The order was cancelled before its data was delivered."
    datasets = Dataset.objects.filter(order_lines__order_id=order_id, order_lines__access_ended_at__isnull=True)
    if lock:
        datasets = Dataset.objects.select_for_update().filter(pk__in=list(datasets.values_list("pk", flat=True)))
    withdrawn = [d.title for d in datasets if d.status != Dataset.Status.PUBLISHED]
    if withdrawn:
        return f"The dataset {withdrawn[0]!r} was withdrawn by its provider before its data was delivered."
    return ""


def _halt(order: Order, reason: str) -> None:
    """A withdrawn dataset cancels the open order (which stops the delivery and gives the
    money back); an order already cancelled only has its delivery stopped."""
    from orders.services import order_cancel

    if Order.objects.get(pk=order.pk).status == Order.Status.OPEN:
        order_cancel(order=order, acting_user=None, reason=reason)
    else:
        delivery_stop(order=order, reason=reason)


@transaction.atomic
def delivery_stop(*, order: Order, reason: str) -> bool:
    """End a delivery not yet done as FAILED with the reason (links need DONE, so none of
    its files is served). The order itself is moved by its own services. True if one was
    stopped."""
    delivery = Delivery.objects.select_for_update().filter(
        order=order, status__in=[Delivery.Status.QUEUED, Delivery.Status.RUNNING]).first()
    if delivery is None:
        return False
    # Through the one transition service: a history row, the reason, the end time.
    # The stop reasons (a cancelled order, a withdrawn dataset) are written for the buyer.
    delivery = delivery_transition(delivery=delivery, to=Delivery.Status.FAILED, acting_user=None,
                                   reason=reason[:500], buyer_reason=reason[:250])
    audit_record(actor=None, action="delivery.stopped", obj=delivery,
                 detail={"order_id": order.pk, "reason": reason[:200]})
    return True


@transaction.atomic
def delivery_remove_lines(*, order: Order, line_ids: list[int], reason: str) -> int:
    """Refunded or ended lines: their files leave the workspace (objects and rows, so no
    link serves them again) and the manifest is rewritten. Returns files removed."""
    delivery = Delivery.objects.select_for_update().filter(order=order).first()
    if delivery is None or not line_ids:
        return 0
    studies = OrderLine.studies.through.objects.filter(orderline_id__in=line_ids).values("study_id")
    files = list(delivery.files.filter(Q(instance__series__study__in=studies) | Q(series__study__in=studies)))
    for f in files:
        storage.delete(f.storage_key)
    removed = DeliveryFile.objects.filter(pk__in=[f.pk for f in files]).delete()[0]
    if removed:
        Delivery.objects.filter(pk=delivery.pk).update(
            done_files=F("done_files") - removed, total_files=F("total_files") - removed,
            total_bytes=F("total_bytes") - sum(f.size_bytes for f in files))
        if delivery.status == Delivery.Status.DONE:
            _write_manifest(delivery)
        audit_record(actor=None, action="delivery.files_removed", obj=delivery,
                     detail={"order_id": order.pk, "lines": line_ids, "files": removed, "reason": reason[:200]})
    return removed


def _delivery_claim(delivery_id: int) -> tuple[Delivery, int] | None:
    """Take a queued delivery, or a running one whose worker is gone (the broker handed the
    task back), for this run. Returns the delivery and this run's number, or None."""
    with transaction.atomic():
        # The lock makes two workers handed the same delivery claim it one after the other;
        # the second then finds it running with fresh progress and leaves it.
        delivery = Delivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None:
            logger.info("delivery %s is gone; nothing to do", delivery_id)
            return None
        if _stuck(delivery):
            delivery = _recover_locked(delivery, quiet_seconds=_quiet_seconds(delivery))
        if delivery.status != Delivery.Status.QUEUED:
            logger.info("delivery %s is %s; nothing to do", delivery_id, delivery.status)
            return None
        delivery = delivery_transition(delivery=delivery, to=Delivery.Status.RUNNING, acting_user=None,
                                       reason=f"Claimed by a worker (run {delivery.run_number + 1}).")
        return delivery, delivery.run_number


def delivery_run(*, delivery_id: int) -> Delivery | None:
    """Write the buyer's copy of the order's instances into the workspace (fingerprinted
    per order: workspaces/fingerprint.py), NIfTI per series when the order asked for it
    (workspaces/nifti.py), then the manifest and the certificate.

    Safe to run twice, concurrently, or after a worker died mid-way: only one run holds the
    delivery (run_number, checked each time a batch of files is recorded), files already
    recorded are skipped (unique per delivery and instance, series already in the conversion
    report too), and after a crash an object of the unrecorded batch already at its key with
    the right sha256 is not written again (the copy is deterministic, so its sha256 is known
    before writing). The manifest is rewritten from the rows.
    Stops as FAILED, with the reason, when the order was cancelled or the dataset withdrawn
    before the delivery finished (checked before, during and, under lock, at the end).
    """
    claimed = _delivery_claim(delivery_id)
    if claimed is None:
        return None
    delivery, run_number = claimed
    delivery = Delivery.objects.select_related("order").get(pk=delivery_id)
    reason = _stop_reason(delivery.order_id)
    if reason:
        _halt(delivery.order, reason)
        return Delivery.objects.get(pk=delivery_id)
    order = delivery.order
    instances = _instances_for(order)
    copied = delivery.files.aggregate(files=Count("pk"), bytes=Sum("size_bytes"))
    series = _series_for(order) if order.wants_nifti else None
    planned = (instances.count() if order.wants_dicom else 0) + (
        2 * series.count() if series is not None else 0)  # an image and its sidecar per series
    Delivery.objects.filter(pk=delivery_id).update(
        total_files=max(planned, copied["files"]), done_files=copied["files"], total_bytes=copied["bytes"] or 0)
    # A resumed delivery may find the files its dead worker wrote but had not yet recorded:
    # at most one batch and one chunk in flight, the first files still missing (chunks are
    # written in id order).
    verify_left = RECORD_EVERY + _copy_threads() if copied["files"] > 0 else 0
    uid_key = order_uid_key(order.pk)

    done = set(delivery.files.filter(instance__isnull=False).values_list("instance_id", flat=True))
    todo = instances.exclude(pk__in=done) if order.wants_dicom else instances.none()
    pending: list[DeliveryFile] = []
    recorded_at, copied_count, next_stop_check = time.monotonic(), 0, STOP_CHECK_EVERY
    rows = todo.values_list(*_COPY_FIELDS, named=True).iterator(chunk_size=500)
    with _Copier(delivery, uid_key) as copier:
        while chunk := list(itertools.islice(rows, copier.chunk_size)):
            if copied_count >= next_stop_check:
                next_stop_check += STOP_CHECK_EVERY
                if reason := _stop_reason(delivery.order_id):
                    _halt(delivery.order, reason)
                    return Delivery.objects.get(pk=delivery_id)
            try:
                pending.extend(copier.copy(chunk, check_existing=verify_left > 0))
            except _CopyFailed as exc:
                return _fail_run(delivery_id, run_number, str(exc))
            verify_left -= len(chunk)
            copied_count += len(chunk)
            if len(pending) >= RECORD_EVERY or time.monotonic() - recorded_at >= RECORD_SECONDS:
                if not _record(delivery, pending, run_number=run_number):
                    logger.info("delivery %s: run %s was superseded; stopping", delivery_id, run_number)
                    return None
                pending, recorded_at = [], time.monotonic()
    if pending and not _record(delivery, pending, run_number=run_number):
        logger.info("delivery %s: run %s was superseded; stopping", delivery_id, run_number)
        return None
    if series is not None:
        from workspaces.nifti import delivery_convert_series

        reported = set(Delivery.objects.get(pk=delivery_id).conversion_report)
        for one in series.iterator(chunk_size=200):
            if fingerprint_uid(one.series_uid, order_id=order.pk, key=uid_key) in reported:
                continue
            if not delivery_convert_series(delivery=delivery, series=one, run_number=run_number, uid_key=uid_key):
                logger.info("delivery %s: run %s was superseded; stopping", delivery_id, run_number)
                return None

    with transaction.atomic():
        reason = _stop_reason(delivery.order_id, lock=True)
        if reason:
            _halt(delivery.order, reason)
            return Delivery.objects.get(pk=delivery_id)
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.status != Delivery.Status.RUNNING or delivery.run_number != run_number:
            logger.info("delivery %s: run %s was superseded before the manifest", delivery_id, run_number)
            return None
        # A line refunded while the copy ran: its files go before the manifest is written.
        ended = list(OrderLine.objects.filter(order_id=delivery.order_id, access_ended_at__isnull=False)
                     .values_list("pk", flat=True))
        delivery_remove_lines(order=delivery.order, line_ids=ended, reason="Access ended during the delivery")
        # The counts of what is there: NIfTI files are known only once each series is converted.
        totals = delivery.files.aggregate(files=Count("pk"), bytes=Sum("size_bytes"))
        Delivery.objects.filter(pk=delivery_id).update(total_files=totals["files"], done_files=totals["files"],
                                                       total_bytes=totals["bytes"] or 0)
        delivery.refresh_from_db()
        manifest_sha256 = _write_manifest(delivery)
        # In the same transaction as DONE: a run that dies before the commit leaves the
        # certificate unrecorded, and the resumed run writes both again over the same keys.
        _write_certificate(delivery, manifest_sha256=manifest_sha256)
        delivery = delivery_transition(delivery=delivery, to=Delivery.Status.DONE, acting_user=None,
                                       reason=f"{delivery.done_files} files copied.")
        order_move(order=delivery.order, field="fulfilment_status", to=Order.FulfilmentStatus.FULFILLED,
                   reason=f"{delivery.done_files} files delivered")
        from orders.services import order_complete_if_done

        order_complete_if_done(order=delivery.order)
    audit_record(actor=None, action="delivery.done", obj=delivery,
                 detail={"order_id": delivery.order_id, "files": delivery.done_files, "bytes": delivery.total_bytes})
    return delivery


def _series_for(order: Order):  # noqa: ANN202 - a queryset of Series
    from catalog.models import Series

    return Series.objects.filter(study__in=_held_studies(order)).select_related("study").order_by("id")


def _fail_run(delivery_id: int, run_number: int, reason: str) -> Delivery | None:
    """End this run's delivery as FAILED with ``reason`` (unless another run holds it)."""
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        if delivery.status != Delivery.Status.RUNNING or delivery.run_number != run_number:
            return None
        delivery = delivery_transition(delivery=delivery, to=Delivery.Status.FAILED, acting_user=None, reason=reason)
    logger.warning("delivery %s failed: %s", delivery_id, reason)
    return delivery


class _HashingWriter:
    """Counts and hashes what is written through it."""

    def __init__(self, target) -> None:  # noqa: ANN001 - a binary file
        self.target, self.digest, self.size, self.crc32 = target, hashlib.sha256(), 0, 0

    def write(self, data: bytes | memoryview) -> int:
        self.digest.update(data)
        self.crc32 = zlib.crc32(data, self.crc32)
        self.size += len(data)
        return self.target.write(data)


def delivered_path(*, study_uid: str, series_uid: str, sop_uid: str, order_id: int, uid_key: bytes) -> str:
    """Where the buyer's copy of an instance lies under the delivery's prefix: its
    fingerprinted UIDs, as inside the file."""
    study, series, sop = (fingerprint_uid(u, order_id=order_id, key=uid_key) for u in (study_uid, series_uid, sop_uid))
    return f"{study}/{series}/{sop}.dcm"


class _CopyFailed(Exception):
    """A catalog instance could not be copied: the delivery fails with this reason."""


def _copy_threads() -> int:
    return max(1, int(getattr(settings, "DELIVERY_COPY_THREADS", 1)))


class _Copier:
    """Copies chunks of instances, in parallel over DELIVERY_COPY_THREADS threads: reading,
    hashing and writing release the GIL, and on S3 each file waits on the network, so
    threads overlap what one file at a time would wait for. Threads touch storage only,
    never the database. A chunk's rows come back in its order; with one thread the copy
    runs inline, one file after another."""

    def __init__(self, delivery: Delivery, uid_key: bytes) -> None:
        self.delivery, self.uid_key = delivery, uid_key
        threads = _copy_threads()
        self.chunk_size = threads * 2 if threads > 1 else 1
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="delivery-copy") if threads > 1 else None

    def __enter__(self) -> _Copier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def copy(self, rows: list[tuple], *, check_existing: bool) -> list[DeliveryFile]:
        def one(row: tuple) -> DeliveryFile:
            try:
                return _copy_instance(self.delivery, row, check_existing=check_existing, uid_key=self.uid_key)
            except NotFingerprintableError as exc:
                raise _CopyFailed(f"Catalog instance {row.pk} could not be copied ({exc}).") from None

        if self.pool is None:
            return [one(row) for row in rows]
        # Every file of the chunk is finished (or failed) before an error is raised: no
        # thread is still writing when the run records, fails or stops.
        futures = [self.pool.submit(one, row) for row in rows]
        wait(futures)
        return [future.result() for future in futures]


# What writing one instance needs, read as plain tuples: building three model objects per
# file (instance, series, study) cost a third of the copy time of a 512 KB file.
_COPY_FIELDS = ("pk", "storage_key", "sop_uid", "series__series_uid", "series__study__study_uid")


def _copy_instance(delivery: Delivery, row: tuple, *, check_existing: bool, uid_key: bytes) -> DeliveryFile:
    """Write the buyer's copy of one instance (read, fingerprint, put: one file in memory or
    a spool file at a time) unless ``check_existing`` finds it already there, whole; return
    its row, not yet saved: _record saves it with the rest of its batch. ``row`` is a named
    tuple of _COPY_FIELDS."""
    instance_id, source_key, sop_uid, series_uid, study_uid = row
    path = delivered_path(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
                          order_id=delivery.order_id, uid_key=uid_key)
    key = f"{delivery.prefix}/{path}"
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        writer = _HashingWriter(spool)
        with storage.open_read(source_key) as src:
            # The storage's own file object: large values pydicom defers are read back through it.
            result = fingerprint_file(getattr(src, "file", src), writer,  # type: ignore[arg-type]
                                      order_id=delivery.order_id)
        sha256, size = writer.digest.hexdigest(), writer.size
        if not (check_existing and storage.exists(key) and storage.sha256_of(key) == sha256):
            spool.seek(0)
            storage.put(key, spool)
    return DeliveryFile(delivery=delivery, instance_id=instance_id, path=path, storage_key=key,
                        size_bytes=size, sha256=sha256, crc32=writer.crc32, sop_uid=result.sop_uid)


def _record(delivery: Delivery, files: list[DeliveryFile], *, run_number: int) -> bool:
    """Record a batch of copied files and mark progress; False when this run no longer holds
    the delivery (its files are then left unrecorded: the run that holds it verifies or
    copies them again)."""
    with transaction.atomic():
        # The progress mark doubles as the fence, and comes first: its row lock keeps a claim,
        # restart or fail from moving the delivery until this batch is in. 0 rows means
        # another run, or an admin, took over.
        held = Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.RUNNING, run_number=run_number).update(
            progressed=timezone.now())
        if not held:
            return False
        # Unique per delivery and instance: a row already there (an earlier run's) is kept.
        DeliveryFile.objects.bulk_create(files, ignore_conflicts=True)
        # Counted from the rows, never incremented: a conflict above adds nothing twice.
        copied = delivery.files.aggregate(files=Count("pk"), bytes=Sum("size_bytes"))
        Delivery.objects.filter(pk=delivery.pk).update(done_files=copied["files"], total_bytes=copied["bytes"] or 0)
    return True


def _write_manifest(delivery: Delivery) -> str:
    """Write manifest.csv from the delivery's file rows; returns its SHA-256."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(MANIFEST_COLUMNS)
    uid_key, marker = order_uid_key(delivery.order_id), order_marker(delivery.order_id)

    def delivered(uid: str) -> str:
        return fingerprint_uid(uid, order_id=delivery.order_id, key=uid_key)

    for f in delivery.files.select_related("instance__series__study", "series__study").order_by("path"):
        series = f.instance.series if f.instance_id else f.series
        writer.writerow([f.path, delivered(series.study.study_uid), delivered(series.series_uid),
                         f.sop_uid, f.size_bytes, f.sha256, marker])
    key = f"{delivery.prefix}/{MANIFEST_NAME}"
    data = buffer.getvalue().encode()
    storage.put(key, io.BytesIO(data))
    Delivery.objects.filter(pk=delivery.pk).update(manifest_key=key)
    delivery.manifest_key = key
    return hashlib.sha256(data).hexdigest()


def _write_certificate(delivery: Delivery, *, manifest_sha256: str) -> None:
    """Write certificate.json and certificate.pdf beside the manifest and record when."""
    issued = timezone.now().replace(microsecond=0)  # the certificate says seconds
    data = certificate_for(delivery, manifest_sha256=manifest_sha256, issued=issued)
    storage.put(f"{delivery.prefix}/{CERTIFICATE_JSON_NAME}", io.BytesIO(certificate_json_bytes(data)))
    storage.put(f"{delivery.prefix}/{CERTIFICATE_PDF_NAME}", io.BytesIO(certificate_pdf(data)))
    Delivery.objects.filter(pk=delivery.pk).update(certificate_issued=issued)
    delivery.certificate_issued = issued


def delivery_document_key(delivery: Delivery, name: str) -> str:
    """The storage key of one of DELIVERY_DOCUMENTS of this delivery ("" if not written)."""
    if name == MANIFEST_NAME:
        return delivery.manifest_key
    if name in DELIVERY_DOCUMENTS and delivery.certificate_issued is not None:
        return f"{delivery.prefix}/{name}"
    return ""


# ---- signed, expiring download links -----------------------------------------------------
@dataclass(frozen=True)
class DownloadGrant:
    delivery: Delivery
    storage_key: str
    filename: str


def download_token_make(*, delivery: Delivery, path: str, user: User | None = None) -> str:
    """A token naming one file of one delivery for one user (the buyer unless another named
    user is given); it expires (DOWNLOAD_LINK_SECONDS) and works only while that user holds
    the download grant."""
    return signing.TimestampSigner(salt=_SIGNING_SALT).sign_object(
        {"d": delivery.pk, "p": path, "u": user.pk if user else delivery.user_id}, compress=True)


class LinkExpiredError(PermissionDeniedError):
    code = "link_expired"


class ViewOnlyError(PermissionDeniedError):
    code = "view_only"


def download_tokens_make(*, user: User, delivery: Delivery, paths: list[str]) -> dict[str, str]:
    """Signed download tokens for ``paths`` (delivered files or DELIVERY_DOCUMENTS) of a
    finished delivery the user may download: {path: token}. The caller checked that the user
    sees the delivery; the download itself checks the grant again (download_grant_check)."""
    if not deliveries_downloadable_by(user).filter(pk=delivery.pk).exists():
        raise ViewOnlyError("This delivery is view-only: its images can be viewed in the browser, "
                            "its files cannot be downloaded.")
    if delivery.status != Delivery.Status.DONE:
        raise DeliveryNotReadyError(f"The delivery is not finished (status: {delivery.status}).")
    wanted = set(paths)
    known = {name for name in wanted & set(DELIVERY_DOCUMENTS) if delivery_document_key(delivery, name)}
    known |= set(delivery.files.filter(path__in=wanted - known).values_list("path", flat=True))
    unknown = sorted(wanted - known)
    if unknown:
        raise NotFoundError(f"{len(unknown)} path(s) are not in this delivery, e.g. {unknown[0]!r}.",
                            extra={"paths": unknown[:20]})
    return {path: download_token_make(delivery=delivery, path=path, user=user) for path in paths}


def download_grant_check(*, user: User, token: str, ip: str | None = None,
                         api_token: ApiToken | None = None) -> DownloadGrant:
    """Validate a link for this user and audit the download, naming the API token that
    fetched it if one did. Expired → LinkExpiredError."""
    signer = signing.TimestampSigner(salt=_SIGNING_SALT)
    try:
        data = signer.unsign_object(token, max_age=settings.DOWNLOAD_LINK_SECONDS)
    except signing.SignatureExpired:
        raise LinkExpiredError("This download link has expired; open your workspace for a fresh one.") from None
    except signing.BadSignature:
        raise NotFoundError("File not found.") from None
    if not user.is_authenticated or data.get("u") != user.pk:
        raise NotFoundError("File not found.")
    delivery = deliveries_downloadable_by(user).filter(pk=data.get("d"), status=Delivery.Status.DONE).first()
    if delivery is None:
        raise NotFoundError("File not found.")
    path = data.get("p")
    if path in DELIVERY_DOCUMENTS:
        key = delivery_document_key(delivery, path)
    else:
        key = delivery.files.filter(path=path).values_list("storage_key", flat=True).first()
    if not key:
        raise NotFoundError("File not found.")
    detail = {"path": path}
    if api_token is not None:
        # Which of the user's tokens fetched it (a leaked one is found and revoked); its id
        # and visible prefix only, never the secret or its hash.
        detail |= {"api_token_id": api_token.pk, "api_token_prefix": api_token.prefix}
    audit_record(actor=user, action="download", obj=delivery, ip=ip, detail=detail)
    return DownloadGrant(delivery=delivery, storage_key=key, filename=path.rsplit("/", 1)[-1])


VIEWER_MAX_SIDE = 1024


def delivery_file_render(*, delivery: Delivery, file_id: int, user: User, ip: str | None = None) -> bytes:
    """A delivered file as a PNG for the browser (audited as a read of data). The caller
    checked the view grant; only a finished delivery's own files render."""
    from catalog.datasets.previews import render_preview

    item = delivery.files.filter(pk=file_id).first() if delivery.status == Delivery.Status.DONE else None
    if item is None:
        raise NotFoundError("File not found.")
    with storage.open_read(item.storage_key) as fp:
        rendered = render_preview(fp, max_side=VIEWER_MAX_SIDE)
    if rendered is None:
        raise NotFoundError("This file has no image that can be shown in the browser.")
    audit_record(actor=user, action="delivery.view", obj=delivery, ip=ip, detail={"file_id": item.pk})
    return rendered[0]


# ---- whole-delivery archives (a BagIt bag in a streamed ZIP) ------------------------------
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


@dataclass(frozen=True)
class DeliveryArchive:
    filename: str
    files: int
    length: int  # exact bytes of the whole archive
    etag: str  # changes when what the archive is made of changes
    bag: DeliveryBag
    audit: Callable[[dict], None]

    def chunks(self, first: int = 0, last: int | None = None) -> Iterator[bytes]:
        """The archive's bytes, all or `first`..`last` (inclusive); audits this download."""
        self.audit({} if first == 0 and last is None else {"range": f"{first}-{last}"})
        return self.bag.stream(first, last)


def delivery_archive_open(*, user: User, delivery_id: int, study: str = "", series: str = "",
                          ip: str | None = None) -> DeliveryArchive:
    """The buyer's delivery as a streamed ZIP holding a BagIt bag (workspaces/bag.py): all
    of it, or one study or one series of it. Needs the download grant on a finished
    delivery; a view-only licence, someone else's delivery and a study or series the
    delivery does not hold all raise the same NotFoundError. Audited once, with the file
    count (and the byte range, for a partial one), when the caller asks for `chunks`. The
    bytes are read from storage as the caller iterates them, and the stream stops if the
    grant is taken back meanwhile. Its length and ETag are known before the first byte."""
    if not user.is_authenticated:
        raise NotFoundError("Delivery not found.")
    delivery = (deliveries_downloadable_by(user).filter(pk=delivery_id, status=Delivery.Status.DONE)
                .select_related("order").first())
    if delivery is None:
        raise NotFoundError("Delivery not found.")
    files = delivery.files.all()
    scope, suffix = "", ""
    # By delivered path, not by catalog UID: the delivered UIDs are the buyer's own
    # (workspaces/fingerprint.py), and a series' NIfTI files live under nifti/<series>/.
    for kind, uid, lookup in (("study", study, "path__startswith"), ("series", series, "path__contains")):
        if not uid:
            continue
        # Checked before any query: UIDs are digits and dots (a NUL byte never reaches SQL).
        if len(uid) > 64 or not _UID.fullmatch(uid):
            raise NotFoundError("Delivery not found.")
        files = files.filter(**{lookup: f"{uid}/" if kind == "study" else f"/{uid}/"})
        scope, suffix = f"{kind} {uid}", f"{suffix}-{kind}-{uid}"
    count = files.count()
    if scope and count == 0:
        raise NotFoundError("Delivery not found.")
    documents = {name: key for name in DELIVERY_DOCUMENTS if (key := delivery_document_key(delivery, name))}
    root = f"order-{delivery.order_id}{suffix}"

    def still_allowed() -> bool:
        return deliveries_downloadable_by(user).filter(pk=delivery.pk).exists()

    def audit(extra: dict) -> None:
        audit_record(actor=user, action="download.archive", obj=delivery, ip=ip,
                     detail={"order_id": delivery.order_id, "scope": scope.split(" ")[0] or "delivery",
                             "files": count, "documents": len(documents), **extra})

    # A fixed time (the delivery's end), never now(): the same delivery makes the same bytes,
    # so a resumed download's range continues the bytes it cut off.
    bagged = (delivery.finished or delivery.created).astimezone(UTC).replace(microsecond=0)
    bag = DeliveryBag(delivery=delivery, files=files, documents=documents, root=root, bagged=bagged, scope=scope,
                      still_allowed=still_allowed)
    plan, etag = bag.plan()
    return DeliveryArchive(filename=f"{root}.zip", files=count, length=plan.length, etag=etag, bag=bag, audit=audit)
