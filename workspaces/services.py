"""Deliveries into per-user workspaces and signed, expiring download links."""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from catalog import storage
from catalog.models import Dataset, Instance
from marketplace.exceptions import NotFoundError, PermissionDeniedError
from marketplace.models import User
from marketplace.services import audit_record
from orders.models import Order
from orders.services import order_transition
from workspaces.models import Delivery, DeliveryFile

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ["path", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "bytes", "sha256"]
_SIGNING_SALT = "workspaces.download"


@transaction.atomic
def delivery_create(*, order: Order, acting_user: User | None) -> Delivery:
    """Record the delivery and queue the copy once the transaction commits. Idempotent."""
    delivery, created = Delivery.objects.get_or_create(order=order, defaults={"user_id": order.buyer_id})
    if created:
        from workspaces.tasks import delivery_run_task

        transaction.on_commit(lambda: delivery_run_task.delay(delivery_id=delivery.pk))
    return delivery


def _instances_for(order: Order):  # noqa: ANN202 - a queryset of Instance
    return (
        Instance.objects.filter(series__study__in=order.studies.all())
        .select_related("series__study").order_by("id")
    )


# How many files are copied between two checks that the order may still be delivered.
STOP_CHECK_EVERY = 200


def _stop_reason(order_id: int, *, lock: bool = False) -> str:
    """Why this order's delivery must not finish ("" if it may): a cancelled order, or a
    dataset withdrawn from publication (to draft or review) before the data was delivered."""
    orders = Order.objects.select_related("dataset")
    if lock:  # the same row lock dataset_transition takes: withdrawal and completion serialise
        orders = orders.select_for_update(of=("self", "dataset"))
    order = orders.get(pk=order_id)
    if order.status in (Order.Status.CANCELLED, Order.Status.REJECTED):
        return "The order was cancelled before its data was delivered."
    if order.dataset.status != Dataset.Status.PUBLISHED:
        return "The dataset was withdrawn by its provider before its data was delivered."
    return ""


@transaction.atomic
def delivery_stop(*, order: Order, reason: str) -> bool:
    """End a delivery not yet done as FAILED with the reason (links need DONE, so none of
    its files is served) and cancel its order if still open. True if one was stopped."""
    stopped = Delivery.objects.filter(
        order=order, status__in=[Delivery.Status.QUEUED, Delivery.Status.RUNNING]
    ).update(status=Delivery.Status.FAILED, error=reason[:500], finished=timezone.now())
    locked = Order.objects.select_for_update().get(pk=order.pk)
    if locked.status in (Order.Status.APPROVED, Order.Status.DELIVERING):
        order_transition(order=locked, to=Order.Status.CANCELLED, acting_user=None, reason=reason)
    if stopped:
        delivery = Delivery.objects.get(order=order)
        audit_record(actor=None, action="delivery.stopped", obj=delivery,
                     detail={"order_id": order.pk, "reason": reason[:200]})
    return bool(stopped)


def delivery_run(*, delivery_id: int) -> Delivery | None:
    """Copy the order's instances into the workspace and write the manifest.

    Safe to run twice or after a worker died mid-way: files already copied are skipped
    (unique per delivery and instance) and the manifest is rewritten from the rows.
    Stops as FAILED, with the reason, when the order was cancelled or the dataset withdrawn
    before the delivery finished (checked before, during and, under lock, at the end).
    """
    claimed = Delivery.objects.filter(
        pk=delivery_id, status__in=[Delivery.Status.QUEUED, Delivery.Status.RUNNING]
    ).update(status=Delivery.Status.RUNNING)
    if not claimed:
        logger.info("delivery %s is gone or finished; nothing to do", delivery_id)
        return None
    delivery = Delivery.objects.select_related("order").get(pk=delivery_id)
    reason = _stop_reason(delivery.order_id)
    if reason:
        delivery_stop(order=delivery.order, reason=reason)
        return Delivery.objects.get(pk=delivery_id)
    if delivery.order.status == Order.Status.APPROVED:  # a re-run finds it delivering or delivered
        order_transition(order=delivery.order, to=Order.Status.DELIVERING, acting_user=None)
    instances = _instances_for(delivery.order)
    Delivery.objects.filter(pk=delivery_id).update(
        total_files=instances.count(), done_files=delivery.files.count())

    done = set(delivery.files.values_list("instance_id", flat=True))
    for copied, instance in enumerate(instances.exclude(pk__in=done).iterator(chunk_size=500), start=1):
        if copied % STOP_CHECK_EVERY == 0 and (reason := _stop_reason(delivery.order_id)):
            delivery_stop(order=delivery.order, reason=reason)
            return Delivery.objects.get(pk=delivery_id)
        _copy_instance(delivery, instance)

    delivery.refresh_from_db()
    _write_manifest(delivery)
    with transaction.atomic():
        reason = _stop_reason(delivery.order_id, lock=True)
        if reason:
            delivery_stop(order=delivery.order, reason=reason)
            return Delivery.objects.get(pk=delivery_id)
        finished = Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.RUNNING).update(
            status=Delivery.Status.DONE, finished=timezone.now())
        if not finished:  # stopped meanwhile (order cancelled): it stays FAILED
            return Delivery.objects.get(pk=delivery_id)
        order_transition(order=delivery.order, to=Order.Status.DELIVERED, acting_user=None)
    delivery.refresh_from_db()
    audit_record(actor=None, action="delivery.done", obj=delivery,
                 detail={"order_id": delivery.order_id, "files": delivery.done_files, "bytes": delivery.total_bytes})
    return delivery


