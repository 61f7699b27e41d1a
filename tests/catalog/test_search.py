"""Catalog search, facets and the dataset life cycle (draft → in review → published)."""
from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.http import QueryDict

from catalog.datasets.selectors import dataset_facets, dataset_search
from catalog.datasets.services import dataset_create, dataset_publish, dataset_submit_for_review, dataset_transition
from catalog.exceptions import CatalogError, InvalidQueryError, ProviderNotApprovedError
from catalog.ingestion.ingest import upload_batch_ingest
from catalog.ingestion.uploads import upload_batch_create
from catalog.models import Dataset
from catalog.search.query import DATASETS, query_from
from catalog.search.query import Query as SearchParams
from catalog.search.vectors import dataset_refresh_search_vector
from demo.synthetic import fake_patients, generate_study_files
from factories.dicom import ct_files
from marketplace.exceptions import InvalidTransitionError
from marketplace.models import AuditEvent


def search_params_from(data):  # noqa: ANN001, ANN201 - the one parser, at the dataset catalog's door
    return query_from(data, scope=DATASETS)

pytestmark = pytest.mark.django_db


@pytest.fixture
def make_dataset(provider, alice, admin_user):
    """A dataset with the summaries the worker would compute, published unless told otherwise."""

    def make(title: str, *, description: str = "", modalities: list[str], body_parts: list[str],
             sexes: list[str] = ("F", "M"), status: str = Dataset.Status.PUBLISHED,
             price: str = "5.00", studies: int = 3) -> Dataset:
        dataset = dataset_create(provider=provider, acting_user=alice, title=title, description=description,
                                 price_per_study=Decimal(price))
        Dataset.objects.filter(pk=dataset.pk).update(
            modalities=modalities, body_parts=body_parts, sexes=list(sexes), age_bands=["50-59"],
            manufacturers=["SIEMENS"], study_count=studies, instance_count=studies * 10)
        dataset_refresh_search_vector(dataset_id=dataset.pk)
        if status != Dataset.Status.DRAFT:
            dataset_submit_for_review(dataset=dataset, acting_user=alice)
        if status == Dataset.Status.PUBLISHED:
            dataset_publish(dataset=dataset, acting_user=admin_user)
        dataset.refresh_from_db()
        return dataset

    return make


@pytest.fixture
def catalog(make_dataset):
    """Four published datasets and one draft, all of Alpha Imaging."""
    return {
        "chest_ct": make_dataset("Lung nodule CT", description="Incidental pulmonary nodules, follow-up scans",
                                 modalities=["CT"], body_parts=["CHEST"], sexes=["F", "M"], price="10.00"),
        "brain_mr": make_dataset("Glioma MRI", description="Preoperative tumour imaging",
                                 modalities=["MR"], body_parts=["BRAIN"], sexes=["F"], price="30.00"),
        "abdomen_ct": make_dataset("Liver lesions", description="Contrast-enhanced portal venous phase",
                                   modalities=["CT"], body_parts=["ABDOMEN"], sexes=["M"], price="20.00"),
        "chest_mr": make_dataset("Cardiac MRI", description="Cine sequences of the heart",
                                 modalities=["MR"], body_parts=["CHEST"], sexes=["M"], price="40.00"),
        "draft": make_dataset("Unreleased lung CT", description="Pulmonary nodules, not yet reviewed",
                              modalities=["CT"], body_parts=["CHEST"], status=Dataset.Status.DRAFT),
    }


def search(**query: object) -> list[str]:
    params = search_params_from(query_dict(**query))
    return [d.title for d in dataset_search(params=params)]


def query_dict(**query: object) -> QueryDict:
    data = QueryDict(mutable=True)
    for key, value in query.items():
        data.setlist(key, list(value) if isinstance(value, (list, tuple)) else [str(value)])
    return data


def facet_counts(**query: object) -> dict[str, dict[str, int]]:
    facets = dataset_facets(params=search_params_from(query_dict(**query)))
    return {name: {row["value"]: row["count"] for row in rows} for name, rows in facets.items()}


