from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from catalog.selectors import published_datasets
from marketplace.exceptions import ApplicationError
from marketplace.forms import MemberAddForm, SignUpForm
from marketplace.selectors import organizations_for_user
from marketplace.services import client_ip, membership_add, notifications_mark_read, user_sign_up


def home(request: HttpRequest) -> HttpResponse:
    context = {
        "latest": published_datasets().order_by("-published_at")[:6],
        "organizations": organizations_for_user(user=request.user),
    }
    return render(request, "marketplace/home.html", context)


def sign_up(request: HttpRequest) -> HttpResponse:
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = user_sign_up(**form.cleaned_data, ip=client_ip(request))
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, "Welcome! Your account is ready.")
            return redirect("home")
    return render(request, "marketplace/signup.html", {"form": form})


@login_required
def organization_members(request: HttpRequest) -> HttpResponse:
    organizations = organizations_for_user(user=request.user).prefetch_related("memberships__user")
    form = MemberAddForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        org = organizations.filter(pk=form.cleaned_data["organization"]).first()
        try:
            if org is None:
                raise ApplicationError("Organization not found.")
            membership_add(organization=org, email=form.cleaned_data["email"], role=form.cleaned_data["role"],
                           acting_user=request.user, ip=client_ip(request))
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, "Member added.")
        return redirect("organization_members")
    return render(request, "marketplace/organization.html", {"organizations": organizations, "form": form})


@login_required
def notification_list(request: HttpRequest) -> HttpResponse:
    notices = list(request.user.notifications.all()[:100])
    notifications_mark_read(user=request.user)  # seen once listed
    return render(request, "marketplace/notifications.html", {"notices": notices})
