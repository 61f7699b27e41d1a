"""The facet vocabulary (catalog/facets.py) and the one query parser (catalog/search/query.py):
what the APIs document is what they accept, the pages show the vocabulary's labels, and a
bad value is the one InvalidQueryError naming the parameter."""
from __future__ import annotations

import html
import re

import pytest
from django.template import Context, Template
from rest_framework.test import APIClient

from catalog.exceptions import InvalidQueryError
from catalog.facets import FACETS, facet_for_column
from catalog.search.criteria import COHORT_KEYS, cohort_from, describe
from catalog.search.query import COHORT, DATASETS, STUDIES, query_from
from orders.api import CriteriaField

pytestmark = pytest.mark.django_db


def _schema(client) -> dict:  # noqa: ANN001
    return client.get("/api/schema/", {"format": "json"}).json()


def _a_value(name: str) -> str:
    facet = FACETS[name]
    return facet.choices[0] if facet.choices else "CT"


# ---- the schema lists exactly what the APIs accept ------------------------------------

def test_orders_api_schema_lists_exactly_the_criteria_it_accepts(client, published_dataset, bob) -> None:
    criteria = _schema(client)["components"]["schemas"]["QuoteInput"]["properties"]["criteria"]
    documented = set(criteria["properties"])
    assert criteria["additionalProperties"] is False
    # Generated from the vocabulary: every facet, keywords and the price range, nothing else.
    assert documented == set(COHORT.accepted()) == set(COHORT_KEYS) == {"q", "price_min", "price_max", *FACETS}
    # Each documented key is accepted (by the field and by the one parser) ...
    for key in documented:
        value = "10" if key.startswith("price") else ("chest" if key == "q" else _a_value(key))
        checked = CriteriaField().to_internal_value({key: [value]})
        assert key in cohort_from(checked).as_params(), key
    # ... and a key the schema leaves out is refused by the API, naming it.
    api = APIClient()
    api.force_authenticate(bob)
    for key in ("page", "blood_type"):
        response = api.post("/api/quotes/", {"dataset_id": published_dataset.pk, "criteria": {key: ["1"]}},
                            format="json")
        assert response.status_code == 400 and response.json()["code"] == "invalid_search", key
        assert key in response.json()["message"]


@pytest.mark.parametrize("path, scope", [("/api/studies/", STUDIES), ("/api/cohorts/", STUDIES),
                                         ("/api/datasets/", DATASETS)])
def test_search_api_parameters_are_exactly_what_the_parser_accepts(client, path, scope) -> None:
    parameters = _schema(client)["paths"][path]["get"]["parameters"]
    assert {p["name"] for p in parameters} == set(scope.accepted())
    for parameter in parameters:
        facet = FACETS.get(parameter["name"])
        if facet is not None and facet.choices:  # a closed vocabulary is an enum (spectacular sorts it)
            assert sorted(parameter["schema"]["items"]["enum"]) == sorted(facet.choices), facet.name


# ---- labels on the pages ---------------------------------------------------------------

LABELLED = [(facet, value) for facet in FACETS.values() for value in facet.labels]


def test_every_labelled_value_is_shown_by_its_label_on_the_cohort_builder(client) -> None:
    params = {}
    for facet, value in LABELLED:
        params.setdefault(facet.name, []).append(value)
    page = html.unescape(client.get("/cohorts/", params).content.decode())
    for facet, value in LABELLED:
        assert f"{facet.label}: {facet.labels[value]}" in page, (facet.name, value)
    assert "Sex: F<" not in page and "Female" in page


def test_the_catalog_page_shows_female_not_f_on_the_sex_chip(client) -> None:
    page = html.unescape(client.get("/datasets/", {"sex": ["F", "O"], "age_band": "40-49"}).content.decode())
    chips = re.findall(r'<a class="chip removable" href="[^"]*" aria-label="Remove ([^"]*)">', page)
    assert chips == ["Sex: Female", "Sex: Other", "Age: 40-49"]
    assert "Sex: F<" not in page and "Sex: F " not in page


def test_template_filters_and_words_read_the_vocabulary() -> None:
    rendered = Template('{% load facets %}{{ "sex"|facet_label }}: {{ "F"|facet_value:"sex" }}; '
                        '{{ "has_report"|facet_label }}: {{ "true"|facet_value:"has_report" }}; '
                        '{{ "licence"|facet_value:"licence" }}{{ ""|facet_value:"sex"|default:"-" }}').render(Context())
    assert rendered == "Sex: Female; Has reports: Yes; licence-"
    words = [w["text"] for w in describe(cohort_from({"sex": ["F"], "licence": ["academic"],
                                                      "condition": ["ICD10:J18.9|Pneumonia"]}))]
    assert set(words) == {"Sex: Female", "Licence: Academic research", "Condition: Pneumonia"}
    # the dataset page's charts are keyed by study column: the same labels
    assert facet_for_column("patient_sex").value_label("M") == "Male"
    assert facet_for_column("patient_sex").value_label("") == "Not recorded"


def test_age_bands_are_listed_in_age_order() -> None:
    facet = FACETS["age_band"]
    assert sorted(["80+", "unknown", "18-29", "0-17", "40-49"], key=facet.sort_key) == [
        "0-17", "18-29", "40-49", "80+", "unknown"]


# ---- one error, naming the parameter ---------------------------------------------------

CLOSED = [name for name, facet in FACETS.items() if facet.choices]


@pytest.mark.parametrize("name", CLOSED)
def test_a_bad_value_is_the_one_error_naming_the_parameter(name) -> None:
    for scope in (STUDIES, COHORT, DATASETS):
        if name not in scope.facets:
            continue
        with pytest.raises(InvalidQueryError) as excinfo:
            query_from({name: ["zz-bad"]}, scope=scope)
        assert excinfo.value.code == "invalid_search"
        assert name in excinfo.value.message and "'zz-bad'" in excinfo.value.message


def test_a_bad_value_that_is_not_a_code_is_not_echoed(client) -> None:
    with pytest.raises(InvalidQueryError) as excinfo:
        query_from({"sex": "DOE^JANE 1961"})
    assert "sex" in excinfo.value.message and "DOE" not in excinfo.value.message
    with pytest.raises(InvalidQueryError) as excinfo:
        query_from({"DOE^JANE": "1"}, scope=DATASETS)
    assert "DOE" not in excinfo.value.message and "Unknown filter" in excinfo.value.message


@pytest.mark.parametrize("path, params, named", [
    ("/api/studies/", {"age_band": "20-25"}, "age_band"),
    ("/api/cohorts/", {"has_report": "maybe"}, "has_report"),
    ("/api/datasets/", {"sex": "X"}, "sex"),
    ("/api/datasets/", {"slice_thickness": "<1mm"}, "slice_thickness"),  # not a dataset-catalog filter
    ("/datasets/", {"sort": "cheapest"}, "sort"),
    ("/cohorts/", {"licence": "pirate"}, "licence"),
])
def test_every_front_door_refuses_with_the_same_error(client, path, params, named) -> None:
    response = client.get(path, params)
    assert response.status_code == 400
    if path.startswith("/api/"):
        body = response.json()
        assert body["code"] == "invalid_search" and named in body["message"]
    else:
        assert named in html.unescape(response.content.decode())

