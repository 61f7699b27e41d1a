"""Streaming leak check for pixel data bytes that are copied without being parsed.

The engine streams pixel data values straight from the input to the output, so the
verifier (verify.py) sees the output header only. This module scans the streamed value
bytes, chunk by chunk with an overlap, for the identifying values of the input, reusing
verify.py's own value collection (``collect_needles``): the same needles, the same
patterns. Only needles whose shortest match is at least MIN_PIXEL_MATCH bytes long are
searched: pixel data is binary, and a short pattern matches random bytes by chance.
Messages name the source tag, never a value.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pydicom.dataset import Dataset

from deid.errors import PHIRemainsError
from deid.verify import SEPARATOR_BYTES, SEPARATOR_PATTERN, Needle, collect_needles, scan_bytes
from deid.verify_segments import SegmentReader

try:  # Python 3.11+
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_parse as _sre_parse  # type: ignore[no-redef]

MIN_PIXEL_MATCH = 8
_MAX_OVERLAP = 64 * 1024
_LITERAL = _sre_parse.LITERAL
_ALL = frozenset(range(256))
_C = _sre_parse  # opcodes and categories are re-exported by the parser module
_CATEGORIES: dict[object, frozenset[int]] = {
    _C.CATEGORY_DIGIT: frozenset(b"0123456789"),
    _C.CATEGORY_SPACE: frozenset(b" \t\n\r\f\v"),
    _C.CATEGORY_WORD: frozenset(b"0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
}
_CATEGORIES[_C.CATEGORY_NOT_DIGIT] = _ALL - _CATEGORIES[_C.CATEGORY_DIGIT]
_CATEGORIES[_C.CATEGORY_NOT_SPACE] = _ALL - _CATEGORIES[_C.CATEGORY_SPACE]
_CATEGORIES[_C.CATEGORY_NOT_WORD] = _ALL - _CATEGORIES[_C.CATEGORY_WORD]


def _alphabet(parsed: object) -> frozenset[int]:
    """Every byte a match of this (bytes) pattern can contain; lookarounds excluded.
    Anything not understood counts as every byte (no prefiltering: never unsound)."""
    found: set[int] = set()
    for op, av in list(parsed):  # type: ignore[call-overload]
        if op is _C.LITERAL:
            found.add(av)
        elif op is _C.IN:
            members: set[int] = set()
            negate = False
            for item_op, item in av:
                if item_op is _C.NEGATE:
                    negate = True
                elif item_op is _C.LITERAL:
                    members.add(item)
                elif item_op is _C.RANGE:
                    members.update(range(item[0], item[1] + 1))
                elif item_op is _C.CATEGORY and item in _CATEGORIES:
                    members |= _CATEGORIES[item]
                else:
                    return _ALL
            found |= (_ALL - members) if negate else members
        elif op in (_C.MAX_REPEAT, _C.MIN_REPEAT, getattr(_C, "POSSESSIVE_REPEAT", None)):
            found |= _alphabet(av[2])
        elif op is _C.SUBPATTERN:
            found |= _alphabet(av[-1])
        elif op is getattr(_C, "ATOMIC_GROUP", None):
            found |= _alphabet(av)
        elif op is _C.BRANCH:
            for branch in av[1]:
                found |= _alphabet(branch)
        elif op in (_C.ASSERT, _C.ASSERT_NOT, _C.AT):
            continue  # zero width
        else:
            return _ALL
    return frozenset(found)


def _folded(alphabet: frozenset[int]) -> frozenset[int]:
    extra = {b ^ 0x20 for b in alphabet if 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A}
    return alphabet | extra


@dataclass(frozen=True)
class _PixelNeedle:
    source: int
    regex: bytes  # compiled on first use (IGNORECASE when fold)
    # A literal every match contains (lower-cased when the pattern ignores case): a
    # cheap bytes.find() prefilter before the regular expression runs.
    anchor: bytes | None
    fold: bool
    width: int
    low: int
    alphabet: frozenset[int]  # bytes a match can consist of
    # Phone numbers and ids without an anchor: the lower-case letters and digits every
    # match holds once separators are deleted (verify.Needle.compact).
    compact: bytes | None = None

    @property
    def pattern(self) -> re.Pattern[bytes]:
        return _compiled_bytes(self.regex, self.fold)


@lru_cache(maxsize=4096)
def _compiled_bytes(regex: bytes, fold: bool) -> re.Pattern[bytes]:
    return re.compile(regex, re.IGNORECASE if fold else 0)


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _anchor(parsed: object) -> str:
    """Longest run of literal characters at the top level of a parsed pattern."""
    best, run = "", []
    for op, av in list(parsed):  # type: ignore[call-overload]
        if op is _LITERAL:
            run.append(chr(av))
            continue
        if len(run) > len(best):
            best = "".join(run)
        run = []
    if len(run) > len(best):
        best = "".join(run)
    return best


_PIXEL_SEPARATORS = r"[ ().\-/]*"


@lru_cache(maxsize=4096)
def _compile(text_pattern: str, flags: int, source: int, min_len: int,
             compact: str | None = None) -> _PixelNeedle | None:
    """Byte-level needle for one of verify.py's patterns, or None when it is too short."""
    try:
        parsed = _sre_parse.parse(text_pattern, flags)
        low, high = parsed.getwidth()
    except Exception:  # noqa: BLE001 - unknown shape: search it, never skip it
        parsed, low, high = None, min_len, _MAX_OVERLAP
    if low < min_len:
        return None
    fold = bool(flags & re.IGNORECASE)
    # Same reading as verify.py: the pattern's UTF-8 bytes against the raw bytes.
    pattern = re.compile(text_pattern.encode("utf-8"), flags & ~re.UNICODE)
    anchor_text = _anchor(parsed) if parsed is not None else ""
    anchor: bytes | None = anchor_text.encode("utf-8") if len(anchor_text) >= 4 else None
    if anchor is not None and fold:
        anchor = anchor.lower() if anchor.isascii() else None
    try:
        alphabet = _alphabet(_sre_parse.parse(pattern.pattern, pattern.flags))
    except Exception:  # noqa: BLE001
        alphabet = _ALL
    if fold:
        alphabet = _folded(alphabet)
    return _PixelNeedle(source, pattern.pattern, anchor, fold, min(int(high), _MAX_OVERLAP),
                        int(low), alphabet, compact.encode("ascii") if compact else None)


