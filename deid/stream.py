"""Write a de-identified file whose pixel data element is copied raw from the input.

The header (everything but the pixel data value) is built and verified in memory as on
the full path; the pixel data element (tag, VR, length and value, or the encapsulated
items) is then copied from the input in chunks, scanned for identifying values on the
way (verify_stream.py), never decoded and never held whole in memory. The output bytes
are the same as the full path would write for the same input.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import IO, BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID

from deid.errors import MalformedDicomError
from deid.io import PIXEL_TAGS, PixelSpan, atomic_output, write_dicom
from deid.verify import collect_needles, verify_output
from deid.verify_stream import PixelScanner

CHUNK = 1024 * 1024
_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)

Destination = str | os.PathLike[str] | BinaryIO | IO[bytes]


def split(out: Dataset, tag: int) -> tuple[Dataset, Dataset, bool]:
    """(elements before tag, elements after tag, whether tag itself is kept)."""
    head, tail = Dataset(), Dataset()
    for elem_tag, elem in out._dict.items():
        if elem_tag < tag:
            head._dict[elem_tag] = elem
        elif elem_tag > tag:
            tail._dict[elem_tag] = elem
    return head, tail, tag in out._dict


def _encode_tail(tail: Dataset, out: Dataset, transfer_syntax: UID) -> bytes:
    if not len(tail):
        return b""
    buffer = DicomBytesIO()
    buffer.is_little_endian = transfer_syntax.is_little_endian
    buffer.is_implicit_VR = transfer_syntax.is_implicit_VR
    # Dataset.get gives the value (a str or a list of them), not the element.
    charset = out.get("SpecificCharacterSet")
    write_dataset(buffer, tail, parent_encoding=charset or "iso8859")
    return buffer.getvalue()


def write_streamed(fp: BinaryIO, span: PixelSpan, original: Dataset, out: Dataset,
                   meta: FileMetaDataset, transfer_syntax: UID, dst: Destination) -> None:
    """Verify, then write header + raw pixel element + trailing elements to ``dst``."""
    head, tail, keep = split(out, span.tag)
    header = write_dicom(head, meta, transfer_syntax)
    trailer = _encode_tail(tail, out, transfer_syntax)
    # The verifier's full check on everything but the pixel data value...
    verify_output(original, header + trailer)
    scanner = PixelScanner(original, encapsulated=span.encapsulated) if keep else None
    write_parts(fp, span if keep else None, header, trailer, scanner, dst)


def write_parts(fp: BinaryIO, span: PixelSpan | None, header: bytes, trailer: bytes,
                scanner: PixelScanner | None, dst: Destination) -> None:
    """Write header + the pixel element copied from fp (scanned on the way) + trailer.
    ``header`` and ``trailer`` are verified already; ``span`` None: no pixel data."""
    if isinstance(dst, (str, os.PathLike)):
        # A failed pixel scan inside the block leaves nothing under the name.
        with atomic_output(dst) as target:
            target.write(header)
            if span is not None:
                _copy(fp, span, target, scanner)
            target.write(trailer)
        return
    # A file object cannot be taken back: scan first, then write.
    if span is not None and scanner is not None:
        _copy(fp, span, None, scanner)
    dst.write(header)
    if span is not None:
        _copy(fp, span, dst, None)
    dst.write(trailer)


def scan_pixels(original: Dataset, out: Dataset) -> None:
    """Full path: scan the in-memory pixel data values like the streamed ones."""
    if not any(tag in out._dict for tag in PIXEL_TAGS):
        return
    needles = collect_needles(original)
    for tag in sorted(PIXEL_TAGS):
        if tag in out._dict:
            element = out[tag]
            if isinstance(element.value, (bytes, bytearray)):
                PixelScanner(None, needles=needles,
                             encapsulated=element.is_undefined_length).feed(element.value)


_LOCAL = threading.local()


def _copy_buffer() -> memoryview:
    """One copy buffer per thread, reused from file to file: a fresh megabyte per file
    costs the kernel's zeroing of every page, which shows in the files per second."""
    buffer = getattr(_LOCAL, "buffer", None)
    if buffer is None:
        buffer = _LOCAL.buffer = memoryview(bytearray(CHUNK))
    return buffer


def _copy(fp: BinaryIO, span: PixelSpan, target: IO[bytes] | BinaryIO | None,
          scanner: PixelScanner | None) -> None:
    """Copy the element from the source; scan its value bytes (... and the item headers
    of encapsulated data, which are numbers and match nothing)."""
    fp.seek(span.start)
    header_len = span.value_start - span.start
    element_header = fp.read(header_len)
    if len(element_header) != header_len:
        raise MalformedDicomError("truncated file: pixel data changed while reading")
    if target is not None:
        target.write(element_header)
    remaining = span.end - span.value_start
    view = _copy_buffer()
    readinto = getattr(fp, "readinto", None)
    while remaining > 0:
        want = min(len(view), remaining)
        if readinto is not None:
            n = readinto(view[:want])
            chunk: bytes | memoryview = view[:n] if n else b""
        else:
            chunk = fp.read(want)
            n = len(chunk)
        if not n:
            raise MalformedDicomError("truncated file: pixel data changed while reading")
        if scanner is not None:
            scanner.feed(chunk)
        if target is not None:
            target.write(chunk)
        remaining -= n
    if span.encapsulated and target is not None:
        target.write(_DELIMITER)


def write_rewritten(fp: BinaryIO, span: PixelSpan | None, out: Dataset, meta: FileMetaDataset,
                    transfer_syntax: UID, dst: IO[bytes] | BinaryIO) -> None:
    """Write ``out`` to ``dst`` with the pixel data element copied raw from ``fp``, without
    the PHI check: for rewriting a file that is de-identified already (a buyer's
    fingerprinted copy changes UIDs and adds a private marker, nothing read from a patient).
    ``span`` None: ``out`` holds every value and is written whole."""
    if span is None:
        dst.write(write_dicom(out, meta, transfer_syntax))
        return
    head, tail, keep = split(out, span.tag)
    header = write_dicom(head, meta, transfer_syntax)
    trailer = _encode_tail(tail, out, transfer_syntax)
    write_parts(fp, span if keep else None, header, trailer, None, dst)
