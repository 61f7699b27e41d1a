"""De-identification certificates: what was done to the files of a delivery (or of a whole
dataset), as JSON signed by the platform and as a PDF.

A certificate holds ids, names of datasets and organizations, DICOM codes, counts and
hashes only: never a value read from an image. Counts come from what ingestion recorded per
instance (an UploadFile row ingested OK exists only after the engine's independent verifier
passed, with the engine's action counts), so nothing here re-reads the files.

The signature is HMAC-SHA256 over the canonical JSON (sorted keys, no whitespace, UTF-8)
of every field but "signature", with a key derived from SECRET_KEY for this purpose only.
certificate_check() recomputes it (also under SECRET_KEY_FALLBACKS, so a key rotation
keeps older certificates checkable while the old key is listed there).
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

import storage
from catalog.ingestion.ingest import deid_options
from catalog.models import Dataset, Instance, UploadFile
from deid.profile import BASIC_CODE, OPTION_CODES, Options, load_profile

if TYPE_CHECKING:
    from workspaces.models import Delivery

CERTIFICATE_JSON_NAME = "certificate.json"
CERTIFICATE_PDF_NAME = "certificate.pdf"
FORMAT = "deid-certificate/1"
SIGNATURE_ALGORITHM = "HMAC-SHA256"
# The label makes this key useless for anything else SECRET_KEY signs (sessions, links).
_KEY_LABEL = b"workspaces.certificate.deid-certificate.v1"
# A pasted certificate larger than this is not one of ours (a large delivery's is a few KB).
MAX_CERTIFICATE_BYTES = 256 * 1024


# ---- signing ------------------------------------------------------------------------------
def _signing_key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()


def certificate_canonical(data: dict[str, Any]) -> bytes:
    """The bytes that are signed: every field but "signature", sorted keys, no whitespace."""
    unsigned = {k: v for k, v in data.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _mac(secret: str, data: dict[str, Any]) -> str:
    return hmac.new(_signing_key(secret), certificate_canonical(data), hashlib.sha256).hexdigest()


def certificate_sign(data: dict[str, Any]) -> dict[str, Any]:
    """The certificate with its platform signature (any old signature replaced)."""
    signed = {k: v for k, v in data.items() if k != "signature"}
    signed["signature"] = {"algorithm": SIGNATURE_ALGORITHM, "value": _mac(settings.SECRET_KEY, signed)}
    return signed


def certificate_check(data: object) -> tuple[bool, str]:
    """(valid, reason): whether ``data`` (a parsed certificate) carries this platform's
    signature over exactly its current fields."""
    if not isinstance(data, dict):
        return False, "This is not a certificate (a JSON object is expected)."
    signature = data.get("signature")
    if not isinstance(signature, dict) or not isinstance(signature.get("value"), str):
        return False, "The certificate has no signature."
    if signature.get("algorithm") != SIGNATURE_ALGORITHM:
        return False, f"Unknown signature algorithm (expected {SIGNATURE_ALGORITHM})."
    if data.get("format") != FORMAT:
        return False, "This is not a de-identification certificate of this platform."
    try:
        secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
        if any(hmac.compare_digest(_mac(secret, data), signature["value"]) for secret in secrets):
            return True, f"Valid: signed by {data.get('platform') or 'this platform'}; no field was changed."
    except (TypeError, ValueError):  # values JSON cannot encode again (never from a parsed text)
        pass
    return False, "The signature does not match: the certificate was changed or was not issued here."


def certificate_verify(data: object) -> bool:
    """Whether ``data`` is a certificate issued by this platform and unchanged since."""
    return certificate_check(data)[0]


def certificate_parse(text: str | bytes) -> tuple[dict[str, Any] | None, str]:
    """A pasted or uploaded certificate parsed, or (None, why not). Size-capped first: a
    deeply nested text must not reach the parser's recursion."""
    if len(text) > MAX_CERTIFICATE_BYTES:
        return None, "This text is too large to be a certificate."
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None, "This is not valid JSON."
    if not isinstance(data, dict):
        return None, "This is not a certificate (a JSON object is expected)."
    return data, ""


# ---- contents -----------------------------------------------------------------------------
def _verification(instances: QuerySet[Instance]) -> dict[str, int]:
    """Counts over ``instances`` from the per-instance records ingestion wrote."""
    records = UploadFile.objects.filter(status=UploadFile.Status.OK, instance__in=instances)
    verified = records.values("instance_id").distinct().count()
    masked = records.filter(deid_actions__pixels_masked__gt=0).values("instance_id").distinct().count()
    return {"files": instances.count(), "verified_clean": verified, "pixels_masked": masked}


