"""The invoice as a PDF (reportlab): number, dates, PO number, the platform's details, the
buyer, one row per line with its provider, and the total. Only names and ids: no PHI
exists in orders."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

from django.conf import settings

from orders.currency import format_money
from orders.models import Invoice

if TYPE_CHECKING:
    from reportlab.platypus import Paragraph


def _p(text: str, style) -> Paragraph:  # noqa: ANN001 - a reportlab style
    from xml.sax.saxutils import escape

    from reportlab.platypus import Paragraph  # imported when used (see invoice_pdf_bytes)

    return Paragraph(escape(str(text)), style)


def invoice_pdf_bytes(invoice: Invoice) -> bytes:
    # imported when used: reportlab costs every web worker memory (about 14 MB with its
    # fonts and platypus) for the rare request that downloads a PDF
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import SimpleDocTemplate, Spacer, Table, TableStyle

    order = invoice.order
    styles = getSampleStyleSheet()
    body, small = styles["BodyText"], styles["Italic"]
    buyer = order.buyer_organization.name if order.buyer_organization else order.buyer.get_full_name() or str(order.buyer)
    story = [
        _p(f"Invoice {invoice.number}", styles["Title"]),
        _p(f"{settings.PLATFORM_LEGAL_NAME} · {settings.PLATFORM_ADDRESS}"
           + (f" · Tax id {settings.PLATFORM_TAX_ID}" if settings.PLATFORM_TAX_ID else ""), body),
        Spacer(1, 4 * mm),
        Table([
            ["Bill to", buyer],
            ["Order", f"#{order.pk}"],
            ["Purchase order", invoice.po_number or "—"],
            ["Issued", invoice.issued.isoformat()],
            ["Due", invoice.due.isoformat()],
            ["Status", invoice.get_status_display()],
        ], colWidths=[35 * mm, 130 * mm], style=[("FONTNAME", (0, 0), (0, -1), "Helvetica-Bold")]),
        Spacer(1, 6 * mm),
    ]
    rows = [["Dataset", "Provider", "Studies", "Licence", "Amount"]]
    for line in order.lines.select_related("dataset", "provider"):
        rows.append([_p(line.dataset.title, body), _p(line.provider.name, body), str(line.study_count),
                     line.pricing_model.replace("_", " "), format_money(line.amount_minor, line.currency)])
    rows.append(["", "", "", "Total", format_money(invoice.amount_minor, invoice.currency)])
    table = Table(rows, colWidths=[55 * mm, 45 * mm, 18 * mm, 22 * mm, 30 * mm], repeatRows=1)
    table.setStyle(TableStyle([
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"), ("FONTNAME", (0, -1), (-1, -1), "Helvetica-Bold"),
        ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black), ("LINEABOVE", (0, -1), (-1, -1), 0.5, colors.black),
        ("ALIGN", (2, 0), (2, -1), "RIGHT"), ("ALIGN", (4, 0), (4, -1), "RIGHT"), ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]))
    story += [table, Spacer(1, 6 * mm), _p(f"Payment: {settings.PLATFORM_PAYMENT_DETAILS}", body)]
    if invoice.hosted_url:
        story.append(_p(f"Pay online: {invoice.hosted_url}", body))
    story.append(_p("Each dataset is licensed by its provider under the data use agreement of this order; "
                    "the marketplace collects payment on the providers' behalf.", small))
    buffer = io.BytesIO()
    SimpleDocTemplate(buffer, pagesize=A4, title=f"Invoice {invoice.number}", author=settings.PLATFORM_LEGAL_NAME,
                      leftMargin=18 * mm, rightMargin=18 * mm).build(story)
    return buffer.getvalue()
