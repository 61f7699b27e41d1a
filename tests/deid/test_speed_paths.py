"""Fast path: header-only parse, pixel data copied raw, scanned, memory flat."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from deid_factory import KEY, make_dataset, to_bytes
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

import deid.engine
import deid.io
import deid.pixels
import deid.stream
from deid import MalformedDicomError, Options, PHIRemainsError, UnsupportedError, deidentify_file
from deid.cli import main

ROOT = Path(__file__).resolve().parents[2]
ACCEPT = Options(accept_burned_in_risk=True)
COMPRESSED = ["JPEG2000.dcm", "JPEG-lossy.dcm", "MR_small_jpeg_ls_lossless.dcm",
              "rtdose_rle.dcm", "SC_rgb_rle_2frame.dcm",
              "JPEG2000-embedded-sequence-delimiter.dcm"]


def run(src: object, options: Options | None = ACCEPT) -> bytes:
    out = io.BytesIO()
    deidentify_file(src, out, key=KEY, options=options)  # type: ignore[arg-type]
    return out.getvalue()


def run_full_path(src: object, monkeypatch: pytest.MonkeyPatch,
                  options: Options | None = ACCEPT) -> bytes:
    real = deid.io.read_dicom
    with monkeypatch.context() as m:
        m.setattr(deid.engine, "read_dicom", lambda fp, stream_pixels=False: real(fp))
        return run(src, options)


def parse(data: bytes, stream: bool = True) -> deid.io.ParsedFile:
    return deid.io.read_dicom(io.BytesIO(data), stream_pixels=stream)


def pixel_value(data: bytes) -> bytes:
    return pydicom.dcmread(io.BytesIO(data))["PixelData"].value


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_streamed_pixel_value_is_byte_identical(ts: str) -> None:
    data = to_bytes(make_dataset(), ts)
    assert parse(data).pixel is not None  # the fast path is taken
    out = run(io.BytesIO(data))
    assert pixel_value(out) == pixel_value(data)
    raw = data[data.rindex(struct.pack("<HH" if ts != ExplicitVRBigEndian else ">HH", 0x7FE0, 0x0010)):]
    assert out.endswith(raw)  # tag, VR, length and value copied as they were


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_streaming_and_full_path_write_the_same_file(ts: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = to_bytes(make_dataset(), ts)
    assert run(io.BytesIO(data)) == run_full_path(io.BytesIO(data), monkeypatch)


@pytest.mark.parametrize("name", COMPRESSED)
def test_encapsulated_pixel_data_streams(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not available")
    with open(path, "rb") as fp:
        span = deid.io.read_dicom(fp, stream_pixels=True).pixel
    assert span is not None and span.encapsulated
    out = run(path)
    assert pixel_value(out) == pydicom.dcmread(path).PixelData
    assert out == run_full_path(path, monkeypatch)


def test_deflated_input_takes_the_full_path() -> None:
    path = get_testdata_file("image_dfl.dcm")
    with open(path, "rb") as fp:
        assert deid.io.read_dicom(fp, stream_pixels=True).pixel is None
    out = run(path)
    assert pydicom.dcmread(io.BytesIO(out)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def _explicit(tag: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"UN", b"UT"):
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def test_elements_after_pixel_data_go_through_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    trailing = (
        _explicit(0x7FE10010, b"LO", b"ACME TRAILER")
        + _explicit(0x7FE11001, b"LO", b"DOE^JANE MRN123456")
        + _explicit(0xFFFCFFFC, b"OB", b"DOE JANE MRN123456  ")
    )
    data = to_bytes(make_dataset()) + trailing
    parsed = parse(data)
    assert parsed.pixel is not None
    assert 0xFFFCFFFC in parsed.dataset and 0x7FE11001 in parsed.dataset  # parsed, not copied
    out = run(io.BytesIO(data))
    result = pydicom.dcmread(io.BytesIO(out))
    assert 0xFFFCFFFC not in result and not any(e.tag.group == 0x7FE1 for e in result)
    assert b"MRN123456" not in out and b"TRAILER" not in out
    assert out == run_full_path(io.BytesIO(data), monkeypatch)


def test_an_out_of_order_name_after_pixel_data_is_pseudonymised() -> None:
    data = to_bytes(make_dataset()) + _explicit(0x00100010, b"PN", b"SMITH^JOHN")
    out = run(io.BytesIO(data))
    assert b"SMITH" not in out
    assert str(pydicom.dcmread(io.BytesIO(out)).PatientName).startswith("P-")


def test_truncated_pixel_data_raises() -> None:
    data = to_bytes(make_dataset())
    with pytest.raises(MalformedDicomError, match=r"truncated file: \(7FE0,0010\)"):
        parse(data[:-20])
    with pytest.raises(MalformedDicomError, match="truncated"):
        run(io.BytesIO(data[:-20]))


def test_truncated_encapsulated_pixel_data_raises() -> None:
    data = Path(get_testdata_file("JPEG2000.dcm")).read_bytes()
    for cut in (8, 100, 2000):
        with pytest.raises(MalformedDicomError, match="truncated"):
            run(io.BytesIO(data[:-cut]))


def test_identifying_value_in_pixel_bytes_is_caught(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.PixelData = b"\x00" * 40 + b"MRN123456" + b"\x00" * 79  # 128 bytes
    src = tmp_path / "in.dcm"
    src.write_bytes(to_bytes(ds))
    dst = tmp_path / "out" / "in.dcm"
    with pytest.raises(PHIRemainsError, match=r"\(0010,0020\) remains in pixel data") as err:
        deidentify_file(src, dst, key=KEY)
    assert "MRN" not in str(err.value)
    assert not dst.exists() and not list(dst.parent.glob("*"))
    buffer = io.BytesIO()
    with pytest.raises(PHIRemainsError):
        deidentify_file(src, buffer, key=KEY)
    assert buffer.getvalue() == b""  # scanned before anything was written


def test_a_value_straddling_two_chunks_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deid.stream, "CHUNK", 16)
    ds = make_dataset()
    ds.PixelData = b"\x00" * 12 + b"MRN123456" + b"\x00" * 107
    with pytest.raises(PHIRemainsError):
        run(io.BytesIO(to_bytes(ds)))
    assert pixel_value(run(io.BytesIO(to_bytes(make_dataset())))) == pixel_value(to_bytes(make_dataset()))


def test_short_values_in_pixel_bytes_are_not_searched() -> None:
    ds = make_dataset()
    ds.PixelData = b"\x00" * 40 + b" DOE " + b"\x00" * 83  # 3 characters: chance in binary data
    run(io.BytesIO(to_bytes(ds)))


_MASK_RULE = deid.pixels.MaskRule("test rule", ((0, 0, 4, 4),))


def _fake_mask(ds: pydicom.Dataset, rule: deid.pixels.MaskRule) -> str:
    assert rule is _MASK_RULE and ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    ds.PixelData = b"\x00" * len(ds.PixelData)
    return ExplicitVRLittleEndian


def test_mask_decision_masks_on_the_full_path(make_file: Callable[..., Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deid.pixels, "decide", lambda ds, options: deid.pixels.PixelDecision(
        "mask", "test: masked by rule", _MASK_RULE))
    monkeypatch.setattr(deid.pixels, "mask", _fake_mask)
    src = make_file(BurnedInAnnotation="YES")
    out = io.BytesIO()
    report = deidentify_file(src, out, key=KEY)
    result = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert result.PixelData == b"\x00" * 128
    assert result.BurnedInAnnotation == "NO"
    codes = [item.CodeValue for item in result.DeidentificationMethodCodeSequence]
    assert "113101" in codes and "113101" in report.method_codes
    assert report.actions["pixels_masked"] == 1
    assert pydicom.dcmread(src).PixelData != result.PixelData  # input untouched


def test_no_clean_pixel_code_without_masking(phi_file: Path) -> None:
    report = deidentify_file(phi_file, io.BytesIO(), key=KEY)
    assert "113101" not in report.method_codes and "pixels_masked" not in report.actions


def test_mask_failure_rejects_the_file(make_file: Callable[..., Path],
                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(deid.pixels, "decide", lambda ds, options: deid.pixels.PixelDecision(
        "mask", "test", _MASK_RULE))

    def cannot(ds: pydicom.Dataset, rule: object) -> str:
        raise UnsupportedError("cannot decode pixel data for masking")

    monkeypatch.setattr(deid.pixels, "mask", cannot)
    dst = tmp_path / "o.dcm"
    with pytest.raises(UnsupportedError, match="cannot decode"):
        deidentify_file(make_file(), dst, key=KEY)
    assert not dst.exists()


_MEMORY_SCRIPT = r"""
import resource, struct, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from deid_factory import KEY, make_dataset, to_bytes
from deid import deidentify_file
src, dst, frames = sys.argv[2], sys.argv[3], int(sys.argv[4])
ds = make_dataset(Rows=512, Columns=512, NumberOfFrames=str(frames))
del ds.PixelData
head = to_bytes(ds)
frame_bytes = 512 * 512 * 2
rng = np.random.default_rng(1)
with open(src, "wb") as f:
    f.write(head + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * frame_bytes))
    for _ in range(frames):
        f.write(rng.integers(0, 4096, 512 * 512, dtype="<u2").tobytes())
