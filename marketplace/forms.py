from __future__ import annotations

from allauth.account.forms import SignupForm as AllauthSignupForm
from django import forms
from django.conf import settings
from django.http import HttpRequest

from marketplace.models import Membership, Organization, User
from marketplace.services import client_ip, user_terms_accept


class SignUpForm(AllauthSignupForm):
    """allauth's sign-up (e-mail and password; no username, no organization: those would
    tell a stranger which names exist) plus acceptance of the terms of use."""

    accept_terms = forms.BooleanField(
        required=True, label="I accept the terms of use and the data protection notice",
        error_messages={"required": "Please accept the terms of use to create an account."})

    def custom_signup(self, request: HttpRequest, user: User) -> None:
        user_terms_accept(user=user, version=settings.TERMS_VERSION, ip=client_ip(request))


class OrganizationCreateForm(forms.Form):
    name = forms.CharField(max_length=200, label="Organization name")
    kind = forms.ChoiceField(choices=Organization.Kind.choices, label="It is a", widget=forms.RadioSelect,
                             initial=Organization.Kind.BUYER)
    country = forms.CharField(max_length=2, required=False, label="Country (ISO code, optional)")


class InvitationForm(forms.Form):
    organization = forms.IntegerField(widget=forms.HiddenInput)
    email = forms.EmailField(label="E-mail address to invite")
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)
