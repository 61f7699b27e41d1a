"""Organizations: created by a user, joined by an invitation the invitee accepts."""
from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from django.test import Client
from django.urls import reverse

from marketplace.exceptions import ApplicationError, NotFoundError
from marketplace.models import AuditEvent, Invitation, Membership, Organization
from marketplace.services import (
    INVITATION_SENT_MESSAGE,
    invitation_accept,
    invitation_create,
    invitation_decline,
)

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:  # noqa: ANN001
    client = Client()
    client.force_login(user)
    return client


def test_an_invited_user_joins_only_after_accepting(provider, alice, bob):
    invitation = invitation_create(organization=provider, email="BOB@example.org", role="member", acting_user=alice)
    assert not Membership.objects.filter(organization=provider, user=bob).exists()

    invitation_accept(invitation_id=invitation.pk, acting_user=bob)

    assert Membership.objects.get(organization=provider, user=bob).role == "member"
    assert AuditEvent.objects.filter(action="invitation.create", object_id=str(provider.pk)).exists()
    assert AuditEvent.objects.filter(action="invitation.accept", actor=bob).exists()


def test_an_owner_cannot_add_the_platform_admin_without_asking(provider, alice, admin_user):
    client = signed_in(alice)
    client.post("/organization/", {"organization": provider.pk, "email": "admin@example.org", "role": "owner"})
    assert not Membership.objects.filter(organization=provider, user=admin_user).exists()
    invitation = Invitation.objects.get(organization=provider)
    invitation_decline(invitation_id=invitation.pk, acting_user=admin_user)
    with pytest.raises(NotFoundError):
        invitation_accept(invitation_id=invitation.pk, acting_user=admin_user)
    assert not Membership.objects.filter(organization=provider, user=admin_user).exists()


def test_only_the_invited_verified_address_can_accept(provider, alice, bob, charlie):
    invitation = invitation_create(organization=provider, email="bob@example.org", role="member", acting_user=alice)
    with pytest.raises(NotFoundError):
        invitation_accept(invitation_id=invitation.pk, acting_user=charlie)
    EmailAddress.objects.filter(user=bob).update(verified=False)
    with pytest.raises(NotFoundError):
        invitation_accept(invitation_id=invitation.pk, acting_user=bob)
    assert not Membership.objects.filter(organization=provider, user__in=[bob, charlie]).exists()


def test_it_refuses_invitations_by_a_non_owner(provider, alice, bob, charlie):
    with pytest.raises(ApplicationError, match="Only an owner"):
        invitation_create(organization=provider, email="charlie@example.org", role="member", acting_user=bob)
    assert not Invitation.objects.exists()


def test_the_invite_form_answers_alike_for_known_and_unknown_e_mails(provider, alice, bob, mailoutbox,
                                                                    django_capture_on_commit_callbacks):
    client = signed_in(alice)
    answers = []
    for email in ("bob@example.org", "nobody@example.org"):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post("/organization/", {"organization": provider.pk, "email": email,
                                                      "role": "member"}, follow=True)
        messages = [m.message.replace(email, "EMAIL") for m in response.context["messages"]]
        answers.append((response.status_code, messages))
    assert answers[0] == answers[1]
    assert answers[0][1] == [INVITATION_SENT_MESSAGE.format(email="EMAIL")]
    # each address hears of its invitation by e-mail
    assert sorted(m.to[0] for m in mailoutbox) == ["bob@example.org", "nobody@example.org"]


def test_the_invitee_accepts_on_the_organization_page(provider, alice, bob):
    invitation_create(organization=provider, email="bob@example.org", role="member", acting_user=alice)
    client = signed_in(bob)
    page = client.get("/organization/").content.decode()
    assert "Alpha Imaging invites you as member" in page
    invitation = Invitation.objects.get()
    assert client.post(reverse("invitation_answer", args=[invitation.pk, "accept"])).status_code == 302
    page = client.get("/organization/").content.decode()
    assert "bob@example.org" in page and "Alpha Imaging" in page and "invites you" not in page


def test_a_user_cannot_add_members_to_someone_elses_organization(provider, bob, charlie):
    client = signed_in(charlie)
    client.post("/organization/", {"organization": provider.pk, "email": "charlie@example.org", "role": "owner"})
    assert not Invitation.objects.exists()
    assert not Membership.objects.filter(organization=provider, user=charlie).exists()
    assert "Alpha Imaging" not in client.get("/organization/").content.decode()


def test_a_user_creates_an_organization_and_owns_it(bob):
    client = signed_in(bob)
    client.post(reverse("organization_new"), {"name": "Foxtrot Labs", "kind": "buyer", "sector": "academic",
                                              "country": "NL", "contact_name": "Fay Fox",
                                              "contact_email": "fay@foxtrot.example"})
    org = Organization.objects.get(name="Foxtrot Labs")
    assert (org.sector, org.country, org.contact_email) == ("academic", "NL", "fay@foxtrot.example")
    assert Membership.objects.get(organization=org, user=bob).role == "owner"
    assert not org.is_approved
    assert AuditEvent.objects.filter(action="organization.create", object_id=str(org.pk), actor=bob).exists()


def test_an_unverified_user_cannot_create_an_organization(bob):
    EmailAddress.objects.filter(user=bob).update(verified=False)
    signed_in(bob).post(reverse("organization_new"), {"name": "Foxtrot Labs", "kind": "buyer"})
    assert not Organization.objects.filter(name="Foxtrot Labs").exists()


def test_the_provider_link_shows_only_for_provider_members(alice, bob):
    assert 'href="/provider/"' in signed_in(alice).get("/").content.decode()
    assert 'href="/provider/"' not in signed_in(bob).get("/").content.decode()
