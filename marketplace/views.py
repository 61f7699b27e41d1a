from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from marketplace.exceptions import ApplicationError
from marketplace.forms import (
    ApiTokenCreateForm,
    InvitationForm,
    OrganizationCreateForm,
    OrganizationDetailsUpdateForm,
    TimeZoneForm,
    WebhookEndpointForm,
)
from marketplace.guards import require_verified_email
from marketplace.selectors import (
    invitations_for_user,
    organizations_for_user,
    user_email_verified,
    user_has_two_factor,
    user_requires_two_factor,
)
from marketplace.services import (
    INVITATION_SENT_MESSAGE,
    client_ip,
    invitation_accept,
    invitation_create,
    invitation_decline,
    notifications_mark_read,
    organization_create,
    user_time_zone_set,
)
from marketplace.tokens import api_token_create, api_token_revoke, api_tokens_for_user
from marketplace.vetting import ordering_refusal, organization_details_update
from marketplace.webhooks import (
    MAX_ATTEMPTS,
    WebhookError,
    access_webhook_endpoint,
    access_webhook_organization,
    webhook_deliveries_for,
    webhook_endpoint_create,
    webhook_endpoint_deactivate,
    webhook_endpoint_ping,
    webhook_endpoint_rotate_secret,
)


@login_required
def account_settings(request: HttpRequest, *, token_form: ApiTokenCreateForm | None = None,
                     new_secret: str = "") -> HttpResponse:
    user = request.user
    context = {
        "email_verified": user_email_verified(user=user),
        "two_factor": user_has_two_factor(user=user),
        "two_factor_required": user_requires_two_factor(user=user),
        "organizations": organizations_for_user(user=user),
        "tokens": api_tokens_for_user(user=user),
        "token_form": token_form or ApiTokenCreateForm(),
        "time_zone_form": TimeZoneForm(initial={"time_zone": user.time_zone}),
        "new_secret": new_secret,
        "now": timezone.now(),
    }
    response = render(request, "marketplace/account_settings.html", context)
    if new_secret:  # shown once: no cache may keep the page
        response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_POST
def api_token_new(request: HttpRequest) -> HttpResponse:
    """Create a token and show its secret on the account page, this once."""
    form = ApiTokenCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the token a name and at least one scope.")
        return account_settings(request, token_form=form)
    data = form.cleaned_data
    days = data["expires_in_days"]
    expires = timezone.now() + timedelta(days=days) if days else None
    try:
        token, secret = api_token_create(user=request.user, name=data["name"], scopes=data["scopes"],
                                         expires=expires, ip=client_ip(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return account_settings(request, token_form=form)
    messages.success(request, f"Token {token.name!r} created. Copy it now: it is not shown again.")
    return account_settings(request, new_secret=secret)


@login_required
@require_POST
def account_time_zone(request: HttpRequest) -> HttpResponse:
    form = TimeZoneForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"{request.POST.get('time_zone', '')[:64]!r} is not a time zone name such as "
                                "Europe/Berlin.")
        return redirect("account_settings")
    user_time_zone_set(user=request.user, time_zone=form.cleaned_data["time_zone"])
    chosen = form.cleaned_data["time_zone"] or "the zone of your browser"
    messages.success(request, f"Times are shown in {chosen}.")
    return redirect("account_settings")


@login_required
@require_POST
def api_token_revoke_view(request: HttpRequest, token_id: int) -> HttpResponse:
    token = api_token_revoke(user=request.user, token_id=token_id, ip=client_ip(request))
    messages.success(request, f"Token {token.name!r} ({token.prefix}…) is revoked.")
    return redirect("account_settings")


@login_required
def organization_members(request: HttpRequest) -> HttpResponse:
    """The user's organizations (owners invite by e-mail), invitations to accept, and a form
    to create an organization."""
    organizations = organizations_for_user(user=request.user).prefetch_related("memberships__user")
    form = InvitationForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            org = organizations.filter(pk=form.cleaned_data["organization"]).first()
            try:
                if org is None:
                    raise ApplicationError("Only an owner can invite members.")
                invitation_create(organization=org, email=form.cleaned_data["email"],
                                  role=form.cleaned_data["role"], acting_user=request.user, ip=client_ip(request))
            except ApplicationError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, INVITATION_SENT_MESSAGE.format(email=form.cleaned_data["email"]))
        else:
            messages.error(request, "Enter an e-mail address and a role.")
        return redirect("organization_members")
    owned = set(organizations.filter(memberships__user=request.user, memberships__role="owner")
                .values_list("pk", flat=True))
    context = {
        "organizations": organizations, "owned": owned, "invitations": invitations_for_user(user=request.user),
        "create_form": OrganizationCreateForm(),
        "details_forms": {org.pk: OrganizationDetailsUpdateForm(initial={
            "sector": org.sector, "country": org.country, "contact_name": org.contact_name,
            "contact_email": org.contact_email}) for org in organizations
            if org.pk in owned and not org.approved_at},  # a verified buyer's or approved provider's are frozen
        "ordering_refusal": ordering_refusal(user=request.user),
    }
    return render(request, "marketplace/organization.html", context)


