"""Buyer vetting: only members of a verified buyer organization (outside the blocked
countries) check out; admins verify or reject with a reason; each order states its use."""
from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from factories.orders import USE, place_order
from marketplace.exceptions import ApplicationError
from marketplace.models import AuditEvent, Membership, Notification, Organization
from marketplace.vetting import (
    BuyerNotVerifiedError,
    CountryBlockedError,
    organization_buyer_reject,
    organization_buyer_verify,
)
from orders.cart import cart_add, cart_quote
from orders.checkout import checkout, sample_take
from orders.intended_use import IntendedUseError
from orders.models import Order

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


@pytest.fixture
def erin_and_echo(make_member):
    """erin owns "Echo Labs", a buyer organization no admin has verified yet."""
    return make_member("erin", "Echo Labs", "buyer", approved=False)


def _checkout(buyer, dua, **overrides):  # noqa: ANN001, ANN003, ANN202
    quote = cart_quote(buyer=buyer)
    arguments = {"buyer": buyer, "payment_method": "invoice", "accept_agreement": True, "dua_template": dua,
                 "expected_total_minor": quote.total_minor, "expected_currency": quote.currency,
                 "password": "pass-1234567", **USE, **overrides}
    return checkout(**arguments)


# ---- checkout is for verified buyers ---------------------------------------------------
def test_an_unverified_buyer_fills_a_cart_but_cannot_check_out(erin_and_echo, published_dataset, dua):
    erin, echo = erin_and_echo
    assert not echo.is_verified_buyer
    cart_add(buyer=erin, dataset=published_dataset)
    assert cart_quote(buyer=erin).lines  # browsing and the cart stay open
    with pytest.raises(BuyerNotVerifiedError) as excinfo:
        _checkout(erin, dua)
    assert "Echo Labs is not verified yet" in excinfo.value.message
    assert "Organization page" in excinfo.value.message
    assert excinfo.value.status == 403
    assert not Order.objects.exists()


def test_a_buyer_without_an_organization_cannot_check_out(erin_and_echo, published_dataset, dua):
    erin, _ = erin_and_echo
    Membership.objects.filter(user=erin).delete()
    cart_add(buyer=erin, dataset=published_dataset)
    with pytest.raises(BuyerNotVerifiedError, match="needs a verified buyer organization"):
        _checkout(erin, dua)
    assert not Order.objects.exists()


def test_a_free_sample_also_needs_a_verified_organization(erin_and_echo, published_dataset, alice, dua):
    from catalog.datasets.services import dataset_update

    dataset_update(dataset=published_dataset, acting_user=alice, sample_study_count=1)
    published_dataset.refresh_from_db()
    erin, _ = erin_and_echo
    with pytest.raises(BuyerNotVerifiedError):
        sample_take(buyer=erin, dataset=published_dataset, accept_agreement=True, dua_template=dua,
                    password="pass-1234567")
    assert not Order.objects.exists()


def test_the_cart_page_says_why_before_the_form_and_the_api_refuses(erin_and_echo, published_dataset, dua, client):
    erin, _ = erin_and_echo
    client.force_login(erin)
    client.post(reverse("order_new", args=[published_dataset.pk]), {})
    page = client.get(reverse("cart")).content.decode()
    assert 'id="ordering-refusal"' in page and "Echo Labs is not verified yet" in page
    assert 'id="checkout"' not in page and 'name="password"' not in page
    form = {"accept": "on", "expected_total_minor": "2000", "expected_currency": "USD", "payment_method": "invoice",
            "password": "pass-1234567", **USE}
    response = client.post(reverse("cart_checkout"), form, follow=True)
    assert "Echo Labs is not verified yet" in response.content.decode()
    api = APIClient()
    api.force_authenticate(erin)
    response = api.post("/api/orders/", {"accept_agreement": True}, format="json")  # said before any field
    assert response.status_code == 403 and response.json()["code"] == "buyer_not_verified"
    assert not Order.objects.exists()


def test_a_verified_buyer_sees_the_form_without_the_banner(bob, published_dataset, dua, client):
    client.force_login(bob)
    client.post(reverse("order_new", args=[published_dataset.pk]), {})
    page = client.get(reverse("cart")).content.decode()
    assert 'id="ordering-refusal"' not in page and 'id="checkout"' in page
    assert 'name="intended_use"' in page and 'name="use_category"' in page


