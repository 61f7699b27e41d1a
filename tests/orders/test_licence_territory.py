"""A licence limited to some countries is not sold to a buyer organization elsewhere."""
from __future__ import annotations

import pytest

from catalog.licence import LicenceTerms
from factories.orders import place_order
from orders.exceptions import OrderError
from orders.models import Order

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


def _limit_to(dataset, territory):  # noqa: ANN001, ANN202
    terms = LicenceTerms.from_dict({**dataset.terms.to_dict(), "territory": territory})
    type(dataset).objects.filter(pk=dataset.pk).update(licence_terms=terms.to_dict())
    dataset.refresh_from_db()


def test_it_refuses_a_buyer_outside_the_licence_territory_naming_both(published_dataset, bob, dua):
    _limit_to(published_dataset, ["DE", "FR"])
    country = bob.memberships.get().organization.country
    assert country not in ("DE", "FR")
    with pytest.raises(OrderError, match=f"covers DE, FR only, not your organization's country \\({country}\\)"):
        place_order(bob, published_dataset, dua)
    assert not Order.objects.exists()


def test_it_sells_to_a_buyer_inside_the_territory(published_dataset, bob, dua):
    _limit_to(published_dataset, [bob.memberships.get().organization.country])
    assert place_order(bob, published_dataset, dua).lines.get().licence_terms["territory"] == [
        bob.memberships.get().organization.country]
