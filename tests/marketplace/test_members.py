from __future__ import annotations

import pytest
from django.test import Client

from marketplace.exceptions import ApplicationError
from marketplace.models import AuditEvent, Membership
from marketplace.services import membership_add


@pytest.mark.django_db
def test_an_owner_adds_an_existing_user_as_member(provider, alice, bob):
    membership_add(organization=provider, email="BOB@example.org", role="member", acting_user=alice)
    assert Membership.objects.get(organization=provider, user=bob).role == "member"
    assert AuditEvent.objects.filter(action="membership.add", object_id=str(provider.pk)).exists()


@pytest.mark.django_db
def test_it_refuses_members_added_by_a_non_owner_or_unknown_emails(provider, alice, bob, charlie):
    with pytest.raises(ApplicationError, match="Only an owner"):
        membership_add(organization=provider, email="charlie@example.org", role="member", acting_user=bob)
    with pytest.raises(ApplicationError, match="No account uses this email"):
        membership_add(organization=provider, email="nobody@example.org", role="member", acting_user=alice)
    assert not Membership.objects.filter(organization=provider, user=charlie).exists()


@pytest.mark.django_db
def test_the_organization_page_lists_members_and_adds_one(provider, alice, bob):
    client = Client()
    client.force_login(alice)
    response = client.post("/organization/", {"organization": provider.pk, "email": "bob@example.org",
                                               "role": "member"})
    assert response.status_code == 302
    page = client.get("/organization/").content.decode()
    assert "bob@example.org" in page and "Alpha Imaging" in page


@pytest.mark.django_db
def test_a_user_cannot_add_members_to_someone_elses_organization(provider, bob, charlie):
    client = Client()
    client.force_login(charlie)
    client.post("/organization/", {"organization": provider.pk, "email": "charlie@example.org", "role": "owner"})
    assert not Membership.objects.filter(organization=provider, user=charlie).exists()
    assert "Alpha Imaging" not in client.get("/organization/").content.decode()


@pytest.mark.django_db
def test_the_provider_link_shows_only_for_provider_members(alice, bob):
    provider_client, buyer_client = Client(), Client()
    provider_client.force_login(alice)
    buyer_client.force_login(bob)
    assert 'href="/provider/"' in provider_client.get("/").content.decode()
    assert 'href="/provider/"' not in buyer_client.get("/").content.decode()
