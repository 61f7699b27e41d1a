"""The provider's upload pages: send files to a dataset, follow a batch (page and progress
JSON) and retry a failed one; the JSON steps the page's script uses to send a large
selection in several requests into one batch (open, add files, close or cancel). The
dataset's own pages: catalog/datasets/views.py."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from catalog.datasets.selectors import access_dataset_for_write
from catalog.exceptions import CatalogError
from catalog.ingestion.forms import UploadForm
from catalog.ingestion.upload_batches import upload_batch_figures, upload_batch_retry
from catalog.ingestion.uploads import (
    upload_batch_append,
    upload_batch_close,
    upload_batch_create,
    upload_batch_discard,
    upload_batch_open,
)
from catalog.models import UploadBatch
from marketplace.exceptions import ApplicationError
from marketplace.services import client_ip


@login_required
def dataset_upload(request: HttpRequest, dataset_id: int) -> HttpResponse:
    dataset = access_dataset_for_write(user=request.user, dataset_id=dataset_id)
    if request.method != "POST":
        return redirect("dataset_manage", dataset_id=dataset.pk)
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, " ".join(form.errors.get("files", ["Choose at least one file to upload."])))
        return redirect("dataset_manage", dataset_id=dataset.pk)
    # An empty file is refused by name; the others upload.
    if form.empty_names:
        more = f" and {len(form.empty_names) - 20} more" if len(form.empty_names) > 20 else ""
        messages.error(request, f"Not uploaded, empty (0 bytes): {', '.join(form.empty_names[:20])}{more}.")
    files = [(f.name, f) for f in form.cleaned_data["files"]]
    try:
        batch = upload_batch_create(dataset=dataset, files=files, acting_user=request.user, ip=client_ip(request))
    except CatalogError as exc:
        messages.error(request, exc.message)
        return redirect("dataset_manage", dataset_id=dataset.pk)
    messages.success(request, f"Uploaded {len(files)} file(s); ingestion has started.")
    return redirect("upload_batch_detail", batch_id=batch.pk)


def _access_batch(request: HttpRequest, batch_id: int) -> UploadBatch:
    batch = (
        UploadBatch.objects.select_related("dataset")
        .filter(pk=batch_id, dataset__provider__memberships__user=request.user).distinct().first()
    )
    if batch is None:
        raise Http404("Upload not found.")
    return batch


@login_required
def upload_batch_detail(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = _access_batch(request, batch_id)
    files = batch.files.exclude(status="ok", is_archive=False).order_by("status", "id")
    return render(request, "catalog/upload_batch.html",
                  {"batch": batch, "figures": upload_batch_figures(batch), "problem_files": files})


@login_required
def upload_batch_retry_view(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = _access_batch(request, batch_id)
    if request.method != "POST":
        return redirect("upload_batch_detail", batch_id=batch.pk)
    try:
        upload_batch_retry(batch=batch, acting_user=request.user, ip=client_ip(request))
    except CatalogError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Ingestion of this upload has started again.")
    return redirect("upload_batch_detail", batch_id=batch.pk)


@login_required
def upload_batch_progress(request: HttpRequest, batch_id: int) -> JsonResponse:
    return JsonResponse(upload_batch_figures(_access_batch(request, batch_id)))


# ---- one batch over several requests (static/js/upload.js) ------------------------------
# Answers are JSON, errors too: {"error": sentence safe to show, "code": ...} with 404 for a
# batch that does not exist or is not the user's, 409 for a closed one, 400 for bad files.

def _error(message: str, code: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message, "code": code}, status=status)


def _json_errors(view):  # noqa: ANN001, ANN202
    def wrapped(request: HttpRequest, *args, **kwargs) -> JsonResponse:  # noqa: ANN002, ANN003
        try:
            return view(request, *args, **kwargs)
        except Http404:
            return _error("Upload not found.", "not_found", 404)
        except ApplicationError as exc:
            status = 409 if exc.code == "upload_closed" else exc.status
            return _error(exc.message, exc.code, status)
    return wrapped


def _writable_batch(request: HttpRequest, batch_id: int) -> UploadBatch:
    batch = _access_batch(request, batch_id)
    access_dataset_for_write(user=request.user, dataset_id=batch.dataset_id)  # members who may upload
    return batch


@login_required
@require_POST
@_json_errors
def upload_open(request: HttpRequest, dataset_id: int) -> JsonResponse:
    dataset = access_dataset_for_write(user=request.user, dataset_id=dataset_id)
    batch = upload_batch_open(dataset=dataset, acting_user=request.user, ip=client_ip(request))
    return JsonResponse({
        "batch": batch.pk,
        "files_url": reverse("upload_batch_files", args=[batch.pk]),
        "close_url": reverse("upload_batch_close", args=[batch.pk]),
        "cancel_url": reverse("upload_batch_cancel", args=[batch.pk]),
    }, status=201)


@login_required
@require_POST
@_json_errors
def upload_batch_files(request: HttpRequest, batch_id: int) -> JsonResponse:
    batch = _writable_batch(request, batch_id)
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _error(" ".join(form.errors.get("files", ["Choose at least one file to upload."])), "no_files", 400)
    batch = upload_batch_append(batch=batch, files=[(f.name, f) for f in form.cleaned_data["files"]])
    return JsonResponse({"received": len(form.cleaned_data["files"]), "total": batch.total_files,
                         "empty": form.empty_names})


@login_required
@require_POST
@_json_errors
def upload_batch_close_view(request: HttpRequest, batch_id: int) -> JsonResponse:
    batch = upload_batch_close(batch=_writable_batch(request, batch_id), acting_user=request.user,
                               ip=client_ip(request))
    messages.success(request, f"Uploaded {batch.total_files} file(s); ingestion has started.")
    return JsonResponse({"url": reverse("upload_batch_detail", args=[batch.pk])})


@login_required
@require_POST
@_json_errors
def upload_batch_cancel(request: HttpRequest, batch_id: int) -> JsonResponse:
    batch = _writable_batch(request, batch_id)
    dataset_id = batch.dataset_id
    upload_batch_discard(batch=batch, acting_user=request.user, ip=client_ip(request))
    return JsonResponse({"url": reverse("dataset_manage", args=[dataset_id])})
