"""The buyer hears once when a delivery is ready or failed: in the app, by e-mail with an
absolute link, and (ready) through the organization's ``delivery.ready`` webhook, whose
payload holds ids, counts and links, never PHI."""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

import storage
from catalog.datasets.services import dataset_transition
from catalog.models import Dataset, Instance, Study
from factories.orders import approve_for_delivery, place_order
from marketplace.models import Notification, Organization, WebhookDelivery, WebhookEndpoint
from marketplace.webhooks import webhook_endpoint_create
from workspaces.models import Delivery
from workspaces.services import deliveries_recover_stuck, delivery_run, delivery_transition

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

SITE = "https://data.example.org"


@pytest.fixture
def delivery(settings, published_dataset, bob, admin_user, dua) -> Delivery:
    """Bob's approved order: its delivery queued (no worker runs in these tests)."""
    settings.SITE_URL = SITE
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    return Delivery.objects.get(order=order)


@pytest.fixture
def hook(bob, hook_receiver, webhook_send_inline) -> WebhookEndpoint:
    bravo = Organization.objects.get(name="Bravo AI")
    return webhook_endpoint_create(organization=bravo, url=hook_receiver.url,
                                   events=[WebhookEndpoint.Event.DELIVERY_READY], acting_user=bob)


def test_a_ready_delivery_is_told_once_with_absolute_links(
        bob, delivery, hook, hook_receiver, django_capture_on_commit_callbacks) -> None:
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        done = delivery_run(delivery_id=delivery.pk)
    assert done.status == Delivery.Status.DONE
    link = f"{SITE}/workspace/deliveries/{delivery.pk}/"
    notice = Notification.objects.get(user=bob)
    assert notice.url == link and f"Order #{delivery.order_id}: your data is ready" in notice.message
    assert "6 files" in notice.message
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [bob.email] and link in mail.outbox[0].body

    assert len(hook_receiver.requests) == 1
    _path, headers, body = hook_receiver.requests[0]
    t, v1 = (part.split("=", 1)[1] for part in headers["X-Marketplace-Signature"].split(","))
    assert hmac.compare_digest(v1, hmac.new(hook.secret.encode(), f"{t}.".encode() + body,
                                            hashlib.sha256).hexdigest())
    event = json.loads(body)
    assert event["type"] == "delivery.ready"
    assert event["data"] == {
        "order_id": delivery.order_id, "delivery_id": delivery.pk, "file_count": 6,
        "bytes": done.total_bytes, "delivery_url": link, "workspace_url": f"{SITE}/workspace/",
        "order_url": f"{SITE}/orders/{delivery.order_id}/"}
    assert done.total_bytes > 0

    # Run again (a redelivered task), and the transition asked for again: nobody is told twice.
    with django_capture_on_commit_callbacks(execute=True):
        assert delivery_run(delivery_id=delivery.pk) is None
        delivery_transition(delivery=done, to=Delivery.Status.DONE, acting_user=None)
    assert Notification.objects.filter(user=bob).count() == 1 and len(mail.outbox) == 1
    assert WebhookDelivery.objects.count() == 1 and len(hook_receiver.requests) == 1


