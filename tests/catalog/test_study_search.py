"""Study-level search: both backends against plain counts, suppression, bad input, cohorts."""
from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.db.models import Count, Q

from catalog.exceptions import InvalidQueryError
from catalog.facets import FIELD_BANDS, SLICE_BANDS, STUDY_FACETS
from catalog.models import Dataset, Study
from catalog.search import ColumnarSearch, PostgresSearch
from catalog.search.memory.snapshots import snapshot_refresh
from catalog.search.query import Query as StudyQuery
from catalog.search.query import query_from as study_query_from
from catalog.search.service import facets_and_total
from marketplace.models import Organization

pytestmark = pytest.mark.django_db

def _plain_count(query: StudyQuery, skip: str | None = None) -> Q:
    q = Q(instance_count__gt=0, dataset__status=Dataset.Status.PUBLISHED)
    for name, values in query.study_filters(skip).items():
        facet = STUDY_FACETS[name]
        if name == "slice_thickness":
            q &= _band_q("slice_thickness", SLICE_BANDS, values)
        elif name == "field_strength":
            q &= _band_q("field_strength", FIELD_BANDS, values)
        elif facet.array:
            q &= Q(**{f"{facet.column}__overlap": values})
        elif facet.boolean:
            q &= Q(**{f"{facet.column}__in": [v == "true" for v in values]})
        else:
            q &= Q(**{f"{facet.column}__in": values})
    return q


def _band_q(column: str, bands: list, values: list[str]) -> Q:
    q = Q(pk__in=[])
    for label, low, high in bands:
        if label in values:
            q |= Q(**{f"{column}__gte": low, f"{column}__lt": high})
    if "unknown" in values:
        q |= Q(**{f"{column}__isnull": True})
    return q


RANDOM_QUERIES = [
    {"sex": ["F"]}, {"modality": ["PT"]}, {"sex": ["F", "M"], "age_band": ["40-49"], "manufacturer": ["GE"]},
    {"body_part": ["CHEST"], "has_report": ["true"]}, {"slice_thickness": ["<1mm", "unknown"]},
    {"field_strength": ["3T"], "modality": ["MR", "CT"]}, {"ethnicity": ["ASIAN"], "model": ["Force"]},
    {"has_annotation": ["false"], "sex": [""]}, {},
]


@pytest.mark.parametrize("backend_class", [PostgresSearch, ColumnarSearch])
@pytest.mark.parametrize("filters", RANDOM_QUERIES)
def test_facet_counts_equal_plain_counts(catalog, filters, backend_class) -> None:
    query = StudyQuery(filters=filters)
    backend = backend_class()
    counts = backend.counts(query, backend.datasets(query))
    total = sum(counts["dataset"].values())
    assert total == Study.objects.filter(_plain_count(query)).count()
    # Each facet is counted with every filter but its own.
    for name, facet in STUDY_FACETS.items():
        expected: dict[str, int] = {}
        for study in Study.objects.filter(_plain_count(query, skip=name)):
            for value in _facet_values(study, name):
                expected[value] = expected.get(value, 0) + 1
        assert counts[name] == expected, name


def _facet_values(study: Study, name: str) -> list[str]:
    if name == "modality":
        return sorted(set(study.modalities))
    if name == "slice_thickness":
        return [_band(study.slice_thickness, SLICE_BANDS)]
    if name == "field_strength":
        return [_band(study.field_strength, FIELD_BANDS)]
    value = getattr(study, STUDY_FACETS[name].column)
    return ["true" if value else "false"] if isinstance(value, bool) else [value]


def _band(value: float | None, bands: list) -> str:
    for label, low, high in bands:
        if value is not None and low <= value < high:
            return label
    return "unknown"


