"""A cohort orders exactly what it shows.

For many generated cohorts (keywords, every study-level facet, the dataset-level filters
and the price range, in random combinations) and each dataset of the catalog, the studies
a quote takes equal the studies counted by an independent oracle written here in plain
ORM / SQL, and their number equals the count the cohort builder gives an entitled user;
selections of 1..threshold-1 studies are refused. Then the same through the pages: the
cohort builder's order links, the order page's criteria in words (each removable), its
"Update price" form, and the order placed.
"""
from __future__ import annotations

import html
import random
import re
from decimal import Decimal
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.core.cache import cache
from django.db.models import Q

from catalog.disclosure import SUPPRESSED, BelowThresholdError
from catalog.models import Dataset, Study
from catalog.search import PostgresSearch
from catalog.search.criteria import cohort_criteria, cohort_from, describe
from catalog.search.memory.snapshots import snapshot_refresh
from catalog.search.service import cohort_study_ids, cohort_summary, facets_and_total
from catalog.search.vectors import studies_refresh_search_vector
from factories.orders import USE
from orders.models import Order
from orders.quotes import line_quote as order_quote

pytestmark = pytest.mark.django_db

THRESHOLD = 11  # the default DISCLOSURE_THRESHOLD

DESCRIPTIONS = [
    "axial chest study", "contrast enhanced head scan", "knee meniscus tear", "lung nodule follow-up",
    "brain tumour resection", "routine screening chest", "fracture of the knee", "",
]
KEYWORDS = [
    "chest", "knee", "meniscus", "nodule", "brain", "tumour", "screening", "contrast", "fracture",
    "axial", "head", "scan", "study", "siemens", "ingenia", "pneumonia", "ct",
    "knee tear", "chest or brain", "chest -axial", "head -contrast", '"meniscus tear"', '"lung nodule"',
    "nodule or fracture or tumour", "the", "zebra", "screening chest",
]
# Values to draw from: those in the catalog fixture and some that match nothing.
STUDY_VALUES = {
    "modality": ["CT", "MR", "PT", "CR", "US"],
    "body_part": ["CHEST", "HEAD", "KNEE", "SPINE"],
    "sex": ["F", "M", "O"],
    "age_band": ["18-29", "40-49", "60-69", "unknown", "80+"],
    "ethnicity": ["ASIAN", "WHITE"],
    "manufacturer": ["GE", "SIEMENS", "PHILIPS"],
    "model": ["Revolution", "Force", "Ingenia"],
    "slice_thickness": ["<1mm", "1-2.5mm", "2.5-5mm", ">5mm", "unknown"],
    "field_strength": ["<1.5T", "1.5T", "1.5-3T", "3T", ">3T", "unknown"],
    "has_report": ["true", "false"],
    "has_annotation": ["true", "false"],
}
DATASET_VALUES = {
    "licence": ["academic", "commercial", "free"],
    "provider": ["Alpha Imaging", "Omega Scans"],
    "country": ["NZ", "DE", "US"],
    "condition": ["ICD10:J18.9|Pneumonia", "ICD10:C34.9|Lung cancer"],
}
PRICES = ["0", "1", "1.00", "1.5", "2", "3", "5", "10"]
KINDS = ["q", *STUDY_VALUES, *DATASET_VALUES, "price"]
# Besides the generated cohorts: a few around 5 rare studies of Set 0.
FIXED = [{"q": ["artefact"]}, {"q": ["-artefact"]}, {"q": ["-artefact"], "has_report": ["true", "false"]},
         {"q": ["motion -artefact"]}, {"q": ["artefact or tumour"], "provider": ["Alpha Imaging"]}]

# The bands as the search documents them (catalog/facets.py), written out
# again here so the oracle does not borrow the code it checks.
SLICE = {"<1mm": Q(slice_thickness__gte=0, slice_thickness__lt=1),
         "1-2.5mm": Q(slice_thickness__gte=1, slice_thickness__lt=2.5),
         "2.5-5mm": Q(slice_thickness__gte=2.5, slice_thickness__lte=5),
         ">5mm": Q(slice_thickness__gt=5), "unknown": Q(slice_thickness__isnull=True)}
