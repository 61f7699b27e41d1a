"""Logins: failed attempts are limited per account and per address (even the right password
is refused meanwhile), every attempt is audited without the typed text, the admin and the
API have no password door of their own, and roles that need a second factor get one."""
from __future__ import annotations

import base64

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from factories.accounts import totp_code
from factories.orders import USE
from marketplace.models import AuditEvent, Membership
from orders.models import Order

pytestmark = pytest.mark.django_db

BOB_PASSWORD = "pass-1234567"


def log_in(client: Client, login: str, password: str):  # noqa: ANN201
    return client.post(reverse("login"), {"login": login, "password": password})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# ---- lockout ---------------------------------------------------------------------------
def test_thirty_wrong_passwords_lock_the_account_even_for_the_right_one(bob):
    attacker = Client(REMOTE_ADDR="198.51.100.1")
    for i in range(30):
        # spread over many addresses and both spellings of the account
        Client(REMOTE_ADDR=f"198.51.100.{i + 10}").post(
            reverse("login"), {"login": ["bob", "BOB@example.org"][i % 2], "password": f"guess-{i}-xyz"})
    response = log_in(attacker, "bob", BOB_PASSWORD)
    assert not signed_in(attacker)
    assert "Too many failed login attempts" in response.content.decode()
    # the owner, from elsewhere, is refused too until the window passes (or a password reset)
    owner = Client(REMOTE_ADDR="203.0.113.50")
    log_in(owner, "bob@example.org", BOB_PASSWORD)
    assert not signed_in(owner)


def test_failures_count_per_account_whichever_way_it_is_spelled(bob):
    # 3 as "bob" and 3 as the e-mail: each spelling stays under allauth's own per-login
    # limit of 5, together they pass it.
    for i, login in enumerate(["bob", "BOB@example.org", "Bob", "bob@example.org", "bOb", "Bob@Example.org"]):
        log_in(Client(REMOTE_ADDR=f"198.51.100.{i + 40}"), login, f"guess-{i}-xyz")
    client = Client(REMOTE_ADDR="203.0.113.60")
    log_in(client, "bob", BOB_PASSWORD)
    assert not signed_in(client)


def test_many_wrong_passwords_from_one_address_block_that_address(bob, charlie, make_member):
    for i in range(25):
        Client(REMOTE_ADDR="198.51.100.7").post(reverse("login"), {"login": f"user{i}", "password": "nope-nope-1"})
    blocked = Client(REMOTE_ADDR="198.51.100.7")
    log_in(blocked, "charlie", BOB_PASSWORD)
    assert not signed_in(blocked)
    elsewhere = Client(REMOTE_ADDR="203.0.113.9")
    log_in(elsewhere, "charlie", BOB_PASSWORD)
    assert signed_in(elsewhere)


def test_a_few_wrong_passwords_do_not_lock_the_account(bob):
    client = Client()
    for _ in range(3):
        log_in(client, "bob", "wrong-password-1")
    log_in(client, "bob", BOB_PASSWORD)
    assert signed_in(client)


# ---- audit -----------------------------------------------------------------------------
def test_it_audits_failed_and_successful_logins_without_the_typed_text(bob):
    hostile = "bob<script>" + "x" * 5000
    Client(REMOTE_ADDR="198.51.100.3").post(reverse("login"), {"login": "bob", "password": "secret-guess-77"})
    Client(REMOTE_ADDR="198.51.100.3").post(reverse("login"), {"login": hostile, "password": "secret-guess-78"})
    log_in(Client(REMOTE_ADDR="198.51.100.4"), "bob", BOB_PASSWORD)

    failed = list(AuditEvent.objects.filter(action="auth.login_failed").order_by("id"))
    assert [e.detail["user_id"] for e in failed] == [bob.pk, None]
    assert all(e.ip_address == "198.51.100.3" and e.actor is None for e in failed)
    assert all(len(e.detail["login_hash"]) == 24 for e in failed)
    stored = " ".join(str(e.detail) + e.actor_label + e.object_id for e in failed)
    for text in ("secret-guess", "<script>", "xxxx", "bob"):
        assert text not in stored
    ok = AuditEvent.objects.get(action="auth.login", ip_address="198.51.100.4")
    assert ok.actor == bob and ok.object_id == str(bob.pk)


def test_it_audits_a_refused_login_while_locked(bob):
    for i in range(6):
        log_in(Client(REMOTE_ADDR=f"198.51.100.{i + 20}"), "bob", f"wrong-{i}-pass")
    log_in(Client(REMOTE_ADDR="198.51.100.99"), "bob", BOB_PASSWORD)
    event = AuditEvent.objects.filter(action="auth.login_throttled").latest("id")
    assert event.detail["user_id"] == bob.pk and event.ip_address == "198.51.100.99"


# ---- admin login -----------------------------------------------------------------------
def test_the_admin_login_page_sends_to_the_site_login(client):
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))
    response = client.post("/admin/login/", {"username": "admin", "password": "admin-pass-123"})
    assert not signed_in(client)


def test_admin_login_needs_the_second_factor(admin_user):
    client = Client()
    response = log_in(client, "admin", "admin-pass-123")
    assert response.url == reverse("mfa_authenticate")
    assert not signed_in(client)
    assert client.post(reverse("mfa_authenticate"), {"code": "000000"}).status_code == 200
    assert not signed_in(client)
    client.post(reverse("mfa_authenticate"), {"code": totp_code()})
    assert signed_in(client)
    assert client.get("/admin/").status_code == 200


