"""A dataset's licence terms: set in the provider's form, refused when they contradict the
licence type, the price or the provider's own text, shown before login with the exact
agreement a buyer signs and its SHA-256, which checkout stores on the contract."""
from __future__ import annotations

import hashlib
import html
import re

import pytest
from django.urls import reverse

from catalog.datasets.services import dataset_create, dataset_update
from catalog.exceptions import LicenceConflictError
from catalog.licence import LicenceTerms, terms_conflicts
from catalog.models import Dataset
from factories.orders import place_order
from marketplace.models import AuditEvent
from orders.agreements import agreement_text_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

AGREEMENT_TEXT = re.compile(r'<div class="dua" id="agreement-text">(.*?)</div>', re.S)
AGREEMENT_SHA = re.compile(r'id="agreement-sha256">([0-9a-f]{64})<')

# A full post of the form's licence fields: research for a year, five named users.
LICENCE_FIELDS = {"licence_use": "research", "licence_term_months": "12", "licence_seats": "5",
                  "licence_derivative_models": "on", "licence_publication": "on", "licence_territory": "worldwide",
                  "licence_access": "download"}


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def new_dataset_post(**changes: str | None) -> dict[str, str]:
    data = {"title": "Knee MRI", "licence_type": "academic", "pricing_model": "per_study", "price": "5.00",
            "currency": "USD", **LICENCE_FIELDS, **changes}
    return {k: v for k, v in data.items() if v is not None}


# ---- the provider's form -------------------------------------------------------------------
def test_the_form_stores_the_structured_terms_and_shows_them_again(alice_client, alice) -> None:
    response = alice_client.post(reverse("dataset_new"), new_dataset_post(
        licence_type="commercial", licence_use="commercial", licence_term_months="24", licence_seats="10",
        licence_derivative_models=None, licence_territory="de, fr", licence_access="view_only",
        licence_text="Cite the provider in any publication."))
    assert response.status_code == 302, response.content.decode()[:3000]
    dataset = Dataset.objects.get(title="Knee MRI")
    assert dataset.terms == LicenceTerms(use="commercial", term_months=24, seats=10, derivative_models=False,
                                         publication=True, territory=("DE", "FR"), access="view_only")
    assert dataset.licence_terms["redistribution"] is False
    page = alice_client.get(reverse("dataset_manage", args=[dataset.pk])).content.decode()
    assert 'name="ds-licence_term_months" value="24"' in page and 'value="DE, FR"' in page
    assert '<option value="view_only" selected>' in page


def test_the_form_takes_a_perpetual_licence_for_the_whole_organization(alice_client) -> None:
    response = alice_client.post(reverse("dataset_new"), new_dataset_post(
        licence_perpetual="on", licence_term_months="", licence_whole_organization="on", licence_seats=""))
    assert response.status_code == 302
    terms = Dataset.objects.get(title="Knee MRI").terms
    assert (terms.term_months, terms.seats) == (None, None)


@pytest.mark.parametrize(("changes", "field", "words"), [
    # A free / open licence with a price, and a priced plan under a free licence: one rule.
    ({"licence_type": "free", "price": "8.50"}, "price", "free / open licence is priced 0"),
    ({"licence_type": "commercial", "licence_use": "research"}, None, "Licence type and Use"),
    ({"licence_type": "academic", "licence_use": "commercial"}, None, "Licence type and Use"),
    ({"licence_type": "commercial", "licence_use": "commercial",
      "licence_text": "Non-commercial research only."}, None, "Licence text and Use"),
    ({"licence_type": "commercial", "licence_use": "commercial",
      "licence_text": "Not for commercial use."}, None, "'Not for commercial'"),
    ({"licence_text": "Commercial use is permitted, with attribution."}, None, "Licence text and Use"),
    ({"licence_term_months": ""}, "licence_term_months", "or tick perpetual"),
    ({"licence_seats": ""}, "licence_seats", "or tick whole buyer organization"),
    ({"licence_term_months": "500"}, "licence_term_months", "between 1 and 120"),
    ({"licence_territory": "Germany"}, "licence_territory", "not ISO 3166"),
    ({"licence_territory": "worldwide, DE"}, "licence_territory", "not both"),
    ({"licence_use": ""}, "licence_use", "Choose the use"),
])
def test_the_form_refuses_contradictions_naming_the_fields(alice_client, changes, field, words) -> None:
    response = alice_client.post(reverse("dataset_new"), new_dataset_post(**changes))
    assert response.status_code == 400
    errors = response.context["form"].errors
    key = field or "__all__"
    assert key in errors, errors
    assert words in " ".join(errors[key]), errors[key]
    assert not Dataset.objects.filter(title="Knee MRI").exists()