FIELD = {"<1.5T": Q(field_strength__gte=0, field_strength__lt=1.45),
         "1.5T": Q(field_strength__gte=1.45, field_strength__lt=1.55),
         "1.5-3T": Q(field_strength__gte=1.55, field_strength__lt=2.9),
         "3T": Q(field_strength__gte=2.9, field_strength__lt=3.1),
         ">3T": Q(field_strength__gte=3.1), "unknown": Q(field_strength__isnull=True)}
COLUMNS = {"body_part": "body_part", "sex": "patient_sex", "age_band": "age_band", "ethnicity": "ethnicity",
           "manufacturer": "manufacturer", "model": "model"}


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    cache.clear()  # the cache is a real Redis shared by every test: no budget carried over


@pytest.fixture
def described(catalog):
    """The catalog with varied study descriptions (and a few studies without images),
    keyword vectors and snapshots refreshed as the worker does."""
    rng = random.Random(2024)
    by_text: dict[str, list[int]] = {}
    for pk in Study.objects.filter(dataset__in=catalog).order_by("pk").values_list("pk", flat=True):
        by_text.setdefault(rng.choice(DESCRIPTIONS), []).append(pk)
    for text, ids in by_text.items():
        Study.objects.filter(pk__in=ids).update(description=text)
    no_images = list(Study.objects.filter(dataset=catalog[0]).order_by("pk").values_list("pk", flat=True)[::40])
    Study.objects.filter(pk__in=no_images).update(instance_count=0)  # never counted nor ordered
    rare = Study.objects.filter(dataset=catalog[0], instance_count__gt=0).exclude(pk__in=no_images)
    Study.objects.filter(pk__in=list(rare.order_by("pk").values_list("pk", flat=True)[3:8])).update(
        description="motion artefact")  # 5 studies: "-artefact" leaves out fewer than the threshold
    for dataset in catalog:
        studies_refresh_search_vector(dataset=dataset)
        snapshot_refresh(dataset_id=dataset.pk)
    return catalog


def oracle_ids(dataset: Dataset, definition: dict[str, list[str]]) -> set[int]:
    """The studies of one dataset meeting a cohort's definition, in plain ORM / SQL."""
    dataset = Dataset.objects.select_related("provider").get(pk=dataset.pk)
    if dataset.status != Dataset.Status.PUBLISHED:
        return set()
    price = dataset.price_per_study
    if "price_min" in definition and price < Decimal(definition["price_min"][0]):
        return set()
    if "price_max" in definition and price > Decimal(definition["price_max"][0]):
        return set()
    attributes = {"licence": {dataset.licence_type}, "provider": {dataset.provider.name},
                  "country": {dataset.country} if dataset.country else set(), "condition": set(dataset.conditions)}
    for name, have in attributes.items():
        if name in definition and not have & set(definition[name]):
            return set()
    studies = Study.objects.filter(dataset=dataset, instance_count__gt=0)
    for name, values in definition.items():
        if name == "modality":
            studies = studies.filter(modalities__overlap=values)
        elif name in ("has_report", "has_annotation"):
            studies = studies.filter(**{f"{name}__in": [v == "true" for v in values]})
        elif name in ("slice_thickness", "field_strength"):
            bands = SLICE if name == "slice_thickness" else FIELD
            either = Q(pk__in=[])
            for value in values:
                either |= bands[value]
            studies = studies.filter(either)
        elif name in COLUMNS:
            studies = studies.filter(**{f"{COLUMNS[name]}__in": values})
    if "q" in definition:
        studies = studies.extra(where=["search_vector @@ websearch_to_tsquery('english', %s)"],
                                params=[definition["q"][0]])
    return set(studies.values_list("pk", flat=True))


