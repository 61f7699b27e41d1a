"""Datasets and their de-identified contents. No PHI is ever stored in these tables."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models

from catalog.licence import LicenceTerms, terms_for_licence_type
from marketplace.models import Organization
from orders.currency import ACCEPTED_CURRENCIES, currency_exponent


class LicenceType(models.TextChoices):
    COMMERCIAL = "commercial", "Commercial use"
    ACADEMIC = "academic", "Academic research"
    FREE = "free", "Free / open"


class PricingModel(models.TextChoices):
    PER_STUDY = "per_study", "Per study"
    PER_IMAGE = "per_image", "Per image"
    FLAT = "flat", "Flat price for the whole dataset"
    SUBSCRIPTION = "subscription", "Yearly subscription (includes studies added during the year)"


class Dataset(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        IN_REVIEW = "in_review", "In review"
        PUBLISHED = "published", "Published"

    provider = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="datasets")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    licence_text = models.TextField(blank=True)
    # The provider attests that images of kinds known to carry burned-in text (US, secondary
    # capture) hold none in this dataset; without it such images are rejected at ingestion.
    burned_in_risk_accepted = models.BooleanField(default=False)
    # The pricing plan (orders/pricing.py prices an order line from it). price_minor is in
    # integer minor units of currency: per study, per image, for the whole dataset (flat) or
    # per year (subscription).
    pricing_model = models.CharField(max_length=16, choices=PricingModel.choices, default=PricingModel.PER_STUDY)
    price_minor = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, choices=ACCEPTED_CURRENCIES, default="USD")
    # Studies any signed-in user may take for free (0: no sample).
    sample_study_count = models.PositiveIntegerField(default=0)
    # For buyer organizations an admin verified as academic; 100 bps = 1 %.
    academic_discount_bps = models.PositiveSmallIntegerField(default=0)
    # [{"min_studies": 100, "discount_bps": 1000}, ...], ascending (per-study and per-image plans).
    volume_tiers = models.JSONField(default=list, blank=True)
    # Derived from the plan, never typed: the list price of one study that search filters and
    # sorts by (catalog.datasets.pricing.list_price_per_study).
    price_per_study = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0.00"))
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True)
    licence_type = models.CharField(max_length=16, choices=LicenceType.choices, default=LicenceType.ACADEMIC)
    # The structured licence (catalog.licence.LicenceTerms.to_dict), kept consistent with
    # licence_type, the price and licence_text (catalog.licence.terms_conflicts). Empty on
    # rows written without terms (fixtures, scripts): ``terms`` derives them from licence_type.
    licence_terms = models.JSONField(default=dict, blank=True)
    country = models.CharField(max_length=64, blank=True, help_text="Where the data was acquired (country or region).")
    # Conditions as "SCHEME:CODE|Label" (e.g. "ICD10:J18.9|Pneumonia"), given by the provider.
    conditions = ArrayField(models.CharField(max_length=160), default=list, blank=True)
    # Study-level rows (pseudonymous, de-identified) may be listed before purchase.
    allow_study_browsing = models.BooleanField(default=False)
    # Each order of this dataset waits for a provider member's signed consent before the
    # admin may approve its contract (orders/consent.py).
    requires_provider_consent = models.BooleanField(default=False)
    # Counts below this are hidden from anyone not entitled to the rows; only ever raises
    # the marketplace's DISCLOSURE_THRESHOLD (catalog/disclosure.py), never lowers it.
    disclosure_threshold = models.PositiveSmallIntegerField(null=True, blank=True)
    # Free-text attributes about the patient (PatientComments, AdditionalPatientHistory...)
    # are removed at ingestion; the provider may keep some, cleaned, knowingly: the
    # dataset page says so (deid Options.accept_patient_free_text_risk).
    patient_free_text_kept = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    # When the provider last submitted it for review: the admin work queue waits from here.
    submitted_at = models.DateTimeField(null=True, blank=True)
    # An admin's last refusal to publish, with the reason the provider reads on the dataset's
    # page; submitting it again clears both (catalog.datasets.services.dataset_transition).
    rejected_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.TextField(blank=True)

    # Summaries, recomputed by the worker after each ingestion (catalog/ingestion/after.py).
    modalities = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    body_parts = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    sexes = ArrayField(models.CharField(max_length=8), default=list, blank=True)
    age_bands = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    manufacturers = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    patient_count = models.PositiveIntegerField(default=0)
    study_count = models.PositiveIntegerField(default=0)
    series_count = models.PositiveIntegerField(default=0)
    instance_count = models.PositiveIntegerField(default=0)
    total_bytes = models.BigIntegerField(default=0)
    # Charts, completeness and warnings for the dataset page (dataset_statistics).
    statistics = models.JSONField(default=dict, blank=True)
    search_vector = SearchVectorField(null=True, editable=False)

    STATUS_TRANSITIONS = {
        Status.DRAFT: {Status.IN_REVIEW},
        Status.IN_REVIEW: {Status.PUBLISHED, Status.DRAFT},
        Status.PUBLISHED: {Status.DRAFT},
    }

    class Meta:
        ordering = ["-published_at", "-id"]
        indexes = [
            GinIndex(fields=["search_vector"], name="dataset_search_gin"),
            GinIndex(fields=["modalities"], name="dataset_modalities_gin"),
            GinIndex(fields=["body_parts"], name="dataset_body_parts_gin"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(price_minor__gte=0), name="dataset_price_minor_not_negative"),
            models.CheckConstraint(condition=models.Q(academic_discount_bps__lte=9000),
                                   name="dataset_academic_discount_at_most_90_percent"),
        ]

    def __str__(self) -> str:
        return self.title

    def save(self, *args: object, **kwargs: object) -> None:
        # A row inserted with a price per study and no plan price (fixtures, the admin, scripts)
        # is a per-study plan at that price.
        if (self._state.adding and self.pricing_model == PricingModel.PER_STUDY and not self.price_minor
                and self.price_per_study):
            exponent = currency_exponent(self.currency)
            self.price_minor = int((Decimal(self.price_per_study).scaleb(exponent)).quantize(
                Decimal(1), rounding=ROUND_HALF_UP))
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def terms(self) -> LicenceTerms:
        if self.licence_terms:
            return LicenceTerms.from_dict(self.licence_terms)
        return terms_for_licence_type(self.licence_type, pricing_model=self.pricing_model)

    @property
    def modality_summary(self) -> str:
        return ", ".join(self.modalities)

    @property
    def body_part_summary(self) -> str:
        return ", ".join(self.body_parts)


AGE_BANDS = [(0, 17, "0-17"), (18, 29, "18-29"), (30, 39, "30-39"), (40, 49, "40-49"),
             (50, 59, "50-59"), (60, 69, "60-69"), (70, 79, "70-79"), (80, 200, "80+")]


def age_band_for(age_years: int | None) -> str:
    if age_years is None:
        return "unknown"
    for low, high, label in AGE_BANDS:
        if low <= age_years <= high:
            return label
    return "unknown"


class Study(models.Model):
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="studies")
    study_uid = models.CharField(max_length=64)  # remapped by deid, not the original
    pseudo_patient_id = models.CharField(max_length=64, db_index=True)
    patient_age = models.PositiveSmallIntegerField(null=True, blank=True)
    patient_sex = models.CharField(max_length=8, blank=True)
    age_band = models.CharField(max_length=16, default="unknown")
    study_date = models.DateField(null=True, blank=True)  # shifted per patient
    description = models.CharField(max_length=200, blank=True)
    modalities = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    body_part = models.CharField(max_length=64, blank=True)
    manufacturer = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=64, blank=True)
    ethnicity = models.CharField(max_length=64, blank=True)  # only where the provider retained it
    study_year = models.PositiveSmallIntegerField(null=True, blank=True)  # of the shifted date
    slice_thickness = models.FloatField(null=True, blank=True)  # mm, thinnest series
    field_strength = models.FloatField(null=True, blank=True)  # tesla (MR)
    has_report = models.BooleanField(default=False)  # an SR document in the study
    has_annotation = models.BooleanField(default=False)  # SEG, RTSTRUCT or presentation states
    series_count = models.PositiveIntegerField(default=0)
    instance_count = models.PositiveIntegerField(default=0)
    total_bytes = models.BigIntegerField(default=0)
    search_vector = SearchVectorField(null=True, editable=False)

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["dataset", "study_uid"], name="uniq_study_per_dataset")]
        indexes = [
            models.Index(fields=["dataset", "patient_sex", "age_band"]),
            GinIndex(fields=["search_vector"], name="study_search_gin"),
        ]

    def __str__(self) -> str:
        return f"Study {self.study_uid}"


class Series(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    series_uid = models.CharField(max_length=64)
    modality = models.CharField(max_length=16, blank=True)
    body_part = models.CharField(max_length=64, blank=True)
    manufacturer = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=64, blank=True)
    description = models.CharField(max_length=200, blank=True)
    series_number = models.IntegerField(null=True, blank=True)
    instance_count = models.PositiveIntegerField(default=0)
    total_bytes = models.BigIntegerField(default=0)

    class Meta:
        verbose_name_plural = "series"
        ordering = ["series_number", "id"]
        constraints = [models.UniqueConstraint(fields=["study", "series_uid"], name="uniq_series_per_study")]

    def __str__(self) -> str:
        return f"Series {self.series_uid}"


class Instance(models.Model):
    # Kept narrow: a petabyte catalog holds 100M+ of these rows.
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+")
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_uid = models.CharField(max_length=64)
    sop_class_uid = models.CharField(max_length=64, blank=True)
    instance_number = models.IntegerField(null=True, blank=True)
    storage_key = models.CharField(max_length=400)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["instance_number", "id"]
        constraints = [models.UniqueConstraint(fields=["dataset", "sop_uid"], name="uniq_instance_per_dataset")]

    def __str__(self) -> str:
        return f"Instance {self.sop_uid}"


class UploadBatch(models.Model):
    class Status(models.TextChoices):
        # Still receiving files (the page sends a large selection in several requests);
        # ingestion starts when the last request closes it.
        UPLOADING = "uploading", "Uploading"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Ingesting"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="upload_batches")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    total_files = models.PositiveIntegerField(default=0)
    done_files = models.PositiveIntegerField(default=0)
    ok_files = models.PositiveIntegerField(default=0)
    failed_files = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)
    # Times a worker started on this batch since it was queued (or retried): the stuck
    # sweep fails a batch that keeps stopping instead of re-queueing it forever.
    attempts = models.PositiveSmallIntegerField(default=0)
    # Last time a worker decided a file or expanded a zip member; the stuck sweep reads it.
    progressed = models.DateTimeField(null=True, blank=True)
    # When the quarantined originals of a failed batch were removed (retention over): it
    # can no longer be retried.
    quarantine_removed = models.DateTimeField(null=True, blank=True)

    # Moved only by catalog.ingestion.upload_batches.upload_batch_transition.
    TRANSITIONS = {
        Status.UPLOADING: {Status.QUEUED, Status.FAILED},  # FAILED: never closed (the sweep)
        Status.QUEUED: {Status.RUNNING, Status.FAILED},
        Status.RUNNING: {Status.DONE, Status.FAILED, Status.QUEUED},  # QUEUED: re-queued when stuck
        Status.FAILED: {Status.QUEUED},  # the provider retries
        Status.DONE: set(),
    }

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "upload batches"
        indexes = [models.Index(fields=["status", "progressed"], name="upload_batch_status_progress")]

    def __str__(self) -> str:
        return f"Upload #{self.pk} into {self.dataset_id}"

    def can_retry(self) -> bool:
        return self.status == self.Status.FAILED and self.quarantine_removed is None

    @property
    def percent(self) -> int:
        return int(100 * self.done_files / self.total_files) if self.total_files else 0


class UploadBatchStatusChange(models.Model):
    batch = models.ForeignKey(UploadBatch, on_delete=models.CASCADE, related_name="status_changes")
    old_status = models.CharField(max_length=16)
    new_status = models.CharField(max_length=16)
    acting_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.CharField(max_length=500, blank=True)  # ids and causes only, never file names
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]


class UploadFile(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        OK = "ok", "Ingested"
        DUPLICATE = "duplicate", "Already in dataset"
        REJECTED = "rejected", "Rejected"

    batch = models.ForeignKey(UploadBatch, on_delete=models.CASCADE, related_name="files")
    # The provider's own file name, shown only to members of that provider, and blanked once
    # the file is ingested (names often carry MRNs); kept for rejected files so they can be fixed.
    name = models.CharField(max_length=255, blank=True)
    quarantine_key = models.CharField(max_length=400, blank=True)
    is_archive = models.BooleanField(default=False)  # a .zip, expanded by the worker
    size_bytes = models.BigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    reason = models.CharField(max_length=500, blank=True)
    instance = models.ForeignKey(Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Counts of de-identification actions (no values): shown to the provider as evidence.
    deid_actions = models.JSONField(default=dict, blank=True)
    # A zip member: the archive row it came from and its position among the archive's
    # files. Unique, so expanding an archive again after a crash finds the rows it made.
    source = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="members")
    member_index = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["source", "member_index"], name="uniq_upload_member")]

    def __str__(self) -> str:
        return self.name


class StudyColumns(models.Model):
    """One dataset's study search dimensions as compressed numpy codes (catalog/search/
    snapshots.py), rebuilt by the worker when the dataset's studies change; web processes
    hold all of them in memory for counting (catalog/search/memory/columnar.py)."""

    dataset = models.OneToOneField(Dataset, on_delete=models.CASCADE, primary_key=True, related_name="+")
    version = models.BigIntegerField()
    rows = models.PositiveIntegerField()
    blob = models.BinaryField()

    class Meta:
        verbose_name_plural = "study columns"


class KeywordPostings(models.Model):
    """For one dataset and one full-text lexeme of its studies' search vectors, the ids of
    the studies holding it (int64, big-endian, ascending): the worker's inverted index,
    written with the dataset's column snapshot; web processes fetch only the lexemes a
    query names (catalog/search/memory/keywords.py)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="+")
    lexeme = models.TextField()
    study_ids = models.BinaryField()

    class Meta:
        verbose_name_plural = "keyword postings"
        constraints = [models.UniqueConstraint(fields=["lexeme", "dataset"], name="keyword_postings_lexeme_dataset")]


