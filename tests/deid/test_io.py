from __future__ import annotations

import io
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from deid_factory import KEY, make_dataset, to_bytes
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

import deid.io
from deid import (
    BurnedInAnnotationError,
    MalformedDicomError,
    NotDicomError,
    Options,
    UnsupportedError,
    deidentify_file,
)
from deid.io import atomic_output, staged_outputs


def run_bytes(data: bytes, options: Options | None = None) -> bytes:
    out = io.BytesIO()
    deidentify_file(io.BytesIO(data), out, key=KEY, options=options)
    return out.getvalue()


def test_it_rejects_a_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("Patient DOE^JANE MRN123456\n" * 20)
    with pytest.raises(NotDicomError, match="no DICM prefix") as err:
        deidentify_file(path, io.BytesIO(), key=KEY)
    assert "DOE" not in str(err.value)


def test_it_rejects_a_file_shorter_than_the_preamble() -> None:
    with pytest.raises(NotDicomError, match="too short"):
        run_bytes(b"DICM")


def test_it_rejects_a_dataset_without_preamble() -> None:
    data = to_bytes(make_dataset())
    with pytest.raises(NotDicomError, match="no DICM prefix"):
        run_bytes(data[128:])  # starts with DICM, no preamble
    with pytest.raises(NotDicomError):
        run_bytes(data[132:])  # raw data set, as with force=True readers


def test_it_rejects_truncated_pixel_data() -> None:
    data = to_bytes(make_dataset())
    with pytest.raises(MalformedDicomError, match=r"truncated file: \(7FE0,0010\)"):
        run_bytes(data[:-20])


def test_it_rejects_a_file_cut_in_the_header() -> None:
    data = to_bytes(make_dataset())
    with pytest.raises(MalformedDicomError):
        run_bytes(data[:700])


def test_it_rejects_pydicoms_truncated_samples() -> None:
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
        with pytest.raises(MalformedDicomError, match="truncated file"):
            deidentify_file(get_testdata_file(name), io.BytesIO(), key=KEY)


def test_it_rejects_a_missing_transfer_syntax() -> None:
    with pytest.raises(MalformedDicomError, match="no transfer syntax"):
        deidentify_file(get_testdata_file("meta_missing_tsyntax.dcm"), io.BytesIO(), key=KEY)


def test_it_rejects_an_unknown_transfer_syntax() -> None:
    data = bytearray(to_bytes(make_dataset()))
    at = data.index(b"1.2.840.10008.1.2.1\x00")
    data[at:at + 20] = b"1.2.840.99999.1.2.3\x00"
    with pytest.raises(UnsupportedError, match="transfer syntax"):
        run_bytes(bytes(data))


def _nested(depth: int) -> bytes:
    """Explicit VR LE: `depth` undefined-length sequences inside each other."""
    open_ = struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (open_ + item) * depth + close * depth


def _with_body(extra: bytes) -> bytes:
    data = to_bytes(make_dataset())
    at = data.index(struct.pack("<HH", 0x0008, 0x0005))  # first data set element
    return data[:at] + extra + data[at:]


def test_it_rejects_sequences_nested_too_deep() -> None:
    with pytest.raises(MalformedDicomError, match="nested deeper than 32"):
        run_bytes(_with_body(_nested(40)))


def test_it_survives_ten_thousand_nested_sequences() -> None:
    with pytest.raises(MalformedDicomError):
        run_bytes(_with_body(_nested(10_000)))


def test_it_accepts_moderate_nesting() -> None:
    out = pydicom.dcmread(io.BytesIO(run_bytes(_with_body(_nested(5)))))
    assert out.PatientIdentityRemoved == "YES"  # parsed, walked, written


def test_it_refuses_deflated_data_beyond_the_inflation_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deid.io, "MAX_INFLATED_BYTES", 4096)
    with pytest.raises(MalformedDicomError, match="inflates beyond"):
        deidentify_file(get_testdata_file("image_dfl.dcm"), io.BytesIO(), key=KEY,
                        options=Options(accept_burned_in_risk=True))


def test_it_refuses_a_deflate_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deid.io, "MAX_INFLATED_BYTES", 8 * 1024 * 1024)
    data = to_bytes(make_dataset())
    meta = pydicom.dcmread(io.BytesIO(data)).file_meta
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buf, meta, enforce_standard=True)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(b"\x00" * (64 * 1024 * 1024)) + compressor.flush()
    assert len(bomb) < 100_000
    with pytest.raises(MalformedDicomError, match="inflates beyond"):
        run_bytes(buf.getvalue() + bomb)