def refusal(dataset: Dataset, definition: dict[str, list[str]], n: int) -> str | None:
    """Why a quote of these n studies is refused (the words its message holds), or None:
    fewer than the threshold (the price would give the count), or a selection leaving out
    fewer than the threshold of the dataset's studies (the dataset's total minus the
    selection would give those)."""
    if 0 < n < THRESHOLD:
        return f"fewer than {THRESHOLD} studies"
    left_out = len(oracle_ids(dataset, {})) - n
    if definition and n and 0 < left_out < THRESHOLD:
        return f"leaves out fewer than {THRESHOLD}"
    return None


def random_definition(rng: random.Random) -> dict[str, list[str]]:
    kinds = rng.sample(KINDS, k=rng.choice([0, 1, 1, 2, 2, 3, 3, 4]))
    definition: dict[str, list[str]] = {}
    for kind in kinds:
        if kind == "q":
            definition["q"] = [rng.choice(KEYWORDS)]
        elif kind == "price":
            low, high = sorted(rng.sample(PRICES, k=2), key=Decimal)
            if rng.random() < 0.7:
                definition["price_min"] = [low]
            if "price_min" not in definition or rng.random() < 0.5:
                definition["price_max"] = [high]
        else:
            pool = STUDY_VALUES.get(kind) or DATASET_VALUES[kind]
            definition[kind] = rng.sample(pool, k=rng.choice([1, 1, 2]))
    return definition


def test_every_generated_cohort_orders_the_studies_it_counted(described, admin_user) -> None:
    outcomes = {"empty": 0, "refused": 0, "quoted": 0, "leaves out": 0}
    kinds_seen: set[str] = set()
    postgres = PostgresSearch()
    for seed, definition in [*((s, random_definition(random.Random(s))) for s in range(60)),
                             *(("fixed", d) for d in FIXED)]:
        kinds_seen |= {"price" if k.startswith("price") else k for k in definition}
        query = cohort_from(definition)
        criteria = cohort_criteria(query)
        assert cohort_from(criteria) == query, definition  # the stored form gives the same cohort
        summary = cohort_summary(query=query, user=admin_user)  # staff: exact counts
        assert summary["exact"], definition
        counted = {row["dataset_id"]: row["studies"] for row in summary["datasets"]}
        total = facets_and_total(query=query, user=admin_user)["total"]
        assert total == summary["total_studies"] == sum(counted.values()), definition
        for dataset in described:
            expected = oracle_ids(dataset, definition)
            context = f"seed {seed}: {definition} in {dataset.title}"
            assert counted.get(dataset.pk, 0) == len(expected), context
            # The reference SQL backend takes the same studies as the in-memory one.
            assert set(cohort_study_ids(query=query, dataset_id=dataset.pk, backend=postgres)) == expected, context
            refused = refusal(dataset, definition, len(expected))
            if refused:
                with pytest.raises(BelowThresholdError, match=refused):
                    order_quote(dataset=dataset, criteria=criteria)
                outcomes["leaves out" if "leaves out" in refused else "refused"] += 1
                continue
            quote = order_quote(dataset=dataset, criteria=criteria)
            assert set(quote.study_ids) == expected and len(quote.study_ids) == len(expected), context
            assert quote.study_count == len(expected), context
            assert quote.criteria == criteria, context
            assert quote.total_minor == round(dataset.price_per_study * 100) * len(expected), context
            outcomes["quoted" if expected else "empty"] += 1
    # The generated cohorts exercised every kind of criterion and every outcome.
    assert kinds_seen == set(KINDS)
    assert min(outcomes.values()) >= 2 and outcomes["refused"] >= 20 and outcomes["quoted"] >= 20, outcomes


def test_a_study_without_images_or_in_a_draft_is_never_ordered(described, admin_user) -> None:
    draft = Dataset.objects.get(title="Draft")
    assert order_quote(dataset=draft, criteria={}).study_ids == ()
    empty = Study.objects.filter(dataset=described[0], instance_count=0)
    assert empty.count() >= 5
    quote = order_quote(dataset=described[0], criteria={})
    assert not set(quote.study_ids) & set(empty.values_list("pk", flat=True))
    assert quote.study_count == Study.objects.filter(dataset=described[0], instance_count__gt=0).count()


