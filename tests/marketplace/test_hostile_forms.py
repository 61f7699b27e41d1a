"""Hostile strings into every HTML page that takes input (hypothesis): never a 5xx, and a
refusal names the field.

Strings: NUL, lone surrogates, 10,000 characters, sNaN, NaN, Infinity, 1e400, -0, 1e10,
ten decimal places, digits of other scripts, bracketed "nested" parameter names,
repeated parameters. Bodies and query strings are encoded by hand (surrogatepass), as a
browser or a script could send them. Derandomized, a fixed number of examples per page.
"""
from __future__ import annotations

import html
import posixpath
import re
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]

EXAMPLES_PER_PAGE = 25
HOSTILE = ["\x00", "a\x00b", "\ud800", "x\udfffy", "x" * 10_000, "sNaN", "NaN", "-NaN", "Infinity", "-inf",
           "1e400", "-1e400", "-0", "0E-1000000", "1e10", "9999999999.999", "10.1234567891", "-1", "", " ",
           "٣", "1_000", "0x10", "9" * 5000, "<script>alert(1)</script>", "'; drop table x; --", "F", "CT",
           "true", "[]", "{}", "%00", "\u202e", "\ufeff", "😀"]
value = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=30))
NESTED = ["q[]", "sex[0]", "criteria[q][0]", "a[b][c]", "name[]", "title[x]"]


@dataclass
class Page:
    method: str
    path: str
    user: str  # "alice" (provider), "bob" (buyer), "" (anonymous)
    fields: list[str]
    files: bool = False  # multipart with uploaded files
    business: list[str] = field(default_factory=list)  # refusals that are about state, not a field


def _encode(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k.encode('utf-8', 'surrogatepass'))}={quote(v.encode('utf-8', 'surrogatepass'))}"
                    for k, v in pairs)


def _names(pairs: list[tuple[str, str]]) -> set[str]:
    return {k for k, _ in pairs}


def _mentions(text: str, names: set[str], extra: list[str]) -> bool:
    low = html.unescape(text).lower()
    words = {n.lower() for n in names} | {n.lower().replace("_", " ") for n in names}
    # A name holding NUL or a surrogate is named escaped (\x00, \ud800).
    words |= {re.sub("[\x00\ud800-\udfff]", lambda m: f"\\x{ord(m.group()):02x}" if m.group() == "\x00"
                     else f"\\u{ord(m.group()):04x}", n.lower())[:40] for n in names}
    return any(w and w in low for w in words) or any(e.lower() in low for e in extra)


def _error_text(response) -> str:  # noqa: ANN001
    """What the page says is wrong: the body of a 400, or the error flashes after a redirect."""
    if response.status_code == 400:
        return response.content.decode(errors="replace")
    if response.context and "messages" in response.context:
        return " ".join(str(m) for m in response.context["messages"] if m.level_tag == "error")
    return ""


def _check(response, pairs: list[tuple[str, str]], page: Page) -> None:  # noqa: ANN001
    assert response.status_code < 500, (page.path, pairs)
    form = response.context.get("form") if response.context else None
    if response.status_code == 400 and hasattr(form, "errors") and form.errors:
        # A Django form: each error is shown under its field's label.
        assert set(form.errors) <= set(form.fields) | {"__all__"}
        return
    error = _error_text(response)
    if error:
        assert _mentions(error, _names(pairs) | set(page.fields), page.business), (page.path, pairs, error[:300])


