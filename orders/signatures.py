"""Electronic signatures in the manner of 21 CFR Part 11.

A signature is made only after the signer typed their password, and the current code of
their authenticator app when the account has TOTP, in the same request: these are
checked here, never taken from an earlier login (a session's last login says nothing
about who sits at the keyboard now). Recovery codes do not sign.

Each signature stores the printed name, the meaning, the signed record's type and id,
the SHA-256 of the record's canonical JSON at signing time, the server time and the
address. `signature_verify` recomputes the hash: a record changed since no longer
matches. The table is append-only in the database (UPDATE and DELETE refused).

Refusals are audited ("signature.refused", with the reason, never the typed text) and
counted per account (SIGNATURE_FAILED_RATE): past the limit even the right credentials
are refused until the window ends.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from marketplace.models import User
from marketplace.ratelimit import RateLimitedError, rate_limit_hit, rate_limit_reached
from marketplace.services import audit_record
from orders.exceptions import OrderError
from orders.models import Contract, OrderLine, Signature

Meaning = Signature.Meaning
CONTRACT = "orders.contract"
ORDER_LINE = "orders.orderline"
FAILED_SCOPE = "signature_failed"


class SignatureRefusedError(OrderError):
    code = "signature_refused"
    status = 403


@dataclass(frozen=True)
class SignerProof:
    """What signer_check established for one request: who proved it and with which factors."""

    user: User
    factors: str


def contract_record(contract: Contract) -> dict[str, Any]:
    """The contract as it is signed: its order, each line's dataset, study count and
    amount, the currency and total, the agreement's version and its text's SHA-256.
    Decisions, payment and delivery states are not part of it (they change after signing)."""
    order = contract.order
    lines = sorted(order.lines.values("dataset_id", "study_count", "amount_minor"), key=lambda r: r["dataset_id"])
    return {
        "record_type": CONTRACT,
        "contract_id": contract.pk,
        "order_id": order.pk,
        "buyer_id": order.buyer_id,
        "lines": [{"dataset_id": r["dataset_id"], "study_count": r["study_count"],
                   "amount_minor": r["amount_minor"]} for r in lines],
        "currency": order.currency,
        "total_minor": order.total_minor,
        "agreement_version": contract.template_version,
        "agreement_sha256": hashlib.sha256(contract.text.encode("utf-8")).hexdigest(),
    }


def order_line_record(line: OrderLine) -> dict[str, Any]:
    """An order line as a provider consents to it (orders/consent.py): who orders (buyer and
    organization), what for (the intended use's category and its text's SHA-256), which
    dataset, how many studies, for how much and under which licence. The consent decision
    itself is not part of it."""
    order = line.order
    return {
        "record_type": ORDER_LINE,
        "line_id": line.pk,
        "order_id": order.pk,
        "buyer_id": order.buyer_id,
        "buyer_organization_id": order.buyer_organization_id,
        "use_category": order.use_category,
        "intended_use_sha256": hashlib.sha256(order.intended_use.encode("utf-8")).hexdigest(),
        "dataset_id": line.dataset_id,
        "provider_id": line.provider_id,
        "study_count": line.study_count,
        "amount_minor": line.amount_minor,
        "currency": line.currency,
        "licence_type": line.licence_type,
        "licence_sha256": hashlib.sha256(line.licence_text.encode("utf-8")).hexdigest(),
    }


RECORDS = {CONTRACT: contract_record, ORDER_LINE: order_line_record}


def record_type_of(record: models.Model) -> str:
    label = record._meta.label_lower
    if label not in RECORDS:
        raise OrderError(f"Records of type {label} are not signed.", code="not_signable")
    return label


def record_canonical(record: models.Model) -> bytes:
    """The record's canonical JSON: sorted keys, no spaces, UTF-8."""
    data = RECORDS[record_type_of(record)](record)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_sha256(record: models.Model) -> str:
    return hashlib.sha256(record_canonical(record)).hexdigest()


def printed_name(user: User) -> str:
    return user.get_full_name().strip() or user.get_username()


def _totp_authenticator(user: User):  # noqa: ANN202
    from allauth.mfa.models import Authenticator

    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).first()


def signing_needs_totp(user: User) -> bool:
    """The account has an authenticator app: signing asks its current code too."""
    return user.is_authenticated and _totp_authenticator(user) is not None