# --- through the pages ----------------------------------------------------------------------

CHIP = re.compile(r'<span class="chip">(.*?)</span> <a href="\?([^"]*)"[^>]*>remove</a>')


def _amount(html_text: str) -> int | None:
    """The quoted number of studies; 0 where the page says none matches; None: no quote."""
    if 'id="quote-empty"' in html_text:
        assert "Add to cart" not in html_text
        return 0
    found = re.findall(r"<b>(\d+)</b> studies", html_text)
    assert len(found) <= 1
    return int(found[0]) if found else None


def _chips(page: str) -> list[tuple[str, dict[str, list[str]]]]:
    return [(text, parse_qs(html.unescape(href), keep_blank_values=True)) for text, href in CHIP.findall(page)]


def _without(criteria: dict[str, list[str]], key: str, value: str) -> dict[str, list[str]]:
    rest = {k: [v for v in vs if not (k == key and v == value)] for k, vs in criteria.items()}
    return {k: vs for k, vs in rest.items() if vs}


def _refine_form(page: str) -> dict[str, list[str]]:
    """What "Update price" submits: the refine form's hidden fields and ticked boxes."""
    form = re.search(r'<form method="get" class="card">(.*?)</form>', page, re.S)
    assert form, "no refine form"
    sent: dict[str, list[str]] = {}
    for tag in re.findall(r"<input [^>]*>", form.group(1)):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', tag))
        kind = attrs.get("type")
        if kind == "hidden" or (kind == "checkbox" and re.search(r"\schecked\b", tag)):
            sent.setdefault(html.unescape(attrs["name"]), []).append(html.unescape(attrs["value"]))
    return {key: sorted(values) for key, values in sent.items()}  # the order of inputs means nothing


COHORT = {"q": ["chest"], "sex": ["F", "M"], "model": ["Force", "Ingenia"],
          "slice_thickness": ["<1mm", "1-2.5mm", ">5mm"], "price_max": ["5"]}


def test_the_cohort_page_links_each_dataset_to_an_order_of_its_counted_studies(client, described, bob, dua):
    client.force_login(bob)
    query = cohort_from(COHORT)
    criteria = cohort_criteria(query)
    expected = {d.pk: oracle_ids(d, COHORT) for d in described}
    sizes = {pk: len(ids) for pk, ids in expected.items()}
    # The cohort covers both cases: a dataset to quote and one too small to.
    assert any(n >= THRESHOLD for n in sizes.values()) and any(0 < n < THRESHOLD for n in sizes.values()), sizes

    page = client.get("/cohorts/", COHORT)
    assert page.status_code == 200
    links = {int(pk): html.unescape(href) for href, pk in
             re.findall(r'href="(/datasets/(\d+)/order/\?[^"]*)"', page.content.decode())}
    assert set(links) == {pk for pk, n in sizes.items() if n}
    words = describe(query)
    assert {w["key"] for w in words} == set(criteria)
    for dataset_id, link in links.items():
        split = urlsplit(link)
        assert parse_qs(split.query) == criteria  # the link carries the whole definition
        response = client.get(link)
        order_page = response.content.decode()
        n = sizes[dataset_id]
        dataset = Dataset.objects.get(pk=dataset_id)
        refused = refusal(dataset, COHORT, n)
        if refused:
            assert response.status_code == 400 and _amount(order_page) is None
            assert refused in order_page
        else:
            assert response.status_code == 200
            assert _amount(order_page) == n
        # Every criterion in words, each with a link that drops exactly it.
        chips = _chips(order_page)
        assert [text for text, _ in chips] == [html.escape(w["text"]) for w in words]
        for (text, rest), word in zip(chips, words):
            assert rest == _without(criteria, word["key"], word["value"]), text
        # Following a remove link gives the page without that criterion (and its count).
        for (text, rest), word in zip(chips, words):
            wider = client.get(f"{split.path}?{urlencode(rest, doseq=True)}").content.decode()
            texts = [t for t, _ in _chips(wider)]
            assert text not in texts and len(texts) == len(chips) - 1, text
            m = len(oracle_ids(dataset, rest))
            assert _amount(wider) == (None if refusal(dataset, rest, m) else m), text


