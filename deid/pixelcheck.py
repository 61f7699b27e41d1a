"""Does an image's pixel data hold the frames its header promises?

`check_pixel_data` is the gate before an image counts as ingested: a file whose pixels no
viewer can decode must not be published. First the structure, cheaply and in-process:
native data must be exactly rows x columns x samples x bits / 8 x frames bytes (plus one
pad byte); encapsulated data must be a well-formed run of items (offset table, fragments,
nothing after the delimiter) whose frame count matches NumberOfFrames. Then, when a
decoder for the transfer syntax is installed, every frame is decoded in a child process
under a per-frame time limit (pixels.py: decoders can loop forever on hostile input).

Errors are MalformedDicomError / UnsupportedError whose messages name the problem and
sizes, never values.
"""

from __future__ import annotations

import struct
from itertools import pairwise

from pydicom.dataset import Dataset
from pydicom.uid import UID

from deid import pixels
from deid.errors import MalformedDicomError, UnsupportedError

_ITEM = 0xE000FFFE  # (FFFE,E000) read as one little-endian uint32: group FFFE, element E000
_SEQUENCE_END = 0xE0DDFFFE


def _bad(why: str) -> MalformedDicomError:
    return MalformedDicomError(f"pixel data is damaged: {why}")


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def check_pixel_data(ds: Dataset, *, decode: bool = True, timeout: float | None = None) -> None:
    """Raise a DeidError naming the problem unless ``ds``'s pixel data is sound.

    Images without pixel data (reports, structured documents) pass. ``timeout`` is the
    longest one frame may take to decode (default pixels.DECODE_TIMEOUT_SECONDS). Without
    an installed decoder for the transfer syntax only the structure is checked."""
    if "PixelData" not in ds:
        return
    meta = getattr(ds, "file_meta", None)
    ts_raw = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts_raw:
        raise _bad("transfer syntax unknown")
    ts = UID(str(ts_raw).strip().rstrip("\x00"))
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    bits, samples = _int(ds, "BitsAllocated"), _int(ds, "SamplesPerPixel") or 1
    frames = _int(ds, "NumberOfFrames") or 1
    if not rows or not columns or rows <= 0 or columns <= 0:
        raise _bad("the image size (Rows, Columns) is missing")
    if bits not in (1, 8, 16, 32, 64) or samples not in (1, 3, 4) or frames <= 0:
        raise _bad(f"unsupported layout ({bits} bits allocated, {samples} samples, {frames} frames)")
    element = ds["PixelData"]
    value = element.value
    if not isinstance(value, (bytes, bytearray)):
        raise _bad("no pixel data value")
    if ts.is_encapsulated:
        _check_encapsulated(bytes(value), frames, ds)
    else:
        _check_native(len(value), rows, columns, samples, bits, frames, str(ds.get("PhotometricInterpretation", "")))
    if decode and ts.is_compressed:
        _decode_all(ds, ts, rows, columns, samples, frames, timeout)


def _check_native(length: int, rows: int, columns: int, samples: int, bits: int, frames: int,
                  photometric: str) -> None:
    expected_bits = rows * columns * samples * bits * frames
    if photometric.strip().upper() == "YBR_FULL_422":
        expected_bits = expected_bits * 2 // 3  # two chroma samples shared by each pixel pair
    expected = (expected_bits + 7) // 8
    if length not in (expected, expected + expected % 2):
        raise _bad(f"it holds {length} bytes but {rows} x {columns} pixels, {samples} sample(s), "
                   f"{bits} bits and {frames} frame(s) need {expected}")


def _check_encapsulated(data: bytes, frames: int, ds: Dataset) -> None:
    offsets: list[int] | None = None
    fragments = 0
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            raise _bad("an item header is cut short")
        tag, length = struct.unpack_from("<II", data, pos)
        if tag == _SEQUENCE_END:
            if pos + 8 != end:
                raise _bad("bytes follow the end of the fragments")
            break
        if tag != _ITEM:
            raise _bad("a fragment item has the wrong tag")
        if length == 0xFFFFFFFF or pos + 8 + length > end:
            raise _bad("a fragment runs past the end of the pixel data")
        if offsets is None:
            if length % 4:
                raise _bad("the basic offset table has a length that is not a multiple of 4")
            offsets = list(struct.unpack_from(f"<{length // 4}I", data, pos + 8))
        else:
            fragments += 1
            if length == 0:
                raise _bad("a fragment is empty")
        pos += 8 + length
    if offsets is None:
        raise _bad("the basic offset table is missing")
    if not fragments:
        raise _bad("there are no fragments")
    table = ds.get("ExtendedOffsetTable")
    if table is not None and len(table) // 8 != frames:
        raise _bad(f"the extended offset table lists {len(table) // 8} frames, the header {frames}")
    if offsets:
        if len(offsets) != frames:
            raise _bad(f"the offset table lists {len(offsets)} frames, the header {frames}")
        starts = set(_first_fragment_offsets(data))
        if offsets[0] != 0 or any(b <= a for a, b in pairwise(offsets)) or not set(offsets) <= starts:
            raise _bad("the offset table does not point at the fragments")
    elif fragments < frames:
        raise _bad(f"{fragments} fragment(s) cannot hold {frames} frames")


def _first_fragment_offsets(data: bytes) -> list[int]:
    """Offsets of each fragment item, measured from the first fragment (as in the table)."""
    _, bot_length = struct.unpack_from("<II", data, 0)
    first = pos = 8 + bot_length
    found = []
    while pos + 8 <= len(data):
        tag, length = struct.unpack_from("<II", data, pos)
        if tag != _ITEM:
            break
        found.append(pos - first)
        pos += 8 + length
    return found


def _decode_all(ds: Dataset, ts: UID, rows: int, columns: int, samples: int, frames: int,
                timeout: float | None) -> None:
    if pixels.DECODER == "deid.pixels:decode_frames":  # the real decoder: is one installed?
        from pydicom.pixels import get_decoder

        try:
            if not get_decoder(ts).is_available:
                return
        except NotImplementedError:
            return
    shape = (rows, columns) if samples == 1 else (rows, columns, samples)
    done = 0
    try:
        decoded = pixels._decode_in_child(ds, ts, frames, shape, timeout=timeout)
        try:
            for _ in decoded:
                done += 1
        finally:
            decoded.close()  # type: ignore[attr-defined]  # a generator: kills the child
    except UnsupportedError as exc:
        why = str(exc).removeprefix("cannot clean pixel data: ")
        raise UnsupportedError(why if why.startswith("pixel data") else f"pixel data could not be decoded: {why}") from None
    if done != frames:
        raise UnsupportedError("pixel data could not be decoded: not every frame could be decoded")
