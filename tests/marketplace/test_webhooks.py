"""Outgoing webhooks: signed payloads a real local receiver checks, retries with back-off,
a final failure, no second send of the same attempt, refused private addresses, and the
owners' page."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from marketplace.exceptions import NotFoundError
from marketplace.models import AuditEvent, Organization, WebhookDelivery, WebhookEndpoint
from marketplace.tasks import webhook_delivery_send_task
from marketplace.webhooks import (
    MAX_ATTEMPTS,
    RETRY_DELAYS,
    WebhookURLError,
    webhook_deliveries_sweep,
    webhook_delivery_attempt,
    webhook_endpoint_create,
    webhook_endpoint_deactivate,
    webhook_endpoint_ping,
    webhook_endpoint_rotate_secret,
    webhook_event_emit,
)

pytestmark = pytest.mark.django_db

READY = WebhookEndpoint.Event.DELIVERY_READY
NEW_DATA = WebhookEndpoint.Event.SAVED_SEARCH_NEW_DATA


@pytest.fixture
def receiver(hook_receiver):
    return hook_receiver


@pytest.fixture
def bravo(bob) -> Organization:
    return Organization.objects.get(name="Bravo AI")


@pytest.fixture
def endpoint(bravo, bob, receiver) -> WebhookEndpoint:
    return webhook_endpoint_create(organization=bravo, url=receiver.url, events=[READY, NEW_DATA], acting_user=bob)


@pytest.fixture
def inline_send(webhook_send_inline):
    return webhook_send_inline


def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> dict:
    """The receiver's check, as the README documents it."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts["v1"]) or abs(time.time() - int(parts["t"])) > tolerance:
        raise ValueError("bad signature")
    return json.loads(body)


def _emit(bravo, data=None) -> WebhookDelivery:  # noqa: ANN001
    assert webhook_event_emit(organization_ids=[bravo.pk], event_type=READY,
                              data=data or {"order_id": 7, "delivery_id": 3}) == 1
    return WebhookDelivery.objects.latest("pk")


def test_it_sends_a_signed_event_the_receiver_can_verify(
        bravo, endpoint, receiver, inline_send, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        delivery = _emit(bravo, {"order_id": 7, "delivery_id": 3, "file_count": 6})
    assert len(receiver.requests) == 1
    path, headers, body = receiver.requests[0]
    assert path == "/hooks/medimage?x=1"
    event = verify(endpoint.secret, headers["X-Marketplace-Signature"], body)
    assert event["type"] == "delivery.ready" and event["data"] == {"order_id": 7, "delivery_id": 3, "file_count": 6}
    assert event["id"].startswith("evt_") and headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        verify("whsec_someone_else", headers["X-Marketplace-Signature"], body)
    with pytest.raises(ValueError):
        verify(endpoint.secret, headers["X-Marketplace-Signature"], body.replace(b"7", b"8"))
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, delivery.last_response_code) == ("succeeded", 1, 200)
    assert delivery.delivered_at is not None and delivery.next_attempt_at is None


def test_it_sends_only_to_active_endpoints_subscribed_to_the_event(bravo, bob, endpoint, receiver, charlie) -> None:
    only_new_data = webhook_endpoint_create(organization=bravo, url=receiver.url, events=[NEW_DATA], acting_user=bob)
    charlie_org = Organization.objects.get(name="Charlie AI")
    webhook_endpoint_create(organization=charlie_org, url=receiver.url, events=[READY], acting_user=charlie)
    assert webhook_event_emit(organization_ids=[bravo.pk], event_type=READY, data={}) == 1
    assert WebhookDelivery.objects.get().endpoint == endpoint
    webhook_endpoint_deactivate(endpoint=endpoint, acting_user=bob)
    assert webhook_event_emit(organization_ids=[bravo.pk], event_type=READY, data={}) == 0
    assert webhook_event_emit(organization_ids=[bravo.pk], event_type=NEW_DATA, data={}) == 1
    assert WebhookDelivery.objects.latest("pk").endpoint == only_new_data