def test_placing_the_order_stores_the_cohort_and_its_studies(client, described, bob, dua):
    client.force_login(bob)
    dataset = described[0]
    expected = oracle_ids(dataset, COHORT)
    assert len(expected) >= THRESHOLD and refusal(dataset, COHORT, len(expected)) is None
    criteria = cohort_criteria(cohort_from(COHORT))
    total_minor = round(dataset.price_per_study * 100) * len(expected)
    link = f"/datasets/{dataset.pk}/order/"
    page = client.get(link, COHORT).content.decode()
    assert f"<b>{len(expected)}</b> studies" in page
    response = client.post(link, COHORT)  # into the cart, with the cohort's whole definition
    assert response.status_code == 302, response.content.decode()[:2000]
    assert f'name="expected_total_minor" value="{total_minor}"' in client.get("/cart/").content.decode()
    response = client.post("/cart/checkout/", {"accept": "on", "expected_total_minor": str(total_minor),
                                               "expected_currency": dataset.currency, "payment_method": "invoice",
                                               "password": "pass-1234567", **USE})
    order = Order.objects.get(buyer=bob)
    assert response["Location"] == f"/orders/{order.pk}/"
    line = order.lines.get()
    assert line.criteria == criteria
    assert set(line.studies.values_list("pk", flat=True)) == expected
    assert line.study_count == len(expected) and order.total_minor == total_minor
    # The order's page says what was ordered, criterion by criterion.
    detail = client.get(f"/orders/{order.pk}/").content.decode()
    for word in describe(cohort_from(criteria)):
        assert html.escape(word["text"]) in detail


def test_update_price_keeps_the_criteria_without_a_checkbox(client, described, bob, dua):
    client.force_login(bob)
    dataset = described[0]
    link = f"/datasets/{dataset.pk}/order/"
    criteria = cohort_criteria(cohort_from(COHORT))
    page = client.get(link, COHORT).content.decode()
    sent = _refine_form(page)
    # q, model, slice thickness and price have no checkbox here: they travel as hidden fields.
    for key in ("q", "model", "slice_thickness", "price_max"):
        assert re.search(rf'<input type="hidden" name="{key}"', page), key
    assert sent == criteria
    again = client.get(link, sent).content.decode()
    assert _amount(again) == _amount(page) == len(oracle_ids(dataset, COHORT))
    assert [t for t, _ in _chips(again)] == [t for t, _ in _chips(page)]
    # Unticking a box (sex: Male) removes that value only; the hidden criteria stay.
    narrower = {**sent, "sex": ["F"]}
    after = client.get(link, narrower).content.decode()
    assert _amount(after) == len(oracle_ids(dataset, narrower)) >= THRESHOLD
    assert _refine_form(after) == cohort_criteria(cohort_from(narrower))


def test_update_price_keeps_a_ticked_value_this_dataset_does_not_have(client, described, bob, dua):
    """A cohort built across datasets may hold a value another dataset has (body part
    SPINE, sex O): the order page of this dataset must still carry it."""
    client.force_login(bob)
    dataset = described[0]
    definition = {**COHORT, "body_part": ["CHEST", "SPINE"]}
    criteria = cohort_criteria(cohort_from(definition))
    page = client.get(f"/datasets/{dataset.pk}/order/", definition).content.decode()
    assert "Body part: Spine" in page
    assert _refine_form(page) == criteria


def test_bob_sees_each_shown_count_equal_to_the_quote(client, described, bob):
    """The per-dataset counts shown to an outsider are exact when shown."""
    for seed in range(100, 110):
        definition = random_definition(random.Random(seed))
        query = cohort_from(definition)
        for row in cohort_summary(query=query, user=bob)["datasets"]:
            dataset = Dataset.objects.get(pk=row["dataset_id"])
            if row["studies"] != SUPPRESSED:
                assert row["studies"] == len(oracle_ids(dataset, definition)) >= THRESHOLD
