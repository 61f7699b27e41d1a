"""Deterministic, keyed UID remapping and patient pseudonyms."""

from __future__ import annotations

import hashlib
import hmac

# Domain separation: the same key feeds UIDs, pseudonyms and date shifts, and one output
# must never help guess another.
_UID_DOMAIN = b"deid/uid/v1\x00"
_PATIENT_DOMAIN = b"deid/patient/v1\x00"


def _mac(key: bytes, domain: bytes, value: str) -> bytes:
    return hmac.new(key, domain + value.encode("utf-8"), hashlib.sha256).digest()


def remap_uid(uid: str, key: bytes) -> str:
    """Map a UID to ``2.25.<uuid as integer>``: same (key, uid) -> same UID, always.

    The 128-bit value is shaped as an RFC 9562 version-8 UUID so that the 2.25 arc
    (UUID-derived UIDs, PS3.5 B.2) is used as intended; the result is at most 44 chars.
    """
    value = int.from_bytes(_mac(key, _UID_DOMAIN, uid.strip().rstrip("\x00"))[:16], "big")
    value &= ~(0xF << 76)
    value |= 0x8 << 76  # version 8
    value &= ~(0x3 << 62)
    value |= 0x2 << 62  # RFC variant
    return f"2.25.{value}"


def patient_pseudonym(seed: str, key: bytes) -> str:
    """Per provider key and patient: "P-" + 12 upper-case hex characters."""
    return "P-" + _mac(key, _PATIENT_DOMAIN, seed).hex()[:12].upper()
