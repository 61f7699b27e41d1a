"""Accounts: sign-up (django-allauth), log in/out, password reset, settings, organization approval and the
append-only audit trail."""
from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from django.contrib.admin.sites import site as admin_site
from django.db import DatabaseError, transaction
from django.test import Client, RequestFactory
from django.urls import reverse

from marketplace.models import AuditEvent, Membership, User
from marketplace.services import audit_record, organization_approve

pytestmark = pytest.mark.django_db


GOOD_PASSWORD = "correct-horse-battery-9"


def sign_up_data(**overrides: str) -> dict[str, str]:
    data = {
        "email": "dora@example.org",
        "password1": GOOD_PASSWORD,
        "password2": GOOD_PASSWORD,
        "accept_terms": "on",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


# ---- sign-up ---------------------------------------------------------------------------
def test_it_shows_the_sign_up_page_with_terms_and_no_username_or_organization(client):
    assert client.get("/signup/").url == reverse("account_signup")
    response = client.get(reverse("account_signup"))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="accept_terms"' in page and 'name="email"' in page
    assert 'name="username"' not in page and 'name="organization_name"' not in page


def test_it_creates_an_unverified_user_without_an_organization_and_records_the_terms(client, settings, mailoutbox):
    response = client.post(reverse("account_signup"), sign_up_data(), REMOTE_ADDR="203.0.113.7")

    assert response.status_code == 302
    assert response.url == reverse("account_email_verification_sent")
    user = User.objects.get(email="dora@example.org")
    assert user.check_password(GOOD_PASSWORD)
    assert user.username.startswith("dora-")
    assert user.terms_version == settings.TERMS_VERSION and user.terms_accepted_at is not None
    assert not Membership.objects.filter(user=user).exists()
    assert not EmailAddress.objects.filter(user=user, verified=True).exists()
    event = AuditEvent.objects.get(action="user.terms_accept")
    assert event.actor == user and event.ip_address == "203.0.113.7"
    assert event.detail == {"version": settings.TERMS_VERSION}
    # not signed in until the address is verified
    assert "_auth_user_id" not in client.session
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["dora@example.org"]


def test_it_signs_in_after_the_e_mail_link_is_followed(client, mailoutbox):
    client.post(reverse("account_signup"), sign_up_data())
    link = re.search(r"https?://[^/\s]+(/accounts/confirm-email/\S+/)", mailoutbox[0].body).group(1)
    assert client.post(link).status_code == 302
    user = User.objects.get(email="dora@example.org")
    assert EmailAddress.objects.get(user=user).verified
    response = client.post(reverse("login"), {"login": "dora@example.org", "password": GOOD_PASSWORD})
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(user.pk)


def test_it_refuses_a_sign_up_without_accepting_the_terms(client):
    response = client.post(reverse("account_signup"), sign_up_data(accept_terms=None))
    assert response.status_code == 200
    assert "Please accept the terms of use" in response.content.decode()
    assert not User.objects.filter(email="dora@example.org").exists()


def test_it_answers_a_sign_up_with_a_taken_e_mail_exactly_like_a_new_one(client, bob, mailoutbox):
    fresh = client.post(reverse("account_signup"), sign_up_data(email="new@example.org"))
    taken = Client().post(reverse("account_signup"), sign_up_data(email="Bob@Example.ORG"))

    assert (taken.status_code, taken.url) == (fresh.status_code, fresh.url)
    assert User.objects.filter(email__iexact="bob@example.org").count() == 1
    # bob hears about it by e-mail; the visitor learns nothing
    assert {m.to[0] for m in mailoutbox} == {"new@example.org", "bob@example.org"}


@pytest.mark.parametrize("password, message", [
    ("short1!", "too short"),
    ("password1234", "too common"),
    ("8302746159", "entirely numeric"),
    ("dora@example", "too similar to the email"),
])
def test_it_rejects_a_weak_password(client, password, message):
    response = client.post(reverse("account_signup"), sign_up_data(password1=password, password2=password))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not User.objects.filter(email="dora@example.org").exists()


def test_the_password_policy_rejects_an_all_digit_password_everywhere():
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="entirely numeric"):
        validate_password("8302746159")


# ---- log in / log out ------------------------------------------------------------------
def test_it_logs_in_with_the_right_password(client, bob):
    response = client.post(reverse("login"), {"login": "bob", "password": "pass-1234567"})
    assert response.status_code == 302
    assert response.url == reverse("home")
    assert client.session["_auth_user_id"] == str(bob.pk)