@pytest.mark.parametrize("backend_class", [PostgresSearch, ColumnarSearch])
def test_patients_and_breakdowns_agree_with_plain_counts(catalog, backend_class) -> None:
    query = StudyQuery(filters={"sex": ["F"], "modality": ["CT"]})
    backend = backend_class()
    ids = [d.pk for d in catalog]
    studies = Study.objects.filter(_plain_count(query))
    expected = {row["dataset"]: row["n"] for row in
                studies.values("dataset").annotate(n=Count("pseudo_patient_id", distinct=True))}
    assert backend.patients(query, ids) == expected
    mix = backend.breakdown(query, ids, ["age_band", "manufacturer"])
    assert mix["age_band"] == {r["age_band"]: r["n"] for r in studies.values("age_band").annotate(n=Count("id"))}
    by_dataset = backend.by_dataset(query, ids, "sex")
    assert {i: sum(v.values()) for i, v in by_dataset.items()} == {
        r["dataset"]: r["n"] for r in studies.values("dataset").annotate(n=Count("id"))}


def test_columns_reload_when_the_worker_changes_the_data(catalog) -> None:
    from catalog.search.memory.columnar import columns
    before = columns()
    Study.objects.filter(dataset=catalog[0]).update(patient_sex="O")
    assert columns() is before  # nothing told the web processes yet
    snapshot_refresh(dataset_id=catalog[0].pk)  # what the worker does after ingestion
    after = columns()
    assert after is not before and "O" in after.values["sex"]


@pytest.mark.parametrize("backend_class", [PostgresSearch, ColumnarSearch])
def test_keyword_search_counts_the_matching_studies(catalog, backend_class) -> None:
    Study.objects.filter(dataset=catalog[0], body_part="KNEE").update(description="meniscus tear")
    from catalog.search.vectors import studies_refresh_search_vector
    for ds in catalog:
        studies_refresh_search_vector(dataset=ds)
    snapshot_refresh(dataset_id=catalog[0].pk)  # the worker's "data changed" signal
    query = StudyQuery(q="meniscus", filters={"sex": ["F"]})
    backend = backend_class()
    counts = backend.counts(query, backend.datasets(query))
    expected = Study.objects.filter(dataset=catalog[0], body_part="KNEE", patient_sex="F").count()
    assert sum(counts["dataset"].values()) == expected > 0
    assert counts["body_part"] == {"KNEE": expected}
    assert backend.patients(query, [catalog[0].pk]) == {catalog[0].pk: Study.objects.filter(
        dataset=catalog[0], body_part="KNEE", patient_sex="F").values("pseudo_patient_id").distinct().count()}


def test_small_counts_are_suppressed_for_outsiders_only(catalog, bob, make_member) -> None:
    query = StudyQuery(filters={"licence": ["free"]})  # the 6-study dataset alone
    outsider = facets_and_total(query=query, user=bob)
    assert outsider["total"] == "suppressed"
    assert all(row["count"] == "suppressed" for name in STUDY_FACETS for row in outsider["facets"][name])
    # The licence facet counts every licence (not its own filter): "free" (6) is hidden, and
    # the smallest other cell with it, so the facet's sum minus the shown cells gives 256.
    licences = {row["value"]: row["count"] for row in outsider["facets"]["licence"]}
    assert licences == {"academic": 400, "commercial": "suppressed", "free": "suppressed"}
    olga = make_member("olga2", "Omega Scans", Organization.Kind.PROVIDER)[0]  # its provider
    assert facets_and_total(query=query, user=olga)["total"] == 6


def test_dataset_level_facets_count_studies_and_filter(catalog, bob) -> None:
    result = facets_and_total(query=StudyQuery(filters={"condition": ["ICD10:J18.9|Pneumonia"]}), user=bob)
    assert result["total"] == 406
    conditions = {row["value"]: row for row in result["facets"]["condition"]}
    assert conditions["ICD10:J18.9|Pneumonia"]["label"] == "Pneumonia"
    licences = {row["value"]: row["count"] for row in result["facets"]["licence"]}
    # Other filters applied, not its own. "free" (6) is hidden and, as 406 is shown, so is
    # "academic": 406 - 400 would give it.
    assert licences == {"academic": "suppressed", "free": "suppressed"}


