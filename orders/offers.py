"""Negotiated offers: a researcher asks a provider for other terms on a dataset (version 0,
the request), the provider offers (version 1), either side counters, and the other side
accepts, declines or counters; an author may withdraw their open version. An accepted
offer goes into the buyer's cart at its price and terms, and serves one order only.

Every version's terms are catalog.licence.LicenceTerms; prices are whole minor units of
one currency (orders/currency.py). A negotiation is private: members of its buyer and
provider organizations (and staff, who read only) see it; anyone else gets the same
NotFoundError as for a negotiation that does not exist. Every refusal is audited."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from catalog.licence import LicenceTerms, LicenceTermsError, terms_diff
from catalog.models import DataRequest, DataRequestResponse, Dataset
from catalog.search.criteria import cohort_criteria, cohort_from, describe
from marketplace.exceptions import ApplicationError, InvalidTransitionError, NotFoundError
from marketplace.input_guard import MAX_MINOR_AMOUNT
from marketplace.models import Membership, Organization, User
from marketplace.services import audit_record, notification_send
from marketplace.templatetags.display import when_text
from orders.currency import ACCEPTED_CODES, MoneyValueError, format_money, to_minor
from orders.exceptions import OrderError
from orders.models import CartItem, Negotiation, Offer, OfferStatusChange, OrderLine
from orders.pricing import LinePrice, PriceLine
from orders.quotes import buyer_organization
from orders.selectors import active_dua_template

logger = logging.getLogger(__name__)

S = Offer.Status
OFFER_TRANSITIONS = {
    S.OPEN: {S.SUPERSEDED, S.ACCEPTED, S.DECLINED, S.WITHDRAWN, S.EXPIRED},
    S.SUPERSEDED: set(),
    S.ACCEPTED: set(),
    S.DECLINED: set(),
    S.WITHDRAWN: set(),
    S.EXPIRED: set(),
}
DEFAULT_VALIDITY = timedelta(days=14)
MAX_VALIDITY = timedelta(days=365)
MAX_MESSAGE = 5000
MAX_REASON = 500
# Offers marked expired per sweep: each is one row lock, one history row and one notice.
EXPIRE_BATCH = 500

T = TypeVar("T")


class OfferError(OrderError):
    code = "offer_error"


# ---- reads -----------------------------------------------------------------------------

def negotiations_for_user(*, user: User) -> QuerySet[Negotiation]:
    """Negotiations the user may read: their organizations' (buyer or provider side), or all
    for staff allowed to view negotiations."""
    base = Negotiation.objects.select_related("dataset", "provider", "buyer_organization", "requester")
    if not user.is_authenticated:
        return base.none()
    if user.has_perm("orders.view_negotiation"):
        return base.all()
    orgs = Membership.objects.filter(user=user).values("organization_id")
    return base.filter(Q(buyer_organization__in=orgs) | Q(provider__in=orgs))


def negotiations_as_buyer(*, user: User) -> QuerySet[Negotiation]:
    orgs = Membership.objects.filter(user=user, organization__kind=Organization.Kind.BUYER).values("organization_id")
    return negotiations_for_user(user=user).filter(buyer_organization__in=orgs).prefetch_related("offers")


def negotiations_as_provider(*, user: User) -> QuerySet[Negotiation]:
    orgs = Membership.objects.filter(user=user, organization__kind=Organization.Kind.PROVIDER).values(
        "organization_id")
    return negotiations_for_user(user=user).filter(provider__in=orgs).prefetch_related("offers")


def access_negotiation(*, user: User, negotiation_id: int) -> Negotiation:
    """The negotiation if the user may read it; the same NotFoundError for missing and for
    someone else's."""
    negotiation = negotiations_for_user(user=user).filter(pk=negotiation_id).first()
    if negotiation is None:
        raise NotFoundError("Negotiation not found.")
    return negotiation


