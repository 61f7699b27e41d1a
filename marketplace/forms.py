from __future__ import annotations

from allauth.account.forms import SignupForm as AllauthSignupForm
from django import forms
from django.conf import settings
from django.http import HttpRequest

from marketplace.countries import COUNTRY_CHOICES
from marketplace.models import ApiToken, Membership, Organization, User, WebhookEndpoint
from marketplace.services import client_ip, user_terms_accept
from marketplace.timezones import zone_choices


class SignUpForm(AllauthSignupForm):
    """allauth's sign-up (e-mail and password; no username, no organization: those would
    tell a stranger which names exist) plus acceptance of the terms of use."""

    accept_terms = forms.BooleanField(
        required=True, label="I accept the terms of use and the data protection notice",
        error_messages={"required": "Please accept the terms of use to create an account."})

    def custom_signup(self, request: HttpRequest, user: User) -> None:
        user_terms_accept(user=user, version=settings.TERMS_VERSION, ip=client_ip(request))


class OrganizationDetailsForm(forms.Form):
    """Who the organization is: what an administrator checks before verifying a buyer, and
    what providers asked to consent to an order see."""

    sector = forms.ChoiceField(choices=[("", "—"), *Organization.Sector.choices], required=False)
    country = forms.ChoiceField(choices=[("", "—"), *COUNTRY_CHOICES], required=False,
                                help_text="Where the organization is established.")
    contact_name = forms.CharField(max_length=200, required=False, label="Contact person")
    contact_email = forms.EmailField(required=False, label="Contact e-mail",
                                     help_text="For the administrator who verifies the organization.")

    VETTING_FIELDS = ("sector", "country", "contact_name", "contact_email")

    def require_vetting_fields(self) -> None:
        for name in self.VETTING_FIELDS:
            if not self.cleaned_data.get(name) and name not in self.errors:
                self.add_error(name, "Buyer organizations need this to be verified.")


class OrganizationCreateForm(OrganizationDetailsForm):
    name = forms.CharField(max_length=200, label="Organization name")
    kind = forms.ChoiceField(choices=Organization.Kind.choices, label="It is a", widget=forms.RadioSelect,
                             initial=Organization.Kind.BUYER)
    field_order = ["name", "kind", "sector", "country", "contact_name", "contact_email"]

    def clean(self) -> dict:
        data = super().clean()
        if data.get("kind") == Organization.Kind.BUYER:
            self.require_vetting_fields()
        return data


class OrganizationDetailsUpdateForm(OrganizationDetailsForm):
    def clean(self) -> dict:
        data = super().clean()
        self.require_vetting_fields()
        return data


class InvitationForm(forms.Form):
    organization = forms.IntegerField(widget=forms.HiddenInput)
    email = forms.EmailField(label="E-mail address to invite")
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class WebhookEndpointForm(forms.Form):
    url = forms.CharField(label="Receiver URL", max_length=500,
                          widget=forms.URLInput(attrs={"placeholder": "https://example.org/hooks/medimage"}))
    events = forms.MultipleChoiceField(choices=WebhookEndpoint.Event.choices, widget=forms.CheckboxSelectMultiple,
                                       label="Events")
class TimeZoneForm(forms.Form):
    time_zone = forms.ChoiceField(required=False, label="Show times in",
                                  help_text="Dates and times on these pages; e-mails and PDFs give UTC.")

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.fields["time_zone"].choices = [("", "The zone of my browser (UTC until it tells)"), *zone_choices()]


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. “lab workstation”.")
    scopes = forms.MultipleChoiceField(choices=ApiToken.Scope.choices, widget=forms.CheckboxSelectMultiple,
                                       initial=[ApiToken.Scope.READ, ApiToken.Scope.DOWNLOAD])
    expires_in_days = forms.TypedChoiceField(
        label="Expires", coerce=int, empty_value=None, required=False, initial=90,
        choices=[(7, "in 7 days"), (30, "in 30 days"), (90, "in 90 days"), (365, "in a year"), ("", "never")])