def test_it_reads_deflated_input_and_writes_explicit_little_endian() -> None:
    out = io.BytesIO()
    report = deidentify_file(get_testdata_file("image_dfl.dcm"), out, key=KEY,
                             options=Options(accept_burned_in_risk=True))
    assert report.metadata["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"
    original = pydicom.dcmread(get_testdata_file("image_dfl.dcm"))
    assert pydicom.dcmread(io.BytesIO(out.getvalue())).PixelData == original.PixelData


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_it_handles_implicit_vr_and_big_endian_input(make_file: Callable[..., Path], ts: str) -> None:
    src = make_file(transfer_syntax=ts)
    out = io.BytesIO()
    report = deidentify_file(src, out, key=KEY)
    result = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert result.file_meta.TransferSyntaxUID == ts
    assert result.PixelData == pydicom.dcmread(src).PixelData
    assert "DOE" not in str(result.PatientName) and report.verified


def test_it_takes_sop_identity_from_file_meta_when_the_data_set_lacks_it() -> None:
    out = io.BytesIO()
    deidentify_file(get_testdata_file("no_meta_group_length.dcm"), out, key=KEY)
    result = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert result.SOPInstanceUID.startswith("2.25.")
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID


def _cut_element(data: bytes, group: int, element: int) -> bytes:
    at = data.index(struct.pack("<HH2s", group, element, b"UI"))
    (length,) = struct.unpack("<H", data[at + 6:at + 8])
    return data[:at] + data[at + 8 + length:]


def test_it_rejects_an_instance_without_sop_class() -> None:
    data = _cut_element(to_bytes(make_dataset()), 0x0002, 0x0002)
    data = _cut_element(data, 0x0008, 0x0016)
    with pytest.raises(MalformedDicomError, match="missing required attribute SOPClassUID"):
        run_bytes(data)


def test_it_refuses_a_dicomdir_as_pydicom_ships_it() -> None:
    # The class is only in the file meta there; the records name patients.
    with pytest.raises(UnsupportedError, match="DICOMDIR"):
        deidentify_file(get_testdata_file("DICOMDIR"), io.BytesIO(), key=KEY)


def test_it_refuses_a_dicomdir_that_names_its_class_in_the_data_set() -> None:
    with pytest.raises(UnsupportedError, match="DICOMDIR"):
        run_bytes(to_bytes(make_dataset(SOPClassUID="1.2.840.10008.1.3.10")))


@pytest.mark.parametrize("overrides, reason", [
    ({"Modality": "US"}, "burned-in annotation: ultrasound image with no masking rule"),
    ({"BurnedInAnnotation": "YES"}, "burned-in annotation: image declares BurnedInAnnotation YES"),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "burned-in annotation: secondary capture image"),
])
def test_it_rejects_images_that_may_carry_burned_in_text(
    make_file: Callable[..., Path], overrides: dict[str, str], reason: str
) -> None:
    with pytest.raises(BurnedInAnnotationError) as err:
        deidentify_file(make_file(**overrides), io.BytesIO(), key=KEY)
    assert str(err.value).startswith(reason)


def test_it_does_not_flag_non_image_objects_as_burned_in(make_file: Callable[..., Path]) -> None:
    deidentify_file(make_file(Modality="US", PixelData=None), io.BytesIO(), key=KEY)


def test_failed_input_writes_nothing_to_the_destination_path(tmp_path: Path) -> None:
    src = tmp_path / "bad.dcm"
    src.write_bytes(to_bytes(make_dataset())[:-20])
    dst = tmp_path / "out" / "bad.dcm"
    with pytest.raises(MalformedDicomError):
        deidentify_file(src, dst, key=KEY)
    assert not dst.exists()


class _Pipe(io.RawIOBase):
    """A non-seekable upload stream (e.g. a request body)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_it_spools_non_seekable_sources() -> None:
    out = io.BytesIO()
    report = deidentify_file(_Pipe(to_bytes(make_dataset())), out, key=KEY)
    assert report.verified and pydicom.dcmread(io.BytesIO(out.getvalue())).Modality == "CT"


def test_staged_outputs_are_written_in_the_staging_folder_then_renamed(tmp_path: Path) -> None:
    staging, dst = tmp_path / "out" / ".staging", tmp_path / "out" / "sub" / "a.dcm"
    with staged_outputs(staging), atomic_output(dst) as out:
        out.write(b"data")
        # While open: the temporary file is in the staging folder, nothing beside dst.
        assert len(list(staging.iterdir())) == 1
        assert list(dst.parent.iterdir()) == []
    assert dst.read_bytes() == b"data" and list(staging.iterdir()) == []


def test_a_failed_staged_output_leaves_nothing_anywhere(tmp_path: Path) -> None:
    staging, dst = tmp_path / ".staging", tmp_path / "a.dcm"
    with pytest.raises(MalformedDicomError), staged_outputs(staging), atomic_output(dst) as out:
        out.write(b"half")
        raise MalformedDicomError("check failed")
    assert not dst.exists() and list(staging.iterdir()) == []


def test_a_staging_folder_on_another_file_system_is_not_used(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system other than the test's temporary folder")
    staging = Path(tempfile.mkdtemp(dir=shm))
    try:
        dst = tmp_path / "a.dcm"
        with staged_outputs(staging), atomic_output(dst) as out:
            out.write(b"data")
            # A rename cannot cross file systems: the temporary file sits beside dst.
            assert list(staging.iterdir()) == [] and len(list(tmp_path.iterdir())) == 1
        assert dst.read_bytes() == b"data"
    finally:
        shutil.rmtree(staging)