@lru_cache(maxsize=4096)  # most UIDs recur in every file of a series
def _plain(needle: Needle, min_len: int) -> _PixelNeedle | None:
    """A UID needle: its own text is the anchor and the alphabet, no regex to parse."""
    text = needle.plain or ""
    if len(text) < min_len:
        return None
    raw = text.encode("utf-8")
    return _PixelNeedle(needle.source, needle.regex.encode("utf-8"), raw, False, len(raw),
                        len(raw), frozenset(raw))


def pixel_needles(original: Dataset | None, min_len: int = MIN_PIXEL_MATCH,
                  needles: list[Needle] | None = None) -> list[_PixelNeedle]:
    """verify.py's needles for ``original`` that are long enough to search binary data."""
    seen: set[tuple[bytes, int]] = set()
    out: list[_PixelNeedle] = []
    if needles is None:
        if original is None:
            raise ValueError("pixel_needles needs the input data set or its needles")
        needles = collect_needles(original)
    for needle in needles:
        if needle.plain is not None:
            compiled = _plain(needle, min_len)
        else:
            regex = needle.regex
            if needle.compact is not None:
                # Ids and phone numbers with separators: printable ones only in binary
                # data. The control whitespace text allows (\t..\r, 0x09-0x0D) is also
                # the high byte of most 12-bit pixel values, and would make every image
                # chunk pass the quick tests below.
                regex = regex.replace(SEPARATOR_PATTERN, _PIXEL_SEPARATORS)
            compiled = _compile(regex, re.IGNORECASE, needle.source, min_len, needle.compact)
        if compiled is None or (compiled.regex, compiled.fold) in seen:
            continue
        seen.add((compiled.regex, compiled.fold))
        out.append(compiled)
    return out


