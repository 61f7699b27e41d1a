from __future__ import annotations

from decimal import Decimal

from django import forms

from catalog.models import Dataset


class DatasetForm(forms.ModelForm):
    price_per_study = forms.DecimalField(min_value=Decimal("0"), max_digits=12, decimal_places=2,
                                         initial=Decimal("0.00"))

    class Meta:
        model = Dataset
        fields = ["title", "description", "licence_text", "price_per_study", "currency", "burned_in_risk_accepted"]
        labels = {
            "licence_text": "Licence",
            "burned_in_risk_accepted": "I attest that ultrasound / secondary-capture images in this dataset carry "
                                       "no burned-in patient text",
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 4}), "licence_text": forms.Textarea(attrs={"rows": 3})}


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):  # noqa: ANN001, ANN201
        single = super().clean
        if isinstance(data, (list, tuple)):
            return [single(d, initial) for d in data]
        return [single(data, initial)]


class UploadForm(forms.Form):
    files = MultipleFileField(label="DICOM files or .zip archives")