def _refuse(*, user: User, reason: str, meaning: str, record_type: str, record_id: str, ip: str | None) -> None:
    audit_record(actor=user, action="signature.refused", ip=ip,
                 detail={"reason": reason, "meaning": meaning, "record_type": record_type, "record_id": record_id})


def signer_check(*, user: User, password: str | None, totp_code: str | None, meaning: str, record_type: str,
                 record_id: str = "", ip: str | None = None) -> SignerProof:
    """Check the signer's password (and TOTP code when the account has TOTP) typed in this
    request. A refusal is audited and counted before SignatureRefusedError is raised, so
    call this outside the transaction that would record the signature."""
    key = f"user:{user.pk}"
    record_id = str(record_id or "")
    try:
        rate_limit_reached(scope=FAILED_SCOPE, key=key, rate=settings.SIGNATURE_FAILED_RATE,
                           what="failed signatures")
    except RateLimitedError:
        _refuse(user=user, reason="rate_limited", meaning=meaning, record_type=record_type, record_id=record_id,
                ip=ip)
        raise
    reason, message = "", ""
    authenticator = _totp_authenticator(user)
    code = "".join((totp_code or "").split())
    if not user.is_active or not password or not user.check_password(password):
        reason, message = "password", "The password is not correct: nothing was signed."
    elif authenticator is not None and not code:
        reason, message = "totp_missing", "Type the current code of your authenticator app to sign."
    elif authenticator is not None and not authenticator.wrap().validate_code(code):
        reason, message = "totp", "The authenticator code is not correct or was already used: nothing was signed."
    if reason:
        _refuse(user=user, reason=reason, meaning=meaning, record_type=record_type, record_id=record_id, ip=ip)
        try:
            rate_limit_hit(scope=FAILED_SCOPE, key=key, rate=settings.SIGNATURE_FAILED_RATE,
                           what="failed signatures")
        except RateLimitedError:
            pass  # this attempt is refused anyway; the next one meets rate_limit_reached
        raise SignatureRefusedError(message)
    if authenticator is not None:
        authenticator.record_usage()
    return SignerProof(user=user, factors="password+totp" if authenticator is not None else "password")


@transaction.atomic
def signature_create(*, proof: SignerProof, meaning: str, record: models.Model, ip: str | None = None) -> Signature:
    """Record the signature of ``record`` by the signer signer_check just proved."""
    if meaning not in Meaning.values:
        raise OrderError(f"Unknown signature meaning {meaning!r}.", code="signature_meaning")
    signature = Signature.objects.create(
        signer=proof.user, printed_name=printed_name(proof.user)[:300], meaning=meaning,
        record_type=record_type_of(record), record_id=str(record.pk), record_sha256=record_sha256(record),
        factors=proof.factors, signed_at=timezone.now(), ip=ip or None,
    )
    audit_record(actor=proof.user, action="signature.sign", obj=signature, ip=ip, detail={
        "meaning": meaning, "record_type": signature.record_type, "record_id": signature.record_id,
        "record_sha256": signature.record_sha256, "factors": proof.factors,
    })
    return signature


def signature_sign(*, user: User, password: str | None, totp_code: str | None, meaning: str, record: models.Model,
                   ip: str | None = None) -> Signature:
    """Sign ``record`` with ``meaning`` as ``user``, who typed ``password`` (and
    ``totp_code`` when the account has TOTP) in this request. SignatureRefusedError
    (code "signature_refused") otherwise, audited."""
    proof = signer_check(user=user, password=password, totp_code=totp_code, meaning=meaning,
                         record_type=record_type_of(record), record_id=str(record.pk), ip=ip)
    return signature_create(proof=proof, meaning=meaning, record=record, ip=ip)


def signature_verify(signature: Signature, record: models.Model) -> bool:
    """The signature is of this record and the record still hashes to what was signed."""
    if signature.record_type != record._meta.label_lower or signature.record_id != str(record.pk):
        return False
    return hmac.compare_digest(signature.record_sha256, record_sha256(record))


def signatures_for(record: models.Model):  # noqa: ANN201
    return Signature.objects.filter(record_type=record._meta.label_lower, record_id=str(record.pk)).select_related(
        "signer")


def signature_manifest(record: models.Model) -> list[dict[str, Any]]:
    """Each signature of the record with whether the record still matches what was signed."""
    current = record_sha256(record)
    return [{"signature": s, "matches": hmac.compare_digest(s.record_sha256, current)}
            for s in signatures_for(record)]