class PixelScanner:
    """feed() the streamed bytes in order; raises PHIRemainsError on a match.

    A match of a needle holds a run of bytes from a small set: its literal anchor (4+
    letters or digits) or, without one, its alphabet (at least MIN_PIXEL_MATCH bytes).
    Cheap tests tell whether a chunk can hold such a run at all, before any needle is
    searched: in 16-bit images every other byte is a high byte, mostly outside the set,
    so the smallest and largest word often rule it out at once (numpy min/max); else a
    run of 2k bytes needs k neighbouring words whose high bytes all fall in the set's
    ranges (a few vector passes); else one translate() + find() looks for the run. Only
    then does each needle's literal anchor (bytes.find) decide whether its pattern runs.
    """

    def __init__(self, original: Dataset | None, min_len: int = MIN_PIXEL_MATCH, *,
                 needles: list[Needle] | None = None, encapsulated: bool = False) -> None:
        if needles is None:
            if original is None:
                raise ValueError("PixelScanner needs the input data set or its needles")
            needles = collect_needles(original)
        self.needles = pixel_needles(None, min_len, needles)
        # Compressed frames open with marker segments that are text: every needle there.
        self._all_needles = needles
        self._segments = SegmentReader(self._segment_found) if encapsulated else None
        # Lookarounds read one byte either side of a match.
        self.overlap = max((n.width for n in self.needles), default=0) + 2
        self._fold = any(n.fold for n in self.needles)
        plan = _prefilter_plan(*_required_run(self.needles))
        self._table, self._run, self._prefilter, self._ranges, self._byte_in = plan
        self._words = len(self._run) // 2
        self._carry = b""
        self.scanned = 0

    def reset(self) -> None:
        """Start a new, unrelated byte stream."""
        self._carry = b""
        if self._segments is not None:
            self._segments = SegmentReader(self._segment_found)

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._segments is not None:
            self._segments.feed(chunk)
        if not self.needles:
            return
        self.scanned += len(chunk)
        # Matches across the previous chunk's end, then those inside this chunk.
        if self._carry:
            self._scan(self._carry + bytes(chunk[:self.overlap]))
        self._scan(chunk)
        tail = bytes(chunk[-self.overlap:])
        self._carry = (self._carry + tail)[-self.overlap:] if len(tail) < self.overlap else tail

    def _scan(self, data: bytes | bytearray | memoryview) -> None:
        if self._prefilter and not self._may_hold_run(data):
            return  # no run of alphabet bytes long enough: nothing can match here
        data = bytes(data)
        folded = data.lower() if self._fold else data
        squeezed = None
        for needle in self.needles:
            if needle.anchor is not None:
                if (folded if needle.fold else data).find(needle.anchor) < 0:
                    continue
            elif needle.compact is not None:
                # Without separators the characters stand together (a regex with none
                # of them literal would otherwise try every position of the chunk).
                if squeezed is None:
                    squeezed = data.lower().translate(None, SEPARATOR_BYTES)
                if needle.compact not in squeezed:
                    continue
            if needle.pattern.search(data):
                raise PHIRemainsError(
                    "verification failed: identifying value from "
                    f"{_tag(needle.source)} remains in pixel data bytes"
                )

    def _segment_found(self, kind: str, payload: bytes) -> None:
        # Comments are text: short numbers count there. APPn segments are binary
        # containers (EXIF, ICC) where a short digit run can occur by chance.
        scan_bytes(self._all_needles, payload, f"{kind} in the pixel data",
                   numbers=kind.endswith("comment"))

    def _may_hold_run(self, data: bytes | bytearray | memoryview) -> bool:
        if self._ranges is not None and len(data) >= 4096:
            # Any run of 2k bytes covers the second bytes of k neighbouring 2-byte words.
            words = np.frombuffer(data, dtype="<u2", count=len(data) // 2)
            # High bytes grow with the word: all of them lie between those of the
            # smallest and the largest word (most CT: 0x00..0x0F, below any letter).
            lowest, highest = int(words.min()) >> 8, int(words.max()) >> 8
            if not any(low <= highest and lowest < low + width for low, width in self._ranges):
                return False
            # In place in per-thread scratch arrays: fresh temporaries of a chunk's size
            # would cost page faults on every chunk.
            count, k = len(words), self._words
            shifted, flags, inside, together = _scratch(count)
            inside[:] = False
            for low, width in self._ranges:
                # The high byte in [low, low + width): one wrapping subtraction.
                np.subtract(words, np.uint16(low << 8), out=shifted)
                np.less(shifted, np.uint16(width << 8), out=flags)
                np.logical_or(inside, flags, out=inside)
            together = together[: count - k + 1]
            np.copyto(together, inside[: count - k + 1])
            for shift in range(1, k):
                np.logical_and(together, inside[shift: count - k + 1 + shift], out=together)
            starts = np.flatnonzero(together)
            if len(starts) == 0:
                return False
            if len(starts) <= len(words) // 64:  # few places to look at closely
                return self._full_words_at(words, starts)
        return bytes(data).translate(self._table).find(self._run) >= 0

    def _full_words_at(self, words: np.ndarray, starts: np.ndarray) -> bool:
        """Whether a window of k words at one of ``starts`` holds the k - 1 (k when the
        run is odd) neighbouring words with both bytes in the set that every run needs."""
        k = self._words
        need = (len(self._run) - 1) // 2
        if need < 1:
            return True
        # Clipped at the end: a repeated last word can only add a false alarm.
        window = words[np.minimum(starts[:, None] + np.arange(k), len(words) - 1)]
        full = self._byte_in[window & 0xFF] & self._byte_in[window >> 8]
        run = full[:, : k - need + 1].copy()
        for shift in range(1, need):
            run &= full[:, shift: k - need + 1 + shift]
        return bool(run.any())


_LOCAL = threading.local()


def _scratch(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint16 and three bool arrays of ``count`` items, reused by this thread."""
    arrays = getattr(_LOCAL, "arrays", None)
    if arrays is None or len(arrays[0]) < count:
        size = max(count, 512 * 1024)
        arrays = _LOCAL.arrays = (np.empty(size, np.uint16), np.empty(size, bool),
                                  np.empty(size, bool), np.empty(size, bool))
    return tuple(a[:count] for a in arrays)  # type: ignore[return-value]


def _required_run(needles: list[_PixelNeedle]) -> tuple[frozenset[int], int]:
    """The bytes any match must have a run of, and the run's shortest length."""
    if not needles:
        return frozenset(), 1
    runs = [_needle_run(needle) for needle in needles]
    return frozenset().union(*(run for run, _ in runs)), max(1, min(n for _, n in runs))


@lru_cache(maxsize=4096)
def _needle_run(needle: _PixelNeedle) -> tuple[frozenset[int], int]:
    """A needle with a literal anchor cannot match without it (either case when the
    needle ignores case), so its anchor's bytes count, not the separators and spaces its
    pattern allows around them; a needle without one counts its whole alphabet."""
    if needle.anchor is None:
        return needle.alphabet, needle.low
    anchor = frozenset(needle.anchor)
    return (_folded(anchor) if needle.fold else anchor), len(needle.anchor)


@lru_cache(maxsize=256)
def _prefilter_plan(alphabet: frozenset[int], shortest: int) -> tuple[
        bytes, bytes, bool, list[tuple[int, int]] | None, np.ndarray]:
    """(translate table, run to find, whether to prefilter at all, high-byte ranges,
    byte membership as a numpy lookup); the files of a series share one."""
    table = bytes(1 if b in alphabet else 0 for b in range(256))
    byte_in = np.frombuffer(table, dtype=np.uint8).astype(bool)
    byte_in.flags.writeable = False
    ranges = _ranges(alphabet) if shortest >= 4 else None
    return table, b"\x01" * shortest, len(alphabet) < 256, ranges, byte_in


def _ranges(alphabet: frozenset[int], gap: int = 16, most: int = 4) -> list[tuple[int, int]] | None:
    """The alphabet as at most ``most`` (start, width) byte ranges, small gaps filled in
    (a wider range only makes the test more cautious); None when it spreads too far."""
    if not alphabet:
        return []
    ranges: list[list[int]] = []
    for byte in sorted(alphabet):
        if ranges and byte - ranges[-1][1] <= gap:
            ranges[-1][1] = byte
        else:
            ranges.append([byte, byte])
    if len(ranges) > most or any(high - low >= 255 for low, high in ranges):
        return None
    return [(low, high - low + 1) for low, high in ranges]
