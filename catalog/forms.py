from __future__ import annotations

from decimal import Decimal

from django import forms

from catalog.exceptions import CatalogError
from catalog.models import Dataset, LicenceType
from catalog.services.datasets import check_disclosure_threshold, clean_conditions, patient_free_text_choices


class DatasetForm(forms.ModelForm):
    price_per_study = forms.DecimalField(min_value=Decimal("0"), max_digits=12, decimal_places=2,
                                         initial=Decimal("0.00"))

    licence_type = forms.ChoiceField(choices=LicenceType.choices, required=False, initial=LicenceType.ACADEMIC,
                                     label="Licence type")
    patient_free_text_kept = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, choices=(),
        label="Keep these free-text attributes about the patient (at your risk)",
        help_text="Removed by default: notes about a patient often hold names or places the files do not "
                  "show elsewhere. A kept attribute is cleaned of the names and ids the file holds, removed "
                  "where that cannot be checked, and the dataset page tells buyers it is kept.")
    conditions = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line as SCHEME:CODE|Label, e.g. ICD10:J18.9|Pneumonia or SCT:233604007|Pneumonia.")

    class Meta:
        model = Dataset
        fields = ["title", "description", "licence_type", "licence_text", "price_per_study", "currency",
                  "country", "conditions", "allow_study_browsing", "burned_in_risk_accepted",
                  "disclosure_threshold", "patient_free_text_kept"]
        labels = {
            "licence_type": "Licence type",
            "licence_text": "Licence",
            "country": "Country or region of acquisition",
            "allow_study_browsing": "Let researchers browse de-identified study rows before buying",
            "disclosure_threshold": "Hide counts below (optional, raises the marketplace's threshold)",
            "burned_in_risk_accepted": "I attest that ultrasound / secondary-capture images in this dataset carry "
                                       "no burned-in patient text",
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 4}), "licence_text": forms.Textarea(attrs={"rows": 3})}


    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.fields["patient_free_text_kept"].choices = [(k, k) for k in patient_free_text_choices()]
        if self.instance and self.instance.pk:
            self.initial["conditions"] = "\n".join(self.instance.conditions)

    def clean_disclosure_threshold(self) -> int | None:
        value = self.cleaned_data.get("disclosure_threshold")
        try:
            check_disclosure_threshold(value)
        except CatalogError as exc:
            raise forms.ValidationError(exc.message) from None
        return value

    def clean_licence_type(self) -> str:
        return self.cleaned_data.get("licence_type") or LicenceType.ACADEMIC

    def clean_conditions(self) -> list[str]:
        try:
            return clean_conditions(self.cleaned_data.get("conditions") or "")
        except CatalogError as exc:
            raise forms.ValidationError(exc.message) from None


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
    files = MultipleFileField(label="DICOM files or .zip archives", allow_empty_file=True,
                              error_messages={"required": "Choose at least one file to upload."})

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.empty_names: list[str] = []

    def clean_files(self) -> list:
        """The files with content; empty ones are listed by name in ``empty_names`` rather
        than refusing the whole upload. Only empty files: refused, naming them."""
        files = self.cleaned_data["files"]
        if not files:
            raise forms.ValidationError("Choose at least one file to upload.")
        self.empty_names = [f.name for f in files if not f.size]
        kept = [f for f in files if f.size]
        if not kept:
            raise forms.ValidationError(
                f"Nothing to upload: empty (0 bytes): {', '.join(self.empty_names[:20])}.")
        return kept
