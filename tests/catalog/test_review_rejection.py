"""Reject with reason: datasets in review and providers awaiting approval. The reason is
required, the object moves to its rejected state, the audit trail keeps the reason, the
provider's members are told (in the app and by e-mail) and read it on their pages with
what to do next; resubmitting clears it."""
from __future__ import annotations

import pytest
from django.core import mail
from django.urls import reverse

from catalog.datasets.services import dataset_reject, dataset_submit_for_review
from catalog.exceptions import CatalogError
from catalog.models import Dataset
from factories.dicom import ct_files
from marketplace.exceptions import ApplicationError
from marketplace.models import AuditEvent, Notification, Organization
from marketplace.vetting import organization_details_update, organization_provider_reject

pytestmark = pytest.mark.django_db

REASON = "The series descriptions still name the referring hospital; remove them and upload again."


@pytest.fixture
def in_review(dataset, ingest, alice):
    ingest(dataset, ct_files())
    return dataset_submit_for_review(dataset=dataset, acting_user=alice)


def test_rejecting_a_dataset_needs_a_reason_and_a_dataset_in_review(in_review, dataset, admin_user):
    for blank in ("", "   "):
        with pytest.raises(CatalogError) as excinfo:
            dataset_reject(dataset=in_review, acting_user=admin_user, reason=blank)
        assert excinfo.value.code == "reason_required"
    in_review.refresh_from_db()
    assert in_review.status == Dataset.Status.IN_REVIEW and in_review.rejected_at is None
    dataset_reject(dataset=in_review, acting_user=admin_user, reason=REASON)
    with pytest.raises(ApplicationError):  # a draft is not in review any more
        dataset_reject(dataset=in_review, acting_user=admin_user, reason=REASON)


def test_the_reject_page_moves_the_dataset_tells_the_provider_and_audits(
        in_review, alice, admin_client, admin_user, django_capture_on_commit_callbacks):
    url = reverse("admin:catalog_dataset_reject", args=[in_review.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and 'name="reason"' in page.content.decode()

    refused = admin_client.post(url, {"reason": "  "})  # required: the form says so, nothing moves
    assert refused.status_code == 400 and "This field is required" in refused.content.decode()
    in_review.refresh_from_db()
    assert in_review.status == Dataset.Status.IN_REVIEW

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"reason": REASON, "next": reverse("admin:index")}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("admin:index")
    assert REASON in response.content.decode()  # shown back to the admin
    in_review.refresh_from_db()
    assert in_review.status == Dataset.Status.DRAFT
    assert in_review.rejection_reason == REASON and in_review.rejected_at is not None

    event = AuditEvent.objects.get(action="dataset.reject", object_id=str(in_review.pk))
    assert event.actor == admin_user and event.detail == {"from": "in_review", "to": "draft", "reason": REASON}
    notice = Notification.objects.get(user=alice)
    assert REASON in notice.message and notice.url.endswith(reverse("dataset_manage", args=[in_review.pk]))
    assert [m.to for m in mail.outbox] == [[alice.email]] and REASON in mail.outbox[0].body


def test_an_off_site_next_is_ignored(in_review, admin_client):
    url = reverse("admin:catalog_dataset_reject", args=[in_review.pk])
    response = admin_client.post(url, {"reason": REASON, "next": "https://evil.example/"})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:catalog_dataset_change", args=[in_review.pk])


def test_the_bulk_action_rejects_with_the_typed_reason(in_review, admin_client):
    url = reverse("admin:catalog_dataset_changelist")
    admin_client.post(url, {"action": "reject", "_selected_action": [in_review.pk], "reason": ""})
    in_review.refresh_from_db()
    assert in_review.status == Dataset.Status.IN_REVIEW
    response = admin_client.post(url, {"action": "reject", "_selected_action": [in_review.pk], "reason": REASON},
                                 follow=True)
    in_review.refresh_from_db()
    assert in_review.status == Dataset.Status.DRAFT and in_review.rejection_reason == REASON
    assert REASON in response.content.decode()


def test_the_provider_reads_the_reason_until_resubmitting(in_review, alice, client, admin_user):
    dataset_reject(dataset=in_review, acting_user=admin_user, reason=REASON)
    client.force_login(alice)
    manage = client.get(reverse("dataset_manage", args=[in_review.pk])).content.decode()
    assert 'id="dataset-rejection"' in manage and REASON in manage and "Submit for review" in manage
    dashboard = client.get(reverse("provider_dashboard")).content.decode()
    assert REASON in dashboard and "Edit and resubmit" in dashboard

    client.post(reverse("dataset_manage", args=[in_review.pk]), {"submit_review": "1"})
    in_review.refresh_from_db()
    assert in_review.status == Dataset.Status.IN_REVIEW
    assert in_review.rejected_at is None and in_review.rejection_reason == "" and in_review.submitted_at is not None
    assert REASON not in client.get(reverse("dataset_manage", args=[in_review.pk])).content.decode()
    assert REASON not in client.get(reverse("provider_dashboard")).content.decode()
    # The audit trail keeps the refusal after the resubmission.
    assert AuditEvent.objects.filter(action="dataset.reject", object_id=str(in_review.pk)).count() == 1
    assert AuditEvent.objects.filter(action="dataset.in_review", object_id=str(in_review.pk)).count() == 2


# ---- providers ---------------------------------------------------------------------------

@pytest.fixture
def nina_and_org(make_member):
    return make_member("nina", "Nine Scans", "provider", approved=False)


def test_rejecting_a_provider_needs_a_reason_and_tells_its_members(
        nina_and_org, admin_client, admin_user, django_capture_on_commit_callbacks):
    nina, org = nina_and_org
    url = reverse("admin:marketplace_organization_reject", args=[org.pk])
    assert admin_client.post(url, {"reason": ""}).status_code == 400
    org.refresh_from_db()
    assert org.rejected_at is None
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {"reason": "No data-sharing agreement with the hospital"}, follow=True)
    assert "No data-sharing agreement with the hospital" in response.content.decode()
    org.refresh_from_db()
    assert org.rejected_at is not None and org.approved_at is None
    assert org.rejection_reason == "No data-sharing agreement with the hospital"
    event = AuditEvent.objects.get(action="organization.provider_reject")
    assert event.actor == admin_user and event.detail == {"reason": org.rejection_reason}
    assert "No data-sharing agreement" in Notification.objects.get(user=nina).message
    listed = admin_client.get(reverse("admin:marketplace_organization_changelist")).content.decode()
    assert "Provider not approved (rejected)" in listed