def negotiation_side(*, user: User, negotiation: Negotiation) -> str | None:
    """The side the user acts for: "buyer", "provider", or None (staff who only read)."""
    if not user.is_authenticated:
        return None
    orgs = set(Membership.objects.filter(user=user).values_list("organization_id", flat=True))
    if negotiation.buyer_organization_id in orgs:
        return Offer.Side.BUYER
    if negotiation.provider_id in orgs:
        return Offer.Side.PROVIDER
    return None


def offer_terms(offer: Offer) -> LicenceTerms:
    return LicenceTerms.from_dict(offer.terms)


def offer_status_words(offer: Offer) -> str:
    """"Open until …", "Superseded by version N", "Declined: reason", "Expired on …"."""
    when = _date(offer.decided_at or offer.expires_at)
    if offer.status == S.OPEN and offer.expires_at <= timezone.now():
        return f"Expired on {_date(offer.expires_at)}"  # the sweep has not marked it yet
    if offer.status == S.OPEN:
        return f"Open until {_date(offer.expires_at)}"
    if offer.status == S.SUPERSEDED:
        return f"Superseded by version {offer.number + 1}"
    if offer.status == S.DECLINED:
        return f"Declined: {offer.decline_reason}" if offer.decline_reason else "Declined"
    if offer.status == S.EXPIRED:
        return f"Expired on {_date(offer.expires_at)}"
    if offer.status == S.ACCEPTED:
        return f"Accepted on {when}"
    return "Withdrawn"


def offer_changes(previous: Offer | None, offer: Offer) -> list[tuple[str, str, str]]:
    """(label, before, after) for the price and each licence term that changed since the
    previous version; empty for the first version."""
    if previous is None:
        return []
    changes = []
    before, after = format_money(previous.price_minor, previous.currency), format_money(offer.price_minor,
                                                                                         offer.currency)
    if before != after:
        changes.append(("Price", before, after))
    return changes + terms_diff(offer_terms(previous), offer_terms(offer))


def negotiation_versions(negotiation: Negotiation) -> list[dict[str, Any]]:
    """Each version for the thread page: the offer, its price, its terms in words, its
    status in words and what changed from the version before it."""
    rows, previous = [], None
    for offer in negotiation.offers.select_related("author").order_by("number"):
        rows.append({"offer": offer, "price": format_money(offer.price_minor, offer.currency),
                     "terms": offer_terms(offer).describe(), "status_words": offer_status_words(offer),
                     "changes": offer_changes(previous, offer), "used": _used_by(offer)})
        previous = offer
    return rows


def negotiation_open_offer(negotiation: Negotiation) -> Offer | None:
    return negotiation.offers.filter(status=S.OPEN).first()


def negotiation_accepted_offer(negotiation: Negotiation) -> Offer | None:
    return negotiation.offers.filter(status=S.ACCEPTED).first()


def negotiation_criteria_words(negotiation: Negotiation) -> list[dict[str, str]]:
    return describe(cohort_from(negotiation.criteria or {}))


def negotiation_url(negotiation: Negotiation) -> str:
    return f"{settings.SITE_URL.rstrip('/')}{reverse('negotiation_detail', args=[negotiation.pk])}"


def offer_problem(*, offer: Offer, buyer: User) -> str:
    """Why an offer in the cart cannot be checked out now ("" when it can)."""
    if offer.status != S.ACCEPTED:
        return f"The offer (version {offer.number}) is no longer accepted ({offer.get_status_display().lower()})."
    used = _used_by(offer)
    if used is not None:
        return f"This offer was already used for order #{used}; an offer serves one order only."
    organization = buyer_organization(buyer)
    if organization is None or organization.pk != offer.negotiation.buyer_organization_id:
        return "This offer was made to another organization."
    return ""


def offer_price(offer: Offer) -> LinePrice:
    """The line's price at the offer: one line, the negotiated amount."""
    label = f"Negotiated price (negotiation #{offer.negotiation_id}, version {offer.number})"
    return LinePrice(model="offer", currency=offer.currency, lines=(PriceLine(label, offer.price_minor),),
                     total_minor=offer.price_minor)


