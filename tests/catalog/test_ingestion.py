"""Ingestion: upload → quarantine → de-identify + verify → catalog rows and clean objects."""
from __future__ import annotations

import io
import zipfile

import pydicom
import pytest
from django.core.files.storage import default_storage

import storage
from catalog.exceptions import UnsafeArchiveError
from catalog.ingestion.ingest import upload_batch_ingest
from catalog.ingestion.uploads import upload_batch_create
from catalog.models import Dataset, Instance, Series, Study, UploadBatch, UploadFile
from demo.synthetic import fake_patients, make_instance, make_uid, to_bytes, write_zip
from factories.dicom import ct_files
from marketplace.models import AuditEvent

pytestmark = pytest.mark.django_db


def as_uploads(files: list[tuple[str, bytes]]) -> list[tuple[str, io.BytesIO]]:
    return [(name, io.BytesIO(data)) for name, data in files]


def zip_of(names_and_data: list[tuple[str, bytes]], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in names_and_data:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data,
                             compress_type=compression)
    return buffer.getvalue()


def quarantine_prefix(dataset: Dataset) -> str:
    return f"quarantine/{dataset.provider_id}"


def stored_quarantine_files(dataset: Dataset) -> list[str]:
    """Every object left under the provider's quarantine prefix (local storage backend)."""
    prefix = quarantine_prefix(dataset)
    if not default_storage.exists(prefix):
        return []
    found, pending = [], [prefix]
    while pending:
        folder = pending.pop()
        dirs, files = default_storage.listdir(folder)
        found += [f"{folder}/{name}" for name in files]
        pending += [f"{folder}/{name}" for name in dirs]
    return found


def ultrasound_file(*, burned_in: bool, seed: int = 11) -> tuple[str, bytes]:
    patient = fake_patients(1, seed=seed)[0]
    study_uid = make_uid("us-study", seed)
    ds = make_instance(patient=patient, modality="US", study_uid=study_uid,
                       series_uid=make_uid("us-series", seed), sop_uid=make_uid("us-sop", seed),
                       **({"BurnedInAnnotation": "YES"} if burned_in else {}))
    return f"{patient.patient_id}/us.dcm", to_bytes(ds)


# ---- the happy path --------------------------------------------------------------------
def test_it_ingests_good_files_into_studies_series_and_instances(dataset, ingest):
    files = ct_files(n_patients=2, n_instances=3)
    batch = ingest(dataset, files)

    assert batch.status == UploadBatch.Status.DONE
    assert (batch.total_files, batch.done_files, batch.ok_files, batch.failed_files) == (6, 6, 6, 0)
    assert batch.finished is not None
    assert set(batch.files.values_list("status", flat=True)) == {UploadFile.Status.OK}
    assert Study.objects.filter(dataset=dataset).count() == 2
    assert Series.objects.filter(study__dataset=dataset).count() == 2
    assert Instance.objects.filter(dataset=dataset).count() == 6
    for study in Study.objects.filter(dataset=dataset):
        assert study.modalities == ["CT"]
        assert study.body_part == "CHEST"
        assert study.manufacturer == "SIEMENS"
        assert (study.series_count, study.instance_count) == (1, 3)
        assert study.patient_sex in {"F", "M"}
        assert study.age_band != "unknown"
    assert AuditEvent.objects.filter(action="upload.ingested", object_id=str(batch.pk)).count() == 1


def test_it_updates_the_dataset_summary_after_ingestion(dataset, ingest):
    ingest(dataset, ct_files(n_patients=2, n_instances=3))
    dataset.refresh_from_db()
    instances = Instance.objects.filter(dataset=dataset)

    assert (dataset.patient_count, dataset.study_count, dataset.series_count, dataset.instance_count) == (2, 2, 2, 6)
    assert dataset.total_bytes == sum(instances.values_list("size_bytes", flat=True)) > 0
    assert dataset.modalities == ["CT"]
    assert dataset.body_parts == ["CHEST"]
    assert dataset.manufacturers == ["SIEMENS"]
    assert set(dataset.sexes) <= {"F", "M"} and dataset.sexes
    for summary in (dataset.modalities, dataset.body_parts, dataset.manufacturers, dataset.sexes, dataset.age_bands):
        assert summary == sorted(set(summary))  # one entry per value, however many studies share it
    assert dataset.search_vector is not None