@pytest.fixture
def world(settings, published_dataset, alice, bob, dua):  # noqa: ANN001, ANN201
    from catalog.models import DataRequest

    settings.QUOTE_RATE = settings.COUNT_QUERY_RATE = "1000000/hour"
    open_request = DataRequest.objects.create(requester=bob, title="Knee MRI", description="Any knee MRI")
    clients = {"": Client(), "alice": Client(), "bob": Client()}
    clients["alice"].force_login(alice)
    clients["bob"].force_login(bob)
    ds = published_dataset.pk
    draft = published_dataset.__class__.objects.create(provider=published_dataset.provider, title="Draft",
                                                       created_by=alice)
    pages = [
        Page("GET", "/datasets/", "", ["q", "modality", "body_part", "sex", "provider", "sort", "page"]),
        Page("GET", "/cohorts/", "", ["q", "sex", "age_band", "price_min", "price_max", "datasets", "sort",
                                      "page", "has_report", "condition"]),
        Page("GET", f"/datasets/{ds}/order/", "bob", ["q", "sex", "price_max", "modality"],
             business=["threshold", "no studies"]),
        Page("POST", f"/datasets/{ds}/order/", "bob", ["sex", "expected_total", "accept", "price_min"],
             business=["price changed", "agreement", "threshold", "no studies"]),
        Page("POST", "/saved/new/", "bob", ["name", "notify", "sex", "q", "price_max"]),
        Page("POST", "/requests/", "bob", ["title", "description"]),
        Page("POST", f"/requests/{open_request.pk}/", "alice", ["offer", "price_per_study", "provider", "dataset",
                                                                "action"],
             business=["choose a dataset", "only the researcher", "describe your offer"]),
        Page("POST", "/provider/datasets/new/", "alice",
             ["title", "description", "licence_type", "licence_text", "pricing_model", "price", "currency",
              "sample_study_count", "academic_discount", "volume_tiers", "country", "conditions",
              "disclosure_threshold", "allow_study_browsing"]),
        Page("POST", f"/provider/datasets/{draft.pk}/", "alice",
             ["save", "ds-title", "ds-pricing_model", "ds-price", "ds-currency", "ds-sample_study_count",
              "ds-academic_discount", "ds-volume_tiers", "ds-disclosure_threshold", "ds-conditions",
              "ds-licence_type"]),
        Page("POST", f"/provider/datasets/{draft.pk}/upload/", "alice", ["files"], files=True,
             business=["not a zip", "archive"]),
    ]
    return clients, pages


def _pairs(draw, page: Page) -> list[tuple[str, str]]:  # noqa: ANN001
    chosen = draw(st.lists(st.sampled_from(page.fields + NESTED), min_size=1, max_size=5))
    pairs = [(name, draw(value)) for name in chosen]  # a name drawn twice is a repeated parameter
    if "save" in page.fields:
        pairs.append(("save", "1"))
    return pairs


@st.composite
def requests(draw, page: Page):  # noqa: ANN001, ANN201
    if page.files:
        names = draw(st.lists(st.sampled_from(["a.dcm", "", "\x00.dcm", "x" * 300, "../../etc/passwd", "é.zip",
                                               "b.zip", "c.dcm"]), min_size=1, max_size=3))
        contents = draw(st.lists(st.sampled_from([b"", b"junk", b"PK\x03\x04junk", b"\x00" * 200]),
                                 min_size=len(names), max_size=len(names)))
        return [(n, c) for n, c in zip(names, contents)]
    return _pairs(draw, page)


def _send(client: Client, page: Page, pairs):  # noqa: ANN001, ANN201
    if page.files:
        uploads = [SimpleUploadedFile(name or "unnamed", content) for name, content in pairs]
        return client.post(page.path, {"files": uploads}, follow=True)
    if page.method == "GET":
        return client.get(f"{page.path}?{_encode(pairs)}")
    return client.post(page.path, _encode(pairs), content_type="application/x-www-form-urlencoded",
                       follow=True)


PAGE_NAMES = ["dataset_list", "cohort_builder", "order_get", "order_post", "saved_search_new",
              "data_request_new", "data_request_answer", "dataset_new", "dataset_manage", "dataset_upload"]


@pytest.mark.parametrize("index", range(len(PAGE_NAMES)), ids=PAGE_NAMES)
def test_hostile_input_to_a_page_is_refused_naming_the_field_never_a_5xx(world, index: int) -> None:
    clients, pages = world
    page = pages[index]
    client = clients[page.user]

    @settings(max_examples=EXAMPLES_PER_PAGE, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(pairs=requests(page))
    def run(pairs) -> None:  # noqa: ANN001
        # An upload's refusal names the file, not the form field (as Django received it:
        # without NULs or folders, cut to 255 characters).
        named = ([(posixpath.basename(name.replace("\x00", ""))[:100] or "unnamed", "") for name, _ in pairs]
                 if page.files else pairs)
        _check(_send(client, page, pairs), named, page)

    run()