def offer_line_fields(offer: Offer) -> dict[str, Any]:
    """What an order line bought at the offer records: the offer and its licence terms (the
    term itself starts when access is granted, like any line's)."""
    return {"offer": offer, "licence_terms": offer_terms(offer).to_dict()}


# ---- input -----------------------------------------------------------------------------

def price_minor_from(amount: str, currency: str) -> int:
    """A typed price in major units ("1500", "1,500.50") as minor units of ``currency``."""
    text = (amount or "").strip().replace(",", "")
    if not text:
        raise OfferError("Give a price.", code="price_missing")
    try:
        return to_minor(text, _currency(currency))
    except MoneyValueError as exc:
        raise OfferError(f"The price is not valid: {exc}", code="price_invalid") from None


def terms_from_form(data: Any) -> dict[str, Any]:
    """The terms form's fields (a QueryDict or dict) as a terms dict for LicenceTerms; the
    two yes/no terms are checkboxes (absent: no)."""
    return {
        "use": data.get("use", "research"),
        "term_months": data.get("term_months", "") or None,
        "seats": data.get("seats", "") or None,
        "derivative_models": data.get("derivative_models") in ("on", "true", "yes", "1", True),
        "publication": data.get("publication") in ("on", "true", "yes", "1", True),
        "territory": data.get("territory", "") or "worldwide",
        "access": data.get("access", "download"),
    }


# ---- writes ----------------------------------------------------------------------------

def negotiation_request(*, buyer: User, dataset: Dataset, price_minor: int, currency: str, terms: dict[str, Any],
                        criteria: Any = None, message: str = "", expires_at: datetime | None = None,
                        ip: str | None = None) -> Negotiation:
    """A researcher asks the dataset's provider for these terms at this price (version 0,
    the request), for the dataset or a cohort of it. The provider's members are told."""
    return _audited(buyer, "negotiation.request", dataset, ip, lambda: _negotiation_request(
        buyer=buyer, dataset=dataset, price_minor=price_minor, currency=currency, terms=terms, criteria=criteria,
        message=message, expires_at=expires_at, ip=ip), detail={"dataset_id": dataset.pk})


@transaction.atomic
def _negotiation_request(*, buyer: User, dataset: Dataset, price_minor: int, currency: str, terms: dict[str, Any],
                         criteria: Any, message: str, expires_at: datetime | None, ip: str | None) -> Negotiation:
    organization = buyer_organization(buyer)
    if organization is None:
        raise OfferError("Only members of a buyer organization can ask for different terms.", code="not_buyer")
    if dataset.status != Dataset.Status.PUBLISHED:
        raise OfferError("This dataset is not available.", code="not_published")
    clean = cohort_criteria(cohort_from(criteria or {}))
    fields = _version_fields(price_minor=price_minor, currency=currency, terms=terms, message=message,
                             expires_at=expires_at)
    negotiation = Negotiation.objects.create(buyer_organization=organization, requester=buyer,
                                             provider_id=dataset.provider_id, dataset=dataset, criteria=clean)
    offer = Offer.objects.create(negotiation=negotiation, number=0, author=buyer, side=Offer.Side.BUYER, **fields)
    _history(offer, "", S.OPEN, buyer)
    audit_record(actor=buyer, action="negotiation.request", obj=negotiation, ip=ip, detail=_offer_detail(offer))
    _notify(negotiation, to_side=Offer.Side.PROVIDER,
            message=f"{organization.name} asks for different terms on “{dataset.title}”.")
    return negotiation


def negotiation_from_response(*, response: DataRequestResponse, acting_user: User, dataset_id: int,
                              price_minor: int, currency: str, terms: dict[str, Any], message: str = "",
                              expires_at: datetime | None = None, ip: str | None = None) -> Negotiation:
    """A provider turns its answer on the data-request board into a real offer (version 1)
    on one of its published datasets, to the requester's organization."""
    return _audited(acting_user, "negotiation.from_response", response.request, ip, lambda: _negotiation_from_response(
        response=response, acting_user=acting_user, dataset_id=dataset_id, price_minor=price_minor, currency=currency,
        terms=terms, message=message, expires_at=expires_at, ip=ip), detail={"response_id": response.pk})


