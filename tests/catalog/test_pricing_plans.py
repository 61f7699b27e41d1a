"""Pricing plans: the dataset services check them, derive the list price per study, audit
every change; the provider's form sets them and the dataset page and API show them."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.apps import apps
from django.db import connection
from django.urls import reverse

from catalog.datasets.pricing import PlanError, clean_volume_tiers, dataset_refresh_list_price
from catalog.datasets.services import dataset_create, dataset_update
from catalog.exceptions import CatalogError
from catalog.ingestion.after import dataset_refresh_stats
from catalog.models import Dataset
from factories.dicom import ct_files
from marketplace.models import AuditEvent
from orders.pricing import PlanTerms, price_line

pytestmark = pytest.mark.django_db


def create(provider, alice, **kwargs) -> Dataset:  # noqa: ANN001
    return dataset_create(provider=provider, acting_user=alice, title=kwargs.pop("title", "Plan test"), **kwargs)


# ---- the service refuses bad plans, naming the field ---------------------------------------
@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"price": "-1"}, "price", "cannot be negative"),
    ({"price": Decimal("-0.01")}, "price", "cannot be negative"),
    ({"price": "10000000.01"}, "price", "at most 10,000,000 USD"),
    ({"price": "1e400"}, "price", "at most 10,000,000"),
    ({"price": "NaN"}, "price", "finite number"),
    ({"price": "sNaN"}, "price", "finite number"),
    ({"price": "Infinity"}, "price", "finite number"),
    ({"price": "-Infinity"}, "price", "finite number"),
    ({"price": "twelve"}, "price", "must be a number"),
    ({"price": 12.5}, "price", "not a binary float"),
    ({"price": "12.345"}, "price", "USD amounts have at most 2 decimal places"),
    ({"price": "1000.5", "currency": "JPY"}, "price", "JPY amounts have no decimal places"),
    ({"price": "5", "licence_type": "free"}, "price", "under a free / open licence is priced 0"),
    ({"price": "0", "pricing_model": "flat"}, "price", "needs a price above 0"),
    ({"price": "0", "pricing_model": "subscription"}, "price", "needs a price above 0"),
    ({"price": "5", "pricing_model": "per_gram"}, "pricing_model", "choose one of"),
    ({"price": "5", "currency": "XAU"}, "currency", "choose one of"),
    ({"price": "5", "currency": "BHD"}, "currency", "choose one of"),
    ({"price": "5", "academic_discount_bps": 9001}, "academic_discount_bps", "at most 90 %"),
    ({"price": "5", "academic_discount_bps": -1}, "academic_discount_bps", "from 0"),
    ({"price": "5", "sample_study_count": -2}, "sample_study_count", "from 0"),
    ({"price": "5", "sample_study_count": "2.5"}, "sample_study_count", "whole number"),
    ({"price": "5", "volume_tiers": [{"min_studies": 100, "discount_bps": 1000},
                                     {"min_studies": 50, "discount_bps": 500}]}, "volume_tiers", "ascending"),
    ({"price": "5", "volume_tiers": [{"min_studies": 100, "discount_bps": 1000},
                                     {"min_studies": 100, "discount_bps": 2000}]}, "volume_tiers", "listed twice"),
    ({"price": "5", "volume_tiers": [{"min_studies": 100, "discount_bps": 0}]}, "volume_tiers", "above 0"),
    ({"price": "5", "volume_tiers": [{"min_studies": 100, "discount_bps": 9500}]}, "volume_tiers", "at most 90 %"),
    ({"price": "5", "volume_tiers": [{"min_studies": 0, "discount_bps": 500}]}, "volume_tiers", "from 1"),
    ({"price": "5", "volume_tiers": [{"min": 10, "pct": 5}]}, "volume_tiers", "each tier is"),
    ({"price": "5", "volume_tiers": "100 studies ten percent"}, "volume_tiers", "line 1"),
    ({"price": "5", "pricing_model": "flat", "volume_tiers": "100: 10"}, "volume_tiers", "per-study and per-image"),
    ({"price": "5", "pricing_model": "per_image", "price_per_study": Decimal("5")}, "price", "not price_per_study"),
])
def test_the_service_refuses_a_bad_plan_naming_the_field(provider, alice, kwargs, field, words) -> None:
    with pytest.raises(PlanError) as refused:
        create(provider, alice, **kwargs)
    assert refused.value.field == field
    assert words in refused.value.message, refused.value.message
    assert refused.value.extra["fields"] == {field: [refused.value.problem]}
    assert not Dataset.objects.filter(title="Plan test").exists()


def test_zero_is_free_data_on_metered_plans(provider, alice) -> None:
    for model in ("per_study", "per_image"):
        dataset = create(provider, alice, title=model, pricing_model=model, price="0", licence_type="free")
        assert (dataset.price_minor, dataset.price_per_study) == (0, Decimal("0.00"))


def test_tiers_as_text_and_as_a_list() -> None:
    assert clean_volume_tiers("100: 10\n\n≥ 500 studies: 12.5 %\n") == [
        {"min_studies": 100, "discount_bps": 1000}, {"min_studies": 500, "discount_bps": 1250}]
    assert clean_volume_tiers([{"min_studies": 10, "discount_bps": 300}]) == [{"min_studies": 10, "discount_bps": 300}]
    assert clean_volume_tiers("") == [] == clean_volume_tiers(None)


# ---- the derived list price per study ------------------------------------------------------
def test_the_plan_is_stored_in_minor_units_with_the_list_price_derived(provider, alice) -> None:
    per_study = create(provider, alice, title="a", price="45.00", academic_discount_bps=2000,
                       volume_tiers="100: 10\n500: 15", sample_study_count=3)
    assert (per_study.pricing_model, per_study.price_minor, per_study.currency) == ("per_study", 4500, "USD")
    assert per_study.price_per_study == Decimal("45.00")
    assert per_study.volume_tiers == [{"min_studies": 100, "discount_bps": 1000},
                                      {"min_studies": 500, "discount_bps": 1500}]
    jpy = create(provider, alice, title="b", price="12000", currency="jpy", pricing_model="subscription")
    assert (jpy.price_minor, jpy.currency, jpy.price_per_study) == (12000, "JPY", Decimal("0.00"))  # empty yet
    legacy = create(provider, alice, title="c", price_per_study=Decimal("7.50"), currency="EUR")
    assert (legacy.pricing_model, legacy.price_minor, legacy.price_per_study) == ("per_study", 750, Decimal("7.50"))


@pytest.mark.parametrize(("model", "price", "expected"), [
    ("per_study", "45.00", "45.00"),
    ("per_image", "0.40", "1.13"),          # 0.40 × 17 images / 6 studies = 1.1333…
    ("flat", "8000.00", "1333.33"),         # 8,000 / 6
    ("subscription", "12000.00", "2000.00"),
])
def test_the_list_price_follows_the_counts(provider, alice, model, price, expected) -> None:
    dataset = create(provider, alice, pricing_model=model, price=price)
    Dataset.objects.filter(pk=dataset.pk).update(study_count=6, instance_count=17)
    dataset_refresh_list_price(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    assert dataset.price_per_study == Decimal(expected)
    Dataset.objects.filter(pk=dataset.pk).update(study_count=0, instance_count=0)
    dataset_refresh_list_price(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    assert dataset.price_per_study == (Decimal(price) if model == "per_study" else Decimal("0.00"))


def test_ingestion_derives_the_list_price_again(provider, alice, ingest) -> None:
    dataset = create(provider, alice, pricing_model="per_image", price="2.50")
    assert dataset.price_per_study == Decimal("0.00")
    ingest(dataset, ct_files(n_patients=2, n_instances=3))  # 2 studies of 3 images
    dataset.refresh_from_db()
    assert (dataset.study_count, dataset.instance_count) == (2, 6)
    assert dataset.price_per_study == Decimal("7.50")
    dataset_update(dataset=dataset, acting_user=alice, pricing_model="flat", price="100")
    dataset.refresh_from_db()
    assert dataset.price_per_study == Decimal("50.00")
    dataset_refresh_stats(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    assert dataset.price_per_study == Decimal("50.00")


def test_the_data_migration_prices_existing_rows_in_minor_units(provider) -> None:
    import importlib

    migration = importlib.import_module("catalog.migrations.0012_dataset_pricing_plan")
    usd = Dataset.objects.create(provider=provider, title="usd", price_per_study=Decimal("12.34"))
    jpy = Dataset.objects.create(provider=provider, title="jpy", price_per_study=Decimal("1500.00"), currency="JPY")
    Dataset.objects.filter(pk__in=[usd.pk, jpy.pk]).update(price_minor=0, pricing_model="flat")
    with connection.schema_editor() as schema_editor:
        migration.price_minor_from_price_per_study(apps, schema_editor)
    assert Dataset.objects.get(pk=usd.pk).price_minor == 1234
    assert Dataset.objects.get(pk=jpy.pk).price_minor == 1500
    assert set(Dataset.objects.filter(pk__in=[usd.pk, jpy.pk]).values_list("pricing_model", flat=True)) == {
        "per_study"}


def test_a_row_created_with_only_a_price_per_study_is_a_per_study_plan(provider) -> None:
    dataset = Dataset.objects.create(provider=provider, title="fixture", price_per_study=Decimal("8.50"))
    assert (dataset.pricing_model, dataset.price_minor) == ("per_study", 850)
    assert price_line(PlanTerms.from_dataset(dataset), study_count=20, image_count=0,
                      academic=False).total_minor == 17000


# ---- updates: checked with what they leave unchanged, and audited --------------------------
def test_a_plan_change_is_audited_with_the_old_and_new_plan(provider, alice, dataset) -> None:
    dataset_update(dataset=dataset, acting_user=alice, pricing_model="flat", price="8000", currency="EUR",
                   academic_discount_bps=1500)
    dataset.refresh_from_db()
    assert (dataset.pricing_model, dataset.price_minor, dataset.currency) == ("flat", 800000, "EUR")
    event = AuditEvent.objects.filter(action="dataset.update", object_id=str(dataset.pk)).latest("id")
    assert event.actor == alice
    assert event.detail["old_plan"]["pricing_model"] == "per_study"
    assert event.detail["old_plan"]["price_minor"] == 1000 and event.detail["old_plan"]["currency"] == "USD"
    assert event.detail["new_plan"] == {"pricing_model": "flat", "price_minor": 800000, "currency": "EUR",
                                        "sample_study_count": 0, "academic_discount_bps": 1500, "volume_tiers": []}
    assert (event.detail["old_price"], event.detail["new_price"]) == ("10.00", "0.00")
    assert event.detail["fields"] == ["academic_discount_bps", "currency", "price", "pricing_model"]


def test_an_update_is_checked_against_the_fields_it_leaves(provider, alice, dataset) -> None:
    with pytest.raises(PlanError, match="free / open licence"):
        dataset_update(dataset=dataset, acting_user=alice, licence_type="free")
    with pytest.raises(PlanError, match="JPY amounts have no decimal places"):
        dataset_update(dataset=Dataset.objects.get(pk=dataset.pk), acting_user=alice, price="10.50", currency="JPY")
    dataset_update(dataset=Dataset.objects.get(pk=dataset.pk), acting_user=alice, price="0")  # free data
    with pytest.raises(PlanError, match="a flat or subscription plan needs a price above 0"):
        dataset_update(dataset=Dataset.objects.get(pk=dataset.pk), acting_user=alice, pricing_model="flat")
    dataset.refresh_from_db()
    assert (dataset.pricing_model, dataset.price_minor, dataset.licence_type) == ("per_study", 0, "academic")


def test_an_update_with_the_former_price_per_study_argument_still_prices_per_study(alice, dataset) -> None:
    dataset_update(dataset=dataset, acting_user=alice, price_per_study=Decimal("12.50"))
    dataset.refresh_from_db()
    assert (dataset.price_minor, dataset.price_per_study) == (1250, Decimal("12.50"))
    event = AuditEvent.objects.filter(action="dataset.update").latest("id")
    assert (event.detail["old_price"], event.detail["new_price"]) == ("10.00", "12.50")


def test_a_sample_larger_than_the_dataset_is_refused_at_publication(alice, dataset, ingest, publish) -> None:
    dataset_update(dataset=dataset, acting_user=alice, sample_study_count=5)
    ingest(dataset, ct_files(n_patients=2))
    with pytest.raises(CatalogError, match="5 studies is more than the dataset holds"):
        publish(dataset)
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.DRAFT
    dataset_update(dataset=dataset, acting_user=alice, sample_study_count=2)
    published = publish(dataset)
    assert published.status == Dataset.Status.PUBLISHED
    with pytest.raises(PlanError, match="3 studies is more than the dataset holds"):
        dataset_update(dataset=Dataset.objects.get(pk=dataset.pk), acting_user=alice, sample_study_count=3)


# ---- the provider's form, the page and the API ---------------------------------------------
@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def test_the_provider_sets_a_plan_in_the_form(alice_client, provider) -> None:
    page = alice_client.get(reverse("dataset_new")).content.decode()
    assert '<select name="currency"' in page and '<select name="pricing_model"' in page
    response = alice_client.post(reverse("dataset_new"), {
        "title": "Knee MRI", "licence_type": "commercial", "pricing_model": "per_image", "price": "0.40",
        "currency": "EUR", "sample_study_count": "4", "academic_discount": "12.5",
        "volume_tiers": "100: 10\n1000: 20"})
    assert response.status_code == 302, response.content.decode()[:2000]
    dataset = Dataset.objects.get(title="Knee MRI")
    assert (dataset.pricing_model, dataset.price_minor, dataset.currency) == ("per_image", 40, "EUR")
    assert (dataset.sample_study_count, dataset.academic_discount_bps) == (4, 1250)
    assert dataset.volume_tiers == [{"min_studies": 100, "discount_bps": 1000},
                                    {"min_studies": 1000, "discount_bps": 2000}]
    manage = alice_client.get(reverse("dataset_manage", args=[dataset.pk])).content.decode()
    assert 'value="0.40"' in manage and 'value="12.5"' in manage and "100: 10\n1000: 20" in manage


@pytest.mark.parametrize(("post", "field", "words"), [
    ({"price": "12.345"}, "price", "at most 2 decimal places"),
    ({"price": "100.5", "currency": "JPY"}, "price", "no decimal places"),
    ({"price": "1e400"}, "price", "at most 10,000,000"),
    ({"price": "5", "licence_type": "free"}, "price", "free / open licence"),
    ({"price": "0", "pricing_model": "flat"}, "price", "above 0"),
    ({"price": "5", "currency": "XAU"}, "currency", "valid choice"),
    ({"price": "5", "academic_discount": "95"}, "academic_discount", "from 0 to 90 %"),
    ({"price": "5", "academic_discount": "ten"}, "academic_discount", "percentage"),
    ({"price": "5", "volume_tiers": "100: 10\n50: 20"}, "volume_tiers", "ascending"),
    ({"price": "5", "volume_tiers": "lots: 10"}, "volume_tiers", "whole number of studies"),
    ({"price": "5", "volume_tiers": "100 - 10"}, "volume_tiers", "line 1"),
])
def test_the_form_refuses_a_bad_plan_under_its_field(alice_client, provider, post, field, words) -> None:
    data = {"title": "Bad plan", "currency": "USD", "licence_type": "commercial", **post}
    response = alice_client.post(reverse("dataset_new"), data)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors, errors
    assert words in " ".join(errors[field]), errors[field]
    assert not Dataset.objects.filter(title="Bad plan").exists()


def test_the_provider_changes_the_plan_on_the_manage_page_and_it_is_audited(alice_client, alice, dataset) -> None:
    url = reverse("dataset_manage", args=[dataset.pk])
    form = {"ds-title": dataset.title, "ds-description": dataset.description, "ds-licence_type": "academic",
            "ds-pricing_model": "subscription", "ds-price": "12000.00", "ds-currency": "USD",
            "ds-sample_study_count": "0", "ds-academic_discount": "0", "ds-volume_tiers": ""}
    response = alice_client.post(url, {"save": "1", **form})
    assert response.status_code == 302
    dataset.refresh_from_db()
    assert (dataset.pricing_model, dataset.price_minor) == ("subscription", 1200000)
    event = AuditEvent.objects.filter(action="dataset.update", object_id=str(dataset.pk)).latest("id")
    assert event.detail["old_plan"]["pricing_model"] == "per_study" and event.detail["old_plan"]["price_minor"] == 1000
    assert event.detail["new_plan"]["pricing_model"] == "subscription"
    # Saving the same values again passes no plan field to the service.
    alice_client.post(url, {"save": "1", **form})
    again = AuditEvent.objects.filter(action="dataset.update", object_id=str(dataset.pk)).latest("id")
    assert again.pk != event.pk and "new_plan" not in again.detail, again.detail


def test_the_page_and_the_api_show_the_plan_before_login(client, alice, published_dataset) -> None:
    dataset_update(dataset=published_dataset, acting_user=alice, pricing_model="flat", price="8000",
                   currency="EUR", academic_discount_bps=2000, sample_study_count=2)
    page = client.get(reverse("dataset_detail", args=[published_dataset.pk])).content.decode()
    assert "8,000.00 EUR flat for the whole dataset" in page
    assert "Free sample: 2 studies" in page and "Academic discount: 20 %" in page
    listing = client.get(reverse("dataset_list")).content.decode()
    assert "8,000.00 EUR flat for the whole dataset" in listing

    dataset_update(dataset=published_dataset, acting_user=alice, pricing_model="per_study", price="45",
                   currency="USD", volume_tiers="100: 10")
    page = client.get(reverse("dataset_detail", args=[published_dataset.pk])).content.decode()
    assert "45.00 USD per study" in page and "10 % off from 100 studies" in page

    row = client.get(f"/api/datasets/{published_dataset.pk}/").json()
    assert row["pricing_model"] == "per_study" and row["price"] == "45.00" and row["currency"] == "USD"
    assert row["price_per_study"] == "45.00" and row["academic_discount_percent"] == "20.00"
    assert row["sample_study_count"] == 2
    assert row["volume_tiers"] == [{"min_studies": 100, "discount_bps": 1000, "discount_percent": "10.00"}]


def test_the_api_hides_a_derived_list_price_that_would_give_a_hidden_count(client, alice, published_dataset) -> None:
    # The dataset holds 2 studies: hidden from visitors; 8,000 / list price would give them.
    dataset_update(dataset=published_dataset, acting_user=alice, pricing_model="flat", price="8000")
    row = client.get(f"/api/datasets/{published_dataset.pk}/").json()
    assert row["study_count"] == "suppressed" and row["price_per_study"] is None and row["price"] == "8000.00"
    client.force_login(alice)
    assert client.get(f"/api/datasets/{published_dataset.pk}/").json()["price_per_study"] == "4000.00"


# ---- demo data ------------------------------------------------------------------------------
def test_the_demo_datasets_have_different_plans_without_contradictions() -> None:
    from catalog.datasets.pricing import plan_clean
    from demo.synthetic import DEMO_SPECS, demo_instance_count

    plans = []
    for spec in DEMO_SPECS:
        studies = spec["n_patients"] * spec["studies_per_patient"]
        plan = plan_clean(licence_type=spec["licence_type"], study_count=studies, **spec["plan"])
        plans.append(plan)
        text = spec["licence_text"].lower()
        if spec["licence_type"] == "commercial":
            assert "research only" not in text and "non-commercial" not in text, spec["title"]
        if spec["licence_type"] == "free":
            assert plan.price_minor == 0, spec["title"]
        else:
            assert plan.price_minor > 0, spec["title"]
        assert demo_instance_count(spec) > 0
    assert sorted(p.pricing_model for p in plans) == ["flat", "per_image", "per_study", "subscription"]
    assert any(p.sample_study_count and p.academic_discount_bps for p in plans)
    assert any(p.volume_tiers for p in plans) and any(p.currency == "JPY" for p in plans)
