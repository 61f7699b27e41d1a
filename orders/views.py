"""Ordering pages: a dataset's quote, the cart, checkout, the order with its payment and
invoice, and the provider's sales. Business rules live in the services they call."""
from __future__ import annotations

import json
from datetime import date, datetime, time
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from catalog.datasets.selectors import access_dataset, dataset_study_breakdown, datasets_for_provider_user
from catalog.disclosure import BelowThresholdError
from catalog.exceptions import InvalidQueryError
from catalog.licence import ACCESS_MODES, USES, LicenceTerms
from catalog.models import DataRequestResponse, Dataset
from catalog.search.criteria import cohort_criteria, cohort_from, describe
from marketplace.exceptions import ApplicationError, NotFoundError
from marketplace.guards import require_verified_email
from marketplace.input_guard import InvalidInputError, bad_input_response, minor_amount_from
from marketplace.ratelimit import RateLimitedError
from marketplace.selectors import provider_organizations_for_user
from marketplace.services import client_ip
from marketplace.vetting import ordering_refusal
from orders import stripe_gateway
from orders.agreement_pdf import agreement_document, agreement_pdf
from orders.agreements import agreement_sha256, agreement_text_for
from orders.cart import cart_add, cart_add_cohort, cart_include_held, cart_items, cart_quote, cart_remove
from orders.checkout import checkout, payment_methods_for, sample_take
from orders.consent import (
    access_consent_line,
    consent_approve_signed,
    consent_decline,
    consent_lines_for_provider_user,
)
from orders.currency import ACCEPTED_CURRENCIES, format_money
from orders.entitlements import entitlement_renew, line_renewable
from orders.exceptions import OrderError
from orders.invoice_pdf import invoice_pdf_bytes
from orders.models import Negotiation, Offer, Order, OrderLine
from orders.offers import (
    OfferError,
    access_negotiation,
    negotiation_accepted_offer,
    negotiation_criteria_words,
    negotiation_from_response,
    negotiation_request,
    negotiation_side,
    negotiation_versions,
    negotiations_as_buyer,
    negotiations_as_provider,
    offer_accept,
    offer_cart_add,
    offer_decline,
    offer_make,
    offer_problem,
    offer_status_words,
    offer_withdraw,
    offers_expire,
    price_minor_from,
    terms_from_form,
)
from orders.payments import card_pay, card_setup
from orders.quotes import quote_for_buyer
from orders.selectors import (
    access_agreement,
    access_invoice,
    access_order,
    active_dua_template,
    orders_for_buyer,
    provider_sales_summary,
)
from orders.signatures import signature_manifest, signing_needs_totp
from orders.webhooks import event_process, event_store

CRITERIA_ERRORS = (InvalidQueryError, BelowThresholdError, RateLimitedError)
NOT_CRITERIA = ("csrfmiddlewaretoken", "accept", "expected_total", "action")
# The terms form's own fields; the rest of the query string is the cohort.
NOT_OFFER_FIELDS = ("csrfmiddlewaretoken", "price", "currency", "use", "term_months", "seats", "derivative_models",
                    "publication", "territory", "access", "message", "expires_on")