def test_a_500_is_retried_with_back_off_until_it_succeeds(bravo, endpoint, receiver) -> None:
    receiver.codes = [500, 503]
    delivery = _emit(bravo)
    start = timezone.now()
    assert webhook_delivery_attempt(delivery_id=delivery.pk, now=start) == "pending"
    delivery.refresh_from_db()
    assert delivery.last_response_code == 500 and delivery.last_error == "HTTP 500"
    assert delivery.next_attempt_at == start + timedelta(seconds=RETRY_DELAYS[0])

    # Not due yet: the sweep leaves it alone.
    assert webhook_deliveries_sweep(now=start + timedelta(seconds=59))["pending"] == 0
    assert len(receiver.requests) == 1
    second = start + timedelta(seconds=60)
    assert webhook_deliveries_sweep(now=second) == {"succeeded": 0, "pending": 1, "failed": 0, "skipped": 0}
    delivery.refresh_from_db()
    assert delivery.next_attempt_at == second + timedelta(seconds=RETRY_DELAYS[1])  # 5 minutes after the 2nd
    third = second + timedelta(seconds=RETRY_DELAYS[1])
    assert webhook_deliveries_sweep(now=third)["succeeded"] == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, delivery.last_response_code) == ("succeeded", 3, 200)
    assert len(receiver.requests) == 3
    # Every attempt carries the same event, each with a fresh signature time.
    bodies = {body for _path, _headers, body in receiver.requests}
    assert len(bodies) == 1
    for _path, headers, body in receiver.requests:
        t = int(headers["X-Marketplace-Signature"].split(",")[0][2:])
        assert verify(endpoint.secret, headers["X-Marketplace-Signature"], body, tolerance=10**6)
        assert t in {int(start.timestamp()), int(second.timestamp()), int(third.timestamp())}


def test_a_permanently_failing_endpoint_ends_failed_after_the_last_attempt(bravo, endpoint, receiver) -> None:
    receiver.codes = [500] * 10
    delivery = _emit(bravo)
    now = timezone.now()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert webhook_deliveries_sweep(now=now)["skipped"] == 0
        delivery.refresh_from_db()
        assert delivery.attempt_count == attempt
        if attempt < MAX_ATTEMPTS:
            assert delivery.status == "pending"
            assert delivery.next_attempt_at == now + timedelta(seconds=RETRY_DELAYS[attempt - 1])
            now = delivery.next_attempt_at
    assert (delivery.status, delivery.next_attempt_at, delivery.last_response_code) == ("failed", None, 500)
    assert webhook_deliveries_sweep(now=now + timedelta(days=30)) == {"succeeded": 0, "pending": 0, "failed": 0,
                                                                      "skipped": 0}
    assert len(receiver.requests) == MAX_ATTEMPTS == 6
    assert sum(RETRY_DELAYS) == 60 + 300 + 1800 + 7200 + 43200


def test_the_task_run_twice_sends_once(bravo, endpoint, receiver) -> None:
    delivery = _emit(bravo)
    assert webhook_delivery_send_task.run(delivery_id=delivery.pk) == "succeeded"
    assert webhook_delivery_send_task.run(delivery_id=delivery.pk) == "skipped"
    assert webhook_deliveries_sweep(now=timezone.now() + timedelta(days=1))["succeeded"] == 0
    assert len(receiver.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_a_row_another_worker_is_sending_is_skipped_not_sent_again(make_member, receiver) -> None:
    from django.db import connections, transaction

    bob, bravo = make_member("bob", "Bravo AI", "buyer")
    webhook_endpoint_create(organization=bravo, url=receiver.url, events=[READY], acting_user=bob)
    delivery = _emit(bravo)
    locked, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        # A second database connection holds the row lock, as a worker mid-request does.
        try:
            with transaction.atomic():
                WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        assert webhook_delivery_attempt(delivery_id=delivery.pk) == "skipped"
        assert time.monotonic() - started < 2  # skip_locked: no waiting for the other worker
    finally:
        release.set()
        thread.join()
    assert receiver.requests == []
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "succeeded"
    assert len(receiver.requests) == 1


def test_redirects_are_not_followed(bravo, endpoint, receiver) -> None:
    receiver.codes = [302]
    delivery = _emit(bravo)
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "pending"
    delivery.refresh_from_db()
    assert delivery.last_response_code == 302 and "redirects are not followed" in delivery.last_error
    assert len(receiver.requests) == 1


def test_an_unreachable_endpoint_is_retried(bravo, bob) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    webhook_endpoint_create(organization=bravo, url=f"http://127.0.0.1:{port}/", events=[READY], acting_user=bob)
    delivery = _emit(bravo)
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "pending"
    delivery.refresh_from_db()
    assert delivery.last_error == "Network error (ConnectionRefusedError)." and delivery.last_response_code is None


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/hook", "http://localhost/hook", "http://10.1.2.3/", "http://192.168.0.10/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/",
])
def test_private_addresses_are_refused_unless_allowed(settings, bravo, bob, url) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    with pytest.raises(WebhookURLError, match="must be public"):
        webhook_endpoint_create(organization=bravo, url=url, events=[READY], acting_user=bob)
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("url, message", [
    ("ftp://example.org/x", "starts with https://"),
    ("file:///etc/passwd", "starts with https://"),
    ("https://user:pw@example.org/", "no user name or password"),
    ("https://exa mple.org/", "full address"),
    ("https://host.invalid/", "cannot be found"),
])
def test_other_bad_urls_are_refused_with_a_reason(bravo, bob, url, message) -> None:
    with pytest.raises(WebhookURLError, match=message):
        webhook_endpoint_create(organization=bravo, url=url, events=[READY], acting_user=bob)