@transaction.atomic
def _negotiation_from_response(*, response: DataRequestResponse, acting_user: User, dataset_id: int,
                               price_minor: int, currency: str, terms: dict[str, Any], message: str,
                               expires_at: datetime | None, ip: str | None) -> Negotiation:
    if not Membership.objects.filter(user=acting_user, organization_id=response.provider_id).exists():
        raise OfferError("Only members of the provider that answered can make this offer.", code="not_yours")
    data_request: DataRequest = response.request
    if data_request.status != DataRequest.Status.OPEN:
        raise OfferError("This request is closed.", code="request_closed")
    organization = buyer_organization(data_request.requester)
    if organization is None:
        raise OfferError("The researcher belongs to no buyer organization; answer on the board instead.",
                         code="no_buyer_organization")
    dataset = Dataset.objects.filter(pk=dataset_id, provider_id=response.provider_id,
                                     status=Dataset.Status.PUBLISHED).first()
    if dataset is None:
        raise OfferError("Choose one of your published datasets.", code="bad_dataset")
    fields = _version_fields(price_minor=price_minor, currency=currency, terms=terms, message=message,
                             expires_at=expires_at)
    negotiation = Negotiation.objects.create(
        buyer_organization=organization, requester=data_request.requester, provider_id=response.provider_id,
        dataset=dataset, criteria=cohort_criteria(cohort_from(data_request.criteria or {})), data_request=data_request)
    offer = Offer.objects.create(negotiation=negotiation, number=1, author=acting_user, side=Offer.Side.PROVIDER,
                                 **fields)
    _history(offer, "", S.OPEN, acting_user)
    audit_record(actor=acting_user, action="negotiation.from_response", obj=negotiation, ip=ip,
                 detail={**_offer_detail(offer), "data_request_id": data_request.pk, "response_id": response.pk})
    _notify(negotiation, to_side=Offer.Side.BUYER,
            message=f"{response.provider.name} made an offer on “{dataset.title}” for your data request "
                    f"“{data_request.title}”.")
    return negotiation


def offer_make(*, negotiation_id: int, acting_user: User, price_minor: int, currency: str, terms: dict[str, Any],
               message: str = "", expires_at: datetime | None = None, ip: str | None = None) -> Offer:
    """A new version by either side: the provider's offer, or a counter by either side. It
    supersedes the open version, if any. The other side is told."""
    offers_expire(negotiation_id=negotiation_id)
    return _audited(acting_user, "offer.make", Negotiation(pk=negotiation_id), ip, lambda: _offer_make(
        negotiation_id=negotiation_id, acting_user=acting_user, price_minor=price_minor, currency=currency,
        terms=terms, message=message, expires_at=expires_at, ip=ip))


@transaction.atomic
def _offer_make(*, negotiation_id: int, acting_user: User, price_minor: int, currency: str, terms: dict[str, Any],
                message: str, expires_at: datetime | None, ip: str | None) -> Offer:
    # The negotiation row is locked: two counters at once would both read the same open
    # version and the same next number.
    negotiation = _lock_negotiation(acting_user, negotiation_id)
    side = _acting_side(acting_user, negotiation)
    accepted = negotiation_accepted_offer(negotiation)
    if accepted is not None:
        raise OfferError(f"This negotiation ended: version {accepted.number} was accepted.", code="negotiation_ended")
    fields = _version_fields(price_minor=price_minor, currency=currency, terms=terms, message=message,
                             expires_at=expires_at)
    previous = negotiation_open_offer(negotiation)
    if previous is not None:
        offer_transition(offer=previous, to=S.SUPERSEDED, acting_user=acting_user)
    last = negotiation.offers.order_by("-number").values_list("number", flat=True).first()
    offer = Offer.objects.create(negotiation=negotiation, number=(last or 0) + 1, author=acting_user, side=side,
                                 **fields)
    _history(offer, "", S.OPEN, acting_user)
    negotiation.save(update_fields=["updated"])
    audit_record(actor=acting_user, action="offer.make", obj=offer, ip=ip,
                 detail={**_offer_detail(offer), "superseded": previous.number if previous else None})
    other = _other(side)
    first_answer = previous is None or previous.is_request
    what = "an offer" if side == Offer.Side.PROVIDER and first_answer else "a counter-offer"
    _notify(negotiation, to_side=other,
            message=f"{_side_name(negotiation, side)} made {what} (version {offer.number}, "
                    f"{format_money(offer.price_minor, offer.currency)}) on “{negotiation.dataset.title}”.")
    return offer


