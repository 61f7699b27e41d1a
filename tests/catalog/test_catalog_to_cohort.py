"""The catalog page leading to a cohort: matching studies and patients (disclosure rule),
removable chips in words, ticked values that stay when nothing matches, age order, the way
into the cohort builder and back, the cohort's mix as charts, and fill the gap."""
from __future__ import annotations

import html
import re
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from django.template import Context, Template
from django.test import Client

from catalog.facets import FACETS
from catalog.models import Dataset, Study
from catalog.search.memory.snapshots import snapshot_refresh
from catalog.search.vectors import studies_refresh_search_vector
from marketplace.models import Organization

pytestmark = pytest.mark.django_db

CHIP = re.compile(r'<a class="chip removable" href="([^"]*)" aria-label="Remove ([^"]*)">')
TICKED = re.compile(r'<input type="checkbox" name="(\w+)" value="([^"]*)" checked')


def _dataset(org: Organization, title: str, rows: list[tuple[str, str, str]]) -> Dataset:
    """rows: (sex, age band, body part) per study; two studies per patient."""
    dataset = Dataset.objects.create(provider=org, title=title, status=Dataset.Status.PUBLISHED,
                                     price_per_study=Decimal("3.00"), allow_study_browsing=True)
    Study.objects.bulk_create(Study(
        dataset=dataset, study_uid=f"2.25.{dataset.pk}.{i}", pseudo_patient_id=f"{title}-{i // 2}",
        patient_sex=sex, age_band=band, body_part=body, modalities=["CT"], series_count=1, instance_count=2,
        description=f"{body.lower()} study") for i, (sex, band, body) in enumerate(rows))
    Dataset.objects.filter(pk=dataset.pk).update(
        study_count=len(rows), patient_count=len({i // 2 for i in range(len(rows))}), series_count=len(rows),
        instance_count=2 * len(rows), modalities=["CT"], sexes=sorted({r[0] for r in rows}),
        age_bands=sorted({r[1] for r in rows}), body_parts=sorted({r[2] for r in rows}))
    studies_refresh_search_vector(dataset=dataset)
    snapshot_refresh(dataset_id=dataset.pk)
    dataset.refresh_from_db()
    return dataset


@pytest.fixture
def two(provider, make_member):
    # Counts per age band deliberately not in age order (80+ is the largest).
    chest = _dataset(provider, "Chest", [("F", "80+", "CHEST")] * 12 + [("M", "80+", "CHEST")] * 8
                     + [("F", "18-29", "CHEST")] * 8 + [("M", "18-29", "CHEST")] * 4
                     + [("F", "40-49", "CHEST")] * 5 + [("M", "40-49", "CHEST")] * 3)
    _, omega = make_member("olga", "Omega Scans", Organization.Kind.PROVIDER)
    head = _dataset(omega, "Head", [("F", "60-69", "HEAD")] * 24 + [("M", "60-69", "HEAD")] * 6)
    return {"chest": chest, "head": head}


def _page(client: Client, url: str, params: dict | None = None) -> str:
    response = client.get(url, params or {})
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def _total(page: str) -> str:
    found = re.search(r'id="catalog-total"><strong>(.*?) studies · (.*?) patients</strong>', page, re.S)
    assert found, "no total"
    return found.group(1), found.group(2)


def _card_match(page: str, title: str) -> str:
    card = page.split(f">{title}</a></h3>")[1].split("</article>")[0]
    return re.search(r'<p class="matching"><b>(.*?)</b>', card).group(1)


def _hidden(text: str) -> bool:
    return 'class="suppressed"' in text


# ---- matching studies and patients ------------------------------------------------------

def test_the_catalog_counts_matching_studies_and_patients(client, two) -> None:
    everything = _page(client, "/datasets/")
    assert _total(everything) == (f"{Study.objects.count()}", f"{70 // 2}")
    assert 'class="matching"' not in everything  # no filter: the cards' own totals say it

    chest_only = _page(client, "/datasets/", {"body_part": "CHEST"})
    assert _total(chest_only) == ("40", "20")
    assert _card_match(chest_only, "Chest") == "40" and ">Head</a>" not in chest_only

    women = _page(client, "/datasets/", {"sex": "F"})
    studies, patients = _total(women)
    assert studies == str(Study.objects.filter(patient_sex="F").count()) == "49"
    # 25 patients with a woman's study, of the 35 the two cards show: the 10 others would
    # follow by subtraction, so the patients are hidden.
    with_f = len(set(Study.objects.filter(patient_sex="F").values_list("pseudo_patient_id")))
    assert (with_f, 35 - with_f) == (25, 10) and _hidden(patients)


def test_a_card_hides_a_match_that_its_own_total_would_give(client, two, admin_user) -> None:
    # Head: 24 of its 30 studies are women; 30 - 24 would give the 6 men. Its cell is hidden,
    # so Chest's is too (a hidden cell never stands alone); the total of both stays.
    women = _page(client, "/datasets/", {"sex": "F"})
    assert _hidden(_card_match(women, "Head")) and _hidden(_card_match(women, "Chest"))
    assert _total(women)[0] == "49"
    # Head alone: its one hidden cell would be the total itself, so the total is hidden too.
    head_women = _page(client, "/datasets/", {"sex": "F", "body_part": "HEAD"})
    studies, patients = _total(head_women)
    assert _hidden(studies) and _hidden(patients) and _hidden(_card_match(head_women, "Head"))
    assert "24" not in re.sub(r"<aside.*?</aside>", "", head_women, flags=re.S)
    # Staff allowed to see every dataset count exactly.
    staff = Client()
    staff.force_login(admin_user)
    exact = _page(staff, "/datasets/", {"sex": "F", "body_part": "HEAD"})
    assert _total(exact)[0] == "24" and _card_match(exact, "Head") == "24"


def test_a_small_match_is_hidden_and_the_total_with_it(client, two) -> None:
    # Men aged 40-49: 3 studies, all in Chest.
    page = _page(client, "/datasets/", {"sex": "M", "age_band": "40-49"})
    assert _hidden(_card_match(page, "Chest")) and _hidden(_total(page)[0]) and _hidden(_total(page)[1])


# ---- chips, clearing, ticked values -----------------------------------------------------

def test_chips_are_labelled_and_each_removes_only_its_criterion(client, two) -> None:
    params = {"sex": ["F", "M"], "body_part": "CHEST", "q": "chest", "sort": "newest"}
    page = _page(client, "/datasets/", params)
    chips = [(label, parse_qs(urlsplit(href).query)) for href, label in CHIP.findall(page)]
    assert [label for label, _ in chips] == ["Body part: Chest", "Sex: Female", "Sex: Male", "Keywords: “chest”"]
    full = {"sex": ["F", "M"], "body_part": ["CHEST"], "q": ["chest"], "sort": ["newest"]}
    for (label, rest), (key, value) in zip(chips, [("body_part", "CHEST"), ("sex", "F"), ("sex", "M"),
                                                    ("q", "chest")]):
        expected = {k: [v for v in vs if not (k == key and v == value)] for k, vs in full.items()}
        assert rest == {k: vs for k, vs in expected.items() if vs}, label
    # Following "Sex: Female" unticks Female only.
    without_f = _page(client, "/datasets/" + CHIP.findall(page)[1][0])
    assert ("sex", "M") in TICKED.findall(without_f) and ("sex", "F") not in TICKED.findall(without_f)
    assert [label for _, label in CHIP.findall(without_f)] == ["Body part: Chest", "Sex: Male", "Keywords: “chest”"]


def test_clear_filters_keeps_the_keyword(client, two) -> None:
    page = _page(client, "/datasets/", {"sex": "F", "q": "chest"})
    clear = re.search(r'<a href="([^"]*)" id="clear-filters">Clear filters</a>', page).group(1)
    assert parse_qs(urlsplit(clear).query) == {"q": ["chest"]}
    cleared = _page(client, "/datasets/" + clear)
    assert 'value="chest"' in cleared and not TICKED.findall(cleared)
    assert [label for _, label in CHIP.findall(cleared)] == ["Keywords: “chest”"]
    # The keyword's own chip clears it.
    assert CHIP.findall(cleared)[0][0] == "?"


def test_a_ticked_value_stays_when_nothing_matches(client, two) -> None:
    # No dataset has both a HEAD and an 18-29 study.
    page = _page(client, "/datasets/", {"body_part": "HEAD", "age_band": "18-29"})
    assert "No dataset matches" in page
    assert set(TICKED.findall(page)) == {("body_part", "HEAD"), ("age_band", "18-29")}
    cohort = _page(client, "/cohorts/", {"body_part": "HEAD", "age_band": "18-29"})
    assert 'id="cohort-empty"' in cohort
    assert set(TICKED.findall(cohort)) == {("body_part", "HEAD"), ("age_band", "18-29")}
    row = re.search(r'value="18-29" checked> [^<]*</span><span class="count">([^<]*)</span>', cohort)
    assert row and row.group(1) == "0"


def _age_rows(page: str, where: str) -> list[str]:
    block = page.split(where, 1)[1]
    return [v for v in re.findall(r'name="age_band" value="([^"]*)"', block.split("</aside>")[0])]


def test_age_bands_are_in_age_order_everywhere(client, two) -> None:
    order = list(FACETS["age_band"].choices)
    catalog = _page(client, "/datasets/")
    listed = _age_rows(catalog, "<h3>Age</h3>")
    assert listed == sorted(listed, key=order.index) and len(listed) == 4
    cohort = _page(client, "/cohorts/")
    listed = _age_rows(cohort, "<h3>Age</h3>")
    assert listed == sorted(listed, key=order.index) and len(listed) == 4
    mix = cohort.split('id="mix-age_band"')[1].split("</figure>")[0]
    labels = re.findall(r'<span class="bar-label">([^<]*)</span>', mix)
    assert labels == ["18-29", "40-49", "60-69", "80+"]  # by count it would start with 60-69, then 80+


# ---- into the cohort builder and back ---------------------------------------------------

def test_the_catalog_leads_to_the_cohort_builder_with_the_same_criteria(client, two) -> None:
    page = _page(client, "/datasets/", {"sex": "F", "body_part": "CHEST", "q": "chest", "sort": "newest"})
    href = re.search(r'id="to-cohort" href="([^"]*)"', page).group(1)
    assert urlsplit(href).path == "/cohorts/"
    assert parse_qs(urlsplit(href).query) == {"sex": ["F"], "body_part": ["CHEST"], "q": ["chest"]}
    cohort = _page(client, href)
    assert set(TICKED.findall(cohort)) == {("sex", "F"), ("body_part", "CHEST")}
    back = re.search(r'href="([^"]*)" id="to-catalog"', cohort).group(1)
    assert parse_qs(urlsplit(back).query) == {"sex": ["F"], "body_part": ["CHEST"], "q": ["chest"]}
    # A criterion the catalog does not offer is named, not silently carried.
    other = _page(client, "/cohorts/", {"sex": "F", "ethnicity": "ASIAN"})
    back = re.search(r'href="([^"]*)" id="to-catalog"', other).group(1)
    assert parse_qs(urlsplit(back).query) == {"sex": ["F"]} and "does not filter by Ethnicity" in other
    assert _page(client, back)


# ---- the cohort's mix and fill the gap --------------------------------------------------

def test_the_mix_is_drawn_as_accessible_charts(client, two) -> None:
    page = _page(client, "/cohorts/", {"body_part": "CHEST"})
    sex = page.split('id="mix-sex"')[1].split("</figure>")[0]
    assert "<figcaption>Sex: studies per value</figcaption>" in sex
    rows = re.findall(r'<span class="bar-label">([^<]*)</span><span class="bar" aria-hidden="true">'
                      r'<span style="width:([\d.]+)%"></span></span><span class="count">([^<]*)</span>', sex)
    assert rows == [("Female", "100.0", "25"), ("Male", "60.0", "15")]
    # A hidden cell has a label, no bar and the hidden marker as its number.
    men_40s = _page(client, "/cohorts/", {"sex": "M"})
    ages = men_40s.split('id="mix-age_band"')[1].split("</figure>")[0]
    hidden = re.findall(r'<span class="bar-label">([^<]*)</span><span class="bar" aria-hidden="true">'
                        r'<span style="width:0%"></span></span><span class="count"><span class="suppressed"', ages)
    assert "40-49" in hidden and not re.search(r'class="count">[1-9]<', ages)


def test_fill_the_gap_is_a_visible_control_with_readable_shares(client, two) -> None:
    page = _page(client, "/cohorts/")
    gap = page.split('id="fill-the-gap"')[1]
    assert f'<input type="checkbox" form="gap-form" name="datasets" value="{two["head"].pk}">' in gap
    assert 'id="gap-submit"' in gap and '<form method="get" action="/cohorts/" id="gap-form">' in page
    # What ticking Head and pressing the button asks for:
    started = _page(client, "/cohorts/", {"datasets": str(two["head"].pk)})
    gap = started.split('id="fill-the-gap"')[1]
    assert "Starting from" in gap and ">Head <span" in gap
    shares = re.findall(r"<strong>([^<]*)</strong> \(([^)]*) of the cohort\)", gap)
    assert ("18-29", "0 %") in shares and ("80+", "0 %") in shares
    assert "0.0" not in gap
    add = re.search(r'<a href="([^"]*)" class="gap-add" aria-label="Add Chest to the cohort"', gap).group(1)
    assert parse_qs(urlsplit(add).query)["datasets"] == sorted([str(two["head"].pk), str(two["chest"].pk)])
    both = _page(client, "/cohorts/" + add)
    assert re.search(r'id="cohort-total">70 studies', both)


@pytest.mark.parametrize(("value", "text"), [
    (0.123, "12 %"), (0.004, "<1 %"), (0.0, "0 %"), (0.5, "50 %"), (1, "100 %"), (0.0049, "<1 %"), (None, ""),
])
def test_shares_read_as_percentages(value, text) -> None:
    assert Template("{% load disclosure %}{{ v|share }}").render(Context({"v": value})) == html.escape(text)
