"""Reads for accounts and organizations."""
from __future__ import annotations

from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from django.db.models import Q, QuerySet

from marketplace.models import Invitation, Membership, Organization, User


def organizations_for_user(*, user: User) -> QuerySet[Organization]:
    if not user.is_authenticated:
        return Organization.objects.none()
    return Organization.objects.filter(memberships__user=user)


def provider_organizations_for_user(*, user: User) -> QuerySet[Organization]:
    return organizations_for_user(user=user).filter(kind=Organization.Kind.PROVIDER)


def user_is_provider(*, user: User) -> bool:
    return provider_organizations_for_user(user=user).exists()


def user_for_login(*, login: str) -> User | None:
    """The account a login form's text names (username or e-mail, any case), if any."""
    login = login.strip()
    if not login:
        return None
    return User.objects.filter(Q(username__iexact=login) | Q(email__iexact=login)).order_by("pk").first()


def user_email_verified(*, user: User) -> bool:
    """Whether the account's e-mail address (the one orders and notices go to) is verified."""
    if not user.is_authenticated or not user.email:
        return False
    return EmailAddress.objects.filter(user=user, email__iexact=user.email, verified=True).exists()


def user_requires_two_factor(*, user: User) -> bool:
    """Staff, admins and owners of a provider organization must use a second factor."""
    if not user.is_authenticated:
        return False
    if user.is_staff or user.is_superuser:
        return True
    return Membership.objects.filter(user=user, role=Membership.Role.OWNER,
                                     organization__kind=Organization.Kind.PROVIDER).exists()


def user_has_two_factor(*, user: User) -> bool:
    return Authenticator.objects.filter(
        user=user, type__in=[Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN]).exists()


def invitations_for_user(*, user: User) -> QuerySet[Invitation]:
    """Pending invitations addressed to one of the user's verified e-mail addresses."""
    if not user.is_authenticated:
        return Invitation.objects.none()
    verified = list(EmailAddress.objects.filter(user=user, verified=True).values_list("email", flat=True))
    if not verified:
        return Invitation.objects.none()
    match = Q()
    for email in verified:
        match |= Q(email__iexact=email)
    return (Invitation.objects.filter(match, accepted_at__isnull=True, declined_at__isnull=True)
            .select_related("organization"))


def invitations_pending_for_organization(*, organization: Organization) -> QuerySet[Invitation]:
    return organization.invitations.filter(accepted_at__isnull=True, declined_at__isnull=True)
