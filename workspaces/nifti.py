"""NIfTI on request: each series of an order that asked for it is converted with dcm2niix
and delivered as ``nifti/<series_uid>/<series_uid>.nii.gz`` plus its ``.json`` sidecar.

dcm2niix is a native tool that crashes on some inputs and exits 0 after some failures
("Bogus spatial matrix", "Unable to determine spatial orientation", "Interslice distance
varies"), so:

- it runs in a subprocess, in a temporary directory, killed after NIFTI_TIMEOUT_SECONDS,
  on files that pydicom parsed (the buyer's fingerprinted copies: their UIDs are the
  delivered ones);
- a non-zero exit, a signal, or a warning that the geometry is wrong fails the series;
- it writes sidecars with its anonymizing flag (``-ba y``) and each sidecar is checked
  again: an identifying key in it (IDENTIFYING_SIDECAR_KEYS) fails the series; keys the
  DICOM copy keeps only as cleaned descriptors (DROPPED_SIDECAR_KEYS) are left out of it.

A failed series ships no NIfTI file; it is reported in Delivery.conversion_report (shown
on the workspace page) with the reasons, which name dcm2niix's messages, never values.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

import storage
from catalog.models import Instance, Series
from workspaces.fingerprint import NotFingerprintableError, fingerprint_file, fingerprint_uid
from workspaces.models import Delivery, DeliveryFile

logger = logging.getLogger(__name__)

OUTPUT_STEM = "series"
# What dcm2niix may name its outputs with "-f series": the stem, its own suffixes
# (_e2, _ph, _Eq_1, _i00001...), and the two extensions we ship.
_OUTPUT_NAME = re.compile(rf"^{OUTPUT_STEM}(?P<suffix>[A-Za-z0-9_]*)\.(?P<ext>nii\.gz|json)$")
# dcm2niix's messages that mean the image geometry is wrong or the conversion incomplete,
# even when it exits 0.
PROBLEM_MESSAGES = re.compile(
    r"bogus|unable to determine|interslice distance varies|incompatible with nifti|"
    r"\berror\b|unsupported|not supported|skipping|no valid dicom|missing images|"
    r"slices? (?:are )?not (?:equally|evenly) spaced",
    re.IGNORECASE)
# Sidecar keys that identify a patient, a place, a device or a date: any of these present
# fails the series (dcm2niix -ba y leaves out most of them; the input is de-identified).
IDENTIFYING_SIDECAR_KEYS = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthName", "OtherPatientIDs", "PatientAddress",
    "PatientTelephoneNumbers", "PatientMotherBirthName", "PatientWeight", "PatientSize",
    "AccessionNumber", "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "FrameOfReferenceUID", "AcquisitionDateTime", "AcquisitionDate", "StudyDate", "SeriesDate",
    "ContentDate", "InstanceCreationDate", "StudyDateTime",
    "InstitutionName", "InstitutionAddress", "DeviceSerialNumber", "StationName",
    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "RequestingPhysician",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy",
})
# Kept in the DICOM copy only as de-identification cleaned it (Clean Descriptors), and of no
# use in a NIfTI sidecar: dropped from it rather than failing the series.
DROPPED_SIDECAR_KEYS = frozenset({"InstitutionalDepartmentName", "StudyDescription", "PatientComments",
                                  "ImageComments"})
MAX_SIDECAR_BYTES = 1024 * 1024
MAX_LOG_BYTES = 256 * 1024
HEARTBEAT_SECONDS = 5.0
MAX_PROBLEMS = 10


@dataclass
class Conversion:
    outputs: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # sidecar keys left out (DROPPED_SIDECAR_KEYS)
    superseded: bool = False  # the delivery was taken over while dcm2niix ran


def dcm2niix_path() -> str:
    if settings.DCM2NIIX_PATH:
        return settings.DCM2NIIX_PATH
    try:
        import dcm2niix

        return str(dcm2niix.bin)
    except (ImportError, AttributeError):
        return shutil.which("dcm2niix") or "dcm2niix"


def _message(line: str, *where: Path) -> str:
    for folder in where:  # our temporary paths say nothing to the buyer
        line = line.replace(str(folder), "")
    return line.strip()[:200]


def convert_dir(in_dir: Path, out_dir: Path, *, timeout: float,
                heartbeat: Callable[[], bool] | None = None) -> Conversion:
    """Run dcm2niix on one series' files in ``in_dir``; outputs go to ``out_dir``.
    ``heartbeat`` is called every few seconds while it runs; False stops it (superseded)."""
    argv = [dcm2niix_path(), "-ba", "y", "-b", "y", "-z", "y", "-f", OUTPUT_STEM, "-o", str(out_dir), str(in_dir)]
    with tempfile.TemporaryFile() as log:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                    start_new_session=True)
        except OSError as exc:
            return Conversion(problems=[f"dcm2niix could not be started ({type(exc).__name__})"])
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                code = proc.wait(timeout=max(0.05, min(HEARTBEAT_SECONDS, left)))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    _kill(proc)
                    return Conversion(problems=[f"dcm2niix did not finish within {int(timeout)} s"])
                if heartbeat is not None and not heartbeat():
                    _kill(proc)
                    return Conversion(superseded=True)
        log.seek(0)
        text = log.read(MAX_LOG_BYTES).decode("utf-8", "replace")
    problems = [_message(line, in_dir, out_dir) for line in text.splitlines() if PROBLEM_MESSAGES.search(line)]
    if code < 0:
        problems.insert(0, f"dcm2niix was killed by signal {-code}")
    elif code != 0:
        problems.insert(0, f"dcm2niix exited with status {code}")
    outputs = sorted(p for p in out_dir.iterdir() if p.is_file())
    unexpected = [p.name for p in outputs if not _OUTPUT_NAME.match(p.name)]
    if unexpected:
        problems.append(f"dcm2niix wrote {len(unexpected)} unexpected file(s)")
    images = [p for p in outputs if p.name.endswith(".nii.gz")]
    if not images and not problems:
        problems.append("dcm2niix wrote no NIfTI image")
    if len(images) > 1:
        # One series, several volumes (a resampled copy, echoes, a split by geometry): the
        # buyer would not know which one is the series.
        problems.append(f"dcm2niix split the series into {len(images)} volumes")
    for image in images:
        sidecar = image.with_name(image.name.removesuffix(".nii.gz") + ".json")
        if not sidecar.exists():
            problems.append(f"no JSON sidecar for {image.name}")
    dropped: set[str] = set()
    for sidecar in (p for p in outputs if p.name.endswith(".json")):
        found = sidecar_problems(sidecar)
        if not found:
            dropped |= sidecar_drop(sidecar)
            found = sidecar_problems(sidecar)  # the file as it will be shipped
        problems += found
    return Conversion(outputs=outputs, problems=problems[:MAX_PROBLEMS], dropped=sorted(dropped))


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the process group this call started
    except ProcessLookupError:
        pass
    proc.wait()


def sidecar_problems(path: Path) -> list[str]:
    """Why a sidecar must not be shipped (empty: it may): unreadable, or identifying keys."""
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        return [f"{path.name}: sidecar too large"]
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError):
        return [f"{path.name}: sidecar is not valid JSON"]
    if not isinstance(data, dict):
        return [f"{path.name}: sidecar is not a JSON object"]
    found = sorted(key for key in data if key in IDENTIFYING_SIDECAR_KEYS)
    return [f"{path.name}: identifying key {key} in the sidecar" for key in found]


def sidecar_drop(path: Path) -> set[str]:
    """Rewrite a (checked, readable) sidecar without DROPPED_SIDECAR_KEYS; the keys left out."""
    data = json.loads(path.read_bytes())
    dropped = {key for key in data if key in DROPPED_SIDECAR_KEYS}
    if dropped:
        kept = {key: value for key, value in data.items() if key not in dropped}
        path.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return dropped


# ---- the delivery step --------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(storage.CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def delivery_convert_series(*, delivery: Delivery, series: Series, run_number: int, uid_key: bytes) -> bool:
    """Convert one series of the delivery's order to NIfTI, store what may be shipped, and
    record the outcome in the conversion report. False when this run no longer holds the
    delivery (nothing recorded). A series already reported is the caller's to skip."""
    order_id = delivery.order_id
    series_uid = fingerprint_uid(series.series_uid, order_id=order_id, key=uid_key)
    fence = Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.RUNNING, run_number=run_number)

    def heartbeat() -> bool:
        return bool(fence.update(progressed=timezone.now()))

    stored: list[tuple[str, str, int, str]] = []  # path, key, size, sha256
    with tempfile.TemporaryDirectory(prefix="nifti-") as tmp:
        in_dir, out_dir = Path(tmp, "in"), Path(tmp, "out")
        in_dir.mkdir()
        out_dir.mkdir()
        problems: list[str] = []
        dropped: list[str] = []
        instances = Instance.objects.filter(series=series).order_by("id")
        try:
            for n, instance in enumerate(instances.iterator(chunk_size=500), start=1):
                with storage.open_read(instance.storage_key) as src, open(in_dir / f"{n:06d}.dcm", "wb") as dst:
                    fingerprint_file(getattr(src, "file", src), dst, order_id=order_id)  # type: ignore[arg-type]
                if n % 100 == 0 and not heartbeat():
                    return False
        except NotFingerprintableError as exc:
            problems.append(f"a file of the series could not be read ({exc})")
        if not problems:
            conversion = convert_dir(in_dir, out_dir, timeout=settings.NIFTI_TIMEOUT_SECONDS, heartbeat=heartbeat)
            if conversion.superseded:
                return False
            problems, dropped = conversion.problems, conversion.dropped
        if not problems:
            for output in conversion.outputs:
                match = _OUTPUT_NAME.match(output.name)
                assert match is not None  # convert_dir reported any other name
                name = f"{series_uid}{match['suffix']}.{match['ext']}"
                path = f"nifti/{series_uid}/{name}"
                key = f"{delivery.prefix}/{path}"
                with open(output, "rb") as fh:
                    storage.put(key, fh)
                stored.append((path, key, output.stat().st_size, _sha256_file(output)))
    entry = {"status": "failed" if problems else "ok", "problems": problems, "files": [s[0] for s in stored],
             "sidecar_keys_dropped": dropped}
    with transaction.atomic():
        # Locked: the report is read, changed and written back by one run at a time.
        locked = Delivery.objects.select_for_update().get(pk=delivery.pk)
        if locked.status != Delivery.Status.RUNNING or locked.run_number != run_number:
            return False
        added, added_bytes = 0, 0
        for path, key, size, sha256 in stored:
            _, created = DeliveryFile.objects.update_or_create(
                delivery=locked, path=path,
                defaults={"series": series, "instance": None, "storage_key": key, "size_bytes": size,
                          "sha256": sha256, "sop_uid": ""})
            if created:
                added, added_bytes = added + 1, added_bytes + size
        report = dict(locked.conversion_report)
        report[series_uid] = entry
        Delivery.objects.filter(pk=locked.pk).update(
            conversion_report=report, done_files=F("done_files") + added,
            total_bytes=F("total_bytes") + added_bytes, progressed=timezone.now())
    if problems:
        logger.warning("delivery %s: series %s not converted to NIfTI: %s", delivery.pk, series.pk, problems[0])
    return True