# ---- blocked countries -----------------------------------------------------------------
def test_a_buyer_in_a_blocked_country_is_refused_naming_it_and_audited(bob, published_dataset, dua, settings, client):
    settings.BLOCKED_COUNTRIES = frozenset({"GB", "KP"})  # Bravo AI is in GB (tests/conftest.py)
    cart_add(buyer=bob, dataset=published_dataset)
    with pytest.raises(CountryBlockedError) as excinfo:
        _checkout(bob, dua, ip="198.51.100.9")
    assert "United Kingdom (GB)" in excinfo.value.message
    event = AuditEvent.objects.get(action="order.refused_country")
    assert event.actor == bob and event.detail == {"country": "GB", "what": "checkout"}
    assert event.object_id == str(Organization.objects.get(name="Bravo AI").pk)
    assert not Order.objects.exists()
    client.force_login(bob)
    assert "United Kingdom (GB)" in client.get(reverse("cart")).content.decode()
    settings.BLOCKED_COUNTRIES = frozenset({"KP"})
    assert _checkout(bob, dua).buyer == bob


# ---- the admin verifies or rejects ----------------------------------------------------
def test_the_admin_verifies_a_buyer_audited_and_members_told_with_absolute_links(
        erin_and_echo, admin_client, admin_user, published_dataset, dua, settings, mailoutbox,
        django_capture_on_commit_callbacks):
    settings.SITE_URL = "https://data.example.org"
    erin, echo = erin_and_echo
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:marketplace_organization_changelist"),
                                     {"action": "verify_buyer", "_selected_action": [echo.pk]})
    assert response.status_code == 302
    echo.refresh_from_db()
    assert echo.is_verified_buyer and echo.approved_by == admin_user
    assert AuditEvent.objects.filter(action="organization.buyer_verify", object_id=str(echo.pk),
                                     actor=admin_user).count() == 1
    notice = Notification.objects.get(user=erin)
    assert "Echo Labs is verified" in notice.message
    assert notice.url == "https://data.example.org/organization/"
    assert any("https://data.example.org/organization/" in mail.body and mail.to == [erin.email]
               for mail in mailoutbox)
    order = place_order(erin, published_dataset, dua)
    assert order.buyer_organization == echo


def test_rejecting_needs_a_reason_which_the_members_read(erin_and_echo, admin_client, admin_user,
                                                         django_capture_on_commit_callbacks):
    erin, echo = erin_and_echo
    url = reverse("admin:marketplace_organization_changelist")
    admin_client.post(url, {"action": "reject_buyer", "_selected_action": [echo.pk], "reason": "  "})
    echo.refresh_from_db()
    assert echo.rejected_at is None and not AuditEvent.objects.filter(action="organization.buyer_reject").exists()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url, {"action": "reject_buyer", "_selected_action": [echo.pk],
                                "reason": "No institutional e-mail address for the contact"})
    echo.refresh_from_db()
    assert echo.rejected_at is not None and echo.approved_at is None
    assert echo.rejection_reason == "No institutional e-mail address for the contact"
    event = AuditEvent.objects.get(action="organization.buyer_reject")
    assert event.actor == admin_user and event.detail["reason"] == echo.rejection_reason
    assert "No institutional e-mail address" in Notification.objects.get(user=erin).message
    page = admin_client.get(url).content.decode()
    assert "Not verified (rejected)" in page


def test_a_verification_can_be_withdrawn_with_a_reason(bob, admin_user, published_dataset, dua):
    bravo = Organization.objects.get(name="Bravo AI")
    organization_buyer_reject(organization=bravo, acting_user=admin_user, reason="Sanctions screening hit")
    cart_add(buyer=bob, dataset=published_dataset)
    with pytest.raises(BuyerNotVerifiedError, match="Sanctions screening hit"):
        _checkout(bob, dua)


def test_only_buyers_are_verified_and_providers_are_not_verified_by_approve(provider, admin_user, admin_client,
                                                                            erin_and_echo):
    with pytest.raises(ApplicationError) as excinfo:
        organization_buyer_verify(organization=provider, acting_user=admin_user)
    assert excinfo.value.code == "not_buyer"
    _, echo = erin_and_echo
    admin_client.post(reverse("admin:marketplace_organization_changelist"),
                      {"action": "approve", "_selected_action": [echo.pk]})
    echo.refresh_from_db()
    assert echo.approved_at is None  # a buyer is verified with its own, audited action