# ---- visibility --------------------------------------------------------------------------
def test_it_hides_unpublished_datasets(catalog, make_dataset):
    make_dataset("Waiting for review CT", modalities=["CT"], body_parts=["CHEST"], status=Dataset.Status.IN_REVIEW)
    titles = search()
    assert sorted(titles) == ["Cardiac MRI", "Glioma MRI", "Liver lesions", "Lung nodule CT"]
    assert search(q="unreleased") == []
    assert search(q="review") == []
    assert facet_counts()["modality"] == {"CT": 2, "MR": 2}


def test_it_hides_a_dataset_moved_back_to_draft(catalog, alice):
    dataset_transition(dataset=catalog["brain_mr"], to=Dataset.Status.DRAFT, acting_user=alice)
    assert "Glioma MRI" not in search()


# ---- keywords ----------------------------------------------------------------------------
@pytest.mark.parametrize("q, expected", [
    ("glioma", ["Glioma MRI"]),                     # a title word
    ("lesions", ["Liver lesions"]),
    ("pulmonary nodules", ["Lung nodule CT"]),      # description words, stemmed
    ("tumour", ["Glioma MRI"]),
    ("heart", ["Cardiac MRI"]),
    ("brain", ["Glioma MRI"]),                      # a body part
    ("abdomen", ["Liver lesions"]),
    ("MR", ["Cardiac MRI", "Glioma MRI"]),          # a modality
    ("CT chest", ["Lung nodule CT"]),               # both must match
    ("xylophone", []),
])
def test_it_finds_datasets_by_keywords(catalog, q, expected):
    assert sorted(search(q=q)) == expected


def test_it_finds_an_ingested_dataset_by_the_body_part_and_modality_in_its_images(provider, alice, admin_user):
    dataset = dataset_create(provider=provider, acting_user=alice, title="Neuro collection")
    patient = fake_patients(1, seed=5)[0]
    files = generate_study_files(patient=patient, modality="MR", n_series=1, n_instances=2, study_index=0,
                                 seed=5, body_part="BRAIN")
    batch = upload_batch_create(dataset=dataset, files=[(n, io.BytesIO(d)) for n, d in files], acting_user=alice)
    upload_batch_ingest(batch_id=batch.pk)
    dataset_submit_for_review(dataset=dataset, acting_user=alice)
    dataset_publish(dataset=dataset, acting_user=admin_user)

    assert search(q="brain") == ["Neuro collection"]
    assert search(q="MR") == ["Neuro collection"]
    assert search(modality="MR", body_part="BRAIN") == ["Neuro collection"]
    assert search(q="CT") == []


def test_it_ranks_a_title_match_above_a_description_match(make_dataset):
    make_dataset("Various scans", description="Includes some knee images", modalities=["MR"], body_parts=["KNEE"])
    make_dataset("Knee cartilage", description="Sagittal series", modalities=["MR"], body_parts=["KNEE"])
    assert search(q="cartilage knee") == ["Knee cartilage"]
    assert search(q="knee")[0] == "Knee cartilage"


# ---- filters and facets -----------------------------------------------------------------
def test_it_filters_by_facet_values_with_or_inside_and_and_across_facets(catalog):
    assert sorted(search(modality="CT")) == ["Liver lesions", "Lung nodule CT"]
    assert sorted(search(body_part=["BRAIN", "ABDOMEN"])) == ["Glioma MRI", "Liver lesions"]
    assert search(modality="CT", body_part="CHEST") == ["Lung nodule CT"]
    assert search(modality="MR", sex="F") == ["Glioma MRI"]
    assert search(provider="Alpha Imaging", body_part="ABDOMEN") == ["Liver lesions"]
    assert search(provider="Nobody Imaging") == []


