"""Workspace reads: a user's deliveries and their files."""
from __future__ import annotations

import csv
import hashlib
import io
from typing import Any

from django.db.models import QuerySet

import storage
from marketplace.exceptions import NotFoundError
from marketplace.models import User
from orders.selectors import access_order
from workspaces.exceptions import DeliveryNotReadyError
from workspaces.grants import deliveries_downloadable_by, deliveries_visible_to
from workspaces.models import Delivery
from workspaces.services import DELIVERY_DOCUMENTS, MANIFEST_NAME, delivery_document_key


def deliveries_for_user(*, user: User) -> QuerySet[Delivery]:
    if not user.is_authenticated:
        return Delivery.objects.none()
    # The grant, not the delivery's user column: access ends when the grant is taken back.
    return deliveries_visible_to(user).select_related("order").prefetch_related("order__lines__dataset")


def access_delivery(*, user: User, delivery_id: int) -> Delivery:
    """The user's own delivery; the same NotFoundError for missing and for someone else's."""
    delivery = deliveries_for_user(user=user).filter(pk=delivery_id).first()
    if delivery is None:
        raise NotFoundError("Delivery not found.")
    return delivery


def access_order_delivery(*, user: User, order_id: int) -> Delivery:
    """The delivery of one of the user's orders, while the user may still see it; the same
    NotFoundError for someone else's order as for a missing one."""
    order = access_order(user=user, order_id=order_id)
    delivery = deliveries_for_user(user=user).filter(order=order).first()
    if delivery is None:
        raise NotFoundError("This order has no delivery you can see (not delivered yet, or access ended).")
    return delivery


def delivery_is_downloadable(*, user: User, delivery: Delivery) -> bool:
    """False for a view-only licence: the files are seen in the browser, never downloaded."""
    return deliveries_downloadable_by(user).filter(pk=delivery.pk).exists()


def delivery_manifest(*, delivery: Delivery) -> dict[str, Any]:
    """The delivered manifest.csv as rows (bytes as integers), with the size and SHA-256 of
    each delivery document (the manifest and the certificate files)."""
    if delivery.status != Delivery.Status.DONE or not delivery.manifest_key:
        raise DeliveryNotReadyError(f"The delivery is not finished (status: {delivery.status}).")
    data = b"".join(storage.iter_chunks(delivery.manifest_key))
    files = []
    for row in csv.DictReader(io.StringIO(data.decode("utf-8"))):
        row["bytes"] = int(row["bytes"])
        files.append(row)
    documents = []
    for name in DELIVERY_DOCUMENTS:
        key = delivery_document_key(delivery, name)
        if key and name == MANIFEST_NAME:
            documents.append({"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        elif key:
            documents.append({"name": name, "bytes": storage.size(key), "sha256": storage.sha256_of(key)})
    return {"files": files, "documents": documents}


def delivery_series(*, delivery: Delivery) -> list[dict[str, Any]]:
    """The series of a finished delivery's DICOM files (for the viewer's links), in order:
    id, modality, series number and description (de-identified catalog values)."""
    if delivery.status != Delivery.Status.DONE:
        return []
    return list(delivery.files.filter(instance__isnull=False)
                .values("instance__series_id", "instance__series__modality", "instance__series__series_number",
                        "instance__series__description", "instance__series__study_id")
                .distinct().order_by("instance__series__study_id", "instance__series__series_number",
                                     "instance__series_id"))


def delivery_series_files(*, delivery: Delivery, series_id: int) -> QuerySet:
    """A finished delivery's own copies of one series' instances, in slice order; NotFoundError
    when the delivery holds none of it (the same for a series of another delivery)."""
    files = (delivery.files.filter(instance__series_id=series_id)
             .order_by("instance__instance_number", "instance_id")) if delivery.status == Delivery.Status.DONE else None
    if files is None or not files.exists():
        raise NotFoundError("Series not found.")
    return files
