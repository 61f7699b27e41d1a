"""The buyer's workspace: deliveries with progress and signed, expiring download links; the
de-identification certificates (a provider's per dataset, and the public check page)."""
from __future__ import annotations

import re
from collections.abc import Iterator

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

import storage
from catalog.datasets.selectors import access_dataset_for_write
from marketplace.api_auth import token_authenticate_header
from marketplace.exceptions import ApplicationError, TokenError, TokenScopeError
from marketplace.models import ApiToken, User
from marketplace.services import audit_record, client_ip
from workspaces.certificate import (
    MAX_CERTIFICATE_BYTES,
    certificate_check,
    certificate_for_dataset,
    certificate_json_bytes,
    certificate_parse,
    certificate_pdf,
)
from workspaces.grants import (
    deliveries_downloadable_by,
    delivery_named_users,
    delivery_seats,
    delivery_share,
    delivery_unshare,
)
from workspaces.models import Delivery
from workspaces.selectors import access_delivery, deliveries_for_user, delivery_series, delivery_series_files
from workspaces.services import (
    DELIVERY_DOCUMENTS,
    LinkExpiredError,
    delivery_archive_open,
    delivery_document_key,
    delivery_file_render,
    download_grant_check,
    download_token_make,
)

# The workspace page previews this many files per delivery; its own page lists them all.
PREVIEW_FILES = 20
FILES_PER_PAGE = 200


def _links(delivery: Delivery, files, user: User) -> list[tuple[str, int | None, str]]:  # noqa: ANN001
    return [(f.path, f.size_bytes, download_token_make(delivery=delivery, path=f.path, user=user)) for f in files]


def _documents(delivery: Delivery, user: User) -> list[tuple[str, None, str]]:
    """Links to the manifest and the de-identification certificate of a delivered order."""
    return [(name, None, download_token_make(delivery=delivery, path=name, user=user)) for name in DELIVERY_DOCUMENTS
            if delivery_document_key(delivery, name)]


def _studies_and_series(files) -> list[tuple[str, list[str]]]:  # noqa: ANN001
    """The studies on this page of files, each with its series, for per-part archive links
    (a delivered file's path is <study>/<series>/<sop>.dcm)."""
    parts: dict[str, list[str]] = {}
    for f in files:
        if f.path.startswith("nifti/"):
            continue  # converted series go with their DICOM series' archive
        study, series, _ = f.path.split("/", 2)
        if series not in parts.setdefault(study, []):
            parts[study].append(series)
    return list(parts.items())


@login_required
def workspace(request: HttpRequest) -> HttpResponse:
    rows = []
    downloadable = set(deliveries_downloadable_by(request.user).values_list("pk", flat=True))
    for delivery in deliveries_for_user(user=request.user):
        links = []
        delivery.view_only = delivery.pk not in downloadable
        if delivery.status == Delivery.Status.DONE and not delivery.view_only:
            links += _documents(delivery, request.user)
            links += _links(delivery, delivery.files.all()[:PREVIEW_FILES], request.user)
        rows.append((delivery, links))
    return render(request, "workspaces/workspace.html", {"rows": rows, "preview_files": PREVIEW_FILES})


@login_required
def delivery_files(request: HttpRequest, delivery_id: int) -> HttpResponse:
    delivery = access_delivery(user=request.user, delivery_id=delivery_id)
    page = Paginator(delivery.files.all(), FILES_PER_PAGE).get_page(request.GET.get("page"))
    view_only = not deliveries_downloadable_by(request.user).filter(pk=delivery.pk).exists()
    if view_only:  # a view-only licence: the files open as images in the browser, no links
        context = {"delivery": delivery, "page": page, "view_only": True, "series": delivery_series(delivery=delivery),
                   **_named_users_context(delivery, request.user)}
        return render(request, "workspaces/delivery_files.html", context)
    context = {"delivery": delivery, "page": page, "links": _links(delivery, page.object_list, request.user),
               "documents": _documents(delivery, request.user) if delivery.status == Delivery.Status.DONE else [],
               "parts": _studies_and_series(page.object_list), **_named_users_context(delivery, request.user)}
    return render(request, "workspaces/delivery_files.html", context)