def test_it_counts_each_facet_with_every_other_filter_applied_but_its_own(catalog):
    counts = facet_counts(modality="CT", body_part="CHEST")

    # modality: only body_part=CHEST applies → Lung nodule CT and Cardiac MRI
    assert counts["modality"] == {"CT": 1, "MR": 1}
    # body part: only modality=CT applies → Lung nodule CT and Liver lesions
    assert counts["body_part"] == {"CHEST": 1, "ABDOMEN": 1}
    # the rest: both filters apply → Lung nodule CT only
    assert counts["sex"] == {"F": 1, "M": 1}
    assert counts["provider"] == {"Alpha Imaging": 1}
    assert counts["manufacturer"] == {"SIEMENS": 1}


def test_it_counts_facets_without_filters_over_all_published_datasets(catalog):
    counts = facet_counts()
    assert counts["modality"] == {"CT": 2, "MR": 2}
    assert counts["body_part"] == {"CHEST": 2, "BRAIN": 1, "ABDOMEN": 1}
    assert counts["sex"] == {"F": 2, "M": 3}
    assert counts["provider"] == {"Alpha Imaging": 4}


def test_it_applies_the_keyword_query_to_every_facet(catalog):
    counts = facet_counts(q="MRI")
    assert counts["modality"] == {"MR": 2}
    assert counts["body_part"] == {"BRAIN": 1, "CHEST": 1}


def test_it_marks_selected_facet_values_and_labels_sexes(catalog):
    facets = dataset_facets(params=search_params_from(query_dict(modality="CT", sex="F")))
    modality = {row["value"]: row["selected"] for row in facets["modality"]}
    assert modality == {"CT": True, "MR": False}
    # sex is counted with modality=CT only: Lung nodule CT (F, M) and Liver lesions (M)
    assert {row["value"]: (row["label"], row["count"], row["selected"]) for row in facets["sex"]} == {
        "F": ("Female", 1, True), "M": ("Male", 2, False)}


@pytest.mark.parametrize("sort, expected", [
    ("price", ["Lung nodule CT", "Liver lesions", "Glioma MRI", "Cardiac MRI"]),
    ("-price", ["Cardiac MRI", "Glioma MRI", "Liver lesions", "Lung nodule CT"]),
    ("newest", ["Cardiac MRI", "Liver lesions", "Glioma MRI", "Lung nodule CT"]),
])
def test_it_sorts_results(catalog, sort, expected):
    assert search(sort=sort) == expected


# ---- bad input --------------------------------------------------------------------------
def test_it_refuses_an_unknown_filter_and_names_it(catalog):
    with pytest.raises(InvalidQueryError) as excinfo:
        search_params_from(query_dict(modality="CT", colour="blue", zzz="1"))
    assert "colour" in excinfo.value.message
    assert "zzz" in excinfo.value.message
    assert "modality" in excinfo.value.message  # the known filters are listed
    assert excinfo.value.code == "invalid_search"


def test_it_refuses_an_unknown_sort(catalog):
    with pytest.raises(InvalidQueryError, match="Unknown sort 'cheapest'"):
        search_params_from(query_dict(sort="cheapest"))


def test_it_accepts_a_10000_character_query(catalog):
    query = "lung " * 2000
    assert len(query) == 10_000
    params = search_params_from(query_dict(q=query))
    assert len(params.q) <= 200
    assert [d.title for d in dataset_search(params=params)] == ["Lung nodule CT"]
    assert dataset_facets(params=params)["modality"] == [
        {"value": "CT", "label": "CT (computed tomography)", "count": 1, "selected": False}]


@pytest.mark.parametrize("q", [
    "'; DROP TABLE catalog_dataset--",
    "a & | ! (",
    "!!!",
    "nodule:*",
    "\"unbalanced quote",
    "-",
    "or or and",
    "<-> <2> )(",
    "\\",
    "%_%",
])
def test_it_treats_sql_and_tsquery_syntax_as_plain_words(catalog, q):
    params = search_params_from(query_dict(q=q))
    results = list(dataset_search(params=params))
    dataset_facets(params=params)
    assert all(d.status == Dataset.Status.PUBLISHED for d in results)
    assert Dataset.objects.count() == 5


def test_it_searches_with_empty_params(catalog):
    assert len(list(dataset_search(params=SearchParams()))) == 4


