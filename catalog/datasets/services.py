"""Dataset life cycle: draft → in review → published (admin), with an audit record per move."""
from __future__ import annotations

from dataclasses import asdict
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.datasets.pricing import PlanError, dataset_list_price, plan_clean, plan_of
from catalog.exceptions import CatalogError, LicenceConflictError, ProviderNotApprovedError
from catalog.licence import LicenceTerms, LicenceTermsError, terms_conflicts, terms_for_licence_type
from catalog.models import Dataset, LicenceType, PricingModel
from marketplace.exceptions import InvalidTransitionError
from marketplace.models import Organization, User
from marketplace.services import audit_record
from orders.currency import from_minor

PLAN_FIELDS = ("pricing_model", "price", "currency", "sample_study_count", "academic_discount_bps", "volume_tiers")


@transaction.atomic
def dataset_create(
    *,
    provider: Organization,
    acting_user: User,
    title: str,
    description: str = "",
    licence_text: str = "",
    pricing_model: str = PricingModel.PER_STUDY,
    price: Decimal | str | int | None = None,
    currency: str = "USD",
    sample_study_count: int = 0,
    academic_discount_bps: int = 0,
    volume_tiers: object = (),
    price_per_study: Decimal | None = None,
    burned_in_risk_accepted: bool = False,
    licence_type: str = "academic",
    country: str = "",
    conditions: object = (),
    allow_study_browsing: bool = False,
    disclosure_threshold: int | None = None,
    patient_free_text_kept: object = (),
    licence_terms: LicenceTerms | dict | None = None,
    requires_provider_consent: bool = False,
) -> Dataset:
    """A draft dataset. ``price`` is the plan's price in major units of ``currency``
    (catalog.datasets.pricing.plan_clean checks the plan); ``price_per_study`` alone is
    shorthand for a per-study plan at that price. ``licence_terms`` (LicenceTerms or its
    dict) default to those of the licence type (catalog.licence.terms_for_licence_type);
    terms contradicting the licence type, the price or ``licence_text`` are refused."""
    if not provider.is_provider:
        raise CatalogError("Only provider organizations can create datasets.", code="not_a_provider")
    if licence_type not in LicenceType.values:
        raise CatalogError(f"Unknown licence type; use one of {', '.join(LicenceType.values)}.",
                           code="bad_licence")
    price = _plan_price(pricing_model, price, price_per_study)
    plan = plan_clean(pricing_model=pricing_model, price=Decimal("0") if price is None else price,
                      currency=currency, licence_type=licence_type, sample_study_count=sample_study_count,
                      academic_discount_bps=academic_discount_bps, volume_tiers=volume_tiers)
    check_disclosure_threshold(disclosure_threshold)
    patient_free_text_kept = clean_patient_free_text(patient_free_text_kept)
    terms = clean_licence_terms(licence_terms, licence_type=licence_type, pricing_model=plan.pricing_model,
                                price_minor=plan.price_minor, licence_text=licence_text)
    dataset = Dataset(
        provider=provider, created_by=acting_user, title=title, description=description,
        licence_text=licence_text, burned_in_risk_accepted=burned_in_risk_accepted, licence_type=licence_type,
        country=" ".join(country.split())[:64], conditions=clean_conditions(conditions),
        allow_study_browsing=allow_study_browsing, disclosure_threshold=disclosure_threshold,
        patient_free_text_kept=patient_free_text_kept, licence_terms=terms.to_dict(),
        requires_provider_consent=bool(requires_provider_consent), **asdict(plan),
    )
    dataset.price_per_study = dataset_list_price(dataset)
    dataset.save()
    audit_record(actor=acting_user, action="dataset.create", obj=dataset,
                 detail={"plan": plan.as_audit(), "price_per_study": str(dataset.price_per_study),
                         "licence_terms": dataset.licence_terms})
    return dataset