def offer_accept(*, offer_id: int, acting_user: User, ip: str | None = None) -> Offer:
    """The other side accepts an open version: it goes into the buyer's cart at its price
    and terms (the accepting member's cart when the buyer accepts, the requester's when
    the provider accepts the buyer's version). Refused for one's own version and for
    versions that are no longer open."""
    offers_expire(offer_id=offer_id)
    return _audited(acting_user, "offer.accept", Offer(pk=offer_id), ip,
                    lambda: _offer_accept(offer_id=offer_id, acting_user=acting_user, ip=ip))


@transaction.atomic
def _offer_accept(*, offer_id: int, acting_user: User, ip: str | None) -> Offer:
    offer, side = _lock_offer_for_answer(acting_user, offer_id, verb="accept")
    negotiation = offer.negotiation
    offer = offer_transition(offer=offer, to=S.ACCEPTED, acting_user=acting_user)
    cart_user = acting_user if side == Offer.Side.BUYER else negotiation.requester
    item = _cart_put(offer=offer, buyer=cart_user, ip=ip)
    audit_record(actor=acting_user, action="offer.accept", obj=offer, ip=ip,
                 detail={**_offer_detail(offer), "cart_user_id": cart_user.pk, "cart_item_id": item.pk})
    _notify(negotiation, to_side=_other(side),
            message=f"{_side_name(negotiation, side)} accepted version {offer.number} "
                    f"({format_money(offer.price_minor, offer.currency)}) on “{negotiation.dataset.title}”."
                    + (" It is in your cart." if side == Offer.Side.PROVIDER else ""))
    return offer


def offer_decline(*, offer_id: int, acting_user: User, reason: str, ip: str | None = None) -> Offer:
    """The other side declines an open version, with a reason the author reads."""
    offers_expire(offer_id=offer_id)
    return _audited(acting_user, "offer.decline", Offer(pk=offer_id), ip,
                    lambda: _offer_decline(offer_id=offer_id, acting_user=acting_user, reason=reason, ip=ip))


@transaction.atomic
def _offer_decline(*, offer_id: int, acting_user: User, reason: str, ip: str | None) -> Offer:
    reason = " ".join((reason or "").split())
    if not reason:
        raise OfferError("Say why you decline, so the other side can answer.", code="reason_missing")
    if len(reason) > MAX_REASON:
        raise OfferError(f"The reason is longer than {MAX_REASON} characters.", code="reason_too_long")
    offer, side = _lock_offer_for_answer(acting_user, offer_id, verb="decline")
    offer.decline_reason = reason
    offer.save(update_fields=["decline_reason"])
    offer = offer_transition(offer=offer, to=S.DECLINED, acting_user=acting_user, reason=reason)
    audit_record(actor=acting_user, action="offer.decline", obj=offer, ip=ip, detail=_offer_detail(offer))
    negotiation = offer.negotiation
    _notify(negotiation, to_side=_other(side),
            message=f"{_side_name(negotiation, side)} declined version {offer.number} on "
                    f"“{negotiation.dataset.title}”: {reason}")
    return offer


