"""Personal access tokens: made and revoked on the account page, used as Bearer tokens."""
from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from marketplace.models import ApiToken, AuditEvent
from marketplace.tokens import api_token_authenticate, api_token_create

pytestmark = pytest.mark.django_db


def bearer(secret: str, keyword: str = "Bearer") -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"{keyword} {secret}")
    return api


def make_token(user, scopes=("read",), expires=None) -> tuple[ApiToken, str]:  # noqa: ANN001
    return api_token_create(user=user, name="laptop", scopes=list(scopes), expires=expires)


# ---- the account page ----------------------------------------------------------------------
def test_it_shows_a_new_token_once_and_stores_only_its_hash(client, bob):
    client.force_login(bob)
    response = client.post(reverse("api_token_new"), {"name": "workstation", "scopes": ["read", "download"],
                                                      "expires_in_days": "30"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"
    secret = re.search(r'<code id="new-token-secret">([^<]+)</code>', response.content.decode()).group(1)
    token = ApiToken.objects.get(user=bob)
    assert secret.startswith("mkt_") and len(secret) > 40
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(token.prefix) and len(token.prefix) < 16
    assert token.scopes == ["download", "read"]
    assert timedelta(days=29) < token.expires - timezone.now() <= timedelta(days=30)
    assert not any(secret in str(value) for value in ApiToken.objects.values_list().get())
    page = client.get(reverse("account_settings")).content.decode()
    assert secret not in page and f"{token.prefix}…" in page and "workstation" in page
    event = AuditEvent.objects.get(action="api_token.create")
    assert (event.actor_id, event.object_id, event.detail["scopes"]) == (bob.pk, str(token.pk), ["download", "read"])
    assert secret not in str(event.detail)


def test_it_refuses_a_token_without_a_scope(client, bob):
    client.force_login(bob)
    response = client.post(reverse("api_token_new"), {"name": "x", "expires_in_days": ""})
    assert response.status_code == 200 and "at least one scope" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_it_revokes_a_token_from_the_account_page_and_audits_it(client, bob):
    token, secret = make_token(bob)
    client.force_login(bob)
    response = client.post(reverse("api_token_revoke", args=[token.pk]))
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.filter(action="api_token.revoke", object_id=str(token.pk), actor=bob).count() == 1
    assert "revoked" in client.get(reverse("account_settings")).content.decode()


def test_charlie_can_neither_see_nor_revoke_bobs_token(client, bob, charlie):
    token, _ = make_token(bob)
    client.force_login(charlie)
    assert token.prefix not in client.get(reverse("account_settings")).content.decode()
    assert client.post(reverse("api_token_revoke", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


# ---- the API -------------------------------------------------------------------------------
@pytest.mark.parametrize("keyword", ["Bearer", "Token", "bearer"])
def test_a_read_token_lists_the_owners_orders(bob, keyword):
    _, secret = make_token(bob)
    response = bearer(secret, keyword).get("/api/orders/")
    assert response.status_code == 200, response.content
    assert response.json() == []


def test_it_names_the_problem_with_a_revoked_expired_or_unknown_token(bob):
    revoked, revoked_secret = make_token(bob)
    revoked.revoked_at = timezone.now()
    revoked.save()
    expired, expired_secret = make_token(bob, expires=timezone.now() + timedelta(days=1))
    ApiToken.objects.filter(pk=expired.pk).update(expires=timezone.now() - timedelta(seconds=1))
    for secret, code, words in [(revoked_secret, "token_revoked", "token revoked"),
                                (expired_secret, "token_expired", "token expired"),
                                ("mkt_" + "x" * 43, "token_unknown", "unknown token"),
                                ("not-even-ours", "token_unknown", "unknown token")]:
        response = bearer(secret).get("/api/orders/")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
        assert response.json()["code"] == code
        assert words in response.json()["message"]


def test_it_answers_401_without_credentials(db):
    response = APIClient().get("/api/orders/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_a_token_may_not_fill_the_cart_or_check_out(bob, published_dataset, tiny_threshold):
    _, secret = make_token(bob, scopes=("read", "download"))
    response = bearer(secret).post("/api/cart/", {"dataset_id": published_dataset.pk}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "token_scope"
    assert "browser session" in response.json()["message"]
    assert bearer(secret).get("/api/cart/").status_code == 200


def test_it_marks_last_use_at_most_once_a_minute(bob):
    token, secret = make_token(bob)
    assert token.last_used is None
    api_token_authenticate(secret=secret)
    first = ApiToken.objects.get(pk=token.pk).last_used
    assert first is not None
    api_token_authenticate(secret=secret)
    assert ApiToken.objects.get(pk=token.pk).last_used == first
    ApiToken.objects.filter(pk=token.pk).update(last_used=first - timedelta(seconds=61))
    api_token_authenticate(secret=secret)
    assert ApiToken.objects.get(pk=token.pk).last_used > first


def test_a_deactivated_users_token_is_unknown(bob):
    _, secret = make_token(bob)
    bob.is_active = False
    bob.save()
    response = bearer(secret).get("/api/orders/")
    assert response.status_code == 401 and response.json()["code"] == "token_unknown"