def test_the_admin_list_labels_buyers_verified_not_approved(erin_and_echo, bob, provider, admin_client):
    page = admin_client.get(reverse("admin:marketplace_organization_changelist")).content.decode()
    assert "Approved / verified" in page
    assert "Awaiting verification" in page and ">Verified<" in page and "Approved provider" in page


# ---- owners enter the details ----------------------------------------------------------
def test_a_buyer_organization_is_created_only_with_its_vetting_details(bob, client):
    client.force_login(bob)
    response = client.post(reverse("organization_new"), {"name": "Golf Research", "kind": "buyer"}, follow=True)
    assert not Organization.objects.filter(name="Golf Research").exists()
    assert "Buyer organizations need this to be verified." in response.content.decode()
    client.post(reverse("organization_new"), {"name": "Golf Research", "kind": "buyer", "sector": "public",
                                              "country": "XX", "contact_name": "G", "contact_email": "g@golf.example"})
    assert not Organization.objects.filter(name="Golf Research").exists()  # not an ISO 3166 code
    client.post(reverse("organization_new"), {"name": "Golf Research", "kind": "buyer", "sector": "public",
                                              "country": "IE", "contact_name": "G", "contact_email": "g@golf.example"})
    golf = Organization.objects.get(name="Golf Research")
    assert (golf.sector, golf.country, golf.is_verified_buyer) == ("public", "IE", False)


def test_an_owner_corrects_details_until_verified(erin_and_echo, admin_user, bob, client):
    erin, echo = erin_and_echo
    organization_buyer_reject(organization=echo, acting_user=admin_user, reason="Which university?")
    client.force_login(erin)
    url = reverse("organization_details", args=[echo.pk])
    details = {"sector": "academic", "country": "FR", "contact_name": "Erin E", "contact_email": "erin@univ.example"}
    client.post(url, details)
    echo.refresh_from_db()
    assert (echo.sector, echo.country, echo.contact_email) == ("academic", "FR", "erin@univ.example")
    assert echo.rejected_at is None  # waits for a new review
    assert AuditEvent.objects.filter(action="organization.details_update", actor=erin).count() == 1
    client.force_login(bob)  # not an owner of Echo Labs
    client.post(url, {**details, "country": "DE"})
    echo.refresh_from_db()
    assert echo.country == "FR"
    organization_buyer_verify(organization=echo, acting_user=admin_user)
    client.force_login(erin)
    response = client.post(url, {**details, "country": "DE"}, follow=True)
    echo.refresh_from_db()
    assert echo.country == "FR" and "ask an administrator" in response.content.decode()


# ---- intended use -----------------------------------------------------------------------
@pytest.mark.parametrize(("use", "category", "words"), [
    ("too short", "academic_research", "at least 20 characters"),
    ("x" * 2001, "academic_research", "longer than 2000"),
    ("A long enough description of the project.", "", "Choose what the data is for"),
    ("A long enough description of the project.", "espionage", "Choose what the data is for"),
])
def test_an_order_needs_an_intended_use_and_category(bob, published_dataset, dua, use, category, words):
    cart_add(buyer=bob, dataset=published_dataset)
    with pytest.raises(IntendedUseError, match=words):
        _checkout(bob, dua, intended_use=use, use_category=category)
    assert not Order.objects.exists()


def test_the_intended_use_is_kept_and_shown_to_the_buyer(bob, published_dataset, dua, client):
    order = place_order(bob, published_dataset, dua, intended_use="  Validating a fracture detector.  ",
                        use_category="clinical_validation")
    assert order.intended_use == "Validating a fracture detector."
    assert order.get_use_category_display() == "Clinical product validation"
    client.force_login(bob)
    page = client.get(reverse("order_detail", args=[order.pk])).content.decode()
    assert "Validating a fracture detector." in page and "Clinical product validation" in page
    api = APIClient()
    api.force_authenticate(bob)
    body = api.get(f"/api/orders/{order.pk}/").json()
    assert body["intended_use"] == "Validating a fracture detector." and body["use_category"] == "clinical_validation"
