"""Text hidden in compressed pixel data: JPEG / JPEG-LS / JPEG 2000 comment and
application segments are searched with every needle, not only the long ones."""

from __future__ import annotations

import io
import struct

import pydicom
import pytest
from deid_factory import KEY, make_dataset, to_bytes
from pydicom.encaps import encapsulate

from deid import PHIRemainsError, deidentify_file, fast
from deid import io as deid_io
from deid.profile import Options
from deid.verify_segments import SegmentReader
from deid.verify_stream import PixelScanner

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000 = "1.2.840.10008.1.2.4.90"


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def jpeg_frame(*segments: bytes, scan: bytes = b"\x12\x34" * 300) -> bytes:
    """A codestream's shape (not decodable: the engine never decodes these frames)."""
    sof = jpeg_segment(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00")
    sos = jpeg_segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    return b"\xff\xd8" + b"".join(segments) + sof + sos + scan + b"\xff\xd9"


def j2k_frame(comment: bytes) -> bytes:
    siz = struct.pack(">BBH", 0xFF, 0x51, 41) + bytes(39)
    com = struct.pack(">BBHH", 0xFF, 0x64, len(comment) + 4, 1) + comment
    sot = struct.pack(">BBHHIBB", 0xFF, 0x90, 10, 0, 200, 0, 1)
    return b"\xff\x4f" + siz + com + sot + b"\x5a" * 186 + b"\xff\xd9"


def compressed_file(frames: list[bytes], transfer_syntax: str = JPEG_BASELINE,
                    **values: object) -> bytes:
    ds = make_dataset(**values)
    ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    return to_bytes(ds, transfer_syntax)


PATHS = ["fast", "pydicom-streamed", "pydicom-in-memory"]


def take_path(path: str, patch: pytest.MonkeyPatch) -> None:
    """The fast path; pydicom with the pixel data streamed; pydicom with it in memory."""
    if path != "fast":
        patch.setattr(fast, "deidentify_raw", lambda *args, **kwargs: None)
    if path == "pydicom-in-memory":
        def no_stream(*args: object, **kwargs: object) -> None:
            raise deid_io._NoStream
        patch.setattr(deid_io, "_read_streaming", no_stream)


def outcome(data: bytes, *, path: str, monkeypatch: pytest.MonkeyPatch) -> str:
    with monkeypatch.context() as patch:
        take_path(path, patch)
        out = io.BytesIO()
        try:
            deidentify_file(io.BytesIO(data), out, key=KEY, options=Options())
        except PHIRemainsError as exc:
            return str(exc)
    return "ok"


# --- reading the segments ---------------------------------------------------------------

def segments_of(value: bytes, chunk: int) -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    reader = SegmentReader(lambda kind, payload: found.append((kind, payload)))
    for at in range(0, len(value), chunk):
        reader.feed(value[at:at + chunk])
    return found


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_segments_are_read_from_every_frame_in_chunks_of_any_size(chunk: int) -> None:
    value = encapsulate([
        jpeg_frame(jpeg_segment(0xE0, b"JFIF\x00\x01\x02"), jpeg_segment(0xFE, b"first frame")),
        jpeg_frame(jpeg_segment(0xE1, b"Exif\x00\x00owner"), jpeg_segment(0xFE, b"second")),
        j2k_frame(b"j2k words"),
    ], has_bot=True)
    assert segments_of(value, chunk) == [
        ("a JPEG APP0 segment", b"JFIF\x00\x01\x02"), ("a JPEG comment", b"first frame"),
        ("a JPEG APP1 segment", b"Exif\x00\x00owner"), ("a JPEG comment", b"second"),
        ("a JPEG 2000 comment", b"j2k words"),
    ]


def test_bytes_after_the_start_of_scan_and_later_fragments_are_not_segments() -> None:
    # One frame in two fragments: the second fragment starts mid-scan, and the scan
    # holds bytes that look like a comment marker.
    frame = jpeg_frame(scan=b"\x00" * 100 + jpeg_segment(0xFE, b"not a segment"))
    value = encapsulate([frame], fragments_per_frame=2)
    assert segments_of(value, 5) == []


# --- the verifier, on both paths --------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("frame, where", [
    # "DOE" (3 letters) and the MRN's digits are below the pixel scan's 8-byte minimum.
    (jpeg_frame(jpeg_segment(0xFE, b"pt Doe")), "a JPEG comment"),
    (jpeg_frame(jpeg_segment(0xFE, b"id 123456")), "a JPEG comment"),
    (jpeg_frame(jpeg_segment(0xE1, b"Exif\x00\x00Artist\x00Doe\x00")), "a JPEG APP1 segment"),
    (j2k_frame(b"Doe scan"), "a JPEG 2000 comment"),
], ids=["com-name", "com-number", "app1-name", "j2k-com-name"])
def test_a_name_or_id_in_a_frame_header_segment_is_caught(
        frame: bytes, where: str, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ts = JPEG_2000 if frame.startswith(b"\xff\x4f") else JPEG_BASELINE
    data = compressed_file([frame, frame], ts, PatientID="123456")
    message = outcome(data, path=path, monkeypatch=monkeypatch)
    assert message.endswith(f"remains in {where} in the pixel data"), message


@pytest.mark.parametrize("path", PATHS)
def test_harmless_comments_pass_and_are_copied_unchanged(
        path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [jpeg_frame(jpeg_segment(0xFE, b"Lavc58.54.100"),
                         jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01"))] * 2
    data = compressed_file(frames)
    with monkeypatch.context() as patch:
        take_path(path, patch)
        out = io.BytesIO()
        assert deidentify_file(io.BytesIO(data), out, key=KEY, options=Options()).verified
    written = pydicom.dcmread(io.BytesIO(out.getvalue()))
    assert written.PixelData == pydicom.dcmread(io.BytesIO(data)).PixelData


def test_native_pixel_data_is_not_read_as_items() -> None:
    # Uncompressed pixels that happen to start like an item and a JPEG codestream.
    ds = make_dataset()
    pixels = struct.pack("<HHI", 0xFFFE, 0xE000, 12) + jpeg_segment(0xD8, b"")[:2] + \
        jpeg_segment(0xFE, b"Doe") + bytes(100)
    scanner = PixelScanner(ds)  # native: no segment reading
    scanner.feed(pixels)
    with pytest.raises(PHIRemainsError, match="a JPEG comment"):
        PixelScanner(ds, encapsulated=True).feed(pixels)
