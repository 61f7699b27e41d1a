"""The provider's upload pages: send files to a dataset, follow a batch (page and progress
JSON) and retry a failed one. The dataset's own pages: catalog/datasets/views.py."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render

from catalog.datasets.selectors import access_dataset_for_write
from catalog.exceptions import CatalogError
from catalog.ingestion.forms import UploadForm
from catalog.ingestion.upload_batches import upload_batch_retry
from catalog.ingestion.uploads import upload_batch_create
from catalog.models import UploadBatch
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
    return render(request, "catalog/upload_batch.html", {"batch": batch, "problem_files": files})


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
    batch = _access_batch(request, batch_id)
    return JsonResponse({
        "status": batch.status, "status_label": batch.get_status_display(), "done": batch.done_files,
        "total": batch.total_files, "ok": batch.ok_files, "failed": batch.failed_files, "percent": batch.percent,
    })