def _named_users_context(delivery: Delivery, user: User) -> dict:
    return {"named_users": delivery_named_users(delivery), "seats": delivery_seats(delivery),
            "is_buyer": user.pk == delivery.user_id}


@login_required
@require_POST
def delivery_named_users_change(request: HttpRequest, delivery_id: int) -> HttpResponse:
    """The buyer adds (by e-mail) or removes a named user of the data."""
    delivery = access_delivery(user=request.user, delivery_id=delivery_id)
    try:
        if request.POST.get("remove"):
            colleague = delivery_named_users(delivery)
            target = next((u for u in colleague if str(u.pk) == request.POST["remove"]), None)
            if target is None:
                raise Http404("Not a named user of this delivery.")
            delivery_unshare(delivery=delivery, colleague=target, acting_user=request.user)
            messages.success(request, f"{target.email} no longer has access to this data.")
        else:
            added = delivery_share(delivery=delivery, colleague_email=request.POST.get("email", ""),
                                   acting_user=request.user)
            messages.success(request, f"{added.email} may now use this data.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("delivery_files", delivery_id=delivery.pk)


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


def _series_viewer_files(request: HttpRequest, delivery_id: int, series_id: int):  # noqa: ANN202
    """The delivery (checked against the user's view grant on every request) and its copies of
    one series; one 404 for someone else's delivery, a missing series and an unfinished one."""
    from catalog.datasets import viewer  # numpy and pydicom: imported on use, not at web start

    delivery = access_delivery(user=request.user, delivery_id=delivery_id)
    files = delivery_series_files(delivery=delivery, series_id=series_id)
    viewer.audit_once(who=f"u{request.user.pk}", what=f"delivery{delivery.pk}-series{series_id}",
                      record=lambda: audit_record(actor=request.user, action="delivery.viewer", obj=delivery,
                                                  ip=client_ip(request), detail={"series_id": series_id}))
    return delivery, files


@login_required
def delivery_series_viewer(request: HttpRequest, delivery_id: int, series_id: int) -> HttpResponse:
    """The viewer of one delivered series: frames rendered from the buyer's delivered copies
    (de-identified and fingerprinted), never the upload; the way a view-only licence reads a series."""
    from catalog.datasets import viewer  # numpy and pydicom: imported on use, not at web start

    delivery, files = _series_viewer_files(request, delivery_id, series_id)
    modality = files.values_list("instance__series__modality", flat=True).first() or ""
    context = viewer.viewer_context(
        keys=viewer.series_keys(files), modality=modality, title=f"Order #{delivery.order_id}: {modality} series".strip(),
        frame_url=reverse("delivery_series_frame", args=[delivery.pk, series_id, 0]).removesuffix("0.png"),
        back_url=reverse("delivery_files", args=[delivery.pk]), back_label="Back to the delivery")
    return render(request, "catalog/viewer.html", context)


@login_required
def delivery_series_frame(request: HttpRequest, delivery_id: int, series_id: int, frame: int) -> HttpResponse:
    """One frame of a delivered series as a PNG. Not kept by the browser: the grant is checked
    on each request and may be taken back (the server caches the rendering)."""
    from catalog.datasets import viewer  # numpy and pydicom: imported on use, not at web start

    _, files = _series_viewer_files(request, delivery_id, series_id)
    return viewer.frame_response(viewer.series_keys(files), frame, request.GET, cache_control="private, no-store")


@login_required
def delivery_archive(request: HttpRequest, delivery_id: int) -> StreamingHttpResponse:
    """The whole delivery, or one ?study= or ?series= of it, as a ZIP holding a BagIt bag,
    streamed from storage as it is read (no copy on this server's disk). Its exact length
    is sent first (browsers show progress), and one byte range (206) resumes a download cut
    off: the archive's bytes are the same each time, and If-Range with the ETag makes sure a
    resumed download never joins two versions of it. Several ranges get the whole archive."""
    archive = delivery_archive_open(user=request.user, delivery_id=delivery_id,
                                    study=request.GET.get("study", ""), series=request.GET.get("series", ""),
                                    ip=client_ip(request))
    wanted = None
    header = request.META.get("HTTP_RANGE", "").strip()
    if_range = request.META.get("HTTP_IF_RANGE", "").strip()
    # A Range header we do not serve (several ranges, another unit, malformed) is ignored:
    # the whole archive (RFC 9110 14.2). So is any Range when If-Range names another version
    # (or a date: the archive has no Last-Modified).
    if header and _RANGE.fullmatch(header) and (not if_range or if_range == archive.etag):
        try:
            wanted = byte_range(header, archive.length)
        except ValueError:
            response = HttpResponse(status=416)
            response["Content-Range"] = f"bytes */{archive.length}"
            response["Accept-Ranges"] = "bytes"
            response["ETag"] = archive.etag
            return response
    if wanted is None:
        response = StreamingHttpResponse(archive.chunks(), content_type="application/zip")
        response["Content-Length"] = str(archive.length)
    else:
        first, last = wanted
        response = StreamingHttpResponse(archive.chunks(first, last), status=206, content_type="application/zip")
        response["Content-Range"] = f"bytes {first}-{last}/{archive.length}"
        response["Content-Length"] = str(last - first + 1)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = archive.etag
    response["Content-Disposition"] = f'attachment; filename="{archive.filename}"'
    response["Cache-Control"] = "private, no-store"
    return response


def download(request: HttpRequest, token: str) -> HttpResponse:
    """One file of a delivery, for the owner signed in or sending an API token with the
    download scope (the command-line client). Local storage answers Range requests (206), so
    an interrupted download resumes; S3 redirects to a presigned URL, which does too."""
    try:
        api_token = token_authenticate_header(request, scope=ApiToken.Scope.DOWNLOAD)
    except (TokenError, TokenScopeError) as exc:
        response = JsonResponse({"message": exc.message, "code": exc.code, "extra": {}}, status=exc.status)
        if exc.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    user = api_token.user if api_token is not None else request.user
    if not user.is_authenticated:
        raise Http404("File not found.")
    try:
        grant = download_grant_check(user=user, token=token, ip=client_ip(request), api_token=api_token)
    except LinkExpiredError as exc:
        if api_token is not None:
            return JsonResponse({"message": exc.message, "code": exc.code, "extra": {}}, status=403)
        return render(request, "workspaces/link_expired.html", {"message": exc.message}, status=403)
    direct = storage.download_url(grant.storage_key)
    if direct:
        return HttpResponseRedirect(direct)
    content_type = DELIVERY_DOCUMENTS.get(grant.filename, "application/dicom")
    size = storage.size(grant.storage_key)
    try:
        wanted = byte_range(request.META.get("HTTP_RANGE", ""), size)
    except ValueError:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    if wanted is None:
        response = FileResponse(storage.open_read(grant.storage_key), as_attachment=True, filename=grant.filename,
                                content_type=content_type)
        response["Accept-Ranges"] = "bytes"
        return response
    start, end = wanted
    response = StreamingHttpResponse(_read_span(grant.storage_key, start, end - start + 1), status=206,
                                     content_type=content_type)
    response["Content-Range"] = f"bytes {start}-{end}/{size}"
    response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = content_disposition_header(as_attachment=True, filename=grant.filename)
    return response


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The first and last byte (inclusive) asked for by a Range header of one range
    (``bytes=N-``, ``bytes=N-M`` or ``bytes=-N``), None without a header. ValueError when
    it cannot be served: malformed, several ranges, or starting past the end."""
    header = header.strip()
    if not header:
        return None
    match = _RANGE.fullmatch(header)
    if match is None or match.group(1) == match.group(2) == "" or len(header) > 60:
        raise ValueError(header)
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise ValueError(header)
        return max(size - count, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise ValueError(header)
    return start, end


def _read_span(key: str, start: int, length: int) -> Iterator[bytes]:
    with storage.open_read(key) as fh:
        fh.seek(start)
        while length > 0:
            chunk = fh.read(min(storage.CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


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
