"""The buyer's workspace: deliveries with progress and signed, expiring download links; the
de-identification certificates (a provider's per dataset, and the public check page)."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from catalog import storage
from catalog.selectors import access_dataset_for_write
from marketplace.services import client_ip
from workspaces.certificate import (
    MAX_CERTIFICATE_BYTES,
    certificate_check,
    certificate_for_dataset,
    certificate_json_bytes,
    certificate_parse,
    certificate_pdf,
)
from workspaces.grants import deliveries_downloadable_by
from workspaces.models import Delivery
from workspaces.selectors import access_delivery, deliveries_for_user
from workspaces.services import (
    DELIVERY_DOCUMENTS,
    LinkExpiredError,
    delivery_document_key,
    delivery_file_render,
    download_grant_check,
    download_token_make,
)


# The workspace page previews this many files per delivery; its own page lists them all.
PREVIEW_FILES = 20
FILES_PER_PAGE = 200


def _links(delivery: Delivery, files) -> list[tuple[str, int | None, str]]:  # noqa: ANN001
    return [(f.path, f.size_bytes, download_token_make(delivery=delivery, path=f.path)) for f in files]


def _documents(delivery: Delivery) -> list[tuple[str, None, str]]:
    """Links to the manifest and the de-identification certificate of a delivered order."""
    return [(name, None, download_token_make(delivery=delivery, path=name)) for name in DELIVERY_DOCUMENTS
            if delivery_document_key(delivery, name)]


@login_required
def workspace(request: HttpRequest) -> HttpResponse:
    rows = []
    downloadable = set(deliveries_downloadable_by(request.user).values_list("pk", flat=True))
    for delivery in deliveries_for_user(user=request.user):
        links = []
        delivery.view_only = delivery.pk not in downloadable
        if delivery.status == Delivery.Status.DONE and not delivery.view_only:
            links += _documents(delivery)
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
               "documents": _documents(delivery) if delivery.status == Delivery.Status.DONE else []}
    return render(request, "workspaces/delivery_files.html", context)


@login_required
def delivery_progress(request: HttpRequest, delivery_id: int) -> JsonResponse:
    delivery = access_delivery(user=request.user, delivery_id=delivery_id)
    return JsonResponse({"status": delivery.status, "status_label": delivery.get_status_display(),
                         "done": delivery.done_files, "total": delivery.total_files, "percent": delivery.percent,
                         **({"error": delivery.error} if delivery.status == Delivery.Status.FAILED else {})})


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
    content_type = DELIVERY_DOCUMENTS.get(grant.filename, "application/dicom")
    return FileResponse(storage.open_read(grant.storage_key), as_attachment=True, filename=grant.filename,
                        content_type=content_type)


# ---- de-identification certificates -------------------------------------------------------
@login_required
def dataset_certificate(request: HttpRequest, dataset_id: int, fmt: str) -> HttpResponse:
    """A provider member's certificate of one of its datasets, issued now (JSON or PDF)."""
    dataset = access_dataset_for_write(user=request.user, dataset_id=dataset_id)
    data = certificate_for_dataset(dataset)
    if fmt == "pdf":
        body, content_type = certificate_pdf(data), "application/pdf"
    else:
        body, content_type = certificate_json_bytes(data), "application/json"
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="dataset-{dataset.pk}-deid-certificate.{fmt}"'
    return response


# Changes nothing and needs no session, so scripts may post to it too (curl -F file=@...);
# a JSON body gets a JSON answer.
@csrf_exempt
def certificate_check_page(request: HttpRequest) -> HttpResponse:
    """Anyone holding a certificate.json pastes or uploads it: valid or not, and why."""
    if request.method != "POST":
        return render(request, "workspaces/certificate_check.html", {"result": None})
    wants_json = request.content_type == "application/json"
    if wants_json:
        text: str | bytes = request.body
    elif upload := request.FILES.get("file"):
        text = upload.read(MAX_CERTIFICATE_BYTES + 1)
    else:
        text = request.POST.get("certificate", "")
    data, problem = certificate_parse(text)
    valid, reason = (False, problem) if data is None else certificate_check(data)
    if wants_json:
        return JsonResponse({"valid": valid, "reason": reason})
    result = {"valid": valid, "reason": reason, "certificate": data if valid else None}
    return render(request, "workspaces/certificate_check.html", {"result": result})
