"""Saved searches with notifications of new matching data, and the data-request board."""
from __future__ import annotations

import html
from decimal import Decimal

import pytest
from django.core import mail

from catalog.datasets.services import dataset_publish
from catalog.discovery.services import (
    data_request_create,
    data_request_respond,
    saved_search_create,
    saved_searches_notify,
)
from catalog.exceptions import CatalogError
from catalog.models import DataRequest, Dataset, SavedSearch, Study
from catalog.search.memory.snapshots import snapshot_refresh
from marketplace.models import Notification, Organization

pytestmark = pytest.mark.django_db


def _dataset(provider, title: str, sexes: str, status: str = Dataset.Status.PUBLISHED) -> Dataset:
    dataset = Dataset.objects.create(provider=provider, title=title, status=status,
                                     price_per_study=Decimal("1.00"))
    Study.objects.bulk_create([
        Study(dataset=dataset, study_uid=f"2.25.{title}.{i}", pseudo_patient_id=f"P-{i}", patient_sex=sex,
              age_band="40-49", modalities=["CT"], body_part="CHEST", instance_count=1)
        for i, sex in enumerate(sexes)])
    snapshot_refresh(dataset_id=dataset.pk)
    return dataset


def test_saving_a_search_from_the_cohort_builder(client, bob) -> None:
    client.force_login(bob)
    response = client.post("/saved/new/", {"name": "Female CT", "sex": "F", "modality": "CT", "notify": "on"})
    assert response.status_code == 302
    saved = SavedSearch.objects.get(user=bob)
    assert saved.criteria == {"sex": ["F"], "modality": ["CT"]} and saved.notify
    listing = client.get("/saved/").content.decode()
    assert "Female CT" in listing and "/cohorts/?sex=F&amp;modality=CT" in listing


@pytest.mark.parametrize("name, params, message", [
    ("", {"sex": "F"}, "Give the search a name"),
    ("x", {"colour": "red"}, "Unknown filter: colour"),
])
def test_saved_searches_refuse_bad_input_with_a_reason(bob, name, params, message) -> None:
    with pytest.raises(CatalogError, match=message):
        saved_search_create(user=bob, name=name, params=params)


def test_publishing_tells_people_whose_search_matches(
        provider, alice, admin_user, bob, charlie, monkeypatch, django_capture_on_commit_callbacks) -> None:
    saved_search_create(user=bob, name="Female chest", params={"sex": "F", "body_part": "CHEST"})
    saved_search_create(user=charlie, name="Knees", params={"body_part": "KNEE"})
    dataset = _dataset(provider, "New chest set", "F" * 14 + "M" * 3, status=Dataset.Status.IN_REVIEW)
    import catalog.tasks
    monkeypatch.setattr(catalog.tasks.saved_searches_notify_task, "delay",
                        lambda **kw: saved_searches_notify(**kw))  # what the worker runs
    with django_capture_on_commit_callbacks(execute=True):
        dataset_publish(dataset=dataset, acting_user=admin_user)
    notice = Notification.objects.get(user=bob)
    assert "14 studies" in notice.message and "New chest set" in notice.message
    assert "/cohorts/?sex=F" in notice.url
    assert not Notification.objects.filter(user=charlie).exists()  # no knee in it
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [bob.email]


def test_small_matches_are_announced_without_their_number(provider, bob) -> None:
    saved_search_create(user=bob, name="Men", params={"sex": "M"})
    dataset = _dataset(provider, "Tiny", "FFFMM")
    assert saved_searches_notify(dataset_id=dataset.pk) == 1
    assert "fewer than 11 studies" in Notification.objects.get(user=bob).message


def test_notifications_page_lists_and_marks_read(client, bob) -> None:
    Notification.objects.create(user=bob, message="New data for you", url="/cohorts/")
    client.force_login(bob)
    assert ">1</span>" in client.get("/").content.decode()  # unread count in the navigation
    page = client.get("/notifications/").content.decode()
    assert "New data for you" in page
    assert not Notification.objects.filter(user=bob, read_at__isnull=True).exists()