@login_required
def order_new(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """The quote for a cohort's studies of one dataset: every criterion in words (each can
    be removed), the price line by line; "Add to cart" keeps the cohort whole."""
    dataset = access_dataset(user=request.user, dataset_id=dataset_id)
    data = request.POST if request.method == "POST" else request.GET
    error, status, quote, retry_after = "", 200, None, None
    criteria: dict[str, list[str]] = {}
    try:
        criteria = cohort_criteria(cohort_from({k: v for k, v in data.lists() if k not in NOT_CRITERIA}))
        quote = quote_for_buyer(user=request.user, dataset=dataset, criteria=criteria, ip=client_ip(request))
    except CRITERIA_ERRORS as exc:
        error, status = exc.message, exc.status
        retry_after = exc.extra.get("retry_after")
    if request.method == "POST" and not error:
        try:
            cart_add(buyer=request.user, dataset=dataset, criteria=criteria, ip=client_ip(request))
        except ApplicationError as exc:
            error, status = exc.message, exc.status
        else:
            messages.success(request, f"{dataset.title} is in your cart.")
            return redirect("cart")
    breakdown = dataset_study_breakdown(dataset=dataset, user=request.user)
    checkboxes = {(facet["key"], row["value"]) for facet in breakdown for row in facet["rows"] if row["orderable"]}
    context = {
        "dataset": dataset, "quote": quote, "error": error, "criteria": criteria,
        "words": describe(cohort_from(criteria)), "breakdown": breakdown,
        # Criteria without a checkbox here (other kinds, or values this dataset lacks) travel as
        # hidden fields, so "Update price" keeps them.
        "carried": [(k, v) for k, vs in criteria.items() for v in vs if (k, v) not in checkboxes],
    }
    response = render(request, "orders/order_new.html", context, status=status if error else 200)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


@login_required
def cart(request: HttpRequest) -> HttpResponse:
    """The cart: each dataset's line priced now, what cannot be ordered and why, and the
    checkout form (payment method, purchase order number, the agreement and the buyer's
    signature: password, and TOTP code when the account has TOTP)."""
    error, status = "", 200
    if request.method == "POST":
        action, dataset_id = request.POST.get("action", ""), request.POST.get("dataset_id", "")
        if dataset_id.isdigit() and action == "remove":
            cart_remove(buyer=request.user, dataset_id=int(dataset_id))
        elif dataset_id.isdigit() and action in ("include_held", "exclude_held"):
            cart_include_held(buyer=request.user, dataset_id=int(dataset_id), include=action == "include_held")
        else:
            error, status = "That change to the cart was not understood.", 400
        if not error:
            return redirect("cart")
    items = cart_items(request.user)
    quote = cart_quote(buyer=request.user, items=items)
    include_held = {item.dataset_id for item in items if item.include_held}
    total = None if quote.mixed_currencies or not quote.lines else quote.total_minor
    dua = active_dua_template()
    # The exact text checkout will store on the contract, for the lines in this order.
    agreement = agreement_text_for(template=dua, datasets=[line.dataset for line in quote.lines]) if dua else ""
    context = {
        "quote": quote, "error": error, "dua": dua, "include_held": include_held,
        "agreement_text": agreement, "agreement_sha256": agreement_sha256(agreement) if agreement else "",
        "methods": payment_methods_for(buyer=request.user, total_minor=total) if total is not None else [],
        "method_labels": dict(Order.PaymentMethod.choices), "needs_totp": signing_needs_totp(request.user),
        # Shown before the buyer fills the checkout form, which is then not offered.
        "ordering_refusal": ordering_refusal(user=request.user), "use_categories": Order.UseCategory.choices,
        "delivery_formats": Order.DeliveryFormat.choices,
    }
    return render(request, "orders/cart.html", context, status=status)


@login_required
@require_POST
def cart_add_whole_cohort(request: HttpRequest) -> HttpResponse:
    try:
        added = cart_add_cohort(buyer=request.user, ip=client_ip(request),
                                criteria={k: v for k, v in request.POST.lists() if k not in NOT_CRITERIA})
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(f"{request.META.get('HTTP_REFERER') or '/cohorts/'}")
    messages.success(request, f"{len(added)} dataset(s) of this cohort are in your cart.")
    return redirect("cart")


@login_required
@require_POST
def cart_checkout(request: HttpRequest) -> HttpResponse:
    dua = active_dua_template()
    try:
        # The total the buyer saw; refused when missing or unreadable, never skipped.
        expected = minor_amount_from(request.POST.get("expected_total_minor", ""), field="expected_total_minor")
    except InvalidInputError as exc:
        return bad_input_response(request, exc)
    try:
        if dua is None:
            raise OrderError("Ordering is unavailable: no data use agreement is configured.", code="no_agreement")
        require_verified_email(user=request.user)
        order = checkout(
            buyer=request.user, payment_method=request.POST.get("payment_method", ""),
            accept_agreement=request.POST.get("accept") == "on", dua_template=dua,
            expected_total_minor=expected,
            expected_currency=request.POST.get("expected_currency") or None,
            po_number=request.POST.get("po_number", ""), password=request.POST.get("password", ""),
            totp_code=request.POST.get("totp_code", ""), ip=client_ip(request),
            intended_use=request.POST.get("intended_use", ""), use_category=request.POST.get("use_category", ""),
            delivery_format=request.POST.get("delivery_format") or None)
    except ApplicationError as exc:
        if exc.code == "empty_order":
            latest = orders_for_buyer(user=request.user).first()
            if latest is not None:  # a second click after the order was placed
                return redirect("order_detail", order_id=latest.pk)
        messages.error(request, exc.message)
        return redirect("cart")
    messages.success(request, _placed_message(order))
    return redirect("order_detail", order_id=order.pk)


def _placed_message(order: Order) -> str:
    if order.payment_method == Order.PaymentMethod.CARD:
        return "Order placed. Pay by card below; an administrator then reviews the agreement before delivery."
    if order.payment_method == Order.PaymentMethod.INVOICE:
        return "Order placed and invoiced. An administrator reviews the agreement and the credit terms."
    return "Order placed. An administrator reviews the agreement before delivery."


@login_required
def sample(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """A dataset's free sample: the agreement, then a free order of its first studies."""
    dataset = access_dataset(user=request.user, dataset_id=dataset_id)
    dua, error = active_dua_template(), ""
    if request.method == "POST":
        try:
            if dua is None:
                raise OrderError("Ordering is unavailable: no data use agreement is configured.",
                                 code="no_agreement")
            require_verified_email(user=request.user)
            order = sample_take(buyer=request.user, dataset=dataset, accept_agreement=request.POST.get("accept") == "on",
                                dua_template=dua, password=request.POST.get("password", ""),
                                totp_code=request.POST.get("totp_code", ""), ip=client_ip(request))
        except ApplicationError as exc:
            error = exc.message
        else:
            messages.success(request, "Sample ordered. An administrator reviews the agreement before delivery.")
            return redirect("order_detail", order_id=order.pk)
    agreement = agreement_text_for(template=dua, datasets=[dataset]) if dua else ""
    return render(request, "orders/sample.html", {"dataset": dataset, "dua": dua, "error": error,
                                                  "agreement_text": agreement,
                                                  "agreement_sha256": agreement_sha256(agreement) if agreement else "",
                                                  "needs_totp": signing_needs_totp(request.user),
                                                  "ordering_refusal": ordering_refusal(user=request.user)},
                  status=400 if error else 200)


@login_required
def order_list(request: HttpRequest) -> HttpResponse:
    orders = orders_for_buyer(user=request.user).prefetch_related("lines__dataset")
    return render(request, "orders/order_list.html", {"orders": orders})


@login_required
def order_detail(request: HttpRequest, order_id: int) -> HttpResponse:
    order = access_order(user=request.user, order_id=order_id)
    context = {"order": order, "history": order.status_changes.all(), "pay": None,
               "lines": [(line, describe(cohort_from(line.criteria)), line_renewable(line))
                         for line in order.lines.all()],
               "signatures": signature_manifest(order.contract)}
    if order.payment_method == Order.PaymentMethod.CARD and order.status == Order.Status.OPEN and \
            order.payment_status in (Order.PaymentStatus.UNPAID, Order.PaymentStatus.FAILED):
        try:
            context["pay"] = {"client_secret": card_setup(order=order, buyer=request.user),
                              "publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
                              "js_url": settings.STRIPE_JS_URL}
        except ApplicationError as exc:
            context["pay_error"] = exc.message
    response = render(request, "orders/order_detail.html", context)
    if context["pay"]:
        _allow_stripe_js(response)
    return response


@login_required
@require_POST
def line_renew(request: HttpRequest, order_id: int, line_id: int) -> HttpResponse:
    """Renew a subscription line: its dataset goes into the cart at today's terms."""
    order = access_order(user=request.user, order_id=order_id)
    line = order.lines.filter(pk=line_id).first()
    if line is None:
        raise Http404("Order line not found.")
    try:
        entitlement_renew(request.user, line, ip=client_ip(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("order_detail", order_id=order.pk)
    messages.success(request, f"{line.dataset.title} is in your cart at its current price; check out to renew.")
    return redirect("cart")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _allow_stripe_js(response: HttpResponse) -> None:
    """The card form loads Stripe.js, which calls Stripe's API and may frame its 3-D
    Secure page: allowed on this page only, for the origins configured now."""
    js, api = _origin(settings.STRIPE_JS_URL), _origin(settings.STRIPE_API_BASE)
    response._csp_update = {"script-src": [js], "connect-src": sorted({js, api}), "frame-src": [js]}


@login_required
@require_POST
def order_pay(request: HttpRequest, order_id: int) -> JsonResponse:
    """The card form's submit (JSON): charge the order once; the answer says what the
    browser does next. Paid is decided by the webhook, never here."""
    order = access_order(user=request.user, order_id=order_id)
    try:
        body = json.loads(request.body or b"{}")
        payment_method = body.get("payment_method", "") if isinstance(body, dict) else ""
        step = card_pay(order=order, buyer=request.user, payment_method=str(payment_method)[:100],
                        ip=client_ip(request))
    except ValueError:
        return JsonResponse({"error": "The card form sent something unreadable; reload the page."}, status=400)
    except ApplicationError as exc:
        return JsonResponse({"error": exc.message, "code": exc.code}, status=exc.status)
    return JsonResponse({"status": step.status, "client_secret": step.client_secret, "message": step.message})


@login_required
def order_status(request: HttpRequest, order_id: int) -> JsonResponse:
    order = access_order(user=request.user, order_id=order_id)
    return JsonResponse({"status": order.status, "payment_status": order.payment_status,
                         "payment_status_label": order.get_payment_status_display(),
                         "fulfilment_status": order.fulfilment_status})


@login_required
def invoice_download(request: HttpRequest, order_id: int) -> HttpResponse:
    """The invoice as a PDF, for the buyer and for members of the providers it names."""
    invoice = access_invoice(user=request.user, order_id=order_id)
    response = HttpResponse(invoice_pdf_bytes(invoice), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{invoice.number}.pdf"'
    return response


@login_required
def order_agreement(request: HttpRequest, order_id: int) -> HttpResponse:
    """The agreement with its signature manifest, for the buyer, the order's providers
    (their own lines only) and staff."""
    contract, provider_ids = access_agreement(user=request.user, order_id=order_id)
    return render(request, "orders/agreement.html",
                  {"order": contract.order, "doc": agreement_document(contract, provider_ids=provider_ids)})


@login_required
def order_agreement_pdf(request: HttpRequest, order_id: int) -> HttpResponse:
    contract, provider_ids = access_agreement(user=request.user, order_id=order_id)
    response = HttpResponse(agreement_pdf(contract, provider_ids=provider_ids), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="order-{order_id}-agreement.pdf"'
    return response


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Stripe's events: the signature is checked on the raw body, the event stored once
    by its id, then handled. 400 for a bad signature; 500 (Stripe retries) when handling
    failed."""
    try:
        event = stripe_gateway.verify_webhook(request.body, request.headers.get("Stripe-Signature", ""))
    except stripe_gateway.WebhookSignatureError:
        return HttpResponse("invalid signature", status=400, content_type="text/plain")
    stored, _ = event_store(event)
    try:
        event_process(stored)
    except Exception:  # noqa: BLE001 - recorded on the event row; Stripe delivers it again
        return HttpResponse("handler failed; will retry", status=500, content_type="text/plain")
    return HttpResponse("ok", content_type="text/plain")


@login_required
def provider_dashboard(request: HttpRequest) -> HttpResponse:
    """The provider's datasets, sales, fees, net earnings, balance and transfers."""
    organizations = provider_organizations_for_user(user=request.user)
    if not organizations.exists():
        messages.info(request, "Only members of a provider organization can publish data.")
        return redirect("home")
    context = {
        "organizations": organizations,
        "datasets": datasets_for_provider_user(user=request.user).order_by("-created"),
        **provider_sales_summary(user=request.user),
    }
    return render(request, "orders/provider_dashboard.html", context)




# ---- negotiated offers (services in orders/offers.py) ----------------------------------

def _version_input(data: QueryDict) -> dict:
    """The terms form's price, currency, terms, message and expiry as service arguments."""
    currency = data.get("currency", "")
    expires_at = None
    if data.get("expires_on"):
        try:
            day = date.fromisoformat(data["expires_on"])
        except ValueError:
            raise OfferError("The expiry date is not a date (YYYY-MM-DD).", code="expiry_invalid") from None
        expires_at = timezone.make_aware(datetime.combine(day, time(23, 59)))
    return {"price_minor": price_minor_from(data.get("price", ""), currency), "currency": currency,
            "terms": terms_from_form(data), "message": data.get("message", ""), "expires_at": expires_at}


def _terms_form_context(data: QueryDict | None, currency: str, base: dict | None = None) -> dict:
    """What the terms form shows: the posted values after an error, else ``base`` terms."""
    terms = LicenceTerms.from_dict(base) if base else LicenceTerms()
    initial = {"use": terms.use, "term_months": terms.term_months or "", "seats": terms.seats or "",
               "derivative_models": terms.derivative_models, "publication": terms.publication,
               "territory": ", ".join(terms.territory), "access": terms.access, "currency": currency,
               "price": "", "message": "", "expires_on": ""}
    if data is not None:
        initial.update({k: data.get(k, "") for k in initial if k not in ("derivative_models", "publication")})
        initial["derivative_models"] = data.get("derivative_models") == "on"
        initial["publication"] = data.get("publication") == "on"
    return {"form": initial, "uses": USES.items(), "access_modes": ACCESS_MODES.items(),
            "currencies": ACCEPTED_CURRENCIES}


@login_required
def negotiation_new(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """"Ask for different terms": the researcher states the price and terms they want for
    the dataset or their cohort of it; the provider answers in the negotiation."""
    dataset = access_dataset(user=request.user, dataset_id=dataset_id)
    source = request.POST if request.method == "POST" else request.GET
    error, criteria = "", {}
    try:
        criteria = cohort_criteria(cohort_from({k: v for k, v in source.lists() if k not in NOT_OFFER_FIELDS}))
    except InvalidQueryError as exc:
        error = exc.message
    if request.method == "POST" and not error:
        try:
            negotiation = negotiation_request(buyer=request.user, dataset=dataset, criteria=criteria,
                                              ip=client_ip(request), **_version_input(request.POST))
        except NotFoundError:
            raise
        except ApplicationError as exc:
            error = exc.message
        else:
            messages.success(request, "Your request was sent to the provider; you will be told of each answer.")
            return redirect("negotiation_detail", negotiation_id=negotiation.pk)
    context = {"dataset": dataset, "criteria": criteria, "words": describe(cohort_from(criteria)), "error": error,
               **_terms_form_context(request.POST if request.method == "POST" else None, dataset.currency)}
    return render(request, "orders/negotiation_new.html", context, status=400 if error else 200)


@login_required
def negotiation_list(request: HttpRequest) -> HttpResponse:
    """My negotiations: the threads of the user's buyer organizations."""
    return render(request, "orders/negotiation_list.html",
                  {"title": "My negotiations", "rows": _negotiation_rows(negotiations_as_buyer(user=request.user)),
                   "as_provider": False})


@login_required
def provider_negotiations(request: HttpRequest) -> HttpResponse:
    """The provider's inbox: requests and counters from buyers on its datasets."""
    return render(request, "orders/negotiation_list.html",
                  {"title": "Negotiations with buyers",
                   "rows": _negotiation_rows(negotiations_as_provider(user=request.user)), "as_provider": True})


def _negotiation_rows(negotiations: QuerySet[Negotiation]) -> list[dict]:
    rows = []
    for negotiation in negotiations[:200]:
        latest = max(negotiation.offers.all(), key=lambda o: o.number, default=None)
        rows.append({"negotiation": negotiation, "latest": latest,
                     "latest_price": format_money(latest.price_minor, latest.currency) if latest else "",
                     "latest_words": offer_status_words(latest) if latest else ""})
    return rows


@login_required
def negotiation_detail(request: HttpRequest, negotiation_id: int) -> HttpResponse:
    """The thread: each version with its price, terms, expiry, status and changes; the
    answers the user's side may give; a new version (offer or counter)."""
    negotiation = access_negotiation(user=request.user, negotiation_id=negotiation_id)
    offers_expire(negotiation_id=negotiation.pk)
    error = ""
    if request.method == "POST":
        try:
            offer_make(negotiation_id=negotiation.pk, acting_user=request.user, ip=client_ip(request),
                       **_version_input(request.POST))
        except NotFoundError:
            raise
        except ApplicationError as exc:
            error = exc.message
        else:
            messages.success(request, "Your version was sent; the other side is told.")
            return redirect("negotiation_detail", negotiation_id=negotiation.pk)
    versions = negotiation_versions(negotiation)
    latest = versions[-1]["offer"] if versions else None
    side = negotiation_side(user=request.user, negotiation=negotiation)
    accepted = negotiation_accepted_offer(negotiation)
    context = {
        "negotiation": negotiation, "versions": versions, "side": side, "error": error, "accepted": accepted,
        "words": negotiation_criteria_words(negotiation),
        "can_counter": side is not None and accepted is None,
        "accepted_usable": accepted is not None and side == Offer.Side.BUYER
        and not offer_problem(offer=accepted, buyer=request.user),
        **_terms_form_context(request.POST if error else None, latest.currency if latest else "USD",
                              latest.terms if latest else None),
    }
    return render(request, "orders/negotiation_detail.html", context, status=400 if error else 200)


@login_required
@require_POST
def offer_act(request: HttpRequest, offer_id: int) -> HttpResponse:
    """Accept, decline (with a reason) or withdraw a version, or put an accepted offer in
    the cart again."""
    action, ip = request.POST.get("action", ""), client_ip(request)
    services = {
        "accept": lambda: offer_accept(offer_id=offer_id, acting_user=request.user, ip=ip),
        "decline": lambda: offer_decline(offer_id=offer_id, acting_user=request.user,
                                         reason=request.POST.get("reason", ""), ip=ip),
        "withdraw": lambda: offer_withdraw(offer_id=offer_id, acting_user=request.user, ip=ip),
        "cart": lambda: offer_cart_add(offer_id=offer_id, acting_user=request.user, ip=ip),
    }
    if action not in services:
        return HttpResponse("Unknown action.", status=400, content_type="text/plain")
    try:
        result = services[action]()
    except NotFoundError:
        raise
    except ApplicationError as exc:
        messages.error(request, exc.message)
        negotiation_id = Offer.objects.filter(pk=offer_id).values_list("negotiation_id", flat=True).first()
        return redirect("negotiation_detail", negotiation_id=negotiation_id)
    to_cart = action == "cart" or (
        action == "accept" and negotiation_side(user=request.user, negotiation=result.negotiation) == "buyer")
    if to_cart:
        messages.success(request, "The offer is in your cart at its price and terms; check out to order.")
        return redirect("cart")
    done = {"accept": "Accepted: the offer is in the researcher's cart.",
            "decline": "Declined; the other side is told.", "withdraw": "Withdrawn."}
    messages.success(request, done[action])
    return redirect("negotiation_detail", negotiation_id=result.negotiation_id)


@login_required
def negotiation_from_board(request: HttpRequest, request_id: int, response_id: int) -> HttpResponse:
    """A provider's answer on the data-request board made into a real offer: the provider
    chooses one of its datasets and the terms, offered to the requester's organization."""
    response = DataRequestResponse.objects.select_related("request", "provider").filter(
        pk=response_id, request_id=request_id, provider__memberships__user=request.user).first()
    if response is None:
        raise NotFoundError("Answer not found.")
    datasets = Dataset.objects.filter(provider_id=response.provider_id, status=Dataset.Status.PUBLISHED).order_by(
        "title")
    error = ""
    if request.method == "POST":
        try:
            dataset_id = request.POST.get("dataset", "")
            negotiation = negotiation_from_response(
                response=response, acting_user=request.user, dataset_id=int(dataset_id) if dataset_id.isdigit() else 0,
                ip=client_ip(request), **_version_input(request.POST))
        except NotFoundError:
            raise
        except ApplicationError as exc:
            error = exc.message
        else:
            messages.success(request, "Your offer was sent to the researcher's organization.")
            return redirect("negotiation_detail", negotiation_id=negotiation.pk)
    default_currency = response.dataset.currency if response.dataset else "USD"
    context = {"response": response, "data_request": response.request, "datasets": datasets, "error": error,
               "chosen": request.POST.get("dataset", str(response.dataset_id or "")),
               **_terms_form_context(request.POST if request.method == "POST" else None, default_currency)}
    return render(request, "orders/negotiation_from_board.html", context, status=400 if error else 200)
@login_required
def consent_queue(request: HttpRequest) -> HttpResponse:
    """For provider members: the order lines waiting for their consent, and recent decisions."""
    if not provider_organizations_for_user(user=request.user).exists():
        raise Http404("Only members of a provider organization decide on consent.")
    lines = consent_lines_for_provider_user(user=request.user)
    context = {"pending": lines.filter(consent_status=OrderLine.ConsentStatus.PENDING),
               "decided": lines.exclude(consent_status=OrderLine.ConsentStatus.PENDING)[:50]}
    return render(request, "orders/consent_queue.html", context)


@login_required
def consent_line(request: HttpRequest, line_id: int) -> HttpResponse:
    """One order line: who orders it and what for, with Approve (signed: password, and TOTP
    code when the account has TOTP) and Decline (a reason the buyer reads; the order is
    cancelled). Another provider's line is a 404, and deciding on it is audited."""
    error, status = "", 200
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "approve":
                consent_approve_signed(line_id=line_id, acting_user=request.user,
                                       password=request.POST.get("password", ""),
                                       totp_code=request.POST.get("totp_code", ""), ip=client_ip(request))
                messages.success(request, "Consent given and signed. The administrator approves the contract next.")
            elif action == "decline":
                consent_decline(line_id=line_id, acting_user=request.user, reason=request.POST.get("reason", ""),
                                ip=client_ip(request))
                messages.success(request, "Declined: the order is cancelled and the buyer told why.")
            else:
                raise OrderError("Choose to approve or to decline.", code="bad_action")
        except NotFoundError:
            raise Http404("Order line not found.") from None
        except ApplicationError as exc:
            error, status = exc.message, exc.status
        else:
            return redirect("consent_queue")
    try:
        line = access_consent_line(user=request.user, line_id=line_id)
    except NotFoundError:
        raise Http404("Order line not found.") from None
    context = {"line": line, "order": line.order, "buyer_org": line.order.buyer_organization, "error": error,
               "needs_totp": signing_needs_totp(request.user), "words": describe(cohort_from(line.criteria))}
    return render(request, "orders/consent_line.html", context, status=status)
