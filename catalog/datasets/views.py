"""Catalog pages: the home page (the latest datasets), search, dataset detail and previews, and the
provider's dataset management. The upload pages: catalog/ingestion/views.py."""
from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from catalog.datasets.forms import DatasetForm
from catalog.datasets.selectors import (
    access_dataset,
    access_dataset_for_write,
    catalog_study_counts,
    dataset_facets,
    dataset_search,
    published_datasets,
)
from catalog.datasets.services import dataset_create, dataset_submit_for_review, dataset_update
from catalog.datasets.statistics import dataset_previews, statistics_for_page
from catalog.exceptions import InvalidQueryError
from catalog.facets import facet_label
from catalog.ingestion.forms import UploadForm
from catalog.search.criteria import criteria_url, describe
from catalog.search.query import DATASETS, Query, query_from
from marketplace.exceptions import ApplicationError
from marketplace.selectors import organizations_for_user, provider_organizations_for_user
from marketplace.services import audit_record, client_ip


def home(request: HttpRequest) -> HttpResponse:
    context = {
        "latest": published_datasets().order_by("-published_at")[:6],
        "organizations": organizations_for_user(user=request.user),
    }
    return render(request, "catalog/home.html", context)


def dataset_list(request: HttpRequest) -> HttpResponse:
    error = ""
    try:
        params = query_from(request.GET, scope=DATASETS)
    except InvalidQueryError as exc:
        error, params = exc.message, Query()
    results = dataset_search(params=params)
    page = Paginator(results, 12).get_page(request.GET.get("page"))
    facets = dataset_facets(params=params)
    matching = catalog_study_counts(params=params, datasets=results, user=request.user)
    for dataset in page:  # each card: how many of its studies match
        dataset.matching_studies = matching["per_dataset"].get(dataset.pk, 0)
    sort = {"sort": [params.sort]} if params.sort != "relevance" else {}
    context = {
        "params": params, "page": page, "error": error, "matching": matching,
        "filtered": bool(params.filters or params.q),
        "facets": [(name, facet_label(name), rows) for name, rows in facets.items() if rows],
        # each chip a link to the page without it ("Sex: Female", labels from the vocabulary)
        "chips": describe(params, keep=sort),
        # "Clear filters" keeps the keyword (its own chip removes it) and the sort
        "clear_filters": "?" + urlencode({**({"q": params.q} if params.q else {}), **sort}, doseq=True),
        "cohort_url": criteria_url(reverse("cohort_builder"), params),
    }
    return render(request, "catalog/dataset_list.html", context, status=400 if error else 200)


def dataset_detail(request: HttpRequest, dataset_id: int) -> HttpResponse:
    dataset = access_dataset(user=request.user, dataset_id=dataset_id)
    context = {"dataset": dataset, "statistics": statistics_for_page(dataset=dataset, user=request.user),
               "previews": dataset_previews(dataset=dataset)}
    return render(request, "catalog/dataset_detail.html", context)


@login_required
def dataset_new(request: HttpRequest) -> HttpResponse:
    org = provider_organizations_for_user(user=request.user).first()
    if org is None:
        raise Http404("Only provider organizations create datasets.")
    form = DatasetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            dataset = dataset_create(provider=org, acting_user=request.user, **form.service_fields())
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Dataset created. Upload DICOM files next.")
            return redirect("dataset_manage", dataset_id=dataset.pk)
    # Reached on POST only when refused: the form names each field's problem.
    return render(request, "catalog/dataset_form.html", {"form": form},
                  status=400 if request.method == "POST" else 200)