def test_the_manage_page_changes_the_terms_and_the_audit_keeps_both(alice_client, alice, dataset) -> None:
    url = reverse("dataset_manage", args=[dataset.pk])
    post = {f"ds-{k}": v for k, v in new_dataset_post(title=dataset.title, price="10.00",
                                                     licence_term_months="6").items()}
    response = alice_client.post(url, {"save": "1", **post})
    assert response.status_code == 302
    dataset.refresh_from_db()
    assert (dataset.terms.term_months, dataset.terms.seats) == (6, 5)
    event = AuditEvent.objects.filter(action="dataset.update", object_id=str(dataset.pk)).latest("id")
    assert event.detail["old_licence_terms"]["term_months"] is None
    assert event.detail["new_licence_terms"]["term_months"] == 6

    # Switching the licence type alone leaves research terms under a commercial licence: refused.
    post["ds-licence_type"] = "commercial"
    refused = alice_client.post(url, {"save": "1", **post})
    assert refused.status_code == 400
    assert "Licence type and Use" in " ".join(refused.context["form"].errors["__all__"])
    dataset.refresh_from_db()
    assert dataset.licence_type == "academic"


# ---- the services (every writer) ------------------------------------------------------------
def test_the_services_refuse_contradicting_terms(provider, alice, dataset) -> None:
    with pytest.raises(LicenceConflictError, match="Licence type and Use"):
        dataset_create(provider=provider, acting_user=alice, title="x", price="1", licence_type="commercial",
                       licence_terms={"use": "research"})
    with pytest.raises(LicenceConflictError, match="Licence text and Use"):
        dataset_create(provider=provider, acting_user=alice, title="x", price="1", licence_type="commercial",
                       licence_terms={"use": "commercial"}, licence_text="For research purposes only.")
    with pytest.raises(LicenceConflictError, match="territory"):
        dataset_create(provider=provider, acting_user=alice, title="x", price="1", licence_terms={"territory": "Mars"})
    with pytest.raises(LicenceConflictError, match="Licence text and Use"):
        dataset_update(dataset=dataset, acting_user=alice, licence_text="Non-commercial use only",
                       licence_type="commercial", licence_terms={"use": "commercial"})
    assert not Dataset.objects.filter(title="x").exists()
    dataset.refresh_from_db()
    assert dataset.licence_type == "academic" and dataset.licence_text == ""


def test_terms_default_to_those_of_the_licence_type(provider, alice) -> None:
    free = dataset_create(provider=provider, acting_user=alice, title="open", price="0", licence_type="free")
    commercial = dataset_create(provider=provider, acting_user=alice, title="paid", price="3",
                                licence_type="commercial")
    assert (free.terms.use, free.terms.term_months, free.terms.seats) == ("research", None, None)
    assert commercial.terms.use == "commercial"
    # A row written without terms (a fixture, a script) reads them from its licence type.
    raw = Dataset.objects.create(provider=provider, title="raw", licence_type="commercial")
    assert raw.licence_terms == {} and raw.terms.use == "commercial"


def test_the_text_check_reads_negations() -> None:
    research = LicenceTerms(use="research")
    commercial = LicenceTerms(use="commercial")
    check = {"licence_type": "free", "price_minor": 0}
    assert terms_conflicts(research, licence_text="Research only. Not for commercial use.", **check) == []
    assert terms_conflicts(commercial, licence_text="Commercial use, including products.", **check) == []
    assert terms_conflicts(commercial, licence_text="Commercial use is not permitted.", **check) != []
    assert terms_conflicts(research, licence_text="Free for commercial use.", **check) != []


def test_the_demo_datasets_have_terms_that_agree_with_their_licence() -> None:
    from catalog.datasets.pricing import plan_clean
    from demo.synthetic import DEMO_SPECS

    seen = set()
    for spec in DEMO_SPECS:
        terms = LicenceTerms.from_dict(spec["licence_terms"])
        plan = plan_clean(licence_type=spec["licence_type"], **spec["plan"])
        assert terms_conflicts(terms, licence_type=spec["licence_type"], price_minor=plan.price_minor,
                               licence_text=spec["licence_text"]) == [], spec["title"]
        seen.add((terms.use, terms.term_months, terms.access))
    assert ("commercial", 24, "download") in seen and ("research", 12, "download") in seen
    assert ("commercial", None, "download") in seen


