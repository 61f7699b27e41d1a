"""A staff flag alone shows nothing of a provider's drafts, previews or exact counts: that
takes the permission to view every dataset (catalog.view_dataset) or a superuser. Previews
served and studies browsed are audited."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from catalog.datasets.selectors import access_dataset
from catalog.disclosure import entitled_provider_ids
from catalog.models import DatasetPreview
from factories.accounts import ready_account
from marketplace.exceptions import NotFoundError
from marketplace.models import AuditEvent, User

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(make_member) -> User:
    user, _ = make_member("sam", "Support Desk", "buyer")
    User.objects.filter(pk=user.pk).update(is_staff=True)
    return ready_account(User.objects.get(pk=user.pk), two_factor=True)  # staff need a second factor


def test_a_staff_account_without_permissions_sees_no_draft_dataset(staff, dataset, charlie):
    for user in (staff, charlie):
        with pytest.raises(NotFoundError):
            access_dataset(user=user, dataset_id=dataset.pk)


def test_a_staff_account_without_permissions_counts_no_provider_exactly(staff, provider):
    entitled = entitled_provider_ids(staff)
    assert entitled is not None and provider.pk not in entitled  # only its own organization


def test_the_view_permission_or_superuser_shows_every_dataset_and_count(staff, dataset, admin_user):
    staff.user_permissions.add(Permission.objects.get(codename="view_dataset", content_type__app_label="catalog"))
    staff = User.objects.get(pk=staff.pk)  # fresh permission cache
    for user in (staff, admin_user):
        assert access_dataset(user=user, dataset_id=dataset.pk) == dataset
        assert entitled_provider_ids(user) is None


def test_a_staff_account_without_permissions_gets_404_for_a_draft_page_and_its_previews(client, staff, dataset,
                                                                                       ingest, alice):
    from factories.dicom import ct_files

    ingest(dataset, ct_files())
    preview = DatasetPreview.objects.filter(dataset=dataset).first()
    assert preview is not None
    client.force_login(staff)
    assert client.get(f"/datasets/{dataset.pk}/").status_code == 404
    assert client.get(f"/datasets/{dataset.pk}/previews/{preview.pk}.png").status_code == 404
    client.force_login(alice)  # the owner still sees them, and the preview served is audited
    assert client.get(f"/datasets/{dataset.pk}/").status_code == 200
    assert client.get(f"/datasets/{dataset.pk}/previews/{preview.pk}.png").status_code == 200
    event = AuditEvent.objects.get(action="preview.view")
    assert (event.actor, event.object_id, event.detail) == (alice, str(dataset.pk), {"preview_id": preview.pk})


def test_study_browsing_is_audited_with_the_ids_shown(client, published_dataset, bob, tiny_threshold):
    published_dataset.allow_study_browsing = True
    published_dataset.save(update_fields=["allow_study_browsing"])
    client.force_login(bob)
    response = client.get("/api/studies/")
    assert response.status_code == 200
    shown = [row["id"] for row in response.json()["results"]]
    assert shown
    event = AuditEvent.objects.get(action="study.browse")
    assert event.actor == bob and event.detail == {"where": "api.studies", "page": 1, "study_ids": shown}