def test_it_stores_one_clean_object_per_instance_matching_its_row(dataset, ingest):
    ingest(dataset, ct_files(n_patients=1, n_instances=2))
    for instance in Instance.objects.filter(dataset=dataset).select_related("series__study"):
        assert instance.storage_key.startswith(f"catalog/{dataset.pk}/")
        assert storage.exists(instance.storage_key)
        assert storage.size(instance.storage_key) == instance.size_bytes
        assert storage.sha256_of(instance.storage_key) == instance.sha256
        with storage.open_read(instance.storage_key) as fh:
            ds = pydicom.dcmread(fh)
        assert ds.SOPInstanceUID == instance.sop_uid
        assert ds.SeriesInstanceUID == instance.series.series_uid
        assert ds.StudyInstanceUID == instance.series.study.study_uid
        assert ds.PatientID == instance.series.study.pseudo_patient_id


def test_it_ingests_the_members_of_a_zip_upload(dataset, ingest):
    batch = ingest(dataset, ct_files(n_patients=2, n_instances=2), as_zip=True)

    assert batch.status == UploadBatch.Status.DONE
    assert (batch.total_files, batch.ok_files, batch.failed_files) == (4, 4, 0)
    archive = batch.files.get(is_archive=True)
    assert archive.status == UploadFile.Status.OK
    assert archive.reason == "archive expanded into 4 files"
    members = batch.files.filter(is_archive=False)
    assert members.count() == 4
    assert set(members.values_list("status", flat=True)) == {UploadFile.Status.OK}
    assert Instance.objects.filter(dataset=dataset).count() == 4
    assert Study.objects.filter(dataset=dataset).count() == 2