def clean_licence_terms(raw: LicenceTerms | dict | None, *, licence_type: str, pricing_model: str,
                        price_minor: int, licence_text: str) -> LicenceTerms:
    """The terms as stored: validated, or those of the licence type when none are given;
    a LicenceConflictError naming the fields when they contradict the licence type, the
    price or the provider's own text (catalog.licence.terms_conflicts)."""
    if isinstance(raw, LicenceTerms):
        terms = raw
    elif raw:
        try:
            terms = LicenceTerms.from_dict(raw)
        except LicenceTermsError as exc:
            raise LicenceConflictError([str(exc)]) from None
    else:
        terms = terms_for_licence_type(licence_type, pricing_model=pricing_model)
    problems = terms_conflicts(terms, licence_type=licence_type, price_minor=price_minor,
                               licence_text=licence_text or "")
    if problems:
        raise LicenceConflictError(problems)
    return terms


def _plan_price(pricing_model: str, price: object, price_per_study: object) -> object:
    """``price``, or ``price_per_study`` given for a per-study plan (its former meaning)."""
    if price_per_study is None:
        return price
    if price is not None:
        raise PlanError("price", "give the plan's price, not price_per_study (derived from the plan).")
    if pricing_model != PricingModel.PER_STUDY:
        raise PlanError("price", "price_per_study sets a per-study plan's price; give price for this plan.")
    return price_per_study


@transaction.atomic
def dataset_update(*, dataset: Dataset, acting_user: User, **fields: object) -> Dataset:
    """Change a dataset's details or pricing plan. Plan fields (``PLAN_FIELDS``; ``price``
    in major units, ``price_per_study`` as shorthand for a per-study plan's price) are
    checked together with the values they leave unchanged, and the list price per study is
    derived again. The audit event holds the old and new plan."""
    allowed = {"title", "description", "licence_text", "price_per_study", "burned_in_risk_accepted",
               "licence_type", "country", "conditions", "allow_study_browsing", "disclosure_threshold",
               "patient_free_text_kept", "licence_terms", "requires_provider_consent", *PLAN_FIELDS}
    given = sorted(fields)
    unknown = set(fields) - allowed
    if unknown:
        raise CatalogError(f"These fields cannot be changed: {', '.join(sorted(unknown))}.", code="bad_fields")
    if "licence_type" in fields and fields["licence_type"] not in LicenceType.values:
        raise CatalogError(f"Unknown licence type; use one of {', '.join(LicenceType.values)}.",
                           code="bad_licence")
    if "conditions" in fields:
        fields["conditions"] = clean_conditions(fields["conditions"])
    if "disclosure_threshold" in fields:
        check_disclosure_threshold(fields["disclosure_threshold"])  # type: ignore[arg-type]
    if "patient_free_text_kept" in fields:
        fields["patient_free_text_kept"] = clean_patient_free_text(fields["patient_free_text_kept"])
    # The stored row, not the instance given (a bound ModelForm has already set its fields).
    stored = Dataset.objects.select_for_update().get(pk=dataset.pk)
    old_plan, old_price = plan_of(stored), stored.price_per_study
    plan_changes = {k: fields.pop(k) for k in (*PLAN_FIELDS, "price_per_study") if k in fields}
    if plan_changes or "licence_type" in fields:
        model = str(plan_changes.get("pricing_model", stored.pricing_model))
        price = _plan_price(model, plan_changes.get("price"), plan_changes.get("price_per_study"))
        currency = str(plan_changes.get("currency", stored.currency))
        if price is None:
            # The price as it stands; a change of currency keeps the amount in major units.
            price = from_minor(stored.price_minor, stored.currency)
        plan = plan_clean(
            pricing_model=model, price=price, currency=currency,
            licence_type=str(fields.get("licence_type", stored.licence_type)),
            sample_study_count=plan_changes.get("sample_study_count", stored.sample_study_count),
            academic_discount_bps=plan_changes.get("academic_discount_bps", stored.academic_discount_bps),
            volume_tiers=plan_changes.get("volume_tiers", stored.volume_tiers),
            study_count=stored.study_count if stored.status == Dataset.Status.PUBLISHED else None,
        )
        fields.update(asdict(plan))
    if {"licence_terms", "licence_type", "licence_text"} & set(fields) or plan_changes:
        # Checked against what the change leaves as it is; a row without terms yet gets
        # those of its (new) licence type.
        raw_terms = fields.get("licence_terms") or stored.licence_terms or None
        fields["licence_terms"] = clean_licence_terms(
            raw_terms, licence_type=str(fields.get("licence_type", stored.licence_type)),
            pricing_model=str(fields.get("pricing_model", stored.pricing_model)),
            price_minor=int(fields.get("price_minor", stored.price_minor)),  # type: ignore[call-overload]
            licence_text=str(fields.get("licence_text", stored.licence_text)),
        ).to_dict()
    old_terms = stored.licence_terms
    for name, value in fields.items():
        setattr(dataset, name, value)
    changed = sorted(fields)
    if plan_changes or "licence_type" in fields:
        dataset.study_count, dataset.instance_count = stored.study_count, stored.instance_count
        dataset.price_per_study = dataset_list_price(dataset)
        changed.append("price_per_study")
    dataset.save(update_fields=changed)
    detail: dict[str, object] = {"fields": given}
    new_plan = plan_of(dataset)
    if new_plan != old_plan or dataset.price_per_study != old_price:
        detail.update(old_plan=old_plan.as_audit(), new_plan=new_plan.as_audit(),
                      old_price=str(old_price), new_price=str(dataset.price_per_study))
    if "disclosure_threshold" in fields:
        detail.update(disclosure_threshold=dataset.disclosure_threshold)
    if "patient_free_text_kept" in fields:
        detail.update(patient_free_text_kept=dataset.patient_free_text_kept)
    if "licence_terms" in fields and dataset.licence_terms != old_terms:
        detail.update(old_licence_terms=old_terms, new_licence_terms=dataset.licence_terms)
    audit_record(actor=acting_user, action="dataset.update", obj=dataset, detail=detail)
    transaction.on_commit(lambda: _reindex(dataset.pk))
    return dataset


