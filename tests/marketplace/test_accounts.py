"""Accounts: sign-up, log in/out, organization approval and the append-only audit trail."""
from __future__ import annotations

import pytest
from django.contrib.admin.sites import site as admin_site
from django.db import DatabaseError, transaction
from django.test import RequestFactory
from django.urls import reverse

from marketplace.models import AuditEvent, Membership, Organization, User
from marketplace.services import audit_record, organization_approve

pytestmark = pytest.mark.django_db


GOOD_PASSWORD = "correct-horse-battery-9"


def sign_up_data(**overrides: str) -> dict[str, str]:
    data = {
        "username": "dora",
        "email": "dora@example.org",
        "password": GOOD_PASSWORD,
        "organization_name": "Delta Diagnostics",
        "organization_kind": "buyer",
    }
    data.update(overrides)
    return data


# ---- sign-up ---------------------------------------------------------------------------
def test_it_shows_the_sign_up_page(client):
    response = client.get(reverse("signup"))
    assert response.status_code == 200
    assert b'name="organization_name"' in response.content


def test_it_creates_user_organization_owner_membership_and_audit_event_on_sign_up(client):
    response = client.post(reverse("signup"), sign_up_data(), REMOTE_ADDR="203.0.113.7")

    assert response.status_code == 302
    assert response.url == reverse("home")
    user = User.objects.get(username="dora")
    assert user.email == "dora@example.org"
    assert user.check_password(GOOD_PASSWORD)
    org = Organization.objects.get(name="Delta Diagnostics")
    assert org.kind == Organization.Kind.BUYER
    assert not org.is_approved
    membership = Membership.objects.get(user=user)
    assert membership.organization == org
    assert membership.role == Membership.Role.OWNER
    event = AuditEvent.objects.get(action="user.sign_up")
    assert event.actor == user
    assert event.actor_label == "dora"
    assert event.object_type == "marketplace.user"
    assert event.object_id == str(user.pk)
    assert event.ip_address == "203.0.113.7"
    assert event.detail == {"organization_id": org.pk, "kind": "buyer"}
    # and the new user is logged in
    assert client.get(reverse("home")).wsgi_request.user == user


def test_it_starts_a_signed_up_provider_unapproved(client):
    client.post(reverse("signup"), sign_up_data(organization_kind="provider", organization_name="Echo Scans"))
    org = Organization.objects.get(name="Echo Scans")
    assert org.is_provider
    assert org.approved_at is None


def test_it_rejects_a_taken_username_case_insensitively(client, bob):
    response = client.post(reverse("signup"), sign_up_data(username="BOB"))
    assert response.status_code == 200
    assert "This username is taken." in response.content.decode()
    assert not Organization.objects.filter(name="Delta Diagnostics").exists()
    assert not AuditEvent.objects.filter(action="user.sign_up").exists()


def test_it_rejects_a_taken_email_case_insensitively(client, bob):
    response = client.post(reverse("signup"), sign_up_data(email="Bob@Example.ORG"))
    assert response.status_code == 200
    assert "An account with this email already exists." in response.content.decode()
    assert not User.objects.filter(username="dora").exists()


def test_it_rejects_an_existing_organization_name_and_creates_nothing(client, provider):
    response = client.post(reverse("signup"), sign_up_data(organization_name="alpha imaging"))
    assert response.status_code == 200
    assert "An organization with this name already exists" in response.content.decode()
    assert not User.objects.filter(username="dora").exists()
    assert Organization.objects.filter(name__iexact="alpha imaging").count() == 1
    assert not AuditEvent.objects.filter(action="user.sign_up").exists()
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("password, message", [
    ("short1!", "too short"),
    ("password1234", "too common"),
    ("dora@example", "too similar to the email"),
])
def test_it_rejects_a_weak_password(client, password, message):
    response = client.post(reverse("signup"), sign_up_data(password=password))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not User.objects.filter(username="dora").exists()
    assert not Organization.objects.filter(name="Delta Diagnostics").exists()


# ---- log in / log out ------------------------------------------------------------------
def test_it_logs_in_with_the_right_password(client, bob):
    response = client.post(reverse("login"), {"username": "bob", "password": "pass-1234567"})
    assert response.status_code == 302
    assert response.url == reverse("home")
    assert client.session["_auth_user_id"] == str(bob.pk)


def test_it_refuses_a_log_in_with_the_wrong_password(client, bob):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    response = client.post(reverse("login"), {"username": "bob", "password": "wrong-password-1"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_it_logs_out_with_a_post(client, bob):
    client.force_login(bob)
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response.url == reverse("home")
    assert "_auth_user_id" not in client.session
    # a page that needs a user now sends the visitor to the log-in page
    assert client.get(reverse("workspace")).status_code == 302


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
