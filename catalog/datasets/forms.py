from __future__ import annotations

from django import forms

from catalog.conditions import UnknownConditionError, picker_options, resolve_condition
from catalog.datasets.pricing import PlanError, bps_from_percent, plan_clean, price_major
from catalog.datasets.services import (
    check_disclosure_threshold,
    clean_conditions,
    patient_free_text_choices,
)
from catalog.exceptions import CatalogError
from catalog.licence import (
    ACCESS_MODES,
    USES,
    WORLDWIDE,
    LicenceTerms,
    LicenceTermsError,
    terms_conflicts,
    terms_for_licence_type,
)
from catalog.models import Dataset, LicenceType, PricingModel
from marketplace.countries import COUNTRY_CHOICES
from orders.currency import ACCEPTED_CURRENCIES
from orders.pricing import percent_words

# Form fields typed in people's units, and the service arguments they become.
PLAN_FORM_FIELDS = {"pricing_model": "pricing_model", "price": "price", "currency": "currency",
                    "sample_study_count": "sample_study_count", "academic_discount": "academic_discount_bps",
                    "volume_tiers": "volume_tiers"}

# Form fields of the structured licence, and the term each one sets (or "" for a switch
# that empties a term: perpetual empties the term, whole organization the seats).
LICENCE_FORM_FIELDS = {"licence_use": "use", "licence_perpetual": "", "licence_term_months": "term_months",
                       "licence_whole_organization": "", "licence_seats": "seats",
                       "licence_derivative_models": "derivative_models", "licence_publication": "publication",
                       "licence_territory": "territory", "licence_access": "access"}
LICENCE_FIELD_OF_TERM = {term: name for name, term in LICENCE_FORM_FIELDS.items() if term}


class ConditionsWidget(forms.Textarea):
    """The conditions, one per line, with a searchable ICD-10 picker under them
    (static/js/conditions.js adds a pick as a line; without script it is posted as
    ``<name>_pick`` and taken here the same way)."""

    template_name = "catalog/widgets/conditions.html"

    def get_context(self, name: str, value: object, attrs: dict | None) -> dict:
        context = super().get_context(name, value, attrs)
        context["widget"]["options"] = picker_options()
        return context

    def value_from_datadict(self, data, files, name):  # noqa: ANN001, ANN201
        typed = super().value_from_datadict(data, files, name) or ""
        picked = (data.get(f"{name}_pick") or "").strip()
        return f"{typed}\n{picked}" if picked else typed