class SavedSearch(models.Model):
    """A researcher's named search or cohort (the cohort builder's query string as data).
    With ``notify``, newly published datasets that match it are announced."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_searches")
    name = models.CharField(max_length=120)
    criteria = models.JSONField(default=dict)  # StudyQuery.as_params()
    notify = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "saved searches"
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.name


class DataRequest(models.Model):
    """A researcher describes data they need; providers answer with a dataset or an offer."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"

    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="data_requests")
    title = models.CharField(max_length=200)
    description = models.TextField()
    criteria = models.JSONField(default=dict, blank=True)  # optional cohort builder query
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN, db_index=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.title


class DataRequestResponse(models.Model):
    request = models.ForeignKey(DataRequest, on_delete=models.CASCADE, related_name="responses")
    provider = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    responder = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    dataset = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    offer = models.TextField(blank=True)
    price_per_study = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    # The price's currency: the linked dataset's, or the one the provider chose for an offer;
    # blank on answers given before it was asked.
    currency = models.CharField(max_length=3, choices=ACCEPTED_CURRENCIES, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]


class DatasetPreview(models.Model):
    """A de-identified preview image (PNG, windowed, at most 256 px) of one instance,
    rendered by the worker after ingestion; at most 12 per dataset, one per series."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="previews")
    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="+")
    storage_key = models.CharField(max_length=400)
    width = models.PositiveSmallIntegerField()
    height = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["id"]