# ---- life cycle ---------------------------------------------------------------------------
def test_it_refuses_to_submit_a_dataset_without_images(dataset, alice):
    with pytest.raises(CatalogError) as excinfo:
        dataset_submit_for_review(dataset=dataset, acting_user=alice)
    assert excinfo.value.code == "empty_dataset"
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.DRAFT


def test_it_submits_then_publishes_a_dataset_with_images_and_audits_each_move(dataset, ingest, alice, admin_user):
    ingest(dataset, ct_files(n_patients=1, n_instances=1))
    in_review = dataset_submit_for_review(dataset=dataset, acting_user=alice)
    assert in_review.status == Dataset.Status.IN_REVIEW
    assert in_review.published_at is None

    published = dataset_publish(dataset=dataset, acting_user=admin_user)
    assert published.status == Dataset.Status.PUBLISHED
    assert published.published_at is not None
    moves = list(AuditEvent.objects.filter(object_type="catalog.dataset", object_id=str(dataset.pk),
                                           action__in=["dataset.in_review", "dataset.published"])
                 .order_by("id").values_list("action", "actor_label", "detail"))
    assert moves == [
        ("dataset.in_review", "alice", {"from": "draft", "to": "in_review", "reason": ""}),
        ("dataset.published", "admin", {"from": "in_review", "to": "published", "reason": ""}),
    ]


def test_it_refuses_to_publish_a_draft(dataset, ingest, admin_user):
    ingest(dataset, ct_files(n_patients=1, n_instances=1))
    with pytest.raises(InvalidTransitionError, match="cannot move from Draft to Published"):
        dataset_publish(dataset=dataset, acting_user=admin_user)
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.DRAFT


def test_it_refuses_to_publish_for_an_unapproved_provider(make_member, admin_user):
    erin, org = make_member("erin", "Echo Scans", "provider", approved=False)
    dataset = dataset_create(provider=org, acting_user=erin, title="Echo CT")
    files = ct_files(n_patients=1, n_instances=1)
    batch = upload_batch_create(dataset=dataset, files=[(n, io.BytesIO(d)) for n, d in files], acting_user=erin)
    upload_batch_ingest(batch_id=batch.pk)
    dataset_submit_for_review(dataset=dataset, acting_user=erin)

    with pytest.raises(ProviderNotApprovedError, match="Echo Scans is not approved"):
        dataset_publish(dataset=dataset, acting_user=admin_user)
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.IN_REVIEW
    assert dataset.published_at is None
    assert not AuditEvent.objects.filter(action="dataset.published").exists()


def test_it_refuses_to_create_a_dataset_for_a_buyer_organization(bob):
    from marketplace.models import Organization

    buyer_org = Organization.objects.get(name="Bravo AI")
    with pytest.raises(CatalogError, match="Only provider organizations"):
        dataset_create(provider=buyer_org, acting_user=bob, title="Not allowed")


ALL_MOVES = [(old, new) for old in Dataset.Status for new in Dataset.Status if old != new]


@pytest.mark.parametrize("old, new", ALL_MOVES, ids=[f"{o.value}->{n.value}" for o, n in ALL_MOVES])
def test_it_follows_the_dataset_transition_table(dataset, alice, old, new):
    Dataset.objects.filter(pk=dataset.pk).update(status=old, instance_count=1)  # as if images were ingested
    if new in Dataset.STATUS_TRANSITIONS[old]:
        moved = dataset_transition(dataset=dataset, to=new, acting_user=alice)
        assert moved.status == new
        assert AuditEvent.objects.filter(action=f"dataset.{new.value}", object_id=str(dataset.pk)).exists()
    else:
        with pytest.raises(InvalidTransitionError):
            dataset_transition(dataset=dataset, to=new, acting_user=alice)
        dataset.refresh_from_db()
        assert dataset.status == old


def test_it_is_quiet_when_the_dataset_is_already_in_the_target_status(dataset, alice):
    before = AuditEvent.objects.count()
    assert dataset_transition(dataset=dataset, to=Dataset.Status.DRAFT, acting_user=alice).status == "draft"
    assert AuditEvent.objects.count() == before
