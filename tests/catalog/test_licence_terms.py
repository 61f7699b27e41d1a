import pytest

from catalog.licence import LicenceTerms, LicenceTermsError, terms_diff


def test_it_round_trips_terms_through_a_dict():
    terms = LicenceTerms.from_dict({"use": "commercial", "term_months": "24", "seats": "", "territory": "de, fr",
                                    "derivative_models": "no", "access": "view_only"})
    assert terms.term_months == 24 and terms.seats is None and terms.territory == ("DE", "FR")
    assert terms.derivative_models is False
    assert LicenceTerms.from_dict(terms.to_dict()) == terms
    assert terms.to_dict()["redistribution"] is False


@pytest.mark.parametrize("data, named", [
    ({"use": "resale"}, "use"),
    ({"term_months": 0}, "term_months"),
    ({"term_months": "twelve"}, "term_months"),
    ({"seats": True}, "seats"),
    ({"territory": "worldwide, DE"}, "territory"),
    ({"territory": "Germany"}, "territory"),
    ({"publication": "maybe"}, "publication"),
    ({"redistribution": True}, "Redistribution"),
    ({"colour": "blue"}, "colour"),
])
def test_it_refuses_bad_terms_naming_the_term(data, named):
    with pytest.raises(LicenceTermsError, match=named):
        LicenceTerms.from_dict(data)


def test_it_lists_only_the_terms_that_changed():
    old = LicenceTerms()
    new = LicenceTerms.from_dict({**old.to_dict(), "term_months": None, "seats": 10})
    assert terms_diff(old, new) == [("Term", "1 year", "Perpetual"), ("Named users", "5", "10")]
    assert terms_diff(old, old) == []


def test_it_checks_the_buyer_country_against_the_territory():
    assert LicenceTerms().allows_country("BR")
    eu = LicenceTerms.from_dict({"territory": ["DE", "FR"]})
    assert eu.allows_country("de") and not eu.allows_country("US") and not eu.allows_country("")