def _options(options: Options) -> dict[str, Any]:
    return {
        **{field: bool(getattr(options, field)) for field in OPTION_CODES},
        "accept_burned_in_risk": bool(options.accept_burned_in_risk),
        # Kept (cleaned) only under Clean Descriptors, as the engine does.
        "accept_patient_free_text_risk": sorted(options.accept_patient_free_text_risk)
        if options.clean_descriptors else [],
    }


def _methods(options: Options, counts: dict[str, int]) -> list[dict[str, Any]]:
    """The DCM codes the engine wrote into DeidentificationMethodCodeSequence, each with the
    number of these files it applies to: the profile and the options in force for every
    verified file, Clean Pixel Data only for the files whose pixels were masked."""
    rows = [{"code": BASIC_CODE[0], "scheme": "DCM", "meaning": BASIC_CODE[1], "files": counts["verified_clean"]}]
    for field, (code, meaning) in OPTION_CODES.items():
        files = counts["pixels_masked"] if field == "clean_pixel_data" else (
            counts["verified_clean"] if getattr(options, field) else 0)
        if files:
            rows.append({"code": code, "scheme": "DCM", "meaning": meaning, "files": files})
    return rows


def _dataset_part(dataset: Dataset, instances: QuerySet[Instance]) -> dict[str, Any]:
    # The options as ingestion reads them (deid_options). Only the two risk choices are the
    # provider's, and they may have changed since some files were ingested; the codes
    # depend on the profile's fixed options and, for Clean Pixel Data, on each file's record.
    options = deid_options(dataset)
    counts = _verification(instances)
    return {
        "dataset_id": dataset.pk,
        "title": dataset.title,
        "provider": dataset.provider.name,
        "options": _options(options),
        "methods": _methods(options, counts),
        **counts,
    }


def _engine() -> dict[str, str]:
    # imported when used: deid.values loads pydicom (about 40 MB with numpy), and the web
    # imports this module for its names and checks; only building a certificate reads these
    from deid.values import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

    return {
        "implementation_version": IMPLEMENTATION_VERSION,
        "implementation_class_uid": IMPLEMENTATION_CLASS_UID,
        "standard": f"DICOM PS3.15 Annex E, Table E.1-1 ({load_profile().edition} edition)",
    }


def _totals(parts: list[dict[str, Any]]) -> dict[str, int]:
    return {key: sum(p[key] for p in parts) for key in ("files", "verified_clean", "pixels_masked")}


def _base(kind: str, issued: datetime) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kind": kind,
        "certificate_id": str(uuid.uuid4()),
        "issued": issued.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "platform": settings.PLATFORM_LEGAL_NAME,
        "engine": _engine(),
    }


def certificate_for(delivery: Delivery, *, manifest_sha256: str | None = None,
                    issued: datetime | None = None) -> dict[str, Any]:
    """The signed certificate of a delivery (workspaces.models.Delivery): its order and
    agreement, each dataset's de-identification with DCM codes, per-file verification
    counts over the delivered instances (as DICOM files or converted to NIfTI), and the manifest's SHA-256
    (read from storage unless the caller that just wrote the manifest passes it)."""
    if manifest_sha256 is None:
        manifest_sha256 = storage.sha256_of(delivery.manifest_key)
    order = delivery.order
    contract = getattr(order, "contract", None)
    # The instances delivered as DICOM files, and those of each series delivered as NIfTI.
    delivered = Instance.objects.filter(
        Q(pk__in=delivery.files.filter(instance__isnull=False).values("instance_id"))
        | Q(series__in=delivery.files.filter(series__isnull=False).values("series_id")))
    datasets = Dataset.objects.filter(pk__in=delivered.values("dataset_id")).select_related("provider").order_by("pk")
    parts = [_dataset_part(d, delivered.filter(dataset=d)) for d in datasets]
    data = {
        **_base("delivery", issued or timezone.now()),
        "order": {
            "order_id": order.pk,
            "delivery_id": delivery.pk,
            "buyer_user_id": order.buyer_id,
            "buyer_organization": order.buyer_organization.name if order.buyer_organization_id else "",
        },
        "agreement": {
            "contract_id": contract.pk if contract else None,
            "template_version": contract.template_version if contract else "",
            "text_sha256": hashlib.sha256(contract.text.encode("utf-8")).hexdigest() if contract else "",
        },
        "datasets": parts,
        "totals": _totals(parts),
        "manifest": {"name": "manifest.csv", "sha256": manifest_sha256},
    }
    return certificate_sign(data)


