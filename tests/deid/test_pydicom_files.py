"""Real-world shapes from pydicom's bundled test files."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.data import get_testdata_file

from deid import Options, deidentify_file

KEY = b"bundled-files-key-0123456789abcdef"
FILES = [
    "CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "emri_small_big_endian.dcm", "rtplan.dcm",
    "no_meta_group_length.dcm", "image_dfl.dcm", "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm", "liver_1frame.dcm", "examples_overlay.dcm", "rtdose_rle.dcm",
    "test-SR.dcm", "waveform_ecg.dcm",
]


@pytest.mark.parametrize("name", FILES)
def test_bundled_file_is_deidentified_and_verified(name: str) -> None:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not available here (pydicom-data not installed)")
    original = pydicom.dcmread(path)
    out = io.BytesIO()
    report = deidentify_file(path, out, key=KEY, options=Options(accept_burned_in_risk=True))
    result = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert report.verified and result.PatientIdentityRemoved == "YES"
    assert result.SOPInstanceUID != original.get("SOPInstanceUID")
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID
    assert str(result.PatientID).startswith("P-")
    assert not any(e.tag.is_private for e in result)
    assert not any(e.tag.group & 0xFF00 in (0x5000, 0x6000) for e in result)
    if "PixelData" in original:
        assert result.PixelData == original.PixelData
    if original.get("PatientID") and len(str(original.PatientID)) >= 3:
        assert str(original.PatientID).encode() not in out.getvalue()


def test_secondary_capture_sample_is_rejected_by_default() -> None:
    from deid import BurnedInAnnotationError
    with pytest.raises(BurnedInAnnotationError, match="secondary capture"):
        deidentify_file(get_testdata_file("JPEG2000.dcm"), io.BytesIO(), key=KEY)