def test_data_request_board_round_trip(client, provider, alice, bob, make_member,
                                       django_capture_on_commit_callbacks) -> None:
    client.force_login(bob)
    response = client.post("/requests/", {"title": "Paediatric knee MR",
                                          "description": "200 knee MRs, ages 8-16, with reports"})
    data_request = DataRequest.objects.get()
    assert response.status_code == 302 and data_request.requester == bob
    assert "Paediatric knee MR" in client.get("/requests/").content.decode()

    dataset = _dataset(provider, "Knees", "FM")
    _, other_provider = make_member("olga", "Omega Scans", Organization.Kind.PROVIDER)
    foreign = _dataset(other_provider, "Not yours", "F")
    with pytest.raises(CatalogError, match="Choose one of your own datasets"):
        data_request_respond(data_request=data_request, responder=alice, provider_id=provider.pk,
                             dataset_id=foreign.pk)
    with pytest.raises(CatalogError, match="Only members of a provider"):
        data_request_respond(data_request=data_request, responder=bob, provider_id=provider.pk, offer="x")
    with pytest.raises(CatalogError, match="Link one of your datasets or describe"):
        data_request_respond(data_request=data_request, responder=alice, provider_id=provider.pk)

    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(f"/requests/{data_request.pk}/", {"dataset": dataset.pk, "offer": "More by June",
                                                                "price_per_study": "4.50"})
    assert answer.status_code == 302
    page = client.get(f"/requests/{data_request.pk}/").content.decode()
    assert "Alpha Imaging" in page and "Knees" in page and "4.50" in page
    assert Notification.objects.filter(user=bob, message__contains="answered your data request").exists()

    client.force_login(bob)
    client.post(f"/requests/{data_request.pk}/", {"action": "close"})
    data_request.refresh_from_db()
    assert data_request.status == DataRequest.Status.CLOSED



def test_an_answers_price_reads_in_its_currency(client, provider, alice, bob) -> None:
    data_request = data_request_create(requester=bob, title="Paediatric knee MR", description="200 knee MRs")
    client.force_login(alice)
    answer = client.post(f"/requests/{data_request.pk}/", {"offer": "We could scan 300 by June",
                                                            "price_per_study": "1234.50", "currency": "EUR"})
    assert answer.status_code == 302
    refused = client.post(f"/requests/{data_request.pk}/", {"offer": "Another offer", "price_per_study": "3",
                                                             "currency": "XYZ"})
    assert refused.status_code == 400
    assert "Choose the currency of the price per study ('XYZ' is not one the payments accept)." in \
        html.unescape(refused.content.decode())
    dataset = _dataset(provider, "Knees", "FM")
    dataset.currency = "GBP"
    dataset.save(update_fields=["currency"])
    data_request_respond(data_request=data_request, responder=alice, provider_id=provider.pk, dataset_id=dataset.pk,
                         price_per_study="7.25", currency="EUR")  # a dataset's price is in its own currency
    client.force_login(bob)
    page = client.get(f"/requests/{data_request.pk}/").content.decode()
    assert "at 1,234.50 EUR per study" in page and "at 7.25 GBP per study" in page
    assert "currency not stated" not in page and "Another offer" not in page


def test_data_requests_need_a_title_and_description(client, bob) -> None:
    client.force_login(bob)
    response = client.post("/requests/", {"title": "", "description": ""})
    assert response.status_code == 400 and "needs a title and a description" in response.content.decode()
    with pytest.raises(CatalogError):
        data_request_create(requester=bob, title="x", description="  ")


def test_fill_the_gap_points_at_datasets_with_the_missing_group(provider, bob, make_member) -> None:
    from catalog.search.query import Query as StudyQuery
    from catalog.search.service import cohort_summary

    women_only = _dataset(provider, "Women", "F" * 30)
    _, other = make_member("olga", "Omega Scans", Organization.Kind.PROVIDER)
    men = _dataset(other, "Men", "M" * 25 + "F" * 5)
    summary = cohort_summary(query=StudyQuery(filters={"modality": ["CT"]}, dataset_ids=[women_only.pk]),
                             user=bob)
    assert summary["total_studies"] == 30
    gaps = [g for g in summary["fill_the_gap"] if g["dimension"] == "sex"]
    assert gaps == [{"dimension": "sex", "value": "M", "label": "Male", "cohort_share": 0.0,
                     "dataset_id": men.pk, "title": "Men", "provider": "Omega Scans", "adds_studies": 25}]