# ---- bad files in a batch --------------------------------------------------------------
def test_it_rejects_non_dicom_and_truncated_files_with_a_reason_and_ingests_the_rest(dataset, ingest):
    good = ct_files(n_patients=1, n_instances=3)
    name, data = ct_files(n_patients=1, n_instances=1, seed=99)[0]
    files = [*good, ("notes.txt", b"this is not a DICOM file at all\n" * 20), ("truncated.dcm", data[: len(data) // 3])]

    batch = ingest(dataset, files)

    assert batch.status == UploadBatch.Status.DONE
    assert (batch.total_files, batch.done_files, batch.ok_files, batch.failed_files) == (5, 5, 3, 2)
    not_dicom = batch.files.get(name="notes.txt")
    truncated = batch.files.get(name="truncated.dcm")
    for rejected in (not_dicom, truncated):
        assert rejected.status == UploadFile.Status.REJECTED
        assert rejected.reason
        assert rejected.instance is None
    assert "dicom" in not_dicom.reason.lower()
    assert not_dicom.reason != truncated.reason
    assert Instance.objects.filter(dataset=dataset).count() == 3
    dataset.refresh_from_db()
    assert dataset.instance_count == 3


@pytest.mark.parametrize("cut", [300, 400, 600, 1000], ids=lambda n: f"first-{n}-bytes")
def test_it_rejects_a_file_cut_short_and_still_finishes_the_batch(dataset, ingest, cut):
    # Cut at an element boundary (300-600 here) a file still parses, but has no study/series UIDs.
    good = ct_files(n_patients=1, n_instances=2)
    data = ct_files(n_patients=1, n_instances=1, seed=3)[0][1]

    batch = ingest(dataset, [*good, ("cut.dcm", data[:cut])])

    assert batch.status == UploadBatch.Status.DONE
    assert (batch.ok_files, batch.failed_files) == (2, 1)
    cut_file = batch.files.get(name="cut.dcm")
    assert cut_file.status == UploadFile.Status.REJECTED
    assert "truncated" in cut_file.reason
    assert Instance.objects.filter(dataset=dataset).count() == 2
    assert not any(key.startswith(f"catalog/{dataset.pk}//") or "//" in key
                   for key in Instance.objects.values_list("storage_key", flat=True))


def test_it_rejects_a_burned_in_ultrasound_image_unless_the_risk_is_accepted(dataset, ingest, alice):
    batch = ingest(dataset, [ultrasound_file(burned_in=True)])
    rejected = batch.files.get()
    assert rejected.status == UploadFile.Status.REJECTED
    assert "burned-in" in rejected.reason
    assert Instance.objects.filter(dataset=dataset).count() == 0

    dataset.burned_in_risk_accepted = True
    dataset.save(update_fields=["burned_in_risk_accepted"])
    batch = ingest(dataset, [ultrasound_file(burned_in=True)])
    accepted = batch.files.get()
    assert accepted.status == UploadFile.Status.OK, accepted.reason
    assert Instance.objects.filter(dataset=dataset).count() == 1
    dataset.refresh_from_db()
    assert dataset.modalities == ["US"]


def test_it_rejects_any_ultrasound_image_without_the_attestation(dataset, ingest):
    batch = ingest(dataset, [ultrasound_file(burned_in=False)])
    rejected = batch.files.get()
    assert rejected.status == UploadFile.Status.REJECTED
    assert "burned-in" in rejected.reason


# ---- idempotency -----------------------------------------------------------------------
def test_it_does_nothing_when_a_finished_batch_is_ingested_again(dataset, ingest):
    batch = ingest(dataset, ct_files(n_patients=1, n_instances=2))
    before = (Instance.objects.count(), AuditEvent.objects.count(), list(batch.files.values_list("status", "reason")))

    assert upload_batch_ingest(batch_id=batch.pk) is None
    assert upload_batch_ingest(batch_id=10**9) is None  # gone: also nothing

    batch.refresh_from_db()
    assert batch.status == UploadBatch.Status.DONE
    assert (batch.ok_files, batch.done_files) == (2, 2)
    after = (Instance.objects.count(), AuditEvent.objects.count(), list(batch.files.values_list("status", "reason")))
    assert after == before


def test_it_marks_files_uploaded_again_as_duplicates_without_new_instances(dataset, ingest):
    files = ct_files(n_patients=2, n_instances=2)
    ingest(dataset, files)
    instances = set(Instance.objects.filter(dataset=dataset).values_list("pk", "sha256"))

    again = ingest(dataset, files)

    assert set(again.files.values_list("status", flat=True)) == {UploadFile.Status.DUPLICATE}
    assert set(again.files.values_list("reason", flat=True)) == {"this image is already in the dataset"}
    assert again.files.filter(instance__isnull=False).count() == 0
    assert set(Instance.objects.filter(dataset=dataset).values_list("pk", "sha256")) == instances
    assert Study.objects.filter(dataset=dataset).count() == 2
    dataset.refresh_from_db()
    assert dataset.instance_count == 4


# ---- quarantine ------------------------------------------------------------------------
def test_it_deletes_quarantined_originals_once_ingested(dataset, alice):
    files = [*ct_files(n_patients=1, n_instances=2), ("junk.bin", b"\x00junk" * 100)]
    batch = upload_batch_create(dataset=dataset, files=as_uploads(files), acting_user=alice)
    keys = list(batch.files.values_list("quarantine_key", flat=True))
    assert len(keys) == 3
    assert all(storage.exists(key) for key in keys)

    upload_batch_ingest(batch_id=batch.pk)

    assert not any(storage.exists(key) for key in keys)
    assert set(batch.files.values_list("quarantine_key", flat=True)) == {""}
    assert stored_quarantine_files(dataset) == []


def test_it_deletes_the_quarantined_zip_and_its_expanded_members(dataset, alice):
    archive = write_zip([*ct_files(n_patients=1, n_instances=2), ("readme.txt", b"not dicom")])
    batch = upload_batch_create(dataset=dataset, files=[("upload.zip", io.BytesIO(archive))], acting_user=alice)
    archive_key = batch.files.get().quarantine_key
    assert storage.exists(archive_key)

    batch = upload_batch_ingest(batch_id=batch.pk)

    assert not storage.exists(archive_key)
    assert stored_quarantine_files(dataset) == []
    assert (batch.ok_files, batch.failed_files) == (2, 1)
    assert set(batch.files.values_list("quarantine_key", flat=True)) == {""}


# ---- no PHI in the catalog ---------------------------------------------------------------
def phi_values(files: list[tuple[str, bytes]]) -> set[str]:
    """Identifying values the synthetic files carry (all fake)."""
    values: set[str] = set()
    for _, data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        name = str(ds.PatientName)
        family, given = name.split("^")[:2]
        values |= {
            name, f"{family} {given}", family, ds.PatientID, ds.OtherPatientIDs, ds.PatientBirthDate,
            ds.AccessionNumber, ds.InstitutionName, ds.InstitutionAddress, ds.PatientAddress,
            ds.PatientTelephoneNumbers, str(ds.ReferringPhysicianName), ds.StationName,
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID,
        }
    return {v for v in values if len(v) >= 4}


def catalog_text(dataset: Dataset) -> list[str]:
    """Every text value of every catalog row for this dataset."""
    rows: list[object] = [Dataset.objects.get(pk=dataset.pk)]
    rows += list(Study.objects.filter(dataset=dataset))
    rows += list(Series.objects.filter(study__dataset=dataset))
    rows += list(Instance.objects.filter(dataset=dataset))
    rows += list(UploadBatch.objects.filter(dataset=dataset))
    rows += list(UploadFile.objects.filter(batch__dataset=dataset, status=UploadFile.Status.OK))
    texts: list[str] = []
    for row in rows:
        for field in row._meta.concrete_fields:
            value = getattr(row, field.attname)
            if isinstance(value, (list, tuple)):
                texts += [str(v) for v in value]
            elif value is not None:
                texts.append(str(value))
    texts += [str(e.detail) for e in AuditEvent.objects.all()]
    return texts


@pytest.mark.parametrize("as_zip", [False, True], ids=["files", "zip"])
def test_it_keeps_no_fake_phi_in_any_catalog_row(dataset, ingest, as_zip):
    files = ct_files(n_patients=3, n_instances=2, seed=21)
    ingest(dataset, files, as_zip=as_zip)
    assert Instance.objects.filter(dataset=dataset).count() == 6
    phi = phi_values(files)
    assert any(v.startswith("MRN") for v in phi)  # the check below has something to find

    leaks = sorted({value for text in catalog_text(dataset) for value in phi if value.upper() in text.upper()})
    assert leaks == []


def test_it_keeps_no_fake_phi_in_the_stored_clean_files(dataset, ingest):
    files = ct_files(n_patients=3, n_instances=2, seed=21)
    ingest(dataset, files)
    phi = phi_values(files)
    for key in Instance.objects.filter(dataset=dataset).values_list("storage_key", flat=True):
        data = b"".join(storage.iter_chunks(key)).upper()
        leaks = sorted(value for value in phi if value.upper().encode() in data)
        assert leaks == [], key


# ---- unsafe zips are refused at upload -------------------------------------------------
def assert_nothing_stored(dataset: Dataset) -> None:
    assert not UploadBatch.objects.filter(dataset=dataset).exists()
    assert not UploadFile.objects.filter(batch__dataset=dataset).exists()
    assert stored_quarantine_files(dataset) == []
    assert not AuditEvent.objects.filter(action="upload.create").exists()


@pytest.mark.parametrize("member, problem", [
    ("../evil.dcm", "points outside the archive"),
    ("scans/../../evil.dcm", "points outside the archive"),
    ("/abs.dcm", "absolute path"),
    ("C:/abs.dcm", "absolute path"),
])
def test_it_refuses_a_zip_with_a_path_outside_the_archive(dataset, alice, member, problem):
    data = ct_files(n_patients=1, n_instances=1)[0][1]
    archive = zip_of([("ok.dcm", data), (member, data)])
    with pytest.raises(UnsafeArchiveError, match=problem) as excinfo:
        upload_batch_create(dataset=dataset, files=[("upload.zip", io.BytesIO(archive))], acting_user=alice)
    assert member in excinfo.value.message
    assert excinfo.value.code == "unsafe_archive"
    assert_nothing_stored(dataset)


def test_it_refuses_a_zip_with_more_members_than_allowed(dataset, alice, settings):
    settings.UPLOAD_ZIP_MAX_MEMBERS = 3
    archive = write_zip(ct_files(n_patients=1, n_instances=4))
    with pytest.raises(UnsafeArchiveError, match="zip holds 4 files; the limit is 3"):
        upload_batch_create(dataset=dataset, files=[("upload.zip", io.BytesIO(archive))], acting_user=alice)
    assert_nothing_stored(dataset)


def test_it_accepts_a_zip_with_exactly_the_allowed_number_of_members(dataset, alice, settings):
    settings.UPLOAD_ZIP_MAX_MEMBERS = 4
    archive = write_zip(ct_files(n_patients=1, n_instances=4))
    batch = upload_batch_create(dataset=dataset, files=[("upload.zip", io.BytesIO(archive))], acting_user=alice)
    assert upload_batch_ingest(batch_id=batch.pk).ok_files == 4


def test_it_refuses_a_zip_whose_declared_size_is_over_the_limit(dataset, alice, settings):
    files = ct_files(n_patients=1, n_instances=2)
    declared = sum(len(data) for _, data in files)
    settings.UPLOAD_ZIP_MAX_TOTAL_BYTES = declared - 1
    with pytest.raises(UnsafeArchiveError, match=f"zip expands to {declared} bytes; the limit is {declared - 1}"):
        upload_batch_create(dataset=dataset, files=[("upload.zip", io.BytesIO(write_zip(files)))], acting_user=alice)
    assert_nothing_stored(dataset)


def test_it_refuses_a_zip_with_a_compression_ratio_over_the_limit(dataset, alice, settings):
    settings.UPLOAD_ZIP_MAX_RATIO = 20
    archive = zip_of([("bomb.dcm", b"\x00" * 200_000)])
    with pytest.raises(UnsafeArchiveError, match="compression ratio over 20:1"):
        upload_batch_create(dataset=dataset, files=[("upload.zip", io.BytesIO(archive))], acting_user=alice)
    assert_nothing_stored(dataset)


def test_it_refuses_the_whole_upload_when_one_of_several_files_is_an_unsafe_zip(dataset, alice):
    good = as_uploads(ct_files(n_patients=1, n_instances=2))
    bad = ("upload.zip", io.BytesIO(zip_of([("../evil.dcm", b"x" * 100)])))
    with pytest.raises(UnsafeArchiveError):
        upload_batch_create(dataset=dataset, files=[*good, bad], acting_user=alice)
    assert_nothing_stored(dataset)


def test_it_refuses_a_file_that_looks_like_a_zip_but_is_not_readable(dataset, alice):
    with pytest.raises(UnsafeArchiveError, match="not a readable zip archive"):
        upload_batch_create(dataset=dataset, files=[("scans.zip", io.BytesIO(b"PK\x03\x04garbage"))],
                            acting_user=alice)
    assert_nothing_stored(dataset)


@pytest.mark.django_db
def test_it_counts_an_archive_refused_by_the_worker_as_a_failed_file(dataset, alice, settings):
    files = ct_files(n_patients=1, n_instances=3)
    batch = upload_batch_create(dataset=dataset, acting_user=alice, files=[
        ("studies.zip", io.BytesIO(write_zip(files))), ("single.dcm", io.BytesIO(files[0][1]))])
    settings.UPLOAD_ZIP_MAX_MEMBERS = 2  # the worker re-checks the archive with today's limits
    batch = upload_batch_ingest(batch_id=batch.pk)
    archive = batch.files.get(is_archive=True)
    assert archive.status == UploadFile.Status.REJECTED and "limit is 2" in archive.reason
    assert (batch.ok_files, batch.failed_files, batch.total_files) == (1, 1, 2)
    assert Instance.objects.filter(dataset=dataset).count() == 1


@pytest.mark.django_db
def test_a_batch_spread_over_chunk_tasks_is_closed_once_by_the_last_chunk(dataset, alice, settings, monkeypatch):
    from catalog.ingestion.ingest import upload_batch_finish
    from config.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)  # run the chunk tasks inline
    settings.INGEST_CHUNK_FILES = 2
    files = ct_files(n_patients=1, n_instances=5)
    batch = upload_batch_create(dataset=dataset, acting_user=alice,
                                files=[(name, io.BytesIO(data)) for name, data in files])
    upload_batch_ingest(batch_id=batch.pk, parallel=True)
    batch.refresh_from_db()
    assert batch.status == UploadBatch.Status.DONE
    assert (batch.ok_files, batch.failed_files, batch.total_files) == (5, 0, 5)
    assert Dataset.objects.get(pk=dataset.pk).instance_count == 5
    assert upload_batch_finish(batch_id=batch.pk) is None  # a late chunk does not close it again
    assert AuditEvent.objects.filter(action="upload.ingested", object_id=str(batch.pk)).count() == 1


@pytest.mark.django_db
def test_it_counts_series_instances_and_bytes_per_study(dataset, ingest):
    ingest(dataset, ct_files(n_patients=2, n_instances=3))
    for study in Study.objects.filter(dataset=dataset):
        sizes = list(Instance.objects.filter(series__study=study).values_list("size_bytes", flat=True))
        assert (study.series_count, study.instance_count, study.total_bytes) == (1, 3, sum(sizes))
        series = study.series.get()
        assert (series.instance_count, series.total_bytes) == (3, sum(sizes))


def _with_patient_text(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientComments = f"{ds.PatientName.family_name} lives by the lighthouse, follow-up in 6 months"
    ds.Occupation = "Lighthousekeeper"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _stored_text(dataset) -> list[tuple[str, str]]:  # noqa: ANN001
    out = []
    for instance in Instance.objects.filter(dataset=dataset):
        with storage.open_read(instance.storage_key) as fh:
            ds = pydicom.dcmread(fh)
        out.append((str(ds.get("PatientComments", "")), str(ds.get("Occupation", ""))))
    return out


def test_free_text_about_the_patient_and_occupation_are_removed_by_default(dataset, ingest) -> None:
    files = [(name, _with_patient_text(data)) for name, data in ct_files(n_patients=1, n_instances=1)]
    assert ingest(dataset, files).ok_files == 1
    assert _stored_text(dataset) == [("", "")]


def test_a_provider_keeps_patient_comments_knowingly_cleaned_and_the_page_says_so(
        client, dataset, ingest, alice) -> None:
    from catalog.datasets.services import dataset_update

    dataset = dataset_update(dataset=dataset, acting_user=alice, patient_free_text_kept=["PatientComments"])
    files = [(name, _with_patient_text(data)) for name, data in ct_files(n_patients=1, n_instances=1)]
    family = pydicom_family(files[0][1])
    assert ingest(dataset, files).ok_files == 1
    ((comments, occupation),) = _stored_text(dataset)
    assert "follow-up in 6 months" in comments and family.lower() not in comments.lower()
    assert occupation == ""
    client.force_login(alice)
    page = client.get(f"/datasets/{dataset.pk}/").content.decode()
    assert 'id="free-text-kept"' in page and "PatientComments" in page.split('id="free-text-kept"')[1]


def pydicom_family(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data)).PatientName.family_name)
