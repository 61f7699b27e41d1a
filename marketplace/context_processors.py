from __future__ import annotations

from django.http import HttpRequest

from marketplace.models import Notification
from marketplace.selectors import user_is_provider


def roles(request: HttpRequest) -> dict[str, object]:
    """Navigation needs to know whether the user belongs to a provider organization, and
    how many notifications are unread."""
    user = getattr(request, "user", None)
    signed_in = bool(user and user.is_authenticated)
    return {
        "is_provider_member": signed_in and user_is_provider(user=user),
        "unread_notifications": Notification.objects.filter(user=user, read_at__isnull=True).count()
        if signed_in else 0,
    }