def test_it_refuses_a_log_in_with_the_wrong_password(client, bob):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    response = client.post(reverse("login"), {"login": "bob", "password": "wrong-password-1"})
    assert response.status_code == 200
    assert "you specified are not correct" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_logs_out_with_a_post(client, bob):
    client.force_login(bob)
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response.url == reverse("home")
    assert "_auth_user_id" not in client.session
    # a page that needs a user now sends the visitor to the log-in page
    assert client.get(reverse("workspace")).status_code == 302


def test_it_offers_a_password_reset_that_answers_alike_for_unknown_addresses(client, bob, mailoutbox):
    known = client.post(reverse("account_reset_password"), {"email": "bob@example.org"})
    unknown = Client().post(reverse("account_reset_password"), {"email": "nobody@example.org"})
    assert (known.status_code, known.url) == (unknown.status_code, unknown.url) == (
        302, reverse("account_reset_password_done"))
    assert [m.to for m in mailoutbox if "reset" in m.body.lower() and "/accounts/password/reset/key/" in m.body] \
        == [["bob@example.org"]]


def test_the_account_settings_page_shows_e_mail_password_two_factor_and_terms(client, bob):
    client.force_login(bob)
    page = client.get(reverse("account_settings")).content.decode()
    assert "bob@example.org" in page and "verified" in page
    for name in ("account_email", "account_change_password", "mfa_index", "organization_members"):
        assert f'href="{reverse(name)}"' in page


# ---- organization approval -------------------------------------------------------------
def test_it_approves_an_organization_once_and_audits_it(make_member, admin_user):
    _, org = make_member("erin", "Echo Scans", "provider", approved=False)
    assert not org.is_approved

    first = organization_approve(organization=org, acting_user=admin_user, ip="198.51.100.2")
    approved_at = first.approved_at
    second = organization_approve(organization=org, acting_user=admin_user)

    assert approved_at is not None
    assert first.approved_by == admin_user
    assert second.approved_at == approved_at
    events = AuditEvent.objects.filter(action="organization.approve")
    assert events.count() == 1
    event = events.get()
    assert event.actor == admin_user
    assert event.object_type == "marketplace.organization"
    assert event.object_id == str(org.pk)
    assert event.ip_address == "198.51.100.2"


def test_it_approves_through_the_admin_action(client, make_member, admin_user):
    _, org = make_member("erin", "Echo Scans", "provider", approved=False)
    client.force_login(admin_user)
    response = client.post(reverse("admin:marketplace_organization_changelist"),
                           {"action": "approve", "_selected_action": [org.pk]})
    assert response.status_code == 302
    org.refresh_from_db()
    assert org.is_approved
    assert org.approved_by == admin_user
    assert AuditEvent.objects.filter(action="organization.approve", object_id=str(org.pk)).count() == 1


# ---- the audit trail is append-only ----------------------------------------------------
@pytest.fixture
def event(bob):
    return audit_record(actor=bob, action="test.event", detail={"n": 1})


def test_the_database_refuses_to_update_an_audit_event(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="rewritten")
    event.refresh_from_db()
    assert event.action == "test.event"


def test_the_database_refuses_to_save_a_changed_audit_event(event):
    event.detail = {"n": 2}
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.save()
    assert AuditEvent.objects.get(pk=event.pk).detail == {"n": 1}


def test_the_database_refuses_to_delete_an_audit_event(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.delete()
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_the_admin_has_no_add_change_or_delete_permission_for_audit_events(admin_user, event):
    model_admin = admin_site._registry[AuditEvent]
    request = RequestFactory().get("/admin/")
    request.user = admin_user
    assert model_admin.has_add_permission(request) is False
    assert model_admin.has_change_permission(request) is False
    assert model_admin.has_change_permission(request, event) is False
    assert model_admin.has_delete_permission(request) is False
    assert model_admin.has_delete_permission(request, event) is False
    assert model_admin.has_view_permission(request, event) is True


def test_the_admin_refuses_to_edit_or_delete_an_audit_event_over_http(client, admin_user, event):
    client.force_login(admin_user)
    change_url = reverse("admin:marketplace_auditevent_change", args=[event.pk])
    delete_url = reverse("admin:marketplace_auditevent_delete", args=[event.pk])

    assert client.get(reverse("admin:marketplace_auditevent_changelist")).status_code == 200
    assert client.post(change_url, {"action": "rewritten"}).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    assert client.post(reverse("admin:marketplace_auditevent_changelist"),
                       {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"}
                       ).status_code in (200, 302, 403)
    event.refresh_from_db()
    assert event.action == "test.event"