def test_an_approved_provider_or_a_buyer_is_not_rejected_as_a_provider(provider, admin_user, make_member):
    with pytest.raises(ApplicationError) as excinfo:
        organization_provider_reject(organization=provider, acting_user=admin_user, reason="Too late")
    assert excinfo.value.code == "provider_approved"
    _, buyer = make_member("gina", "Golf Research", "buyer", approved=False)
    with pytest.raises(ApplicationError) as excinfo:
        organization_provider_reject(organization=buyer, acting_user=admin_user, reason="Wrong kind")
    assert excinfo.value.code == "not_provider"


def test_the_provider_reads_the_reason_and_correcting_the_details_asks_again(
        nina_and_org, admin_user, client, django_capture_on_commit_callbacks):
    nina, org = nina_and_org
    organization_provider_reject(organization=org, acting_user=admin_user, reason="Give a contact e-mail")
    client.force_login(nina)
    assert "Give a contact e-mail" in client.get(reverse("provider_dashboard")).content.decode()
    page = client.get(reverse("organization_members")).content.decode()
    assert f'id="provider-rejection-{org.pk}"' in page and "Save details" in page

    with django_capture_on_commit_callbacks(execute=True):
        organization_details_update(organization=org, acting_user=nina, sector="public", country="GB",
                                    contact_name="Nina", contact_email="contact@nine.example.org")
    org.refresh_from_db()
    assert org.rejected_at is None and org.rejection_reason == ""
    # Staff are told it waits again, and the queue lists it again.
    assert Notification.objects.filter(user=admin_user, message__contains="Nine Scans").exists()
    from orders.work_queue import providers_waiting

    assert [item.label for item in providers_waiting().items] == ["Nine Scans"]
    assert "Give a contact e-mail" not in client.get(reverse("provider_dashboard")).content.decode()


def test_approving_clears_an_earlier_refusal(nina_and_org, admin_user):
    from marketplace.services import organization_approve

    _, org = nina_and_org
    organization_provider_reject(organization=org, acting_user=admin_user, reason="Give a contact e-mail")
    organization_approve(organization=org, acting_user=admin_user)
    org = Organization.objects.get(pk=org.pk)
    assert org.approved_at is not None and org.rejected_at is None and org.rejection_reason == ""