@login_required
@require_POST
def organization_new(request: HttpRequest) -> HttpResponse:
    form = OrganizationCreateForm(request.POST)
    try:
        if not form.is_valid():
            raise ApplicationError(_form_problems(form, "Enter a name and choose what kind of organization it is."))
        require_verified_email(user=request.user)
        org = organization_create(**form.cleaned_data, acting_user=request.user, ip=client_ip(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        note = (" An administrator approves providers before they publish." if org.is_provider else
                " An administrator verifies buyer organizations before their members check out.")
        messages.success(request, f"{org.name} created; you are its owner.{note}")
    return redirect("organization_members")


def _form_problems(form: OrganizationCreateForm | OrganizationDetailsUpdateForm, default: str) -> str:
    problems = [f"{form.fields[name].label or name.replace('_', ' ').capitalize()}: {' '.join(errors)}"
                for name, errors in form.errors.items() if name in form.fields]
    return " ".join(problems) or default


@login_required
@require_POST
def organization_details(request: HttpRequest, organization_id: int) -> HttpResponse:
    """An owner fills in or corrects the details an administrator verifies."""
    form = OrganizationDetailsUpdateForm(request.POST)
    try:
        if not form.is_valid():
            raise ApplicationError(_form_problems(form, "Fill in the organization's details."))
        data = form.cleaned_data
        org = organizations_for_user(user=request.user).filter(pk=organization_id).first()
        if org is None:
            raise ApplicationError("Only an owner can change the organization's details.")
        organization_details_update(organization=org, acting_user=request.user, sector=data["sector"],
                                    country=data["country"], contact_name=data["contact_name"],
                                    contact_email=data["contact_email"], ip=client_ip(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{org.name}'s details are saved; an administrator reviews them.")
    return redirect("organization_members")


@login_required
@require_POST
def invitation_answer(request: HttpRequest, invitation_id: int, answer: str) -> HttpResponse:
    if answer not in ("accept", "decline"):
        raise Http404
    if answer == "accept":
        membership = invitation_accept(invitation_id=invitation_id, acting_user=request.user, ip=client_ip(request))
        messages.success(request, f"You joined {membership.organization.name}.")
    else:
        invitation_decline(invitation_id=invitation_id, acting_user=request.user, ip=client_ip(request))
        messages.info(request, "Invitation declined.")
    return redirect("organization_members")


@login_required
def notification_list(request: HttpRequest) -> HttpResponse:
    notices = list(request.user.notifications.all()[:100])
    notifications_mark_read(user=request.user)  # seen once listed
    return render(request, "marketplace/notifications.html", {"notices": notices})


@login_required
def organization_webhooks(request: HttpRequest, organization_id: int) -> HttpResponse:
    """Owners: the organization's webhook endpoints (with their signing secrets), a form to
    add one, and the log of recent sends."""
    org = access_webhook_organization(user=request.user, organization_id=organization_id)
    form = WebhookEndpointForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                webhook_endpoint_create(organization=org, url=form.cleaned_data["url"],
                                        events=form.cleaned_data["events"], acting_user=request.user,
                                        ip=client_ip(request))
            except WebhookError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, "Webhook added. Verify each request with its signing secret shown below.")
                return redirect("organization_webhooks", organization_id=org.pk)
        else:
            messages.error(request, "Enter the receiver's URL and choose at least one event.")
    context = {"organization": org, "form": form, "endpoints": org.webhook_endpoints.all(),
               "deliveries": webhook_deliveries_for(organization=org), "max_attempts": MAX_ATTEMPTS}
    return render(request, "marketplace/webhooks.html", context)


@login_required
@require_POST
def organization_webhook_action(request: HttpRequest, organization_id: int, endpoint_id: int,
                                action: str) -> HttpResponse:
    endpoint = access_webhook_endpoint(user=request.user, endpoint_id=endpoint_id)
    if endpoint.organization_id != organization_id or action not in ("ping", "deactivate", "rotate"):
        raise Http404
    try:
        if action == "ping":
            webhook_endpoint_ping(endpoint=endpoint, acting_user=request.user, ip=client_ip(request))
            messages.success(request, "Test ping queued; its result appears in the log below.")
        elif action == "rotate":
            webhook_endpoint_rotate_secret(endpoint=endpoint, acting_user=request.user, ip=client_ip(request))
            messages.success(request, "New signing secret made (shown below); the old one no longer verifies. "
                                      "Give your receiver the new one.")
        else:
            webhook_endpoint_deactivate(endpoint=endpoint, acting_user=request.user, ip=client_ip(request))
            messages.info(request, "Webhook deactivated; nothing more is sent to it.")
    except WebhookError as exc:
        messages.error(request, exc.message)
    return redirect("organization_webhooks", organization_id=organization_id)