@pytest.mark.parametrize("params, message", [
    ({"colour": "blue"}, "Unknown filter: colour"),
    ({"age_band": "20-25"}, "Unknown age_band '20-25'"),
    ({"price_min": "cheap"}, "price_min must be a number"),
    ({"price_min": "10", "price_max": "5"}, "price_min is larger than price_max"),
    ({"has_report": "maybe"}, "Unknown has_report"),
    ({"sort": "random()"}, "Unknown sort"),
])
def test_bad_queries_are_refused_with_the_reason(params, message) -> None:
    with pytest.raises(InvalidQueryError, match=message.replace("(", r"\(")):
        study_query_from(params)


def test_api_names_the_problem_and_survives_hostile_keywords(client, catalog) -> None:
    response = client.get("/api/studies/", {"colour": "blue"})
    assert response.status_code == 400 and "Unknown filter: colour" in response.json()["message"]
    many_words = " or ".join(f"word{i}" for i in range(1_000))[:10_000]  # ~1,000 lexemes
    for q in ["x" * 10_000, many_words, "'; DROP TABLE catalog_study; --", "a & | ! ( ) :* \\ <->",
              '"unclosed']:
        response = client.get("/api/studies/", {"q": q, "sex": "F"})
        assert response.status_code == 200, q
    assert Study.objects.exists()


def test_api_lists_studies_only_of_browsable_datasets(client, catalog) -> None:
    data = client.get("/api/studies/", {"modality": "CT"}).json()
    dataset_ids = {row["dataset_id"] for row in data["results"]}
    assert dataset_ids and catalog[1].pk not in dataset_ids  # its provider does not allow browsing
    assert "pseudo_patient_id" not in data["results"][0]
    assert data["count"] == Study.objects.filter(
        dataset__status="published", modalities__overlap=["CT"]).count()
    assert client.get("/api/studies/", {"page": "999999"}).status_code == 400


def test_cohort_counts_patients_prices_and_fills_gaps(client, catalog, alice) -> None:
    client.force_login(alice)
    criteria = {"sex": "F", "modality": "CT", "datasets": [str(catalog[0].pk)]}
    data = client.get("/api/cohorts/", criteria).json()
    studies = Study.objects.filter(dataset=catalog[0], patient_sex="F", modalities__overlap=["CT"])
    row = data["datasets"][0]
    assert row["studies"] == studies.count() == data["total_studies"]
    assert row["patients"] == studies.aggregate(n=Count("pseudo_patient_id", distinct=True))["n"]
    assert Decimal(str(row["price"])) == Decimal("2.00") * studies.count()
    mix = {r["value"]: r["count"] for r in data["mix"]["age_band"]}
    assert sum(mix.values()) == studies.count()
    # Only dataset 0 is in the cohort: the others may add under-represented groups.
    assert all(s["dataset_id"] != catalog[0].pk for s in data["fill_the_gap"])


def test_cohort_openapi_schema_lists_the_new_endpoints(client) -> None:
    schema = client.get("/api/schema/", {"format": "json"}).json()
    assert "/api/studies/" in schema["paths"] and "/api/cohorts/" in schema["paths"]


def test_cohort_builder_page_shows_counts_and_keeps_the_query_in_the_url(client, catalog) -> None:
    page = client.get("/cohorts/", {"sex": "F", "modality": "CT"})
    assert page.status_code == 200
    html = page.content.decode()
    expected = Study.objects.filter(dataset__status="published", patient_sex="F", modalities__overlap=["CT"]).count()
    assert f"{expected} studies" in html
    assert 'name="sex" value="F" checked' in html
    assert "js/cohort.js" in html


def test_cohort_builder_page_names_bad_input_and_suggests_what_to_relax(client, catalog) -> None:
    bad = client.get("/cohorts/", {"age_band": "20-25"})
    assert bad.status_code == 400 and "Unknown age_band" in bad.content.decode()
    empty = client.get("/cohorts/", {"modality": "CR", "body_part": "KNEE", "model": "Nope"}).content.decode()
    assert "No study matches" in empty and "Without the <strong>model</strong> filter" in empty