def test_a_url_that_became_private_is_not_called(settings, bravo, endpoint, receiver) -> None:
    delivery = _emit(bravo)
    settings.WEBHOOKS_ALLOW_PRIVATE = False  # production rules, after the endpoint was saved
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert "must be public" in delivery.last_error and delivery.attempt_count == 1
    assert receiver.requests == []


def test_private_addresses_are_refused_by_default_in_production() -> None:
    import subprocess
    import sys

    code = ("import django, os; django.setup(); from django.conf import settings; "
            "print(settings.DEBUG, settings.WEBHOOKS_ALLOW_PRIVATE)")
    import os

    env = {**os.environ, "DJANGO_DEBUG": "False", "DJANGO_SECRET_KEY": "x" * 50,
           "DJANGO_SETTINGS_MODULE": "config.settings"}
    env.pop("WEBHOOKS_ALLOW_PRIVATE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["False", "False"], out.stderr[-500:]


def test_only_owners_manage_webhooks_and_each_change_is_audited(bravo, bob, charlie, receiver, make_member) -> None:
    member, _ = make_member("bea", "Bravo AI", "buyer")
    from marketplace.models import Membership

    Membership.objects.filter(user=member).update(role=Membership.Role.MEMBER)
    for outsider in (charlie, member):
        with pytest.raises(NotFoundError):
            webhook_endpoint_create(organization=bravo, url=receiver.url, events=[READY], acting_user=outsider)
    endpoint = webhook_endpoint_create(organization=bravo, url=receiver.url, events=[READY], acting_user=bob)
    for outsider in (charlie, member):
        with pytest.raises(NotFoundError):
            webhook_endpoint_ping(endpoint=endpoint, acting_user=outsider)
        with pytest.raises(NotFoundError):
            webhook_endpoint_deactivate(endpoint=endpoint, acting_user=outsider)
    webhook_endpoint_ping(endpoint=endpoint, acting_user=bob)
    webhook_endpoint_deactivate(endpoint=endpoint, acting_user=bob)
    actions = list(AuditEvent.objects.filter(object_type="marketplace.webhookendpoint")
                   .order_by("id").values_list("action", flat=True))
    assert actions == ["webhook.create", "webhook.ping", "webhook.deactivate"]
    ping = WebhookDelivery.objects.get(event_type="ping")
    assert ping.status == "failed" and ping.last_error == "Webhook deactivated."  # dropped, never sent
    assert receiver.requests == []


def test_the_organization_webhook_page(client, bob, bravo, charlie, receiver, inline_send,
                                       django_capture_on_commit_callbacks) -> None:
    client.force_login(bob)
    page = f"/organization/{bravo.pk}/webhooks/"
    response = client.post(page, {"url": receiver.url, "events": [READY]})
    assert response.status_code == 302
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == [READY] and endpoint.organization == bravo
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{page}{endpoint.pk}/ping/")
    assert response.status_code == 302 and len(receiver.requests) == 1
    html = client.get(page).content.decode()
    assert endpoint.secret in html and "ping" in html and "Succeeded" in html and "200" in html
    receiver.codes = [500]
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"{page}{endpoint.pk}/ping/")
    html = client.get(page).content.decode()
    assert "HTTP 500" in html and "Next attempt" in html
    client.post(f"{page}{endpoint.pk}/deactivate/")
    endpoint.refresh_from_db()
    assert not endpoint.active
    # Charlie (another organization) sees nothing of it and cannot act on it.
    client.force_login(charlie)
    assert client.get(page).status_code == 404
    assert client.post(f"{page}{endpoint.pk}/ping/").status_code == 404
    assert bravo.name not in client.get("/organization/").content.decode()