def _copy_instance(delivery: Delivery, instance: Instance) -> None:
    study, series = instance.series.study, instance.series
    path = f"{study.study_uid}/{series.series_uid}/{instance.sop_uid}.dcm"
    key = f"{delivery.prefix}/{path}"
    storage.copy(instance.storage_key, key)
    try:
        DeliveryFile.objects.create(delivery=delivery, instance=instance, path=path, storage_key=key,
                                    size_bytes=instance.size_bytes, sha256=instance.sha256)
    except IntegrityError:
        return  # a concurrent run copied it first; the object is the same
    Delivery.objects.filter(pk=delivery.pk).update(
        done_files=F("done_files") + 1, total_bytes=F("total_bytes") + instance.size_bytes)


def _write_manifest(delivery: Delivery) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(MANIFEST_COLUMNS)
    for f in delivery.files.select_related("instance__series__study").order_by("path"):
        writer.writerow([f.path, f.instance.series.study.study_uid, f.instance.series.series_uid,
                         f.instance.sop_uid, f.size_bytes, f.sha256])
    key = f"{delivery.prefix}/{MANIFEST_NAME}"
    storage.put(key, io.BytesIO(buffer.getvalue().encode()))
    Delivery.objects.filter(pk=delivery.pk).update(manifest_key=key)


# ---- signed, expiring download links -----------------------------------------------------
@dataclass(frozen=True)
class DownloadGrant:
    delivery: Delivery
    storage_key: str
    filename: str


def download_token_make(*, delivery: Delivery, path: str) -> str:
    """A token naming one file of one delivery for its owner; it expires (DOWNLOAD_LINK_SECONDS)."""
    return signing.TimestampSigner(salt=_SIGNING_SALT).sign_object(
        {"d": delivery.pk, "p": path, "u": delivery.user_id}, compress=True)


class LinkExpiredError(PermissionDeniedError):
    code = "link_expired"


def download_grant_check(*, user: User, token: str, ip: str | None = None) -> DownloadGrant:
    """Validate a link for this user and audit the download. Expired → LinkExpiredError."""
    signer = signing.TimestampSigner(salt=_SIGNING_SALT)
    try:
        data = signer.unsign_object(token, max_age=settings.DOWNLOAD_LINK_SECONDS)
    except signing.SignatureExpired:
        raise LinkExpiredError("This download link has expired; open your workspace for a fresh one.") from None
    except signing.BadSignature:
        raise NotFoundError("File not found.") from None
    if not user.is_authenticated or data.get("u") != user.pk:
        raise NotFoundError("File not found.")
    delivery = Delivery.objects.filter(pk=data.get("d"), user=user, status=Delivery.Status.DONE).first()
    if delivery is None:
        raise NotFoundError("File not found.")
    path = data.get("p")
    if path == MANIFEST_NAME:
        key = delivery.manifest_key
    else:
        key = delivery.files.filter(path=path).values_list("storage_key", flat=True).first()
    if not key:
        raise NotFoundError("File not found.")
    audit_record(actor=user, action="download", obj=delivery, ip=ip, detail={"path": path})
    return DownloadGrant(delivery=delivery, storage_key=key, filename=path.rsplit("/", 1)[-1])
