"""The agreement a buyer signs, and the versions of its template.

One function composes the exact text signed for a set of datasets: the active template,
then each dataset's licence terms and its provider's additional conditions, in the order's
line order. The dataset page shows that text and its SHA-256 before anyone logs in, and
checkout stores the same text on the contract: for an order of that dataset alone the two
hashes are equal.

A template version that a contract uses is never edited: a change becomes the next version
(the old one is kept and deactivated). One version is active at a time (also a database
constraint).
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from catalog.licence import LicenceTerms
from catalog.models import Dataset
from marketplace.models import User
from marketplace.services import audit_record
from orders.exceptions import OrderError
from orders.models import Contract, DuaTemplate, Offer


class AgreementTemplateError(OrderError):
    code = "agreement_template"


def agreement_text_for(*, template: DuaTemplate, datasets: Sequence[Dataset],
                       offers: Sequence[Offer | None] = ()) -> str:
    """The exact text signed for ``datasets`` (an order's datasets, in line order) under
    ``template``: its title and version, its text, then for each dataset its licence terms
    (catalog.licence.LicenceTerms.describe) and the provider's additional conditions. A line
    bought at a negotiated offer (``offers``, parallel to ``datasets``) states the offer's
    terms instead of the dataset's."""
    parts = [f"{template.title} (version {template.version})", "", template.text.strip(), "",
             "LICENCE TERMS OF THE DATA"]
    offers = list(offers) + [None] * (len(datasets) - len(offers))
    for number, (dataset, offer) in enumerate(zip(datasets, offers), start=1):
        parts += ["", f"{number}. {dataset.title} (dataset #{dataset.pk}), provided by {dataset.provider.name}"]
        terms = dataset.terms
        if offer is not None:
            terms = LicenceTerms.from_dict(offer.terms)
            parts += [f"   Negotiated terms: negotiation #{offer.negotiation_id}, version {offer.number}"]
        parts += [f"   {label}: {value}" for label, value in terms.describe()]
        conditions = (dataset.licence_text or "").strip()
        parts += ["   Provider's additional conditions:"]
        parts += [f"     {line}" if line.strip() else "" for line in conditions.splitlines()] if conditions else [
            "     None."]
    return "\n".join(parts) + "\n"


def agreement_sha256(text: str) -> str:
    """SHA-256 (hex) of the agreement text as UTF-8, as stored in Contract.text_sha256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AgreementPreview:
    template: DuaTemplate
    text: str
    sha256: str


def agreement_preview(*, dataset: Dataset) -> AgreementPreview | None:
    """What a buyer of ``dataset`` alone would sign under the active template, for anyone
    (signed in or not); None when no template is active."""
    from orders.selectors import active_dua_template

    template = active_dua_template()
    if template is None:
        return None
    text = agreement_text_for(template=template, datasets=[dataset])
    return AgreementPreview(template=template, text=text, sha256=agreement_sha256(text))


# ---- template versions ---------------------------------------------------------------------
def dua_template_in_use(template: DuaTemplate) -> bool:
    return Contract.objects.filter(template_id=template.pk).exists()


def next_version(version: str) -> str:
    """The version after ``version``, not yet taken: its last number plus one ("2" → "3",
    "1.0" → "1.1"), or ".1" appended when it has no number."""
    candidate = version
    while True:
        found = re.search(r"(\d+)(?!.*\d)", candidate)
        if found:
            candidate = f"{candidate[:found.start()]}{int(found.group(1)) + 1}{candidate[found.end():]}"
        else:
            candidate = f"{candidate}.1"
        if not DuaTemplate.objects.filter(version=candidate).exists():
            return candidate


@transaction.atomic
def dua_template_create(*, version: str, title: str, text: str, is_active: bool, acting_user: User | None,
                        ip: str | None = None) -> DuaTemplate:
    """A new template version; active at once when ``is_active`` (the others deactivated)."""
    version = version.strip()
    if not version or DuaTemplate.objects.filter(version=version).exists():
        raise AgreementTemplateError(f"Version {version!r} is empty or already exists; give a new version.")
    template = DuaTemplate.objects.create(version=version, title=title, text=text, is_active=False)
    audit_record(actor=acting_user, action="dua_template.create", obj=template, ip=ip,
                 detail={"version": version})
    if is_active:
        template = dua_template_activate(template=template, acting_user=acting_user, ip=ip)
    return template


@transaction.atomic
def dua_template_change(*, template: DuaTemplate, title: str, text: str, is_active: bool,
                        acting_user: User | None, version: str | None = None,
                        ip: str | None = None) -> DuaTemplate:
    """Change a template's title or text, or (de)activate it. A version no contract uses is
    edited in place. A version a contract uses keeps its text: the change becomes a new
    version (``next_version``), active if the old one was or ``is_active`` asks, and the
    old one is deactivated. Returns the row holding the change (the same one, or the new
    version). The active template is replaced by activating another, never switched off
    alone: checkout needs one."""
    # Lock the row: two admins saving the same version at once would both see it unused.
    stored = DuaTemplate.objects.select_for_update().get(pk=template.pk)
    content_changed = (title, text) != (stored.title, stored.text)
    used = dua_template_in_use(stored)
    if used and (content_changed or (version and version != stored.version)):
        new = DuaTemplate.objects.create(version=next_version(stored.version), title=title, text=text,
                                         is_active=False)
        audit_record(actor=acting_user, action="dua_template.new_version", obj=new, ip=ip,
                     detail={"from_version": stored.version, "version": new.version})
        if is_active or stored.is_active:
            new = dua_template_activate(template=new, acting_user=acting_user, ip=ip)
        return new
    fields = []
    if version and version != stored.version:
        if DuaTemplate.objects.filter(version=version).exclude(pk=stored.pk).exists():
            raise AgreementTemplateError(f"Version {version!r} already exists; give a new version.")
        stored.version = version
        fields.append("version")
    if content_changed:
        stored.title, stored.text = title, text
        fields += ["title", "text"]
    if fields:
        stored.save(update_fields=fields)
        audit_record(actor=acting_user, action="dua_template.edit", obj=stored, ip=ip,
                     detail={"version": stored.version, "fields": fields})
    if is_active and not stored.is_active:
        stored = dua_template_activate(template=stored, acting_user=acting_user, ip=ip)
    elif not is_active and stored.is_active:
        raise AgreementTemplateError("This is the active agreement; activate another version instead of "
                                     "deactivating it (ordering needs one).")
    return stored


@transaction.atomic
def dua_template_activate(*, template: DuaTemplate, acting_user: User | None,
                          ip: str | None = None) -> DuaTemplate:
    """Make ``template`` the one active agreement: the others are deactivated first (the
    database allows one active row)."""
    previous = list(DuaTemplate.objects.select_for_update().filter(is_active=True).exclude(pk=template.pk)
                    .values_list("version", flat=True))
    DuaTemplate.objects.filter(is_active=True).exclude(pk=template.pk).update(is_active=False)
    DuaTemplate.objects.filter(pk=template.pk).update(is_active=True)
    template.refresh_from_db()
    audit_record(actor=acting_user, action="dua_template.activate", obj=template, ip=ip,
                 detail={"version": template.version, "deactivated": previous})
    return template
