from __future__ import annotations

from django.http import HttpRequest

from marketplace.selectors import user_is_provider


def roles(request: HttpRequest) -> dict[str, bool]:
    """Navigation needs to know whether the user belongs to a provider organization."""
    user = getattr(request, "user", None)
    return {"is_provider_member": bool(user and user.is_authenticated and user_is_provider(user=user))}