def check_disclosure_threshold(value: int | None) -> None:
    """A dataset may only raise the marketplace's threshold for hiding small counts."""
    base = settings.DISCLOSURE_THRESHOLD
    if value is not None and not base <= value <= 1000:
        raise CatalogError(f"The disclosure threshold must be from {base} (the marketplace's) to 1000, "
                           "or empty to use the marketplace's.", code="bad_disclosure_threshold")


def patient_free_text_choices() -> list[str]:
    """The free-text attributes about the patient a provider may choose to keep (cleaned)."""
    import deid.profile

    return sorted(deid.profile.load_profile().patient_free_text)


def clean_patient_free_text(raw: object) -> list[str]:
    keywords = sorted({str(k).strip() for k in (raw or []) if str(k).strip()})  # type: ignore[union-attr]
    unknown = [k for k in keywords if k not in patient_free_text_choices()]
    if unknown:
        raise CatalogError(f"Not a free-text attribute about the patient: {unknown[0][:64]!r}.",
                           code="bad_free_text_attribute")
    return keywords


def clean_conditions(raw: object) -> list[str]:
    """Conditions as "SCHEME:CODE|Label" (e.g. "ICD10:J18.9|Pneumonia"); one per line or list."""
    items = raw.splitlines() if isinstance(raw, str) else list(raw or [])  # type: ignore[call-overload]
    cleaned = []
    for item in items:
        text = " ".join(str(item).split())
        if not text:
            continue
        code, _, label = text.partition("|")
        if ":" not in code or not code.split(":", 1)[1] or len(text) > 160:
            raise CatalogError(f"Condition {text[:40]!r} is not SCHEME:CODE|Label, e.g. "
                               "ICD10:J18.9|Pneumonia or SCT:233604007|Pneumonia.", code="bad_condition")
        cleaned.append(f"{code.strip().upper()}|{label.strip()}" if label else code.strip().upper())
    return sorted(set(cleaned))


def _reindex(dataset_id: int) -> None:
    # The dataset's search vector holds its title, each study's its conditions: a worker's
    # job, not the request's (seconds for a large dataset).
    from catalog.tasks import dataset_search_refresh_task  # tasks import services

    dataset_search_refresh_task.delay(dataset_id=dataset_id)