@pytest.mark.parametrize("sort", ["relevance", "newest", "size", "price", "-price"])
@pytest.mark.parametrize("page", [1, 3])
def test_study_pages_from_columns_equal_pages_from_sql(catalog, page, sort) -> None:
    query = StudyQuery(filters={"sex": ["F", "M"], "body_part": ["CHEST", "KNEE"]}, sort=sort)
    ids = [d.pk for d in catalog]
    in_memory = ColumnarSearch().studies(query, ids, offset=(page - 1) * 25, limit=25)
    in_sql = PostgresSearch().studies(query, ids, offset=(page - 1) * 25, limit=25)
    assert in_memory == in_sql and len(in_memory[0]) == 25


@pytest.mark.parametrize("sort", ["newest", "size", "price", "-price"])
def test_study_pages_follow_the_sort(catalog, sort) -> None:
    for dataset, price in zip(catalog, ["3.00", "1.00", "2.00", "5.00"]):
        Dataset.objects.filter(pk=dataset.pk).update(price_per_study=Decimal(price))
    query = StudyQuery(sort=sort)
    rows, total = ColumnarSearch().studies(query, [d.pk for d in catalog], offset=0, limit=total_rows(catalog))
    studies = {s.pk: s for s in Study.objects.filter(pk__in=[r["id"] for r in rows]).select_related("dataset")}
    keys = {
        "newest": lambda s: (s.study_date is None, -(s.study_date.toordinal() if s.study_date else 0), s.pk),
        "size": lambda s: (-s.instance_count, s.pk),
        "price": lambda s: (s.dataset.price_per_study, s.pk),
        "-price": lambda s: (-s.dataset.price_per_study, s.pk),
    }[sort]
    ordered = [studies[r["id"]] for r in rows]
    assert len(ordered) == total and ordered == sorted(ordered, key=keys)
    assert len({keys(s)[0] for s in ordered}) > 1  # the sort had something to order


def total_rows(catalog) -> int:
    return Study.objects.filter(dataset__in=catalog, instance_count__gt=0).count()


def test_a_cohort_row_orders_exactly_the_studies_it_counted(client, catalog, bob, dua) -> None:
    from catalog.search.vectors import studies_refresh_search_vector

    studies_refresh_search_vector(dataset=catalog[0])  # keywords are part of the cohort
    snapshot_refresh(dataset_id=catalog[0].pk)
    client.force_login(bob)
    criteria = {"sex": "F", "slice_thickness": ["<1mm", "1-2.5mm"], "q": "axial"}
    page = client.get("/cohorts/", criteria).content.decode()
    dataset = catalog[0]
    expected = Study.objects.filter(dataset=dataset, patient_sex="F", slice_thickness__lt=2.5).count()
    import re
    link = re.search(rf'href="(/datasets/{dataset.pk}/order/\?[^"]+)"', page).group(1).replace("&amp;", "&")
    quote_page = client.get(link).content.decode()
    assert f"<b>{expected}</b> studies" in quote_page and expected >= 11
    assert "Keywords: “axial”" in quote_page and "Slice thickness: 1-2.5mm" in quote_page


def test_keyword_pages_rank_the_same_in_memory_and_in_sql(catalog) -> None:
    from catalog.search.vectors import studies_refresh_search_vector
    Study.objects.filter(dataset=catalog[0], body_part="KNEE").update(description="meniscus tear meniscus")
    Study.objects.filter(dataset=catalog[0], body_part="HEAD").update(description="meniscus mentioned once")
    studies_refresh_search_vector(dataset=catalog[0])
    snapshot_refresh(dataset_id=catalog[0].pk)
    query = StudyQuery(q="meniscus")
    ids = [catalog[0].pk]
    in_memory = ColumnarSearch().studies(query, ids, offset=0, limit=25)
    in_sql = PostgresSearch().studies(query, ids, offset=0, limit=25)
    assert in_memory == in_sql and in_memory[1] > 25