def test_an_owner_rotates_the_secret_and_the_old_one_no_longer_verifies(
        client, bob, bravo, endpoint, receiver, inline_send, django_capture_on_commit_callbacks) -> None:
    old = endpoint.secret
    client.force_login(bob)
    page = f"/organization/{bravo.pk}/webhooks/"
    assert client.post(f"{page}{endpoint.pk}/rotate/").status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.secret.startswith("whsec_")
    html = client.get(page).content.decode()
    assert endpoint.secret in html and old not in html
    event = AuditEvent.objects.get(action="webhook.rotate_secret")
    assert (event.actor, event.object_id, event.detail) == (bob, str(endpoint.pk), {"organization_id": bravo.pk})
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"{page}{endpoint.pk}/ping/")
    _, headers, body = receiver.requests[-1]
    assert verify(endpoint.secret, headers["X-Marketplace-Signature"], body)["type"] == "ping"
    with pytest.raises(ValueError):
        verify(old, headers["X-Marketplace-Signature"], body)


def test_only_an_owner_rotates_and_not_a_deactivated_webhook(client, bob, bravo, charlie, endpoint,
                                                            make_member) -> None:
    from marketplace.models import Membership
    from marketplace.webhooks import WebhookError

    member, _ = make_member("bea", "Bravo AI", "buyer")
    Membership.objects.filter(user=member).update(role=Membership.Role.MEMBER)
    old = endpoint.secret
    for outsider in (charlie, member):
        client.force_login(outsider)
        assert client.post(f"/organization/{bravo.pk}/webhooks/{endpoint.pk}/rotate/").status_code == 404
        with pytest.raises(NotFoundError):
            webhook_endpoint_rotate_secret(endpoint=endpoint, acting_user=outsider)
    # Bob's endpoint under Charlie's organization's address is not found either.
    client.force_login(charlie)
    charlie_org = Organization.objects.get(name="Charlie AI")
    assert client.post(f"/organization/{charlie_org.pk}/webhooks/{endpoint.pk}/rotate/").status_code == 404
    webhook_endpoint_deactivate(endpoint=endpoint, acting_user=bob)
    with pytest.raises(WebhookError):
        webhook_endpoint_rotate_secret(endpoint=endpoint, acting_user=bob)
    endpoint.refresh_from_db()
    assert endpoint.secret == old
    assert not AuditEvent.objects.filter(action="webhook.rotate_secret").exists()


def test_new_data_for_a_saved_search_fires_saved_search_new_data(
        settings, provider, bob, charlie, bravo, endpoint, receiver, inline_send,
        django_capture_on_commit_callbacks) -> None:
    from decimal import Decimal

    from catalog.discovery.services import saved_search_create, saved_searches_notify
    from catalog.models import Dataset, Study
    from catalog.search.memory.snapshots import snapshot_refresh
    from marketplace.models import Notification

    settings.SITE_URL = "https://data.example.org"
    charlie_org = Organization.objects.get(name="Charlie AI")
    webhook_endpoint_create(organization=charlie_org, url=receiver.url, events=[NEW_DATA], acting_user=charlie)
    saved = saved_search_create(user=bob, name="Female chest", params={"sex": "F", "body_part": "CHEST"})
    saved_search_create(user=charlie, name="Knees", params={"body_part": "KNEE"})
    dataset = Dataset.objects.create(provider=provider, title="New chest set", status=Dataset.Status.PUBLISHED,
                                     price_per_study=Decimal("1.00"))
    Study.objects.bulk_create([
        Study(dataset=dataset, study_uid=f"2.25.77.{i}", pseudo_patient_id=f"PSEUDO-{i}", patient_sex="F",
              age_band="40-49", modalities=["CT"], body_part="CHEST", instance_count=1) for i in range(14)])
    snapshot_refresh(dataset_id=dataset.pk)

    with django_capture_on_commit_callbacks(execute=True):
        assert saved_searches_notify(dataset_id=dataset.pk) == 1
    assert Notification.objects.filter(user=bob).count() == 1  # the in-app notice is still sent
    assert len(receiver.requests) == 1  # Bravo's endpoint only: Charlie's search does not match
    _path, headers, body = receiver.requests[0]
    event = verify(endpoint.secret, headers["X-Marketplace-Signature"], body)
    assert event["type"] == "saved_search.new_data"
    assert event["data"] == {
        "saved_search": {"id": saved.pk, "name": "Female chest",
                         "url": "https://data.example.org/cohorts/?sex=F&body_part=CHEST"},
        "datasets": [{"id": dataset.pk, "title": "New chest set",
                      "url": f"https://data.example.org/datasets/{dataset.pk}/"}]}
    assert b"PSEUDO-" not in body and b"2.25.77" not in body  # no study identifiers, no counts (data above)
