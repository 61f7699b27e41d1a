"""The provider's dataset form refuses codes outside its lists, naming them."""
from __future__ import annotations

import pytest

from catalog.datasets.forms import DatasetForm
from catalog.models import Dataset

pytestmark = pytest.mark.django_db

BASE = {"title": "Nodules", "description": "CT", "licence_type": "academic", "price": "1", "currency": "USD"}


def _errors(**fields) -> dict:
    form = DatasetForm({**BASE, **fields})
    assert not form.is_valid()
    return form.errors


def test_unknown_currency_country_and_condition_are_refused_by_name():
    assert "XYZ is not one of the available choices" in str(_errors(currency="XYZ")["currency"])
    assert "ZZ is not one of the available choices" in str(_errors(country="ZZ")["country"])
    assert "&#x27;X99.9&#x27; is not an ICD-10 code" in str(_errors(conditions="X99.9")["conditions"])


def test_a_picked_or_bare_code_is_stored_as_before_and_other_schemes_still_pass():
    form = DatasetForm({**BASE, "country": "DE", "conditions": "J18.9\nSCT:233604007|Pneumonia",
                        "conditions_pick": "ICD10:C34.9|Malignant neoplasm of bronchus or lung, unspecified"})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["conditions"] == [
        "ICD10:C34.9|Malignant neoplasm of bronchus or lung, unspecified", "ICD10:J18.9|Pneumonia, unspecified",
        "SCT:233604007|Pneumonia"]
    assert form.cleaned_data["country"] == "DE"


def test_existing_values_from_before_the_lists_keep_working(published_dataset):
    Dataset.objects.filter(pk=published_dataset.pk).update(country="Europe", conditions=["ICD10:Z99.9|Legacy"])
    published_dataset.refresh_from_db()
    form = DatasetForm({**BASE, "country": "Europe", "conditions": "ICD10:Z99.9|Legacy"}, instance=published_dataset)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["conditions"] == ["ICD10:Z99.9|Legacy"] and form.cleaned_data["country"] == "Europe"
