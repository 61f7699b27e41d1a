"""Error classes. Every message is PHI-free: it names tags and reasons, never values."""

from __future__ import annotations


class DeidError(Exception):
    """Base class: the file could not be de-identified and no output was written."""


class NotDicomError(DeidError):
    """The input is not a DICOM Part 10 file (no preamble + DICM prefix)."""


class MalformedDicomError(DeidError):
    """The input claims to be DICOM but cannot be parsed safely (truncated, too deep, ...)."""


class UnsupportedError(DeidError):
    """Valid DICOM that this engine does not handle (unknown transfer syntax, ...)."""


class BurnedInAnnotationError(DeidError):
    """Pixel data may contain burned-in text and no masking rule applies."""


class PHIRemainsError(DeidError):
    """Verification found an identifying value from the input in the output."""
