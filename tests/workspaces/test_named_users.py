"""The buyer names colleagues as users of the data, up to the seats the licence allows."""
from __future__ import annotations

import pytest
from django.urls import reverse

from catalog.licence import LicenceTerms
from factories.orders import approve_for_delivery, place_order
from marketplace.exceptions import PermissionDeniedError
from marketplace.grants import who_may
from marketplace.models import AuditEvent, Membership
from workspaces.grants import SeatsError, delivery_seats, delivery_share, delivery_unshare
from workspaces.services import delivery_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


@pytest.fixture
def colleagues(make_member, bob):
    org = bob.memberships.get().organization
    return [make_member(name, org.name, "buyer")[0] for name in ("erin", "frank")]


@pytest.fixture
def delivery(published_dataset, bob, admin_user, dua):
    terms = LicenceTerms.from_dict({**published_dataset.terms.to_dict(), "seats": 2})
    type(published_dataset).objects.filter(pk=published_dataset.pk).update(licence_terms=terms.to_dict())
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    delivery_run(delivery_id=order.delivery.pk)
    order.delivery.refresh_from_db()
    return order.delivery


def test_a_named_colleague_sees_and_downloads_the_delivery_up_to_the_seats(client, delivery, bob, colleagues,
                                                                           charlie):
    erin, frank = colleagues
    assert delivery_seats(delivery) == 2
    delivery_share(delivery=delivery, colleague_email="ERIN@example.org", acting_user=bob)
    assert who_may(delivery)[f"user {erin.email}"] == ["download_delivery", "view_delivery"]
    with pytest.raises(SeatsError, match="allows 2 named users, and all are named"):
        delivery_share(delivery=delivery, colleague_email=frank.email, acting_user=bob)
    with pytest.raises(SeatsError, match="colleague"):
        delivery_share(delivery=delivery, colleague_email=charlie.email, acting_user=bob)  # another organization
    with pytest.raises(PermissionDeniedError):
        delivery_share(delivery=delivery, colleague_email=frank.email, acting_user=erin)

    client.force_login(erin)
    page = client.get(reverse("delivery_files", args=[delivery.pk])).content.decode()
    link = page.split('href="/workspace/download/', 1)[1].split('"', 1)[0]
    assert client.get(f"/workspace/download/{link}").status_code == 200  # a link made for erin works for erin
    client.force_login(bob)
    assert client.get(f"/workspace/download/{link}").status_code == 404  # and for nobody else

    delivery_unshare(delivery=delivery, colleague=erin, acting_user=bob)
    client.force_login(erin)
    assert client.get(reverse("delivery_files", args=[delivery.pk])).status_code == 404
    assert client.get(f"/workspace/download/{link}").status_code == 404
    assert AuditEvent.objects.filter(action="grant.add", object_id=str(delivery.pk), detail__user_id=erin.pk).exists()
    assert AuditEvent.objects.filter(action="grant.remove", object_id=str(delivery.pk),
                                     detail__user_id=erin.pk).exists()


def test_the_buyer_names_users_on_the_delivery_page(client, delivery, bob, colleagues):
    erin, _ = colleagues
    client.force_login(bob)
    url = reverse("delivery_named_users", args=[delivery.pk])
    client.post(url, {"email": erin.email})
    page = client.get(reverse("delivery_files", args=[delivery.pk])).content.decode()
    assert "The licence allows 2 named users" in page and erin.email in page
    response = client.post(url, {"email": "nobody@example.org"}, follow=True)
    assert "Name a colleague by the e-mail of their account in your organization." in response.content.decode()
    client.post(url, {"remove": str(erin.pk)})
    assert f"user {erin.email}" not in who_may(delivery)


def test_access_ending_takes_every_named_users_grant(delivery, bob, colleagues, admin_user):
    from orders.entitlements import entitlement_revoke

    delivery_share(delivery=delivery, colleague_email=colleagues[0].email, acting_user=bob)
    entitlement_revoke(delivery.order.lines.get(), admin_user, "Breach of the agreement")
    assert who_may(delivery) == {}


def test_a_colleague_who_leaves_the_organization_cannot_be_named(delivery, bob, colleagues):
    Membership.objects.filter(user=colleagues[0]).delete()
    with pytest.raises(SeatsError):
        delivery_share(delivery=delivery, colleague_email=colleagues[0].email, acting_user=bob)


def test_a_named_user_who_leaves_the_organization_loses_the_data(delivery, bob, colleagues):
    delivery_share(delivery=delivery, colleague_email=colleagues[0].email, acting_user=bob)
    Membership.objects.filter(user=colleagues[0]).delete()
    assert f"user {colleagues[0].email}" not in who_may(delivery) and f"user {bob.email}" in who_may(delivery)
    event = AuditEvent.objects.filter(action="grant.remove", detail__user_id=colleagues[0].pk).get()
    assert event.detail["reason"] == "left the buyer organization"