@transaction.atomic
def dataset_transition(
    *, dataset: Dataset, to: str, acting_user: User, ip: str | None = None, reason: str = "",
    audit_action: str = "",
) -> Dataset:
    """The one place that moves a dataset's status. Locks the row; no-op if already there."""
    locked = Dataset.objects.select_for_update().select_related("provider").get(pk=dataset.pk)
    if locked.status == to:
        return locked
    if to not in Dataset.STATUS_TRANSITIONS.get(locked.status, set()):
        raise InvalidTransitionError(
            f"A dataset cannot move from {locked.get_status_display()} to {Dataset.Status(to).label}.")
    if to == Dataset.Status.IN_REVIEW and locked.instance_count == 0:
        raise CatalogError("Upload at least one image before submitting the dataset for review.",
                           code="empty_dataset")
    if to in (Dataset.Status.IN_REVIEW, Dataset.Status.PUBLISHED) and locked.sample_study_count > locked.study_count:
        raise PlanError("sample_study_count", f"{locked.sample_study_count:,} studies is more than the dataset "
                                              f"holds ({locked.study_count:,}); lower the free sample first.")
    if to == Dataset.Status.PUBLISHED:
        if not locked.provider.is_approved:
            raise ProviderNotApprovedError(
                f"Provider {locked.provider.name} is not approved yet; approve the organization first.")
        locked.published_at = timezone.now()
    if to == Dataset.Status.IN_REVIEW:
        # A resubmission answers the last refusal: the reason no longer stands.
        locked.submitted_at, locked.rejected_at, locked.rejection_reason = timezone.now(), None, ""
    old = locked.status
    locked.status = to
    locked.save(update_fields=["status", "published_at", "submitted_at", "rejected_at", "rejection_reason"])
    audit_record(actor=acting_user, action=audit_action or f"dataset.{to}", obj=locked, ip=ip,
                 detail={"from": old, "to": to, "reason": reason})
    if to == Dataset.Status.PUBLISHED:
        from catalog.tasks import saved_searches_notify_task  # tasks import services

        dataset_id = locked.pk
        transaction.on_commit(lambda: saved_searches_notify_task.delay(dataset_id=dataset_id))
    return locked


def dataset_submit_for_review(*, dataset: Dataset, acting_user: User, ip: str | None = None) -> Dataset:
    return dataset_transition(dataset=dataset, to=Dataset.Status.IN_REVIEW, acting_user=acting_user, ip=ip)


def dataset_publish(*, dataset: Dataset, acting_user: User, ip: str | None = None) -> Dataset:
    return dataset_transition(dataset=dataset, to=Dataset.Status.PUBLISHED, acting_user=acting_user, ip=ip)


MAX_REJECTION_REASON = 2000


@transaction.atomic
def dataset_reject(*, dataset: Dataset, acting_user: User, reason: str, ip: str | None = None) -> Dataset:
    """An admin declines to publish a dataset in review, with a reason: it goes back to draft,
    the provider's members are told why (in the app and by e-mail) and read it on the
    dataset's page until they submit it again. Audited as ``dataset.reject``."""
    reason = (reason or "").strip()
    if not reason:
        raise CatalogError("Give a reason when rejecting a dataset; the provider is told.", code="reason_required")
    if len(reason) > MAX_REJECTION_REASON:
        raise CatalogError(f"The reason is longer than {MAX_REJECTION_REASON} characters.", code="reason_long")
    current = Dataset.objects.select_for_update().get(pk=dataset.pk)
    if current.status != Dataset.Status.IN_REVIEW:
        raise InvalidTransitionError(f"{current.title} is {current.get_status_display().lower()}, not in review: "
                                     "only a dataset in review is rejected.")
    locked = dataset_transition(dataset=current, to=Dataset.Status.DRAFT, acting_user=acting_user, ip=ip,
                                reason=reason, audit_action="dataset.reject")
    locked.rejected_at, locked.rejection_reason = timezone.now(), reason
    locked.save(update_fields=["rejected_at", "rejection_reason"])
    _provider_notify(locked, f"{locked.title} was not published: {reason} "
                             "Edit the dataset and submit it for review again.")
    return locked


def _provider_notify(dataset: Dataset, message: str) -> None:
    """Every active member of the dataset's provider, after commit, linked to the dataset's page."""
    from django.urls import reverse

    from marketplace.services import notification_send

    url = f"{settings.SITE_URL.rstrip('/')}{reverse('dataset_manage', args=[dataset.pk])}"
    members = list(User.objects.filter(memberships__organization_id=dataset.provider_id, is_active=True))
    transaction.on_commit(lambda: [notification_send(user=member, message=message, url=url) for member in members])