# ---- before login: the terms, the agreement and its hash -------------------------------------
def agreement_on(page: str) -> tuple[str, str]:
    text, sha = AGREEMENT_TEXT.search(page), AGREEMENT_SHA.search(page)
    assert text and sha, page[-4000:]
    return html.unescape(text.group(1)), sha.group(1)


def test_anyone_sees_the_terms_and_the_agreement_that_is_signed(client, published_dataset, alice, bob, dua) -> None:
    dataset_update(dataset=published_dataset, acting_user=alice, licence_text="Cite Alpha Imaging.\nNo re-sale.",
                   licence_terms={"use": "research", "term_months": 18, "seats": 3, "territory": "NZ, AU, GB",
                                  "access": "view_only"})
    response = client.get(reverse("dataset_detail", args=[published_dataset.pk]))  # not signed in
    assert response.status_code == 200
    page = response.content.decode()
    assert "Research only (non-commercial)" in page and "18 months" in page and "AU, GB, NZ" in page
    assert "View in the browser only" in page and "Never allowed" in page
    assert "Provider&#x27;s additional conditions" in page and "Cite Alpha Imaging." in page
    assert f'id="agreement-version">{dua.version}<' in page and dua.title in page
    text, sha = agreement_on(page)
    assert dua.text.strip() in text  # the template's full text
    assert "Term: 18 months" in text and "Named users: 3" in text and "     No re-sale." in text
    assert sha == hashlib.sha256(text.encode("utf-8")).hexdigest()

    # Bob orders this dataset alone: the contract holds exactly the text the page showed.
    order = place_order(bob, published_dataset, dua)
    contract = order.contract
    assert contract.text == text
    assert contract.text_sha256 == sha == hashlib.sha256(contract.text.encode("utf-8")).hexdigest()
    line = order.lines.get()
    assert line.licence_terms == published_dataset.__class__.objects.get(pk=published_dataset.pk).licence_terms
    assert line.licence_terms["term_months"] == 18
    client.force_login(bob)
    assert sha in client.get(reverse("order_detail", args=[order.pk])).content.decode()


def test_a_cart_of_two_datasets_signs_both_terms_in_line_order(published_dataset, second_provider_dataset, bob,
                                                               dua) -> None:
    order = place_order(bob, [published_dataset, second_provider_dataset], dua)
    datasets = [line.dataset for line in order.lines.order_by("pk")]
    assert order.contract.text == agreement_text_for(template=dua, datasets=datasets)
    text = order.contract.text
    assert text.index("1. Chest CT screening") < text.index("2. Delta brain MR")
    assert order.contract.text_sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_page_says_so_when_no_agreement_is_active(client, published_dataset, dua) -> None:
    type(dua).objects.filter(pk=dua.pk).update(is_active=False)
    page = client.get(reverse("dataset_detail", args=[published_dataset.pk])).content.decode()
    assert "ordering is unavailable" in page and 'id="agreement-sha256"' not in page


def test_the_api_gives_the_structured_terms(client, published_dataset) -> None:
    body = client.get(f"/api/datasets/{published_dataset.pk}/").json()
    assert body["licence_type"] == "academic"
    assert body["licence_terms"]["use"] == "research" and body["licence_terms"]["redistribution"] is False


def test_the_data_migration_derives_terms_from_the_licence_type(provider) -> None:
    import importlib

    from django.apps import apps
    from django.db import connection

    migration = importlib.import_module("catalog.migrations.0014_dataset_licence_terms_from_type")
    rows = {kind: Dataset.objects.create(provider=provider, title=kind, licence_type=kind)
            for kind in ("commercial", "academic", "free")}
    yearly = Dataset.objects.create(provider=provider, title="yearly", licence_type="academic",
                                    pricing_model="subscription", price_minor=100)
    kept = Dataset.objects.create(provider=provider, title="kept", licence_terms={"use": "research", "term_months": 6})
    with connection.schema_editor() as schema_editor:
        migration.terms_from_licence_type(apps, schema_editor)
    terms = {kind: Dataset.objects.get(pk=row.pk).licence_terms for kind, row in rows.items()}
    assert terms["commercial"]["use"] == "commercial" and terms["academic"]["use"] == "research"
    assert terms["free"]["use"] == "research" and terms["free"]["term_months"] is None
    assert all(t["seats"] is None and t["redistribution"] is False for t in terms.values())
    assert all(LicenceTerms.from_dict(t) for t in terms.values())
    assert Dataset.objects.get(pk=yearly.pk).licence_terms["term_months"] == 12
    assert Dataset.objects.get(pk=kept.pk).licence_terms == {"use": "research", "term_months": 6}
