from __future__ import annotations

from django.conf import settings
from django.db import models

from catalog.models import Instance, Series
from orders.models import Order


class Delivery(models.Model):
    """Copy of an order's instances into the buyer's workspace (workspaces/<user>/<order>/…)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Copying"
        DONE = "done", "Delivered"
        FAILED = "failed", "Failed"

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="delivery")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    total_files = models.PositiveIntegerField(default=0)
    done_files = models.PositiveIntegerField(default=0)
    total_bytes = models.BigIntegerField(default=0)
    manifest_key = models.CharField(max_length=400, blank=True)
    # When certificate.json and certificate.pdf were written beside the manifest
    # (workspaces/certificate.py); null until the delivery's last step.
    certificate_issued = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    # NIfTI conversion per series (workspaces/nifti.py), for orders that asked for NIfTI:
    # {series_uid: {"status": "ok" | "failed", "problems": [...], "files": [...]}}, keyed by
    # the delivered (fingerprinted) series UID.
    conversion_report = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)
    # Last sign of life: set when the delivery is queued or claimed and after every copied
    # file. A "running" delivery whose mark is older than DELIVERY_STUCK_SECONDS lost its worker.
    progressed = models.DateTimeField(null=True, blank=True)
    # Fencing token: every claim by a worker takes the next number, and a run stops as soon as
    # the row no longer carries its number (it was re-queued, failed, or taken over).
    run_number = models.PositiveIntegerField(default=0)
    # Automatic restarts after a lost worker since the last manual restart (DELIVERY_MAX_RESTARTS).
    restarts = models.PositiveIntegerField(default=0)

    # The only moves delivery_transition allows. RUNNING -> QUEUED is a restart (a lost
    # worker, a time slice used up, or an admin); FAILED -> QUEUED only by an admin.
    TRANSITIONS = {
        Status.QUEUED: {Status.RUNNING, Status.FAILED},
        Status.RUNNING: {Status.QUEUED, Status.DONE, Status.FAILED},
        Status.FAILED: {Status.QUEUED},
        Status.DONE: set(),
    }

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "deliveries"
        # Granted per delivery (workspaces/grants.py); view alone is a view-only licence.
        permissions = [("download_delivery", "Can download the delivered files")]

    def __str__(self) -> str:
        return f"Delivery of order #{self.order_id}"

    @property
    def percent(self) -> int:
        return int(100 * self.done_files / self.total_files) if self.total_files else 0

    @property
    def converted_series(self) -> int:
        return sum(1 for entry in self.conversion_report.values() if entry.get("status") == "ok")

    @property
    def conversion_problems(self) -> list[tuple[str, list[str]]]:
        """(delivered series UID, reasons) of each series not converted to NIfTI."""
        return [(uid, entry.get("problems", [])) for uid, entry in sorted(self.conversion_report.items())
                if entry.get("status") != "ok"]

    @property
    def prefix(self) -> str:
        return f"workspaces/{self.user_id}/{self.order_id}"


class DeliveryFile(models.Model):
    """A delivered file: the buyer's (fingerprinted) copy of one instance, or one file
    converted from a series (NIfTI image or its JSON sidecar: instance null, series set)."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="files")
    instance = models.ForeignKey(Instance, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    series = models.ForeignKey(Series, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    path = models.CharField(max_length=400)  # relative to the delivery's prefix
    # The SOPInstanceUID in the delivered copy (workspaces/fingerprint.py): finds the order
    # of a leaked file whose private marker was stripped. Blank for converted files.
    sop_uid = models.CharField(max_length=64, blank=True, db_index=True)
    storage_key = models.CharField(max_length=500)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    # CRC-32 of the file, for the archive's ZIP records (workspaces/archive.py): a resumed
    # archive download (HTTP Range) needs the CRCs of the files it does not send again.
    # Null for rows written before it existed: filled in when an archive first needs it.
    crc32 = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["path"]
        # One copy per instance and delivery: a re-run task never duplicates a file.
        constraints = [
            models.UniqueConstraint(fields=["delivery", "instance"], name="uniq_delivery_instance"),
            models.UniqueConstraint(fields=["delivery", "path"], name="uniq_delivery_path"),
        ]

    def __str__(self) -> str:
        return self.path


class DeliveryStatusChange(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="status_changes")
    old_status = models.CharField(max_length=16)
    new_status = models.CharField(max_length=16)
    acting_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return f"{self.old_status} → {self.new_status}"
