"""Depth-capped traversal helpers shared by the engine and the descriptor scrubber."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from deid.errors import MalformedDicomError

# Hostile files nest sequences thousands deep (RecursionError in pydicom, Orthanc crash).
MAX_DEPTH = 32


def raw_vr(ds: Dataset, tag: BaseTag) -> str:
    """VR without converting the value (implicit VR files carry none: use the dictionary)."""
    item = ds.get_item(tag, keep_deferred=True)
    vr = getattr(item, "VR", None)
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise MalformedDicomError(f"sequences nested deeper than {MAX_DEPTH} levels")


def iter_elements(ds: Dataset, want: Callable[[int, str], bool],
                  depth: int = 0) -> Iterator[DataElement]:
    """Yield standard (non-private) elements for which want(tag, vr) holds, at any depth."""
    check_depth(depth)
    for tag in list(ds.keys()):
        if tag.is_private:
            continue
        vr = raw_vr(ds, tag)
        if vr == "SQ":
            for item in ds[tag].value or []:
                yield from iter_elements(item, want, depth + 1)
        elif want(tag, vr):
            yield ds[tag]