class DatasetForm(forms.ModelForm):
    pricing_model = forms.ChoiceField(choices=PricingModel.choices, initial=PricingModel.PER_STUDY, required=False,
                                      label="Pricing plan")
    # Text, not DecimalField: the decimals allowed depend on the currency (plan_clean checks).
    price = forms.CharField(
        initial="0.00", max_length=40, label="Price",
        help_text="In the currency below: per study, per image, for the whole dataset (flat) or per year "
                  "(subscription). 0 on a per-study or per-image plan offers the data for free.")
    currency = forms.ChoiceField(choices=ACCEPTED_CURRENCIES, initial="USD")
    sample_study_count = forms.IntegerField(
        min_value=0, initial=0, required=False, label="Free sample (studies)",
        help_text="How many studies any signed-in user may take for free; 0 for no sample.")
    academic_discount = forms.CharField(
        required=False, initial="0", max_length=20, label="Academic discount (%)",
        help_text="For buyers whose organization we verified as academic; up to 90 %.")
    volume_tiers = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), label="Volume discounts",
        help_text='Per-study and per-image plans: one "min studies: percent" per line, ascending, '
                  'e.g. "100: 10" for 10 % off from 100 studies.')

    licence_type = forms.ChoiceField(choices=LicenceType.choices, required=False, initial=LicenceType.ACADEMIC,
                                     label="Licence type")
    # Not required as fields: a post without any licence field keeps the terms (_licence_posted).
    licence_use = forms.ChoiceField(choices=list(USES.items()), required=False, label="Use")
    licence_perpetual = forms.BooleanField(required=False, label="Perpetual licence (no end)")
    licence_term_months = forms.IntegerField(
        required=False, min_value=1, label="Licence term (months)",
        help_text="Counted from when the buyer's access starts; leave empty for a perpetual licence.")
    licence_whole_organization = forms.BooleanField(required=False, label="For the whole buyer organization")
    licence_seats = forms.IntegerField(required=False, min_value=1, label="Named users",
                                       help_text="How many named people at the buyer may use the data.")
    licence_derivative_models = forms.BooleanField(
        required=False, label="Models trained on the data may be kept and used after the term")
    licence_publication = forms.BooleanField(required=False, label="Results may be published")
    licence_territory = forms.CharField(
        max_length=200, required=False, initial=WORLDWIDE, label="Territory",
        help_text='"worldwide", or the ISO 3166 codes of the countries where the data may be used, e.g. "DE, FR".')
    licence_access = forms.ChoiceField(choices=list(ACCESS_MODES.items()), required=False, label="Access")
    patient_free_text_kept = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, choices=(),
        label="Keep these free-text attributes about the patient (at your risk)",
        help_text="Removed by default: notes about a patient often hold names or places the files do not "
                  "show elsewhere. A kept attribute is cleaned of the names and ids the file holds, removed "
                  "where that cannot be checked, and the dataset page tells buyers it is kept.")
    country = forms.ChoiceField(choices=[("", "—"), *COUNTRY_CHOICES], required=False,
                                label="Country or region of acquisition")
    conditions = forms.CharField(
        required=False, widget=ConditionsWidget(attrs={"rows": 3}),
        help_text="One per line; pick ICD-10 codes from the list below. Other schemes as SCHEME:CODE|Label, "
                  "e.g. SCT:233604007|Pneumonia.")

    class Meta:
        model = Dataset
        fields = ["title", "description", "licence_type", *LICENCE_FORM_FIELDS, "licence_text", "pricing_model", "price",
                  "currency", "sample_study_count", "academic_discount", "volume_tiers", "country", "conditions",
                  "allow_study_browsing", "burned_in_risk_accepted", "disclosure_threshold",
                  "patient_free_text_kept", "requires_provider_consent"]
        labels = {
            "licence_type": "Licence type",
            "licence_text": "Provider's additional conditions",
            "country": "Country or region of acquisition",
            "allow_study_browsing": "Let researchers browse de-identified study rows before buying",
            "requires_provider_consent": "Each order needs our consent (we read the buyer's intended use and "
                                         "approve or decline it before the administrator approves the contract)",
            "disclosure_threshold": "Hide counts below (optional, raises the marketplace's threshold)",
            "burned_in_risk_accepted": "I attest that ultrasound / secondary-capture images in this dataset carry "
                                       "no burned-in patient text",
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 4}), "licence_text": forms.Textarea(attrs={"rows": 3})}

    field_order = Meta.fields


    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.fields["patient_free_text_kept"].choices = [(k, k) for k in patient_free_text_choices()]
        self.fields["licence_text"].help_text = (
            "Your own conditions beyond the terms above, shown to buyers and part of the agreement they sign. "
            "They may not contradict the terms (e.g. say research only when commercial use is allowed).")
        editing = bool(self.instance and self.instance.pk)
        terms = self.instance.terms if editing else terms_for_licence_type(LicenceType.ACADEMIC)
        self.initial.update({
            "licence_use": terms.use, "licence_perpetual": terms.term_months is None,
            "licence_term_months": terms.term_months, "licence_whole_organization": terms.seats is None,
            "licence_seats": terms.seats, "licence_derivative_models": terms.derivative_models,
            "licence_publication": terms.publication, "licence_territory": ", ".join(terms.territory),
            "licence_access": terms.access,
        })
        if editing and self.instance.country and self.instance.country not in dict(COUNTRY_CHOICES):
            # A region typed before the list existed stays selectable until it is changed.
            self.fields["country"].choices = [*self.fields["country"].choices,
                                              (self.instance.country, f"{self.instance.country} (as entered)")]
        if editing:
            self.initial["conditions"] = "\n".join(self.instance.conditions)
            self.initial["price"] = str(price_major(self.instance))
            self.initial["academic_discount"] = percent_words(self.instance.academic_discount_bps).rstrip(" %")
            self.initial["volume_tiers"] = "\n".join(
                f"{t['min_studies']}: {percent_words(t['discount_bps']).rstrip(' %')}"
                for t in self.instance.volume_tiers or [])

    def clean_academic_discount(self) -> int:
        try:
            return bps_from_percent(self.cleaned_data.get("academic_discount"), field="academic_discount_bps")
        except PlanError as exc:
            raise forms.ValidationError(exc.problem) from None

    def clean(self) -> dict:
        """The plan is checked as a whole (the decimals a price may have depend on its
        currency; a free licence means a price of 0) by the service's own check."""
        data = super().clean()
        if not all(name in data for name in ("pricing_model", "price", "currency", "academic_discount")):
            return data
        try:
            plan = plan_clean(pricing_model=data["pricing_model"], price=data["price"], currency=data["currency"],
                              licence_type=data.get("licence_type") or LicenceType.ACADEMIC,
                              sample_study_count=data.get("sample_study_count") or 0,
                              academic_discount_bps=data["academic_discount"],
                              volume_tiers=data.get("volume_tiers") or "")
        except PlanError as exc:
            field = {v: k for k, v in PLAN_FORM_FIELDS.items()}[exc.field]
            self.add_error(field, exc.problem)
            return data
        data["volume_tiers"], data["sample_study_count"] = plan.volume_tiers, plan.sample_study_count
        licence_type = data.get("licence_type") or LicenceType.ACADEMIC
        if self._licence_posted():
            terms = self._licence_terms(data)
        elif self.instance.pk and self.instance.licence_terms:
            terms = self.instance.terms
        else:
            terms = terms_for_licence_type(licence_type, pricing_model=plan.pricing_model)
        if terms is not None:
            for problem in terms_conflicts(terms, licence_type=licence_type, price_minor=plan.price_minor,
                                           licence_text=data.get("licence_text") or ""):
                self.add_error(None, problem)
            if self._licence_posted():
                data["licence_terms"] = terms.to_dict()
        return data

    def _licence_posted(self) -> bool:
        """Whether the licence fields came with the post. A post without them (a script, an
        older page) keeps the dataset's terms, or gives a new one its licence type's."""
        return any(self.add_prefix(name) in self.data for name in ("licence_use", "licence_territory",
                                                                   "licence_access"))

    def _licence_terms(self, data: dict) -> LicenceTerms | None:
        """The structured licence fields as terms, or None after adding each field's error."""
        if any(name not in data for name in LICENCE_FORM_FIELDS):
            return None  # a field already refused
        ok = True
        for name, what in (("licence_use", "the use"), ("licence_territory", "the territory"),
                           ("licence_access", "the access")):
            if not data[name]:
                self.add_error(name, f"Choose {what}.")
                ok = False
        if not data["licence_perpetual"] and data["licence_term_months"] is None:
            self.add_error("licence_term_months", "Give the term in months, or tick perpetual licence.")
            ok = False
        if not data["licence_whole_organization"] and data["licence_seats"] is None:
            self.add_error("licence_seats", "Give the number of named users, or tick whole buyer organization.")
            ok = False
        if not ok:
            return None
        try:
            return LicenceTerms.from_dict({
                "use": data["licence_use"],
                "term_months": None if data["licence_perpetual"] else data["licence_term_months"],
                "seats": None if data["licence_whole_organization"] else data["licence_seats"],
                "derivative_models": data["licence_derivative_models"],
                "publication": data["licence_publication"],
                "territory": data["licence_territory"], "access": data["licence_access"],
            })
        except LicenceTermsError as exc:
            message = str(exc)
            field = next((name for term, name in LICENCE_FIELD_OF_TERM.items()
                          if message.startswith(f"Licence {term} ")), None)
            self.add_error(field, message)
            return None

    def service_fields(self, *, changed_only: bool = False) -> dict[str, object]:
        """cleaned_data as the dataset services' arguments. With ``changed_only``, the fields
        the provider changed, and the whole plan when any part of it changed (a price is
        read in its currency)."""
        names = self.changed_data if changed_only else list(self.cleaned_data)
        if any(name in PLAN_FORM_FIELDS for name in names):
            names = [n for n in names if n not in PLAN_FORM_FIELDS] + list(PLAN_FORM_FIELDS)
        # The licence fields are one value, the terms (in cleaned_data when they were posted);
        # the service checks them again with the licence type, the price and the text.
        licence_changed = any(name in LICENCE_FORM_FIELDS or name in ("licence_type", "licence_text")
                              for name in names)
        names = [n for n in names if n not in LICENCE_FORM_FIELDS and n != "licence_terms"]
        if licence_changed or not changed_only:
            names.append("licence_terms")
        return {PLAN_FORM_FIELDS.get(name, name): self.cleaned_data[name] for name in names
                if name in self.cleaned_data}

    def clean_disclosure_threshold(self) -> int | None:
        value = self.cleaned_data.get("disclosure_threshold")
        try:
            check_disclosure_threshold(value)
        except CatalogError as exc:
            raise forms.ValidationError(exc.message) from None
        return value

    def clean_pricing_model(self) -> str:
        return self.cleaned_data.get("pricing_model") or PricingModel.PER_STUDY

    def clean_licence_type(self) -> str:
        return self.cleaned_data.get("licence_type") or LicenceType.ACADEMIC

    def clean_conditions(self) -> list[str]:
        known = frozenset(self.instance.conditions or []) if self.instance.pk else frozenset()
        lines = [line for line in (self.cleaned_data.get("conditions") or "").splitlines() if line.strip()]
        try:
            return clean_conditions([resolve_condition(line, known=known) for line in lines])
        except UnknownConditionError as exc:
            raise forms.ValidationError(str(exc)) from None
        except CatalogError as exc:
            raise forms.ValidationError(exc.message) from None