def test_the_webhook_payload_holds_no_phi(delivery, hook, hook_receiver, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        delivery_run(delivery_id=delivery.pk)
    body = hook_receiver.requests[0][2].decode()
    studies = Study.objects.filter(dataset__order_lines__order_id=delivery.order_id)
    identifiers = {*studies.values_list("study_uid", flat=True), *studies.values_list("pseudo_patient_id", flat=True),
                   *Instance.objects.filter(series__study__in=studies).values_list("sop_uid", flat=True),
                   *Delivery.objects.get(pk=delivery.pk).files.values_list("path", flat=True)}
    assert identifiers and not [value for value in identifiers if value and value in body]
    assert "workspaces/" not in body  # no storage keys, no presigned links


def test_a_resumed_delivery_is_told_once(bob, delivery, hook, hook_receiver, monkeypatch,
                                         django_capture_on_commit_callbacks) -> None:
    # The delivery writes each buyer's copy with storage.put (workspaces/fingerprint.py).
    real_put, written = storage.put, []

    def put_then_die(key: str, content) -> None:  # noqa: ANN001
        real_put(key, content)
        if key.endswith(".dcm"):
            written.append(key)
            if len(written) == 3:
                raise KeyboardInterrupt("worker killed")

    monkeypatch.setattr(storage, "put", put_then_die)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(KeyboardInterrupt):
        delivery_run(delivery_id=delivery.pk)
    monkeypatch.setattr(storage, "put", real_put)
    assert not Notification.objects.filter(user=bob).exists()
    Delivery.objects.filter(pk=delivery.pk).update(progressed=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert delivery_run(delivery_id=delivery.pk).status == Delivery.Status.DONE
        assert delivery_run(delivery_id=delivery.pk) is None
    assert Notification.objects.filter(user=bob).count() == 1
    assert len(hook_receiver.requests) == 1


def test_a_delivery_that_keeps_losing_its_worker_fails_once_with_what_the_buyer_can_expect(
        settings, bob, delivery, hook, hook_receiver, django_capture_on_commit_callbacks, monkeypatch) -> None:
    from workspaces.tasks import delivery_run_task

    monkeypatch.setattr(delivery_run_task, "delay", lambda **kw: None)  # no worker picks the re-queued run
    settings.DELIVERY_MAX_RESTARTS = 0
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.RUNNING,
                                                   progressed=timezone.now() - timedelta(hours=1))
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert deliveries_recover_stuck() == {"requeued": 0, "failed": 1}
        assert deliveries_recover_stuck() == {"requeued": 0, "failed": 0}
    notice = Notification.objects.get(user=bob)
    assert notice.message.startswith(f"Order #{delivery.order_id}: the delivery failed.")
    assert "our staff have been told" in notice.message and "admin" not in notice.message
    assert notice.url == f"{SITE}/workspace/deliveries/{delivery.pk}/"
    assert len(mail.outbox) == 1 and notice.url in mail.outbox[0].body
    assert hook_receiver.requests == [] and not WebhookDelivery.objects.exists()  # ready only


def test_a_withdrawn_dataset_fails_the_delivery_with_its_reason_once(
        bob, delivery, published_dataset, admin_user, django_capture_on_commit_callbacks) -> None:
    dataset_transition(dataset=published_dataset, to=Dataset.Status.DRAFT, acting_user=admin_user,
                       reason="consent withdrawn")
    with django_capture_on_commit_callbacks(execute=True):
        assert delivery_run(delivery_id=delivery.pk).status == Delivery.Status.FAILED
        assert delivery_run(delivery_id=delivery.pk) is None
    notices = [n for n in Notification.objects.filter(user=bob) if "delivery failed" in n.message]
    assert len(notices) == 1
    assert "withdrawn by its provider" in notices[0].message and notices[0].url.startswith(SITE)


def test_a_restarted_delivery_that_fails_again_is_a_new_event(
        bob, admin_user, delivery, django_capture_on_commit_callbacks) -> None:
    from workspaces.services import delivery_fail, delivery_restart

    with django_capture_on_commit_callbacks(execute=True):
        delivery_fail(delivery=delivery, acting_user=admin_user, reason="storage bucket misconfigured")
        delivery_fail(delivery=delivery, acting_user=admin_user, reason="clicked twice")
    assert Notification.objects.filter(user=bob).count() == 1
    assert "bucket" not in Notification.objects.get(user=bob).message  # staff's note stays with staff
    with django_capture_on_commit_callbacks(execute=False):
        delivery_restart(delivery=delivery, acting_user=admin_user, reason="bucket fixed")
    with django_capture_on_commit_callbacks(execute=True):
        delivery_fail(delivery=delivery, acting_user=admin_user, reason="still broken")
    assert Notification.objects.filter(user=bob).count() == 2
