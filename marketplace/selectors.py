"""Reads for accounts and organizations."""
from __future__ import annotations

from django.db.models import QuerySet

from marketplace.models import Organization, User


def organizations_for_user(*, user: User) -> QuerySet[Organization]:
    if not user.is_authenticated:
        return Organization.objects.none()
    return Organization.objects.filter(memberships__user=user)


def provider_organizations_for_user(*, user: User) -> QuerySet[Organization]:
    return organizations_for_user(user=user).filter(kind=Organization.Kind.PROVIDER)


def user_is_provider(*, user: User) -> bool:
    return provider_organizations_for_user(user=user).exists()
