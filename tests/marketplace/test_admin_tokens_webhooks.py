"""The admin's view of API tokens and webhooks: lists that never show a token's hash or a
webhook's secret, and audited actions (revoke tokens, deactivate webhooks, queue failed
deliveries again) that go through the services."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from factories.accounts import ready_account
from marketplace.models import ApiToken, AuditEvent, Organization, WebhookDelivery, WebhookEndpoint
from marketplace.tokens import api_token_create

pytestmark = pytest.mark.django_db

READY = WebhookEndpoint.Event.DELIVERY_READY


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def bob_token(bob) -> tuple[ApiToken, str]:
    return api_token_create(user=bob, name="laptop", scopes=["read"], expires=None)


@pytest.fixture
def endpoint(bob) -> WebhookEndpoint:
    bravo = Organization.objects.get(name="Bravo AI")
    return WebhookEndpoint.objects.create(organization=bravo, url="https://hooks.example.org/in", events=[READY],
                                          created_by=bob)


@pytest.fixture
def failed_delivery(endpoint) -> WebhookDelivery:
    return WebhookDelivery.objects.create(endpoint=endpoint, event_type=READY, payload={"id": "evt_1"},
                                          status=WebhookDelivery.Status.FAILED, attempt_count=6,
                                          last_response_code=500, last_error="HTTP 500", next_attempt_at=None)


def pages(admin_client, name: str, obj) -> str:  # noqa: ANN001
    """The changelist (plain and searched) and the object's page, as one text."""
    html = ""
    for url in (reverse(f"admin:marketplace_{name}_changelist"),
                reverse(f"admin:marketplace_{name}_changelist") + "?q=bob",
                reverse(f"admin:marketplace_{name}_change", args=[obj.pk])):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html += response.content.decode()
    return html


def act(admin_client, name: str, action: str, ids: list[int]):  # noqa: ANN001, ANN201
    return admin_client.post(reverse(f"admin:marketplace_{name}_changelist"),
                             {"action": action, "_selected_action": ids}, follow=True)


# ---- tokens ---------------------------------------------------------------------------------
def test_the_token_admin_lists_tokens_but_never_their_hash(admin_client, bob_token):
    token, secret = bob_token
    html = pages(admin_client, "apitoken", token)
    assert token.prefix in html and "laptop" in html and "active" in html
    assert token.token_hash not in html and secret not in html and "token_hash" not in html
    # Tokens are made by their owner (who alone sees the secret): no adding, no editing.
    assert admin_client.get(reverse("admin:marketplace_apitoken_add")).status_code == 403
    change = reverse("admin:marketplace_apitoken_change", args=[token.pk])
    admin_client.post(change, {"name": "renamed", "token_hash": "0" * 64})
    token.refresh_from_db()
    assert token.name == "laptop" and token.token_hash != "0" * 64


def test_the_token_admin_filters_by_state(admin_client, bob, bob_token):
    revoked, _ = api_token_create(user=bob, name="old-laptop", scopes=["read"], expires=None)
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    expired, _ = api_token_create(user=bob, name="ci-runner", scopes=["read"],
                                  expires=timezone.now() + timedelta(days=1))
    ApiToken.objects.filter(pk=expired.pk).update(expires=timezone.now() - timedelta(minutes=1))
    url = reverse("admin:marketplace_apitoken_changelist")
    for state, shown in [("active", "laptop"), ("revoked", "old-laptop"), ("expired", "ci-runner")]:
        listed = admin_client.get(url, {"state": state}).context["cl"].result_list
        assert [t.name for t in listed] == [shown]


def test_the_revoke_action_revokes_audits_and_the_token_then_gets_401(admin_client, admin_user, bob, bob_token):
    token, secret = bob_token
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/api/orders/").status_code == 200
    response = act(admin_client, "apitoken", "revoke", [token.pk])
    assert "Revoked tokens: 1." in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    event = AuditEvent.objects.get(action="api_token.revoke")
    assert (event.actor, event.object_id) == (admin_user, str(token.pk))
    assert event.detail == {"owner_id": bob.pk, "by_staff": True}
    response = api.get("/api/orders/")
    assert response.status_code == 401 and response.json()["code"] == "token_revoked"
    # Revoking again changes nothing and records nothing more.
    act(admin_client, "apitoken", "revoke", [token.pk])
    assert AuditEvent.objects.filter(action="api_token.revoke").count() == 1


