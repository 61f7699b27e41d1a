"""The agreement page and PDF: parties, lines, the text as accepted with its SHA-256, and the
signature manifest; for the buyer, the order's providers (their own lines) and staff only."""
from __future__ import annotations

import hashlib
import html
import re

import pytest
from django.urls import reverse

from factories.orders import approve_for_delivery, place_order
from marketplace.models import User
from orders.agreement_pdf import agreement_document, agreement_pdf
from orders.models import Contract, OrderLine, Signature

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


@pytest.fixture
def signed_order(published_dataset, bob, admin_user, dua):
    """Bob's order, signed by Bob at checkout and approved (signed) by the admin."""
    return approve_for_delivery(place_order(bob, published_dataset, dua), admin_user)


def pdf_strings(pdf: bytes) -> list[str]:
    """The shown strings of an uncompressed reportlab PDF (its (...) Tj operands), unescaped."""
    parts = re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", pdf)
    return [re.sub(r"\\(.)", r"\1", p.decode("latin-1")).replace("\xa0", " ") for p in parts]


def pdf_text(pdf: bytes) -> str:
    return " ".join(pdf_strings(pdf))


def words(text: str) -> str:
    return " ".join(text.split())


def test_the_buyer_sees_every_signature_with_its_meaning_and_hash(client, bob, signed_order):
    contract = signed_order.contract
    signatures = list(Signature.objects.filter(record_id=str(contract.pk)).order_by("signed_at", "id"))
    assert [s.meaning for s in signatures] == ["responsibility", "approval"]
    client.force_login(bob)
    assert reverse("order_agreement", args=[signed_order.pk]) in client.get(
        reverse("order_detail", args=[signed_order.pk])).content.decode()
    page = client.get(reverse("order_agreement", args=[signed_order.pk])).content.decode()
    rows = re.findall(r'<tr class="signature">(.*?)</tr>', page, flags=re.S)
    assert len(rows) == 2
    for row, signature, meaning in zip(rows, signatures, ["Responsibility", "Approval"]):
        assert signature.printed_name in row and f"<td>{meaning}</td>" in row
        assert signature.record_sha256 in row and "Matches the signed record" in row
        assert signature.signed_at.isoformat(timespec="seconds") in row
    text = html.unescape(re.search(r'<pre class="agreement-text">(.*?)</pre>', page, flags=re.S).group(1))
    assert text == contract.text
    assert hashlib.sha256(contract.text.encode()).hexdigest() in page
    line = signed_order.lines.get()
    assert line.dataset.title in page and "20.00 USD" in page  # two studies at 10.00
    assert reverse("order_agreement_pdf", args=[signed_order.pk]) in page


def test_a_changed_record_shows_as_changed_since_signing(client, bob, signed_order):
    OrderLine.objects.filter(order=signed_order).update(amount_minor=1)
    client.force_login(bob)
    page = client.get(reverse("order_agreement", args=[signed_order.pk])).content.decode()
    assert page.count("Changed since signing") == 2 and "Matches the signed record" not in page
    text = pdf_text(agreement_pdf(Contract.objects.get(pk=signed_order.contract.pk)))
    assert text.count("NO: changed since signing") == 2


def test_the_pdf_holds_the_parties_lines_text_hashes_and_manifest(client, bob, signed_order):
    client.force_login(bob)
    response = client.get(reverse("order_agreement_pdf", args=[signed_order.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    pdf = response.content
    assert pdf.startswith(b"%PDF")
    text = pdf_text(pdf)
    contract = signed_order.contract
    assert f"order #{signed_order.pk}" in text
    assert "Bravo AI" in text and "Alpha Imaging" in text
    assert signed_order.lines.get().dataset.title in text and "20.00 USD" in text
    assert words(contract.text) in words(text)
    assert hashlib.sha256(contract.text.encode()).hexdigest() in text
    for signature in Signature.objects.filter(record_id=str(contract.pk)):
        assert signature.record_sha256 in text and signature.printed_name in text
        assert signature.get_meaning_display() in text
    assert pdf_strings(pdf).count("yes") == 2  # the manifest's "still matches" column


def test_a_provider_on_the_order_opens_the_agreement(client, alice, signed_order):
    client.force_login(alice)
    page = client.get(reverse("order_agreement", args=[signed_order.pk]))
    assert page.status_code == 200
    assert page.content.decode().count('<tr class="signature">') == 2
    pdf = client.get(reverse("order_agreement_pdf", args=[signed_order.pk]))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert reverse("order_agreement", args=[signed_order.pk]) in client.get(reverse("provider_dashboard")).content.decode()


def test_each_provider_sees_only_its_own_lines(client, bob, published_dataset, second_provider_dataset, admin_user,
                                               dua):
    order = approve_for_delivery(place_order(bob, [published_dataset, second_provider_dataset], dua), admin_user)
    dave = User.objects.get(username="dave")
    doc = agreement_document(order.contract, provider_ids={second_provider_dataset.provider_id})
    assert [line.dataset for line in doc.lines] == ["Delta brain MR"] and doc.lines_hidden and doc.total == ""
    client.force_login(dave)
    page = client.get(reverse("order_agreement", args=[order.pk])).content.decode()
    # The lines table (studies, amounts) holds only dave's line; the signed text itself names
    # every dataset of the order with its terms (no prices): it is the contract as signed.
    table = page.split('<table class="lines-table">', 1)[1].split("</table>", 1)[0]
    assert "Delta brain MR" in table and published_dataset.title not in table and "Alpha Imaging" not in table
    assert "Lines of other providers on this order are not shown." in page
    client.force_login(bob)
    page = client.get(reverse("order_agreement", args=[order.pk])).content.decode()
    assert "Delta brain MR" in page and published_dataset.title in page and "not shown" not in page


def test_staff_open_any_agreement(client, admin_user, signed_order):
    client.force_login(admin_user)
    assert client.get(reverse("order_agreement", args=[signed_order.pk])).status_code == 200
    assert client.get(reverse("order_agreement_pdf", args=[signed_order.pk])).status_code == 200


@pytest.mark.parametrize("who", ["charlie", "dave"])
def test_anyone_else_gets_404(client, signed_order, second_provider_dataset, who, request):
    user = User.objects.get(username="dave") if who == "dave" else request.getfixturevalue(who)
    client.force_login(user)
    assert client.get(reverse("order_agreement", args=[signed_order.pk])).status_code == 404
    assert client.get(reverse("order_agreement_pdf", args=[signed_order.pk])).status_code == 404
    assert client.get(reverse("order_agreement", args=[signed_order.pk + 1000])).status_code == 404


def test_signed_out_visitors_are_sent_to_sign_in(client, signed_order):
    response = client.get(reverse("order_agreement_pdf", args=[signed_order.pk]))
    assert response.status_code == 302 and "login" in response["Location"]
