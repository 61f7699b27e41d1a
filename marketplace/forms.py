from __future__ import annotations

from django import forms
from django.contrib.auth.password_validation import validate_password

from marketplace.models import Membership, Organization, User


class SignUpForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField()
    password = forms.CharField(widget=forms.PasswordInput, help_text="At least 10 characters, not a common password.")
    organization_name = forms.CharField(max_length=200, label="Organization")
    organization_kind = forms.ChoiceField(choices=Organization.Kind.choices, label="I represent",
                                          widget=forms.RadioSelect, initial=Organization.Kind.BUYER)

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("This username is taken.")
        return username

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists.")
        return email

    def clean(self) -> dict:
        data = super().clean()
        if data.get("password"):
            validate_password(data["password"], User(username=data.get("username", ""), email=data.get("email", "")))
        return data


class MemberAddForm(forms.Form):
    organization = forms.IntegerField(widget=forms.HiddenInput)
    email = forms.EmailField(label="Email of an existing account")
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)