def test_staff_without_the_change_permission_are_not_offered_revoke(client, make_member, bob_token):
    from django.contrib.auth.models import Permission

    viewer, _ = make_member("vera", "Staff", "buyer")
    viewer.is_staff = True
    viewer.save()
    ready_account(viewer, two_factor=True)  # staff must have a second factor to get anywhere
    viewer.user_permissions.add(Permission.objects.get(codename="view_apitoken"))
    client.force_login(viewer)
    response = client.get(reverse("admin:marketplace_apitoken_changelist"))
    assert response.status_code == 200
    assert "laptop" in response.content.decode()
    assert "Revoke selected tokens" not in response.content.decode()
    token, _ = bob_token
    act(client, "apitoken", "revoke", [token.pk])
    token.refresh_from_db()
    assert token.revoked_at is None


# ---- webhooks -------------------------------------------------------------------------------
def test_the_webhook_admin_says_a_secret_exists_but_never_shows_it(admin_client, endpoint, failed_delivery):
    html = pages(admin_client, "webhookendpoint", endpoint)
    assert "hooks.example.org" in html and "Signing secret set" in html
    html += pages(admin_client, "webhookdelivery", failed_delivery)
    assert "HTTP 500" in html
    assert endpoint.secret not in html and endpoint.secret[:12] not in html
    assert admin_client.get(reverse("admin:marketplace_webhookendpoint_add")).status_code == 403


def test_the_deactivate_action_stops_the_endpoint_and_is_audited(admin_client, admin_user, endpoint):
    pending = WebhookDelivery.objects.create(endpoint=endpoint, event_type=READY, payload={"id": "evt_2"})
    response = act(admin_client, "webhookendpoint", "deactivate", [endpoint.pk])
    assert "Deactivated webhooks: 1." in response.content.decode()
    endpoint.refresh_from_db()
    pending.refresh_from_db()
    assert not endpoint.active and endpoint.deactivated_at is not None and pending.status == "failed"
    event = AuditEvent.objects.get(action="webhook.deactivate")
    assert event.actor == admin_user and event.detail["by_staff"] is True and event.detail["pending_dropped"] == 1


def test_the_requeue_action_queues_a_failed_delivery_again(admin_client, admin_user, endpoint, failed_delivery,
                                                           django_capture_on_commit_callbacks, monkeypatch):
    from marketplace.tasks import webhook_delivery_send_task

    queued = []
    monkeypatch.setattr(webhook_delivery_send_task, "delay", lambda **kw: queued.append(kw))
    succeeded = WebhookDelivery.objects.create(endpoint=endpoint, event_type=READY, payload={"id": "evt_3"},
                                               status=WebhookDelivery.Status.SUCCEEDED, attempt_count=1)
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, "webhookdelivery", "requeue", [failed_delivery.pk, succeeded.pk])
    html = response.content.decode()
    assert "Queued again: 1." in html and "Only failed deliveries are queued again." in html
    failed_delivery.refresh_from_db()
    assert (failed_delivery.status, failed_delivery.attempt_count) == ("pending", 0)
    assert failed_delivery.next_attempt_at is not None
    assert queued == [{"delivery_id": failed_delivery.pk}]
    event = AuditEvent.objects.get(action="webhook.requeue")
    assert event.actor == admin_user and event.detail == {"webhook_endpoint_id": endpoint.pk, "attempts_before": 6}


def test_a_delivery_of_a_deactivated_webhook_is_not_queued_again(admin_client, endpoint, failed_delivery):
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(active=False)
    response = act(admin_client, "webhookdelivery", "requeue", [failed_delivery.pk])
    assert "Its webhook is deactivated." in response.content.decode()
    failed_delivery.refresh_from_db()
    assert failed_delivery.status == "failed"