def offer_withdraw(*, offer_id: int, acting_user: User, ip: str | None = None) -> Offer:
    """The author's side takes back its open version."""
    offers_expire(offer_id=offer_id)
    return _audited(acting_user, "offer.withdraw", Offer(pk=offer_id), ip,
                    lambda: _offer_withdraw(offer_id=offer_id, acting_user=acting_user, ip=ip))


@transaction.atomic
def _offer_withdraw(*, offer_id: int, acting_user: User, ip: str | None) -> Offer:
    offer = _lock_offer(acting_user, offer_id)
    side = _acting_side(acting_user, offer.negotiation)
    if offer.side != side:
        raise OfferError("Only the side that made a version can withdraw it; decline it instead.",
                         code="not_your_offer")
    _require_open(offer)
    offer = offer_transition(offer=offer, to=S.WITHDRAWN, acting_user=acting_user)
    audit_record(actor=acting_user, action="offer.withdraw", obj=offer, ip=ip, detail=_offer_detail(offer))
    negotiation = offer.negotiation
    _notify(negotiation, to_side=_other(side),
            message=f"{_side_name(negotiation, side)} withdrew version {offer.number} on "
                    f"“{negotiation.dataset.title}”.")
    return offer


def offer_cart_add(*, offer_id: int, acting_user: User, ip: str | None = None) -> CartItem:
    """Put an accepted offer that no order used yet (back) into a buyer member's cart."""
    return _audited(acting_user, "offer.cart_add", Offer(pk=offer_id), ip,
                    lambda: _offer_cart_add(offer_id=offer_id, acting_user=acting_user, ip=ip))


@transaction.atomic
def _offer_cart_add(*, offer_id: int, acting_user: User, ip: str | None) -> CartItem:
    offer = _lock_offer(acting_user, offer_id)
    if _acting_side(acting_user, offer.negotiation) != Offer.Side.BUYER:
        raise OfferError("Only members of the buyer organization can order at this offer.", code="not_buyer")
    problem = offer_problem(offer=offer, buyer=acting_user)
    if problem:
        raise OfferError(problem, code="offer_unusable")
    return _cart_put(offer=offer, buyer=acting_user, ip=ip)


def offers_expire(*, now: datetime | None = None, negotiation_id: int | None = None,
                  offer_id: int | None = None) -> int:
    """Mark open versions past their expiry as expired (all of them, one negotiation's, or
    one offer), each under its row lock, and tell their author. Safe to run twice: a
    version another run expired, or that was answered meanwhile, is skipped. Returns how
    many were marked."""
    now = now or timezone.now()
    due = Offer.objects.filter(status=S.OPEN, expires_at__lte=now)
    if negotiation_id is not None:
        due = due.filter(negotiation_id=negotiation_id)
    if offer_id is not None:
        due = due.filter(pk=offer_id)
    marked = 0
    for pk in due.order_by("expires_at", "pk").values_list("pk", flat=True)[:EXPIRE_BATCH]:
        with transaction.atomic():
            offer = Offer.objects.select_for_update().select_related("negotiation__dataset").filter(pk=pk).first()
            if offer is None or offer.status != S.OPEN or offer.expires_at > now:
                continue
            offer_transition(offer=offer, to=S.EXPIRED, acting_user=None, reason="expired")
            audit_record(actor=None, action="offer.expire", obj=offer, detail=_offer_detail(offer))
            url = negotiation_url(offer.negotiation)
            author, message = offer.author, (f"Your version {offer.number} on “{offer.negotiation.dataset.title}” "
                                             f"expired on {_date(offer.expires_at)}.")
            transaction.on_commit(lambda author=author, message=message, url=url: notification_send(
                user=author, message=message, url=url))
            marked += 1
    return marked


