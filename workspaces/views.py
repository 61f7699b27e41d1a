"""The buyer's workspace: deliveries with progress and signed, expiring download links."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render

from catalog import storage
from marketplace.services import client_ip
from workspaces.models import Delivery
from workspaces.grants import deliveries_downloadable_by
from workspaces.selectors import access_delivery, deliveries_for_user
from workspaces.services import (
    MANIFEST_NAME,
    LinkExpiredError,
    delivery_file_render,
    download_grant_check,
    download_token_make,
)


# The workspace page previews this many files per delivery; its own page lists them all.
PREVIEW_FILES = 20
FILES_PER_PAGE = 200


def _links(delivery: Delivery, files) -> list[tuple[str, int | None, str]]:  # noqa: ANN001
    return [(f.path, f.size_bytes, download_token_make(delivery=delivery, path=f.path)) for f in files]


@login_required
def workspace(request: HttpRequest) -> HttpResponse:
    rows = []
    downloadable = set(deliveries_downloadable_by(request.user).values_list("pk", flat=True))
    for delivery in deliveries_for_user(user=request.user):
        links = []
        delivery.view_only = delivery.pk not in downloadable
        if delivery.status == Delivery.Status.DONE and not delivery.view_only:
            links.append((MANIFEST_NAME, None, download_token_make(delivery=delivery, path=MANIFEST_NAME)))
            links += _links(delivery, delivery.files.all()[:PREVIEW_FILES])
        rows.append((delivery, links))
    return render(request, "workspaces/workspace.html", {"rows": rows, "preview_files": PREVIEW_FILES})


@login_required
def delivery_files(request: HttpRequest, delivery_id: int) -> HttpResponse:
    delivery = access_delivery(user=request.user, delivery_id=delivery_id)
    page = Paginator(delivery.files.all(), FILES_PER_PAGE).get_page(request.GET.get("page"))
    view_only = not deliveries_downloadable_by(request.user).filter(pk=delivery.pk).exists()
    if view_only:  # a view-only licence: the files open as images in the browser, no links
        context = {"delivery": delivery, "page": page, "view_only": True}
        return render(request, "workspaces/delivery_files.html", context)
    context = {"delivery": delivery, "page": page, "links": _links(delivery, page.object_list),
               "manifest": download_token_make(delivery=delivery, path=MANIFEST_NAME)}
    return render(request, "workspaces/delivery_files.html", context)


@login_required
def delivery_progress(request: HttpRequest, delivery_id: int) -> JsonResponse:
    delivery = access_delivery(user=request.user, delivery_id=delivery_id)
    return JsonResponse({"status": delivery.status, "status_label": delivery.get_status_display(),
                         "done": delivery.done_files, "total": delivery.total_files, "percent": delivery.percent})


@login_required
def delivery_file_image(request: HttpRequest, delivery_id: int, file_id: int) -> HttpResponse:
    """One delivered image rendered in the browser: how a view-only licence shows its data."""
    delivery = access_delivery(user=request.user, delivery_id=delivery_id)
    png = delivery_file_render(delivery=delivery, file_id=file_id, user=request.user, ip=client_ip(request))
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, no-store"
    return response


def download(request: HttpRequest, token: str) -> HttpResponse:
    if not request.user.is_authenticated:
        raise Http404("File not found.")
    try:
        grant = download_grant_check(user=request.user, token=token, ip=client_ip(request))
    except LinkExpiredError as exc:
        return render(request, "workspaces/link_expired.html", {"message": exc.message}, status=403)
    direct = storage.download_url(grant.storage_key)
    if direct:
        return HttpResponseRedirect(direct)
    content_type = "text/csv" if grant.filename == MANIFEST_NAME else "application/dicom"
    return FileResponse(storage.open_read(grant.storage_key), as_attachment=True, filename=grant.filename,
                        content_type=content_type)
