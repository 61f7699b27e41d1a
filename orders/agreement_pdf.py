"""An order's data use agreement as a document (HTML page and reportlab PDF): the parties,
the order's lines, the agreement text exactly as accepted with its SHA-256, and the
signature manifest (each signature's printed name, meaning, server time, the SHA-256 of
the record it signed, and whether the contract still hashes to it). Names and ids only:
no PHI exists in orders."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from django.conf import settings

from orders.currency import format_money
from orders.models import Contract
from orders.signatures import printed_name, record_sha256, signature_verify, signatures_for

if TYPE_CHECKING:
    from reportlab.platypus import Paragraph


@dataclass(frozen=True)
class AgreementLine:
    dataset: str
    provider: str
    study_count: int
    amount: str


@dataclass(frozen=True)
class ManifestRow:
    printed_name: str
    meaning: str
    signed_at: str  # server time, UTC ISO 8601
    record_sha256: str
    factors: str
    matches: bool


@dataclass(frozen=True)
class AgreementDocument:
    contract: Contract
    buyer: str
    buyer_organization: str
    providers: list[str]
    lines: list[AgreementLine]
    lines_hidden: bool  # lines of other providers left out for this viewer
    total: str
    text: str
    text_sha256: str
    record_sha256: str  # the contract's signed record as it hashes now
    manifest: list[ManifestRow]


def agreement_document(contract: Contract, *, provider_ids: set[int] | None = None) -> AgreementDocument:
    """The agreement's content for the page and the PDF. ``provider_ids``: show only these
    providers' lines (a provider's view); None shows every line and the total."""
    order = contract.order
    lines = list(order.lines.select_related("dataset", "provider").order_by("pk"))
    shown = [line for line in lines if provider_ids is None or line.provider_id in provider_ids]
    return AgreementDocument(
        contract=contract,
        buyer=printed_name(order.buyer),
        buyer_organization=order.buyer_organization.name if order.buyer_organization_id else "",
        providers=sorted({line.provider.name for line in shown}),
        lines=[AgreementLine(dataset=line.dataset.title, provider=line.provider.name, study_count=line.study_count,
                             amount=format_money(line.amount_minor, line.currency)) for line in shown],
        lines_hidden=len(shown) < len(lines),
        total=format_money(order.total_minor, order.currency) if provider_ids is None else "",
        text=contract.text,
        text_sha256=hashlib.sha256(contract.text.encode("utf-8")).hexdigest(),
        record_sha256=record_sha256(contract),
        manifest=[
            ManifestRow(printed_name=s.printed_name, meaning=s.get_meaning_display(),
                        signed_at=s.signed_at.astimezone(UTC).isoformat(timespec="seconds"),
                        record_sha256=s.record_sha256, factors=s.factors, matches=signature_verify(s, contract))
            for s in signatures_for(contract)
        ],
    )


def _p(text: str, style) -> Paragraph:  # noqa: ANN001 - a reportlab style
    from reportlab.platypus import Paragraph  # imported when used (see agreement_pdf)

    return Paragraph(escape(str(text)), style)


def _text_paragraphs(text: str, style) -> list[Paragraph]:  # noqa: ANN001 - a reportlab style
    """The stored text line by line, each line wrapped to the page: line breaks and leading
    spaces as stored (the hash printed below it is of the stored text itself)."""
    from reportlab.platypus import Paragraph  # imported when used (see agreement_pdf)

    out = []
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        indent = "&nbsp;" * (len(line) - len(stripped))
        out.append(Paragraph(indent + escape(stripped) if stripped else "&nbsp;", style))
    return out


def agreement_pdf(contract: Contract, *, provider_ids: set[int] | None = None) -> bytes:
    """The agreement with its signature manifest as a PDF (the invoice's house style)."""
    # imported when used: reportlab costs every web worker memory (about 14 MB with its
    # fonts and platypus) for the rare request that downloads a PDF; the HTML page
    # (agreement_document) needs none of it
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate, Spacer, Table, TableStyle

    doc = agreement_document(contract, provider_ids=provider_ids)
    order = contract.order
    styles = getSampleStyleSheet()
    body, small, code = styles["BodyText"], styles["Italic"], styles["Code"]
    title = f"Data use agreement — order #{order.pk}"
    parties = [["Platform", f"{settings.PLATFORM_LEGAL_NAME} · {settings.PLATFORM_ADDRESS}"],
               ["Buyer", doc.buyer + (f", {doc.buyer_organization}" if doc.buyer_organization else "")],
               ["Provider(s)", ", ".join(doc.providers)],
               ["Order", f"#{order.pk}"],
               ["Agreement", f"contract {contract.pk}, version {contract.template_version}, "
                             f"accepted {contract.accepted_at.astimezone(UTC).isoformat(timespec='seconds')}"],
               ["Review", contract.get_status_display()]]
    story = [_p(title, styles["Title"]),
             Table([[a, _p(b, body)] for a, b in parties], colWidths=[30 * mm, 140 * mm],
                   style=[("FONTNAME", (0, 0), (0, -1), "Helvetica-Bold"), ("VALIGN", (0, 0), (-1, -1), "TOP")]),
             Spacer(1, 5 * mm)]
    rows = [["Dataset", "Provider", "Studies", "Amount"]]
    rows += [[_p(line.dataset, body), _p(line.provider, body), str(line.study_count), line.amount]
             for line in doc.lines]
    if doc.total:
        rows.append(["", "", "Total", doc.total])
    grid = TableStyle([("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"), ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                       ("ALIGN", (2, 0), (3, -1), "RIGHT"), ("VALIGN", (0, 0), (-1, -1), "TOP")])
    story += [Table(rows, colWidths=[65 * mm, 50 * mm, 20 * mm, 35 * mm], style=grid, repeatRows=1)]
    if doc.lines_hidden:
        story.append(_p("Lines of other providers on this order are not shown.", small))
    story += [Spacer(1, 5 * mm), _p("Agreement text (as accepted)", styles["Heading3"]),
              *_text_paragraphs(doc.text, code),
              _p(f"SHA-256 of the agreement text (UTF-8): {doc.text_sha256}", small), Spacer(1, 5 * mm),
              _p("Signature manifest", styles["Heading3"])]
    if doc.manifest:
        rows = [["Printed name", "Meaning", "Server time (UTC)", "Signed record SHA-256", "Still matches"]]
        rows += [[_p(m.printed_name, body), m.meaning, m.signed_at, _p(m.record_sha256, small),
                  "yes" if m.matches else "NO: changed since signing"] for m in doc.manifest]
        story.append(Table(rows, colWidths=[32 * mm, 20 * mm, 38 * mm, 55 * mm, 25 * mm], style=grid, repeatRows=1))
    else:
        story.append(_p("No electronic signature is recorded for this agreement.", body))
    story.append(_p(f"The signed record (order, buyer, lines, currency, total, agreement version and text hash) "
                    f"hashes now to {doc.record_sha256}.", small))
    buffer = io.BytesIO()
    # Uncompressed (a few KB): its text stays searchable.
    SimpleDocTemplate(buffer, pagesize=A4, title=title, author=settings.PLATFORM_LEGAL_NAME,
                      leftMargin=18 * mm, rightMargin=18 * mm, invariant=1, pageCompression=0).build(story)
    return buffer.getvalue()
