from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from catalog.selectors import published_datasets
from marketplace.exceptions import ApplicationError
from marketplace.forms import SignUpForm
from marketplace.selectors import organizations_for_user
from marketplace.services import client_ip, user_sign_up


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
