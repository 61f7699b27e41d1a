"""The attacker suite: one patient in a group of one, every path that shows a count, tried
as anonymous, as another researcher and as another provider. No path shows a count of 1 to
10, no two counts shown in one answer differ by the hidden group's size, and no listed row
carries the rare patient's attributes. Plus the rule itself (complementary suppression),
the quote refusals and the per-dataset threshold.

World: "Rare findings" (Alpha Imaging, alice) holds 40 studies of 25 women and one study of
one man, who alone is 80+, PACIFIC, has a knee study on a TOSHIBA scanner. "Common scans"
(Omega Scans, olga) holds 30 studies (14 women, 16 men). The numbers are chosen so that no two
counts that may be shown differ by one by coincidence.
"""
from __future__ import annotations

import itertools
import json
import re
from decimal import Decimal

import pytest
from django.test import Client

from catalog.datasets.derived import dataset_statistics
from catalog.disclosure import SUPPRESSED, BelowThresholdError, Rule, require_disclosable
from catalog.models import Dataset, Study
from catalog.search.memory.snapshots import snapshot_refresh
from catalog.search.query import DATASETS
from catalog.search.vectors import studies_refresh_search_vector
from marketplace.models import Notification, Organization
from orders.models import CartItem

pytestmark = pytest.mark.django_db

HIDDEN_GROUP = 1  # the rare patient's studies
RARE = {"patient_sex": "M", "age_band": "80+", "ethnicity": "PACIFIC", "body_part": "KNEE",
        "manufacturer": "TOSHIBA", "model": "Aquilion"}
COUNT_KEYS = {"count", "total", "studies", "patients", "study_count", "patient_count", "series_count",
              "instance_count", "adds_studies", "total_studies", "total_patients", "browsable_count",
              "verified_instances"}