def certificate_for_dataset(dataset: Dataset, *, issued: datetime | None = None) -> dict[str, Any]:
    """The signed certificate of a dataset's ingested instances, for its provider: the
    delivery certificate's structure without order, agreement or manifest."""
    parts = [_dataset_part(dataset, Instance.objects.filter(dataset=dataset))]
    return certificate_sign({**_base("dataset", issued or timezone.now()), "datasets": parts,
                             "totals": _totals(parts)})


def certificate_json_bytes(data: dict[str, Any]) -> bytes:
    """The file written for buyers: indented for reading (the signature covers the
    canonical form, which any JSON reader rebuilds)."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"


# ---- PDF ----------------------------------------------------------------------------------
def certificate_pdf(data: dict[str, Any]) -> bytes:
    """The certificate as a PDF (reportlab, the invoice's house style), ending with the
    signature and how to check it."""
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    body, small = styles["BodyText"], styles["Italic"]

    def p(text: object, style=body) -> Paragraph:  # noqa: ANN001 - a reportlab style
        return Paragraph(escape(str(text)), style)

    engine = data.get("engine", {})
    head = [["Certificate", data.get("certificate_id", "")], ["Issued", data.get("issued", "")],
            ["Platform", data.get("platform", "")],
            ["Engine", f"{engine.get('implementation_version', '')} ({engine.get('standard', '')})"]]
    order, agreement = data.get("order"), data.get("agreement")
    if order:
        head += [["Order", f"#{order['order_id']} (delivery {order['delivery_id']})"],
                 ["Buyer", order.get("buyer_organization") or f"user {order['buyer_user_id']}"]]
    if agreement:
        head += [["Agreement", f"contract {agreement['contract_id']}, version {agreement['template_version']}"],
                 ["Agreement SHA-256", p(agreement["text_sha256"], small)]]
    if data.get("manifest"):
        head.append([f"{data['manifest']['name']} SHA-256", p(data["manifest"]["sha256"], small)])
    title = "De-identification certificate" + (f" — order #{order['order_id']}" if order else "")
    story = [p(title, styles["Title"]), Table(head, colWidths=[40 * mm, 130 * mm],
                                              style=[("FONTNAME", (0, 0), (0, -1), "Helvetica-Bold"),
                                                     ("VALIGN", (0, 0), (-1, -1), "TOP")]), Spacer(1, 5 * mm)]
    grid = TableStyle([("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                       ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                       ("ALIGN", (2, 0), (2, -1), "RIGHT"), ("VALIGN", (0, 0), (-1, -1), "TOP")])
    for part in data.get("datasets", []):
        story += [p(f"{part['title']} (dataset {part['dataset_id']}, {part['provider']})", styles["Heading3"]),
                  p(f"Files: {part['files']} · verified clean by the engine's verifier at ingestion: "
                    f"{part['verified_clean']} · pixel data masked: {part['pixels_masked']}")]
        rows = [["Code (DCM)", "Method", "Files"]] + [[m["code"], p(m["meaning"]), str(m["files"])]
                                                      for m in part["methods"]]
        story += [Table(rows, colWidths=[25 * mm, 125 * mm, 20 * mm], style=grid, repeatRows=1)]
        options = part["options"]
        risks = [f"burned-in annotation risk accepted: {'yes' if options['accept_burned_in_risk'] else 'no'}",
                 "patient free text kept (cleaned): "
                 + (", ".join(options["accept_patient_free_text_risk"]) or "none")]
        story += [p("Provider's choices: " + "; ".join(risks), small), Spacer(1, 4 * mm)]
    totals = data.get("totals", {})
    story += [p(f"All datasets: {totals.get('files', 0)} files, {totals.get('verified_clean', 0)} verified clean, "
                f"{totals.get('pixels_masked', 0)} with pixel data masked."), Spacer(1, 5 * mm)]
    signature = data.get("signature", {})
    story += [p(f"Signature ({signature.get('algorithm', '')}): ", styles["Heading4"]),
              p(signature.get("value", ""), small),
              p("The signature covers the canonical JSON of certificate.json (every field but \"signature\", "
                "sorted keys, no whitespace). Paste that file on the platform's certificate check page to "
                "verify it; this PDF is a readable copy.", small)]
    buffer = io.BytesIO()
    # Uncompressed (a few KB): its text stays searchable and comparable with the JSON.
    SimpleDocTemplate(buffer, pagesize=A4, title=title, author=settings.PLATFORM_LEGAL_NAME,
                      leftMargin=18 * mm, rightMargin=18 * mm, invariant=1, pageCompression=0).build(story)
    return buffer.getvalue()