@transaction.atomic
def offer_transition(*, offer: Offer, to: str, acting_user: User | None, reason: str = "") -> Offer:
    """The one service that moves an offer's status: under the row lock, along
    OFFER_TRANSITIONS, with a history row. Quiet when it is already there."""
    locked = Offer.objects.select_for_update().select_related("negotiation").get(pk=offer.pk)
    old = locked.status
    if old == to:
        return locked
    if to not in OFFER_TRANSITIONS[old]:
        raise InvalidTransitionError(f"Version {locked.number} cannot move from {S(old).label.lower()} to "
                                     f"{S(to).label.lower()}.")
    locked.status = to
    fields = ["status"]
    if to in (S.ACCEPTED, S.DECLINED, S.WITHDRAWN):
        locked.decided_by, locked.decided_at = acting_user, timezone.now()
        fields += ["decided_by", "decided_at"]
    locked.save(update_fields=fields)
    _history(locked, old, to, acting_user, reason)
    return locked


# ---- helpers ---------------------------------------------------------------------------

def _audited(actor: User, action: str, obj: Any, ip: str | None, run: Callable[[], T],
             detail: dict[str, Any] | None = None) -> T:
    """Run a service; a refusal is audited outside its rolled-back transaction, then raised."""
    try:
        return run()
    except ApplicationError as exc:
        audit_record(actor=actor, action=f"{action}.refused", obj=obj, ip=ip,
                     detail={**(detail or {}), "code": exc.code, "message": exc.message[:300]})
        raise


def _currency(code: str) -> str:
    code = (code or "").strip().upper()
    if code not in ACCEPTED_CODES:
        raise OfferError(f"Prices are in one of {', '.join(sorted(ACCEPTED_CODES))}, not {code or 'nothing'}.",
                         code="bad_currency")
    return code


def _version_fields(*, price_minor: int, currency: str, terms: dict[str, Any], message: str,
                    expires_at: datetime | None) -> dict[str, Any]:
    """A version's validated fields; raises OfferError naming what is wrong."""
    if isinstance(price_minor, bool) or not isinstance(price_minor, int):
        raise OfferError("The price must be a whole number of minor units.", code="price_invalid")
    if price_minor < 0:
        raise OfferError("The price cannot be negative.", code="price_negative")
    if price_minor > MAX_MINOR_AMOUNT:
        raise OfferError("The price is too large.", code="price_invalid")
    try:
        clean_terms = LicenceTerms.from_dict(terms).to_dict()
    except LicenceTermsError as exc:
        raise OfferError(str(exc), code="terms_invalid") from None
    now = timezone.now()
    expires_at = expires_at or now + DEFAULT_VALIDITY
    if expires_at <= now:
        raise OfferError("The offer's expiry must be in the future.", code="expiry_past")
    if expires_at > now + MAX_VALIDITY:
        raise OfferError("An offer stays open for at most a year.", code="expiry_too_far")
    message = (message or "").strip()
    if len(message) > MAX_MESSAGE:
        raise OfferError(f"The message is longer than {MAX_MESSAGE} characters.", code="message_too_long")
    dua = active_dua_template()
    return {"price_minor": price_minor, "currency": _currency(currency), "terms": clean_terms,
            "expires_at": expires_at, "message": message, "dua_template": dua,
            "dua_version": dua.version if dua else ""}


def _lock_negotiation(user: User, negotiation_id: int) -> Negotiation:
    access_negotiation(user=user, negotiation_id=negotiation_id)
    return Negotiation.objects.select_for_update().select_related(
        "dataset", "provider", "buyer_organization", "requester").get(pk=negotiation_id)


def _lock_offer(user: User, offer_id: int) -> Offer:
    """The offer, its negotiation locked first (the order _offer_make locks them in)."""
    negotiation_id = Offer.objects.filter(pk=offer_id).values_list("negotiation_id", flat=True).first()
    if negotiation_id is None:
        raise NotFoundError("Offer not found.")
    try:
        negotiation = _lock_negotiation(user, negotiation_id)
    except NotFoundError:
        raise NotFoundError("Offer not found.") from None
    offer = Offer.objects.select_for_update().get(pk=offer_id)
    offer.negotiation = negotiation
    return offer


