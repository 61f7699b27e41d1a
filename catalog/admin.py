from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from catalog.datasets.services import dataset_publish, dataset_reject, dataset_transition
from catalog.models import Dataset, Series, Study, UploadBatch, UploadFile
from marketplace.admin import AuditedModelAdmin, ReasonActionForm, RejectWithReasonMixin, object_grants
from marketplace.exceptions import ApplicationError
from marketplace.services import client_ip


@admin.register(Dataset)
class DatasetAdmin(RejectWithReasonMixin, AuditedModelAdmin):
    list_display = ["title", "provider", "status", "submitted_at", "study_count", "instance_count", "price_per_study",
                    "currency"]
    list_filter = ["status", "provider"]
    search_fields = ["title", "description"]
    readonly_fields = ["status", "published_at", "submitted_at", "rejected_at", "rejection_reason", "modalities",
                       "body_parts", "sexes", "age_bands", "manufacturers",
                       "patient_count", "study_count", "series_count", "instance_count", "total_bytes", "created",
                       "price_per_study",  # derived from the pricing plan
                       object_grants]
    exclude = ["search_vector"]
    action_form = ReasonActionForm
    actions = ["publish", "reject", "return_to_draft"]
    reject_who = "the provider's members"

    def reject_row(self, request: HttpRequest, obj: Dataset, reason: str) -> None:
        dataset_reject(dataset=obj, acting_user=request.user, reason=reason, ip=client_ip(request))

    @admin.action(description="Reject selected datasets in review (type the reason first; the provider is told)")
    def reject(self, request: HttpRequest, queryset: QuerySet[Dataset]) -> None:
        reason = request.POST.get("reason", "")
        self._move(request, queryset, lambda d: self.reject_row(request, d, reason),
                   f"Rejected with the reason \u201c{reason.strip()}\u201d:")

    @admin.action(description="Publish selected datasets (must be in review, provider approved)")
    def publish(self, request: HttpRequest, queryset: QuerySet[Dataset]) -> None:
        self._move(request, queryset, lambda d: dataset_publish(dataset=d, acting_user=request.user,
                                                                 ip=client_ip(request)), "Published")

    @admin.action(description="Return selected datasets to draft")
    def return_to_draft(self, request: HttpRequest, queryset: QuerySet[Dataset]) -> None:
        self._move(request, queryset, lambda d: dataset_transition(
            dataset=d, to=Dataset.Status.DRAFT, acting_user=request.user, ip=client_ip(request)), "Returned")

    def _move(self, request: HttpRequest, queryset: QuerySet[Dataset], move, verb: str) -> None:  # noqa: ANN001
        done = 0
        for dataset in queryset:
            try:
                move(dataset)
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"{dataset.title}: {exc.message}", messages.ERROR)
        if done:
            self.message_user(request, f"{verb} {done} dataset(s).", messages.SUCCESS)


@admin.register(Study)
class StudyAdmin(AuditedModelAdmin):
    list_display = ["study_uid", "dataset", "pseudo_patient_id", "patient_sex", "age_band", "body_part",
                    "instance_count"]
    list_filter = ["patient_sex", "age_band"]
    search_fields = ["study_uid", "pseudo_patient_id"]
    raw_id_fields = ["dataset"]


@admin.register(Series)
class SeriesAdmin(AuditedModelAdmin):
    list_display = ["series_uid", "modality", "body_part", "manufacturer", "instance_count"]
    raw_id_fields = ["study"]


class UploadFileInline(admin.TabularInline):
    model = UploadFile
    extra = 0
    fields = ["name", "status", "reason", "size_bytes"]
    readonly_fields = fields
    can_delete = False


@admin.register(UploadBatch)
class UploadBatchAdmin(AuditedModelAdmin):
    list_display = ["pk", "dataset", "status", "done_files", "total_files", "ok_files", "failed_files", "created"]
    list_filter = ["status"]
    readonly_fields = ["dataset", "uploaded_by", "status", "total_files", "done_files", "ok_files", "failed_files",
                       "error", "finished"]
    inlines = [UploadFileInline]
