"""Per-object grants: provider members manage their datasets through their organization's
group; a buyer's delivery is viewed and downloaded through grants that end with access."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from catalog.datasets.selectors import access_dataset_for_write
from factories.orders import approve_for_delivery, place_order
from marketplace.exceptions import NotFoundError
from marketplace.grants import grants_remove_all, who_may
from marketplace.models import AuditEvent, Membership
from workspaces.grants import DELIVERY_DOWNLOAD, DELIVERY_VIEW, delivery_grant_buyer
from workspaces.models import Delivery
from workspaces.services import delivery_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


def test_a_provider_member_manages_the_organizations_datasets_through_its_group(dataset, alice, provider,
                                                                                make_member):
    assert access_dataset_for_write(user=alice, dataset_id=dataset.pk) == dataset
    assert who_may(dataset) == {f"organization {provider.name}": ["change_dataset", "view_dataset"]}
    colleague, _ = make_member("dana", provider.name, "provider")
    assert access_dataset_for_write(user=colleague, dataset_id=dataset.pk) == dataset
    Membership.objects.filter(user=colleague).delete()
    with pytest.raises(NotFoundError):
        access_dataset_for_write(user=colleague, dataset_id=dataset.pk)
    grant = AuditEvent.objects.get(action="grant.add", object_type="catalog.dataset", object_id=str(dataset.pk))
    assert grant.actor == alice and grant.detail["group"] == f"organization:{provider.pk}"


def test_staff_powers_are_not_a_grant_to_edit_a_providers_dataset(dataset, admin_user, bob):
    for user in (admin_user, bob):
        with pytest.raises(NotFoundError):
            access_dataset_for_write(user=user, dataset_id=dataset.pk)


def test_editing_a_user_in_the_admin_keeps_their_organization_group(admin_client, alice, dataset):
    url = reverse("admin:marketplace_user_change", args=[alice.pk])
    page = admin_client.get(url).content.decode()
    assert "organization:" not in page  # not offered as a power to hand out
    form = {"username": alice.username, "email": alice.email, "first_name": "Alice", "last_name": "",
            "date_joined_0": alice.date_joined.strftime("%Y-%m-%d"), "date_joined_1": "00:00:00", "is_active": "on"}
    assert admin_client.post(url, form).status_code == 302
    assert access_dataset_for_write(user=alice, dataset_id=dataset.pk) == dataset


@pytest.fixture
def delivered(published_dataset, bob, admin_user, dua) -> Delivery:
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    delivery_run(delivery_id=order.delivery.pk)
    order.delivery.refresh_from_db()
    return order.delivery


def test_the_buyer_is_granted_view_and_download_on_the_delivery(delivered, bob):
    assert who_may(delivered) == {f"user {bob.email}": ["download_delivery", "view_delivery"]}


def test_a_view_only_grant_shows_images_in_the_browser_and_no_download_link(client, delivered, bob, charlie):
    grants_remove_all(delivered, [DELIVERY_DOWNLOAD])
    assert who_may(delivered) == {f"user {bob.email}": ["view_delivery"]}
    client.force_login(bob)
    page = client.get(reverse("delivery_files", args=[delivered.pk])).content.decode()
    assert "View-only licence" in page and "/workspace/download/" not in page
    image_urls = re.findall(r'href="(/workspace/deliveries/\d+/files/\d+/image\.png)"', page)
    assert len(image_urls) == delivered.files.count() > 0
    response = client.get(image_urls[0])
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    assert response["Cache-Control"] == "private, no-store"
    assert AuditEvent.objects.filter(action="delivery.view", object_id=str(delivered.pk)).count() == 1
    workspace = client.get(reverse("workspace")).content.decode()
    assert "/workspace/download/" not in workspace and "view the images in your browser" in workspace
    client.force_login(charlie)
    assert client.get(image_urls[0]).status_code == 404


def test_a_download_link_made_before_the_grant_went_stops_working(client, delivered, bob):
    from workspaces.services import download_token_make

    token = download_token_make(delivery=delivered, path=delivered.files.first().path)
    client.force_login(bob)
    assert client.get(reverse("workspace_download", args=[token])).status_code == 200
    grants_remove_all(delivered, [DELIVERY_DOWNLOAD], reason="test")
    assert client.get(reverse("workspace_download", args=[token])).status_code == 404
    delivery_grant_buyer(delivered, view_only=False)
    assert client.get(reverse("workspace_download", args=[token])).status_code == 200
    grants_remove_all(delivered, [DELIVERY_VIEW, DELIVERY_DOWNLOAD])
    assert client.get(reverse("delivery_files", args=[delivered.pk])).status_code == 404


def test_the_admin_reads_who_may_do_what_on_a_delivery_and_a_dataset(admin_client, delivered, bob, provider):
    page = admin_client.get(reverse("admin:workspaces_delivery_change", args=[delivered.pk])).content.decode()
    assert f"user {bob.email}: download_delivery, view_delivery" in page
    dataset = delivered.order.lines.get().dataset
    page = admin_client.get(reverse("admin:catalog_dataset_change", args=[dataset.pk])).content.decode()
    assert f"organization {provider.name}: change_dataset, view_dataset" in page


def test_a_view_only_licence_delivers_with_a_view_grant_alone(published_dataset, bob, admin_user, dua, client):
    from catalog.licence import LicenceTerms

    terms = LicenceTerms.from_dict({**published_dataset.terms.to_dict(), "access": "view_only"})
    type(published_dataset).objects.filter(pk=published_dataset.pk).update(licence_terms=terms.to_dict())
    published_dataset.refresh_from_db()
    order = approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)
    delivery_run(delivery_id=order.delivery.pk)
    assert who_may(order.delivery) == {f"user {bob.email}": ["view_delivery"]}
    client.force_login(bob)
    page = client.get(reverse("delivery_files", args=[order.delivery.pk])).content.decode()
    assert "View-only licence" in page and "/workspace/download/" not in page