def _acting_side(user: User, negotiation: Negotiation) -> str:
    side = negotiation_side(user=user, negotiation=negotiation)
    if side is None:
        raise OfferError("Only members of the two organizations act in a negotiation.", code="not_a_party")
    return side


def _require_open(offer: Offer) -> None:
    if offer.status == S.OPEN and offer.expires_at <= timezone.now():
        raise OfferError(f"Version {offer.number} expired on {_date(offer.expires_at)}.", code="offer_expired")
    refusals = {
        S.EXPIRED: (f"Version {offer.number} expired on {_date(offer.expires_at)}; ask for a new offer.",
                    "offer_expired"),
        S.SUPERSEDED: (f"Version {offer.number} was superseded by version {offer.number + 1}; answer the latest "
                       "version.", "offer_superseded"),
        S.WITHDRAWN: (f"Version {offer.number} was withdrawn.", "offer_withdrawn"),
        S.DECLINED: (f"Version {offer.number} was declined.", "offer_declined"),
        S.ACCEPTED: (f"Version {offer.number} was already accepted.", "offer_accepted"),
    }
    if offer.status in refusals:
        message, code = refusals[offer.status]
        raise OfferError(message, code=code)


def _lock_offer_for_answer(user: User, offer_id: int, *, verb: str) -> tuple[Offer, str]:
    offer = _lock_offer(user, offer_id)
    side = _acting_side(user, offer.negotiation)
    if offer.side == side:
        raise OfferError(f"You cannot {verb} your own side's version; wait for the other side's answer.",
                         code="own_offer")
    _require_open(offer)
    return offer, side


def _cart_put(*, offer: Offer, buyer: User, ip: str | None) -> CartItem:
    from orders.cart import cart_add

    negotiation = offer.negotiation
    item = cart_add(buyer=buyer, dataset=negotiation.dataset, criteria=negotiation.criteria, ip=ip)
    # The negotiated price covers the agreed selection whole: nothing is left out as held.
    item.offer, item.include_held = offer, True
    item.save(update_fields=["offer", "include_held"])
    return item


def _used_by(offer: Offer) -> int | None:
    return OrderLine.objects.filter(offer=offer).values_list("order_id", flat=True).first()


def _history(offer: Offer, old: str, new: str, acting_user: User | None, reason: str = "") -> None:
    OfferStatusChange.objects.create(offer=offer, old_status=old, new_status=new, acting_user=acting_user,
                                     reason=reason[:2000])


def _offer_detail(offer: Offer) -> dict[str, Any]:
    return {"negotiation_id": offer.negotiation_id, "number": offer.number, "side": offer.side,
            "price_minor": offer.price_minor, "currency": offer.currency, "status": offer.status}


def _other(side: str) -> str:
    return Offer.Side.PROVIDER if side == Offer.Side.BUYER else Offer.Side.BUYER


def _side_name(negotiation: Negotiation, side: str) -> str:
    return negotiation.buyer_organization.name if side == Offer.Side.BUYER else negotiation.provider.name


def _notify(negotiation: Negotiation, *, to_side: str, message: str) -> None:
    """In the app and by e-mail with an absolute link, after commit: the provider's members,
    or on the buyer's side the requester and every buyer member who wrote a version."""
    if to_side == Offer.Side.PROVIDER:
        users = User.objects.filter(memberships__organization_id=negotiation.provider_id, is_active=True)
    else:
        authors = negotiation.offers.filter(side=Offer.Side.BUYER).values("author_id")
        users = User.objects.filter(Q(pk=negotiation.requester_id) | Q(pk__in=authors), is_active=True,
                                    memberships__organization_id=negotiation.buyer_organization_id)
    recipients = list(users.distinct())
    url = negotiation_url(negotiation)

    def send() -> None:
        for user in recipients:
            notification_send(user=user, message=message, url=url)

    transaction.on_commit(send)


def _date(value: datetime | None) -> str:
    # The pages' date-time format, zone included (a notice written by the worker says UTC).
    return when_text(value) if value else ""