@login_required
def dataset_manage(request: HttpRequest, dataset_id: int) -> HttpResponse:
    dataset = access_dataset_for_write(user=request.user, dataset_id=dataset_id)
    form = DatasetForm(request.POST or None, instance=dataset, prefix="ds")
    if request.method == "POST" and "save" in request.POST and form.is_valid():
        try:
            dataset_update(dataset=dataset, acting_user=request.user, **form.service_fields(changed_only=True))
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, "Dataset saved.")
        return redirect("dataset_manage", dataset_id=dataset.pk)
    if request.method == "POST" and "submit_review" in request.POST:
        try:
            dataset_submit_for_review(dataset=dataset, acting_user=request.user, ip=client_ip(request))
            messages.success(request, "Submitted for review. An administrator will publish it.")
        except ApplicationError as exc:
            messages.error(request, exc.message)
        return redirect("dataset_manage", dataset_id=dataset.pk)
    context = {"dataset": dataset, "form": form, "upload_form": UploadForm(),
               "batches": dataset.upload_batches.all()[:20]}
    return render(request, "catalog/dataset_manage.html", context,
                  status=400 if request.method == "POST" and form.errors else 200)


def dataset_preview_image(request: HttpRequest, dataset_id: int, preview_id: int) -> HttpResponse:
    """A preview PNG of a dataset the user may see (same 404 for missing and not visible)."""
    from django.http import FileResponse

    import storage
    from catalog.models import DatasetPreview

    dataset = access_dataset(user=request.user, dataset_id=dataset_id)
    preview = DatasetPreview.objects.filter(pk=preview_id, dataset=dataset).first()
    if preview is None:
        raise Http404("Preview not found.")
    audit_record(actor=request.user, action="preview.view", obj=dataset, ip=client_ip(request),
                 detail={"preview_id": preview.pk})
    response = FileResponse(storage.open_read(preview.storage_key), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _preview_series(request: HttpRequest, dataset_id: int, preview_id: int):  # noqa: ANN202
    """The dataset (visible to the user) and the series of one of its previews; one 404 for
    missing and not visible."""
    from catalog.models import DatasetPreview

    dataset = access_dataset(user=request.user, dataset_id=dataset_id)
    preview = DatasetPreview.objects.filter(pk=preview_id, dataset=dataset).select_related("instance__series").first()
    if preview is None:
        raise Http404("Preview not found.")
    return dataset, preview, preview.instance.series


def _audit_preview_viewer(request: HttpRequest, dataset, preview) -> None:  # noqa: ANN001
    from catalog.datasets import viewer  # numpy and pydicom: imported on use, not at web start

    who = f"u{request.user.pk}" if request.user.is_authenticated else f"ip{client_ip(request)}"
    viewer.audit_once(who=who, what=f"preview{preview.pk}", record=lambda: audit_record(
        actor=request.user, action="preview.viewer", obj=dataset, ip=client_ip(request),
        detail={"preview_id": preview.pk}))


def dataset_preview_viewer(request: HttpRequest, dataset_id: int, preview_id: int) -> HttpResponse:
    """The viewer of a preview's series: server-rendered frames, never DICOM (see viewer.py)."""
    from catalog.datasets import viewer  # numpy and pydicom: imported on use, not at web start

    dataset, preview, series = _preview_series(request, dataset_id, preview_id)
    keys = viewer.series_keys(series.instances.order_by("instance_number", "id"))
    _audit_preview_viewer(request, dataset, preview)
    context = viewer.viewer_context(
        keys=keys, modality=series.modality, title=f"{dataset.title}: preview {series.modality} series".strip(),
        frame_url=reverse("dataset_preview_frame", args=[dataset.pk, preview.pk, 0]).removesuffix("0.png"),
        back_url=reverse("dataset_detail", args=[dataset.pk]), back_label="Back to the dataset")
    return render(request, "catalog/viewer.html", context)


def dataset_preview_frame(request: HttpRequest, dataset_id: int, preview_id: int, frame: int) -> HttpResponse:
    """One frame of a preview's series as a PNG (?c=&w= a window; the image's own without)."""
    from catalog.datasets import viewer  # numpy and pydicom: imported on use, not at web start

    dataset, preview, series = _preview_series(request, dataset_id, preview_id)
    keys = viewer.series_keys(series.instances.order_by("instance_number", "id"))
    _audit_preview_viewer(request, dataset, preview)
    # Private: the dataset may be unpublished later; the same hour as the preview images.
    return viewer.frame_response(keys, frame, request.GET, cache_control="private, max-age=3600")
