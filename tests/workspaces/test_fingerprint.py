"""Each buyer's copy carries a fingerprint of the order (remapped UIDs, a private tag, a
manifest column) that names the order of a leaked file, and adds nothing identifying."""
from __future__ import annotations

import csv
import io

import pydicom
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

import storage
from deid.errors import PHIRemainsError
from deid.verify import verify_output
from factories.dicom import ct_files
from workspaces.fingerprint import (
    MANIFEST_COLUMN,
    NOT_OURS,
    PRIVATE_CREATOR,
    PRIVATE_GROUP,
    fingerprint_file,
    order_marker,
    trace_file,
)
from workspaces.models import Delivery
from workspaces.trace import main as trace_main

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tiny_threshold")]


@pytest.fixture
def two_deliveries(published_dataset, bob, charlie, deliver) -> tuple[Delivery, Delivery]:
    return deliver(published_dataset, bob), deliver(published_dataset, charlie)


def _read(key: str) -> bytes:
    return b"".join(storage.iter_chunks(key))


def _uids(ds: pydicom.Dataset) -> tuple[str, str, str, str]:
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID


def _saved(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_two_buyers_get_different_uids_for_the_same_instance(two_deliveries):
    bobs, charlies = two_deliveries
    assert bobs.status == charlies.status == Delivery.Status.DONE
    for mine in bobs.files.select_related("instance__series__study"):
        theirs = charlies.files.get(instance=mine.instance)
        a, b = pydicom.dcmread(io.BytesIO(_read(mine.storage_key))), pydicom.dcmread(io.BytesIO(_read(theirs.storage_key)))
        catalog = pydicom.dcmread(io.BytesIO(_read(mine.instance.storage_key)))
        for x, y, original in zip(_uids(a), _uids(b), _uids(catalog), strict=True):
            assert x != y and original not in (x, y)
            assert x.startswith("2.25.") and y.startswith("2.25.")
        # The file meta follows the data set; the path is built from the delivered UIDs.
        assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID == mine.sop_uid
        assert mine.path == f"{a.StudyInstanceUID}/{a.SeriesInstanceUID}/{a.SOPInstanceUID}.dcm"
        assert a.PixelData == b.PixelData == catalog.PixelData
        assert a.SOPClassUID == catalog.SOPClassUID  # a class UID is not an instance's
        # The private tag: the order's HMAC tag, not its id.
        tag = a.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[0x01].value
        assert tag == order_marker(bobs.order_id) != order_marker(charlies.order_id)
        assert str(bobs.order_id) not in tag.split() and len(tag) == 32
        # What is recorded is what was delivered.
        assert mine.sha256 == storage.sha256_of(mine.storage_key) != mine.instance.sha256
        assert mine.size_bytes == storage.size(mine.storage_key)


def test_series_of_one_copy_stay_together(two_deliveries):
    bobs, _ = two_deliveries
    by_series: dict[int, set[str]] = {}
    for f in bobs.files.all():
        ds = pydicom.dcmread(io.BytesIO(_read(f.storage_key)), stop_before_pixels=True)
        by_series.setdefault(f.instance.series_id, set()).add(ds.SeriesInstanceUID)
    assert len(by_series) == 2 and all(len(uids) == 1 for uids in by_series.values())


def test_the_copy_is_the_same_bytes_every_time(published_dataset):
    from catalog.models import Instance

    instance = Instance.objects.filter(dataset=published_dataset).first()
    copies = []
    for _ in range(2):
        out = io.BytesIO()
        with storage.open_read(instance.storage_key) as src:
            fingerprint_file(src, out, order_id=41)
        copies.append(out.getvalue())
    other = io.BytesIO()
    with storage.open_read(instance.storage_key) as src:
        fingerprint_file(src, other, order_id=42)
    assert copies[0] == copies[1] != other.getvalue()
    assert copies[0][:128] == b"\x00" * 128  # the preamble stays zeroed


def test_the_manifest_lists_the_delivered_uids_and_the_order_tag(two_deliveries):
    bobs, _ = two_deliveries
    rows = list(csv.DictReader(io.StringIO(_read(bobs.manifest_key).decode())))
    assert len(rows) == bobs.files.count() == 6
    for row in rows:
        delivered = pydicom.dcmread(io.BytesIO(_read(f"{bobs.prefix}/{row['path']}")), stop_before_pixels=True)
        assert (row["StudyInstanceUID"], row["SeriesInstanceUID"], row["SOPInstanceUID"]) == (
            delivered.StudyInstanceUID, delivered.SeriesInstanceUID, delivered.SOPInstanceUID)
        assert row[MANIFEST_COLUMN] == order_marker(bobs.order_id)
        assert row["sha256"] == storage.sha256_of(f"{bobs.prefix}/{row['path']}")


def test_the_verifier_passes_on_every_delivered_file_against_every_original(two_deliveries):
    originals = [pydicom.dcmread(io.BytesIO(data)) for _, data in ct_files()]  # the fixture's uploads
    # The check can fail: an original against itself.
    with pytest.raises(PHIRemainsError):
        verify_output(originals[0], ct_files()[0][1])
    for delivery in two_deliveries:
        for f in delivery.files.all():
            data = _read(f.storage_key)
            for original in originals:
                verify_output(original, data)


def test_trace_names_the_order_of_each_buyers_copy(two_deliveries, tmp_path):
    for delivery in two_deliveries:
        f = delivery.files.first()
        result = trace_file(_saved(tmp_path, f"{delivery.pk}.dcm", _read(f.storage_key)))
        assert result.found and result.order_id == delivery.order_id and result.how == "private tag"
        assert result.buyer == delivery.user.username
        assert f"order #{delivery.order_id}" in result.message and delivery.user.username in result.message


def test_trace_finds_the_order_after_the_private_tag_was_stripped(two_deliveries, tmp_path):
    _, charlies = two_deliveries
    ds = pydicom.dcmread(io.BytesIO(_read(charlies.files.last().storage_key)))
    ds.remove_private_tags()
    out = io.BytesIO()
    ds.save_as(out)
    result = trace_file(_saved(tmp_path, "stripped.dcm", out.getvalue()))
    assert result.found and result.order_id == charlies.order_id and result.how == "SOP Instance UID"


def test_trace_finds_the_order_by_its_tag_when_the_uids_were_changed(two_deliveries, tmp_path):
    bobs, _ = two_deliveries
    ds = pydicom.dcmread(io.BytesIO(_read(bobs.files.first().storage_key)))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "2.25.1234"
    out = io.BytesIO()
    ds.save_as(out)
    result = trace_file(_saved(tmp_path, "renamed.dcm", out.getvalue()))
    assert result.found and result.order_id == bobs.order_id and result.how == "private tag"


def test_a_forged_tag_and_a_foreign_file_are_not_ours(two_deliveries, tmp_path):
    bobs, _ = two_deliveries
    ds = pydicom.dcmread(io.BytesIO(_read(bobs.files.first().storage_key)))
    ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[0x01].value = "0" * 32
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "2.25.99"
    forged = io.BytesIO()
    ds.save_as(forged)
    foreign = ct_files(n_patients=1, n_instances=1, seed=99)[0][1]
    for name, data in [("forged.dcm", forged.getvalue()), ("foreign.dcm", foreign), ("notes.txt", b"hello")]:
        result = trace_file(_saved(tmp_path, name, data))
        assert not result.found and result.order_id is None
        assert result.message.startswith(NOT_OURS)


def test_the_command_and_the_module_entry_name_the_order(two_deliveries, tmp_path, capsys):
    bobs, _ = two_deliveries
    ours = _saved(tmp_path, "ours.dcm", _read(bobs.files.first().storage_key))
    out = io.StringIO()
    call_command("trace_file", ours, stdout=out)
    assert f"{ours}: order #{bobs.order_id}, buyer bob" in out.getvalue()

    foreign = _saved(tmp_path, "foreign.dcm", ct_files(n_patients=1, n_instances=1, seed=99)[0][1])
    with pytest.raises(CommandError):
        call_command("trace_file", ours, foreign, stdout=io.StringIO())
    assert trace_main([ours, foreign]) == 1
    printed = capsys.readouterr().out
    assert f"{ours}: order #{bobs.order_id}" in printed and f"{foreign}: {NOT_OURS}" in printed
    assert trace_main([ours]) == 0