def _dataset(org: Organization, title: str, rows: list[dict]) -> Dataset:
    dataset = Dataset.objects.create(
        provider=org, title=title, status=Dataset.Status.PUBLISHED, price_per_study=Decimal("8.50"),
        allow_study_browsing=True, licence_type="academic", country="NZ")
    Study.objects.bulk_create(Study(
        dataset=dataset, study_uid=f"2.25.{dataset.pk}.{i}", series_count=1, instance_count=3,
        modalities=["CT"], description=f"{row['body_part'].lower()} study", **row) for i, row in enumerate(rows))
    patients = len({row["pseudo_patient_id"] for row in rows})
    Dataset.objects.filter(pk=dataset.pk).update(
        study_count=len(rows), patient_count=patients, series_count=len(rows), instance_count=3 * len(rows),
        sexes=sorted({r["patient_sex"] for r in rows}), modalities=["CT"],
        body_parts=sorted({r["body_part"] for r in rows}))
    dataset_statistics(dataset_id=dataset.pk)
    studies_refresh_search_vector(dataset=dataset)
    snapshot_refresh(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    return dataset


@pytest.fixture
def world(provider, make_member):
    women = [{"pseudo_patient_id": f"W{i % 25}", "patient_sex": "F", "age_band": "18-29" if i < 12 else "40-49",
              "ethnicity": "" if i % 2 else "WHITE", "body_part": "CHEST",
              "manufacturer": "GE" if i < 23 else "SIEMENS", "model": "Revolution" if i < 23 else "Force"}
             for i in range(40)]
    rare = _dataset(provider, "Rare findings", women + [{"pseudo_patient_id": "RARE", **RARE}])
    olga, omega = make_member("olga", "Omega Scans", Organization.Kind.PROVIDER)
    common = _dataset(omega, "Common scans", [
        {"pseudo_patient_id": f"C{i // 2}", "patient_sex": "F" if i < 14 else "M", "age_band": "60-69",
         "ethnicity": "ASIAN", "body_part": "CHEST", "manufacturer": "PHILIPS", "model": "Ingenia"}
        for i in range(30)])
    return {"rare": rare, "common": common, "olga": olga}


def _viewers(world, bob) -> dict[str, Client]:
    clients = {"anonymous": Client(), "researcher": Client(), "other provider": Client()}
    clients["researcher"].force_login(bob)
    clients["other provider"].force_login(world["olga"])
    return clients


# ---- what an answer shows ----------------------------------------------------------------

def json_counts(value: object) -> list[int]:
    """Every count in a JSON answer (values of count-like keys, however deep)."""
    found: list[int] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "results":  # listed study rows: their sizes are not counts of people
                continue
            if key in COUNT_KEYS and isinstance(item, int) and not isinstance(item, bool):
                found.append(item)
            elif key in COUNT_KEYS and isinstance(item, dict):  # {"datasets": {id: n}} style
                found += [v for v in item.values() if isinstance(v, int)]
            else:
                found += json_counts(item)
    elif isinstance(value, list):
        for item in value:
            found += json_counts(item)
    return found


HTML_COUNTS = [r'class="count">\(?([\d,]+)', r"<b>([\d,]+)</b>", r"([\d,]+) studies", r"([\d,]+) patients",
               r'<span class="chip">[^<:]+: ([\d,]+)</span>', r"([\d,]+) images?\b"]


def html_counts(page: str) -> list[int]:
    # The catalog page's facets count datasets, not studies or patients: not a disclosure.
    page = re.sub(r'<aside class="card facet".*?</aside>', "", page, flags=re.S) if "dataset-card" in page else page
    return [int(n.replace(",", "")) for pattern in HTML_COUNTS for n in re.findall(pattern, page)]


def assert_nothing_small(counts: list[int], where: str) -> None:
    small = sorted({c for c in counts if 0 < c < 11})
    assert not small, f"{where}: counts of 1-10 shown: {small}"
    differences = sorted({(a, b) for a, b in itertools.combinations(sorted(set(counts)), 2)
                          if b - a == HIDDEN_GROUP})
    assert not differences, f"{where}: shown counts differ by the hidden group's size: {differences}"


FILTERS = [{}, {"sex": "M"}, {"age_band": "80+"}, {"body_part": "KNEE"}, {"ethnicity": "PACIFIC"},
           {"manufacturer": "TOSHIBA"}, {"model": "Aquilion"}, {"q": "knee"}, {"sex": "F"},
           {"age_band": ["18-29", "80+"]}]


def test_no_path_shows_a_small_count_or_lets_one_be_subtracted(world, bob, client) -> None:
    rare = world["rare"]
    for who, web in _viewers(world, bob).items():
        pages = {
            "dataset page": f"/datasets/{rare.pk}/", "catalog": "/datasets/", "home": "/",
            "order page": f"/datasets/{rare.pk}/order/?sex=M",
        }
        for name, url in pages.items():
            response = web.get(url)
            if response.status_code == 302:  # anonymous: order pages ask to log in
                continue
            assert_nothing_small(html_counts(response.content.decode()), f"{who}, {name}")
        for params in FILTERS:
            for scope in ({}, {"datasets": str(rare.pk)}):
                query = {**params, **scope}
                for url in ("/api/studies/", "/api/cohorts/"):
                    answer = web.get(url, query).json()
                    assert_nothing_small(json_counts(answer), f"{who}, {url} {query}")
                page = web.get("/cohorts/", query).content.decode()
                assert_nothing_small(html_counts(page), f"{who}, /cohorts/ {query}")
            if set(params) <= set(DATASETS.accepted()):  # the catalog's matching studies and patients
                page = web.get("/datasets/", params).content.decode()
                assert_nothing_small(html_counts(page), f"{who}, /datasets/ {params}")
        # The dataset search counts datasets (its "count" and facets); its rows carry counts.
        listed = web.get("/api/datasets/").json()["results"]
        assert_nothing_small(json_counts({"datasets": [{k: v for k, v in row.items()} for row in listed]}),
                             f"{who}, /api/datasets/")
        assert_nothing_small(json_counts(web.get(f"/api/datasets/{rare.pk}/").json()), f"{who}, dataset API")


def test_no_listed_row_carries_the_rare_patients_attributes(world, bob) -> None:
    rare = world["rare"]
    for who, web in _viewers(world, bob).items():
        for params in FILTERS:
            rows = web.get("/api/studies/", {**params, "datasets": str(rare.pk)}).json()["results"]
            for row in rows:
                for key, value in RARE.items():
                    assert row[key] != value, f"{who} sees {key}={value} on a listed row ({params})"
            page = web.get("/cohorts/", {**params, "datasets": str(rare.pk)}).content.decode()
            listing = page.split('id="cohort-studies"')[1].split("</table>")[0] if "<table>" in page.split(
                'id="cohort-studies"')[1] else ""
            for value in ("PACIFIC", "TOSHIBA", "Aquilion", "80+"):
                assert f">{value}<" not in listing and f" {value}<" not in listing, (who, params, value)


def test_the_provider_and_staff_see_exact_counts_of_their_own_data(world, alice, admin_user) -> None:
    rare = world["rare"]
    for user in (alice, admin_user):
        web = Client()
        web.force_login(user)
        answer = web.get("/api/cohorts/", {"sex": "M", "datasets": str(rare.pk)}).json()
        assert answer["total_studies"] == 1 and answer["exact"] is True
        detail = web.get(f"/api/datasets/{rare.pk}/").json()
        sexes = {row["value"]: row["count"] for group in detail["breakdown"] if group["key"] == "sex"
                 for row in group["rows"]}
        assert sexes == {"F": 40, "M": 1}
        rows = web.get("/api/studies/", {"sex": "M", "datasets": str(rare.pk)}).json()["results"]
        assert [row["patient_sex"] for row in rows] == ["M"]


def test_an_answer_mixing_own_and_other_data_is_shown_as_to_an_outsider(world, alice) -> None:
    """Alice's exact own row next to a shown total would give the other provider's small count."""
    web = Client()
    web.force_login(alice)
    answer = web.get("/api/cohorts/", {"sex": "M"}).json()  # Rare 1 (hers) + Common 16 (Omega's)
    assert answer["exact"] is False
    assert {row["title"]: row["studies"] for row in answer["datasets"]} == {
        "Rare findings": SUPPRESSED, "Common scans": SUPPRESSED}
    assert answer["total_studies"] == 17


def test_quotes_and_orders_of_small_selections_are_refused_with_the_reason(world, bob, dua) -> None:
    rare = world["rare"]
    api = Client()
    api.force_login(bob)

    def quote(criteria: dict) -> tuple[int, dict]:
        response = api.post("/api/quotes/", json.dumps({"dataset_id": rare.pk, "criteria": criteria}),
                            content_type="application/json")
        return response.status_code, response.json()

    status, body = quote({"sex": ["M"]})
    assert status == 400 and body["code"] == "below_disclosure_threshold"
    assert "fewer than 11 studies; widen it or order the whole dataset" in body["message"]
    # F alone leaves out the rare study: 41 (the dataset's shown total) - 40 would give it.
    status, body = quote({"sex": ["F"]})
    assert status == 400 and "leaves out fewer than 11" in body["message"]
    assert quote({"age_band": ["40-49"]})[1]["study_count"] == 28  # leaves out 13: priced
    assert quote({})[1]["study_count"] == 41
    page = api.get(f"/datasets/{rare.pk}/order/", {"sex": "M"})
    assert page.status_code == 400
    text = page.content.decode()
    assert "fewer than 11 studies" in text and "Add to cart" not in text and "8.50 USD" not in text
    posted = api.post(f"/datasets/{rare.pk}/order/", {"sex": "M"})  # "Add to cart"
    assert posted.status_code == 400 and not rare.order_lines.exists()
    assert not CartItem.objects.filter(dataset=rare).exists()


def test_a_saved_search_notice_never_carries_a_small_count(world, bob) -> None:
    from catalog.discovery.services import saved_search_create, saved_searches_notify

    saved_search_create(user=bob, name="Older men", params={"sex": "M", "age_band": "80+"})
    assert saved_searches_notify(dataset_id=world["rare"].pk) == 1
    message = Notification.objects.get(user=bob).message
    assert "fewer than 11 studies" in message and not re.search(r"\b1 stud", message)


def test_a_provider_may_raise_the_threshold_of_a_dataset_but_not_lower_it(world, alice, bob) -> None:
    from catalog.datasets.services import dataset_update
    from catalog.exceptions import CatalogError

    rare = world["rare"]
    web = Client()
    web.force_login(bob)
    assert web.get("/api/cohorts/", {"datasets": str(rare.pk)}).json()["total_studies"] == 41
    dataset_update(dataset=rare, acting_user=alice, disclosure_threshold=50)
    answer = web.get("/api/cohorts/", {"datasets": str(rare.pk)}).json()
    assert answer["total_studies"] == SUPPRESSED and answer["threshold"] == 50
    with pytest.raises(CatalogError, match="from 11"):
        dataset_update(dataset=rare, acting_user=alice, disclosure_threshold=5)


# ---- the rule ------------------------------------------------------------------------------

def test_complementary_suppression_hides_a_partner_so_no_subtraction_gives_a_small_cell() -> None:
    rule = Rule(threshold=11)
    assert rule.partition({"F": 40, "M": 3}) == {"F": SUPPRESSED, "M": SUPPRESSED}
    assert rule.partition({"F": 40, "M": 30, "O": 3}) == {"F": 40, "M": SUPPRESSED, "O": SUPPRESSED}
    # Two hidden cells holding less than the threshold together: a third joins them.
    assert rule.partition({"A": 50, "B": 20, "C": 2, "D": 1}) == {
        "A": 50, "B": SUPPRESSED, "C": SUPPRESSED, "D": SUPPRESSED}
    assert rule.partition({"A": 50, "B": 0}) == {"A": 50, "B": 0}
    # Filtered by A or D, the answer's total is A + D: D hidden alone would be total - A.
    assert rule.partition({"A": 28, "B": 12, "C": 30, "D": 1}, within=[{"A", "D"}]) == {
        "A": SUPPRESSED, "B": SUPPRESSED, "C": 30, "D": SUPPRESSED}
    assert Rule(threshold=11, exact=True).partition({"F": 40, "M": 3}) == {"F": 40, "M": 3}


@pytest.mark.parametrize("seed", range(200))
def test_no_single_hidden_cell_can_be_worked_out_from_a_shown_total(seed: int) -> None:
    import random

    rng = random.Random(seed)
    cells = {f"v{i}": rng.choice([0, 1, 2, 5, 10, 11, 12, 30, 200]) for i in range(rng.randint(1, 6))}
    rule = Rule(threshold=11)
    shown = rule.partition(cells)
    hidden = [k for k, v in shown.items() if v == SUPPRESSED]
    total = sum(cells.values())
    assert all(v == cells[k] for k, v in shown.items() if v != SUPPRESSED)
    assert all(cells[k] >= 11 or cells[k] == 0 for k in cells if k not in hidden)
    if hidden and rule.count(total) != SUPPRESSED:
        # total - shown = the hidden cells together: never one cell, never under the threshold
        assert len(hidden) >= 2 and sum(cells[k] for k in hidden) >= 11


def test_quote_refusals_name_the_way_out() -> None:
    with pytest.raises(BelowThresholdError, match="widen it or order the whole dataset"):
        require_disclosable(count=3, threshold=11, whole_dataset=False, dataset_total=40)
    with pytest.raises(BelowThresholdError, match="This dataset has fewer than 11"):
        require_disclosable(count=3, threshold=11, whole_dataset=True, dataset_total=3)
    with pytest.raises(BelowThresholdError, match="leaves out fewer than 11"):
        require_disclosable(count=38, threshold=11, whole_dataset=False, dataset_total=40)
    require_disclosable(count=29, threshold=11, whole_dataset=False, dataset_total=40)
    require_disclosable(count=0, threshold=11, whole_dataset=False, dataset_total=40)


# Raw numbers templates may print, each with why it is no count of someone else's patients.
RAW_NUMBERS_ALLOWED = {
    ("catalog/dataset_list.html", "row.count"): "datasets per facet value",
    ("catalog/dataset_list.html", "page.paginator.count"): "datasets found",
    ("catalog/dataset_list.html", "page.paginator.count|pluralize"): "datasets found",
    ("catalog/data_requests.html", "item.responses.count"): "answers to a request",
    ("catalog/data_requests.html", "item.responses.count|pluralize"): "answers to a request",
    ("catalog/_cohort_results.html", "s.instance_count"): "images of one listed study",
    ("catalog/dataset_detail.html", "forloop.counter"): "preview number",
    ("catalog/dataset_detail.html", "dataset.total_bytes|filesizeformat"): "size",
    ("catalog/dataset_manage.html", "dataset.study_count"): "the provider's own dataset",
    ("catalog/dataset_manage.html", "dataset.instance_count"): "the provider's own dataset",
    ("catalog/dataset_manage.html", "dataset.total_bytes|filesizeformat"): "size",
    ("catalog/dataset_manage.html", "b.total_files"): "the provider's own upload",
    ("catalog/upload_batch.html", "batch.total_files"): "the provider's own upload",
    ("orders/provider_dashboard.html", "d.study_count"): "the provider's own dataset",
    ("orders/provider_dashboard.html", "d.instance_count"): "the provider's own dataset",
    ("orders/provider_dashboard.html", "line.study_count"): "a sale of the provider's own data",
    ("orders/provider_dashboard.html", "account.provider.pk"): "an id ('account' is not a count)",
    ("orders/provider_dashboard.html", "account.provider.name"): "a name",
    ("orders/provider_dashboard.html", "account.currency"): "a currency code",
    ("orders/provider_dashboard.html", "account.balances.earned_gross"): "the provider's own money",
    ("orders/provider_dashboard.html", "account.balances.fees"): "the provider's own money",
    ("orders/provider_dashboard.html", "account.balances.net"): "the provider's own money",
    ("orders/provider_dashboard.html", "account.balances.transferred"): "the provider's own money",
    ("orders/provider_dashboard.html", "account.balances.payable"): "the provider's own money",
    ("orders/provider_dashboard.html", "account.balances.receivable"): "the provider's own money",
    ("orders/order_list.html", "o.total_minor|money:o.currency"): "price of the buyer's own order",
    ("orders/order_detail.html", "line.study_count"): "the buyer's own order",
    ("orders/agreement.html", "line.study_count"): "a line of the order's agreement (its buyer, its providers, staff)",
    ("orders/agreement.html", "doc.total"): "price of the buyer's own order (not shown to providers)",
    ("orders/consent_queue.html", "line.study_count"): "an order of the provider's own data",
    ("orders/consent_line.html", "line.study_count"): "an order of the provider's own data",
    ("marketplace/organization.html", 'org.country|country|default:"country not given"'): "a country ('country' is no count)",
    ("admin/orders/contract/approve.html", 'buyer_org.country|country|default:"country not given"'): "a country code",
    ("orders/consent_queue.html", 'org.country|country|default:"—"'): "a country code",
    ("orders/consent_line.html", 'buyer_org.country|country|default:"—"'): "a country code",
    ("orders/order_detail.html", "order.total_minor|money:order.currency"): "price of the buyer's own order",
    ("orders/order_new.html", "quote.study_count"): "a quote exists only at or above the threshold",
    ("orders/order_new.html", "quote.image_count"): "images of such a quote (not a count of people)",
    ("orders/order_new.html", "quote.total_display"): "price of such a quote",
    ("orders/cart.html", "line.total_display"): "price of a quote at or above the threshold",
    ("orders/cart.html", "quote.total_display"): "sum of such prices",
    ("orders/cart.html", "quote.total_minor"): "sum of such prices",
    ("orders/sample.html", "dataset.sample_study_count"): "the sample size the provider published",
    ("admin/orders/contract/approve.html", "total"): "price of the order whose contract staff approve",
    ("workspaces/workspace.html", "delivery.total_files"): "the buyer's own delivery",
    ("workspaces/workspace.html", "delivery.total_bytes|filesizeformat"): "size",
    ("workspaces/delivery_files.html", "delivery.total_bytes|filesizeformat"): "size",
    ("marketplace/webhooks.html", "d.attempt_count"): "attempts to send a webhook (not a count of people)",
    ("admin/work_queue.html", "kind.count"): "decisions waiting for staff (organizations, datasets, orders; no people)",
}


def test_no_template_prints_a_count_without_the_disclosure_filter() -> None:
    """A new page cannot forget the rule: every count a template prints goes through
    ``|shown`` or is listed above with its reason."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    unlisted = []
    for path in root.glob("*/templates/**/*.html"):
        name = str(path.relative_to(path.parents[len(path.relative_to(root).parts) - 3]))
        for expression in re.findall(r"\{\{\s*([^}]*?)\s*\}\}", path.read_text()):
            if re.search(r"count|studies|patients|total", expression) and "|shown" not in expression:
                if (name, expression) not in RAW_NUMBERS_ALLOWED:
                    unlisted.append((name, expression))
    assert unlisted == []