def test_providers_describe_conditions_licence_and_browsing_in_the_form(client, alice, provider) -> None:
    client.force_login(alice)
    response = client.post("/provider/datasets/new/", {
        "title": "Lung nodules", "description": "CT", "licence_type": "commercial", "licence_text": "x",
        "price": "5", "currency": "EUR", "country": "NZ", "allow_study_browsing": "on",
        "conditions": "icd10:R91.1|Solitary pulmonary nodule\nSCT:427359005|Pulmonary nodule"})
    assert response.status_code == 302
    dataset = Dataset.objects.get(title="Lung nodules")
    assert dataset.conditions == ["ICD10:R91.1|Solitary pulmonary nodule", "SCT:427359005|Pulmonary nodule"]
    assert dataset.licence_type == "commercial" and dataset.allow_study_browsing and dataset.country == "NZ"
    bad = client.post("/provider/datasets/new/", {"title": "x", "licence_type": "academic", "price": "1",
                                                  "currency": "USD", "conditions": "pneumonia"})
    assert bad.status_code == 400 and "&#x27;pneumonia&#x27; is not an ICD-10 code in our list" in bad.content.decode()


def test_cohort_builder_counts_the_datasets_once_per_page(client, catalog, monkeypatch) -> None:
    """The facets and the cohort table share one count of the query (not one each)."""
    calls: list[bool] = []
    real = ColumnarSearch.counts

    def counting(self, query, datasets, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw.get("facets", True))
        return real(self, query, datasets, **kw)

    monkeypatch.setattr(ColumnarSearch, "counts", counting)
    page = client.get("/cohorts/", {"sex": "F", "modality": "CT"})
    assert page.status_code == 200
    assert calls == [True]


def test_cohort_page_lists_browsable_studies_sorted_a_page_at_a_time(client, catalog) -> None:
    """Set 0 (400 studies) and Set 2 (6) allow browsing, Set 1 does not: its studies are
    counted but never listed. Set 2's 6 are hidden, so its rows are not listed either (they
    could be counted)."""
    def studies_section(params: dict) -> str:
        html = client.get("/cohorts/", params).content.decode()
        return html.split('id="cohort-studies"')[1].split("</div>")[0]

    first = studies_section({"sort": "size"})
    assert "Matching studies you can look at before buying: 400" in first
    assert "Page 1 of 16" in first and 'data-page="2"' in first
    assert "Set 0</a>" in first and "Set 1</a>" not in first and "Set 2</a>" not in first
    sizes = [int(n) for n in re.findall(r"<td>(\d+)</td>\s*<td>[^<]*</td></tr>", first)]
    biggest = list(Study.objects.filter(dataset__in=[catalog[0]])
                   .order_by("-instance_count", "id").values_list("instance_count", flat=True)[:25])
    assert sizes == biggest
    second = studies_section({"sort": "size", "page": "2"})
    assert "Page 2 of 16" in second and 'data-page="1"' in second
    past = studies_section({"sort": "size", "page": "30"})
    assert "Page 30 is past the last page (16)" in past and 'data-page="1"' in past
    assert client.get("/cohorts/", {"page": "0"}).status_code == 400
    assert "page must be a number from 1 to 400" in client.get("/cohorts/", {"page": "x"}).content.decode()


@pytest.mark.parametrize("count", [0, 1, 7, 250, 999, 1000, 1005])
def test_the_first_rows_of_a_page_come_in_stable_sort_order(count: int) -> None:
    import numpy as np

    from catalog.search.memory.columnar import _first_in_order
    key = np.random.default_rng(count).integers(0, 12, 1000)  # many ties
    assert _first_in_order(key, count).tolist() == np.argsort(key, kind="stable")[:count].tolist()
    prices = -np.repeat([3.0, 5.0, 1.0], [400, 350, 250])
    assert _first_in_order(prices, count).tolist() == np.argsort(prices, kind="stable")[:count].tolist()


def test_remembered_filter_masks_follow_the_data_version(catalog) -> None:
    query = StudyQuery(filters={"sex": ["O"]}, dataset_ids=[catalog[0].pk])
    before = ColumnarSearch().breakdown(query, [catalog[0].pk], ["sex"])["sex"].get("O", 0)
    Study.objects.filter(dataset=catalog[0]).update(patient_sex="O")
    snapshot_refresh(dataset_id=catalog[0].pk)
    after = ColumnarSearch().breakdown(query, [catalog[0].pk], ["sex"])["sex"]["O"]
    assert after == Study.objects.filter(dataset=catalog[0], instance_count__gt=0).count() > before