def test_a_recovery_code_also_completes_the_login(admin_user):
    from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes

    code = RecoveryCodes.activate(admin_user).get_unused_codes()[0]
    client = Client()
    log_in(client, "admin", "admin-pass-123")
    client.post(reverse("mfa_authenticate"), {"code": code})
    assert signed_in(client)


# ---- two-factor required for staff and provider owners ---------------------------------
def test_staff_without_a_second_factor_are_sent_to_set_one_up(admin_user, published_dataset):
    Authenticator.objects.filter(user=admin_user).delete()
    client = Client()
    client.force_login(admin_user)
    for url in ("/", "/admin/", reverse("order_new", args=[published_dataset.pk])):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("mfa_activate_totp")), url
    api = APIClient()
    api.force_login(admin_user)
    response = api.get("/api/orders/")
    assert response.status_code == 403 and response.json()["code"] == "two_factor_required"
    assert client.get(reverse("mfa_activate_totp")).status_code in (200, 302)  # set-up stays reachable


def test_a_provider_owner_needs_a_second_factor_but_a_buyer_does_not(alice, bob):
    Authenticator.objects.filter(user=alice).delete()
    owner, buyer = Client(), Client()
    owner.force_login(alice)
    buyer.force_login(bob)
    assert owner.get("/provider/").url.startswith(reverse("mfa_activate_totp"))
    assert buyer.get("/").status_code == 200


def test_creating_a_provider_organization_asks_for_a_second_factor(bob):
    client = Client()
    client.force_login(bob)
    client.post(reverse("organization_new"), {"name": "Golf Imaging", "kind": "provider"})
    assert Membership.objects.get(user=bob, organization__name="Golf Imaging").role == "owner"
    assert client.get("/").url.startswith(reverse("mfa_activate_totp"))


def test_a_staff_user_sets_up_totp_and_gets_recovery_codes(admin_user):
    from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY

    Authenticator.objects.filter(user=admin_user).delete()
    client = Client()
    log_in(client, "admin", "admin-pass-123")  # no factor yet: the password alone signs in...
    assert client.get("/").url.startswith(reverse("mfa_activate_totp"))  # ...and leads here
    # allauth asks for the password again before a factor is added (a fresh login is not enough)
    assert client.get(reverse("mfa_activate_totp")).url.startswith(reverse("account_reauthenticate"))
    client.post(reverse("account_reauthenticate"), {"password": "admin-pass-123"})
    assert client.get(reverse("mfa_activate_totp")).status_code == 200
    secret = client.session[SECRET_SESSION_KEY]
    base64.b32decode(secret)
    response = client.post(reverse("mfa_activate_totp"), {"code": totp_code(secret)})
    assert response.status_code == 302
    assert set(Authenticator.objects.filter(user=admin_user).values_list("type", flat=True)) == {
        "totp", "recovery_codes"}
    assert client.get("/").status_code == 200


# ---- the API: sessions only, throttled ------------------------------------------------
def test_the_api_ignores_http_basic_credentials(bob):
    api = APIClient()
    token = base64.b64encode(f"bob:{BOB_PASSWORD}".encode()).decode()
    response = api.get("/api/orders/", HTTP_AUTHORIZATION=f"Basic {token}")
    assert response.status_code in (401, 403)
    assert response.json()["code"] == "not_authenticated"


def test_the_api_throttles_anonymous_callers_and_users(monkeypatch, bob):
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/minute", "user": "4/minute"})
    anon = APIClient()
    assert [anon.get("/api/datasets/").status_code for _ in range(4)] == [200, 200, 200, 429]
    user = APIClient()
    user.force_login(bob)
    statuses = [user.get("/api/orders/").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]
    assert "Retry-After" in user.get("/api/orders/")


def test_the_api_throttle_rates_are_settings(settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert set(rates) == {"anon", "user"}


# ---- e-mail verification before ordering -----------------------------------------------
@pytest.mark.usefixtures("tiny_threshold")
def test_an_unverified_e_mail_cannot_order_on_the_page_or_the_api(published_dataset, bob, dua):
    EmailAddress.objects.filter(user=bob).update(verified=False)
    client = Client()
    client.force_login(bob)
    client.post(reverse("order_new", args=[published_dataset.pk]), {})  # a cart is fine
    response = client.post(reverse("cart_checkout"), {"accept": "on", "expected_total_minor": "2000",
                                                      "expected_currency": "USD", "payment_method": "invoice",
                                                      "password": "pass-1234567", **USE}, follow=True)
    assert "Please verify your e-mail address before ordering" in response.content.decode()
    api = APIClient()
    api.force_login(bob)
    body = {"accept_agreement": True, "payment_method": "invoice", "expected_total_minor": 2000,
            "expected_currency": "USD", "password": "pass-1234567", **USE}
    response = api.post("/api/orders/", body, format="json")
    assert response.status_code == 403 and response.json()["code"] == "email_not_verified"
    assert not Order.objects.exists()

    EmailAddress.objects.filter(user=bob).update(verified=True)
    response = api.post("/api/orders/", body, format="json")
    assert response.status_code == 201