def peak_kb():
    # VmHWM belongs to this process image. ru_maxrss on Linux carries the PARENT's peak
    # over fork+exec (a big pytest run would show up here), so it is only the fallback.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
before = peak_kb()
report = deidentify_file(src, dst, key=KEY)
after = peak_kb()
print(before, after, report.verified)
"""


def test_large_multiframe_file_keeps_memory_flat(tmp_path: Path) -> None:
    frames = 400  # 200 MiB of pixel data
    src, dst = tmp_path / "big.dcm", tmp_path / "big-out.dcm"
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(Path(__file__).parent), str(src), str(dst),
         str(frames)], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    before_kb, after_kb, verified = result.stdout.split()
    assert verified == "True"
    assert int(after_kb) < 300 * 1024, f"peak RSS {int(after_kb) // 1024} MB"
    assert int(after_kb) - int(before_kb) < 64 * 1024  # de-identifying added < 64 MB
    assert dst.stat().st_size > frames * 512 * 512 * 2
    with open(src, "rb") as a, open(dst, "rb") as b:
        a.seek(-1024 * 1024, 2)
        b.seek(-1024 * 1024, 2)
        assert a.read() == b.read()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    (src / "s").mkdir(parents=True)
    for i in range(6):
        (src / "s" / f"{i}.dcm").write_bytes(to_bytes(make_dataset(SOPInstanceUID=f"1.2.3.{i}")))
    (src / "s" / "us.dcm").write_bytes(to_bytes(make_dataset(Modality="US")))
    (src / "cut.dcm").write_bytes(to_bytes(make_dataset())[:-20])
    (src / "notes.txt").write_text("not dicom")
    return src


def test_cli_workers_give_the_same_statuses(tree: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "k"
    key_file.write_text("x" * 32)
    manifests = []
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        assert main([str(tree), str(out), "--key-file", str(key_file), "--workers", workers]) == 0
        lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        manifests.append({m["input"]: (m["status"], m["reason"]) for m in lines})
        assert len(lines) == 9
    assert manifests[0] == manifests[1]
    assert sorted(s for s, _ in manifests[0].values()).count("ok") == 6
    captured = capsys.readouterr()
    assert "files/s" in captured.err and "ETA" in captured.err and "\r" in captured.err
    assert "notes" not in captured.err and "cut" not in captured.err
    assert "files/s" in captured.out
