"""Count queries (cohort builder, /api/studies/, /api/cohorts/): each is admitted against
the asker's budget and recorded in the audit trail, because two answers about nested
selections can be differenced (the residual risk the disclosure rule cannot remove)."""
from __future__ import annotations

from typing import Any

from django.conf import settings

from catalog.search.query import Query
from marketplace.models import User
from marketplace.ratelimit import rate_limit_hit, requester_key
from marketplace.services import audit_record


def count_query_admit(*, user: User | None, ip: str | None, query: Query, where: str) -> None:
    """Raises RateLimitedError past COUNT_QUERY_RATE; otherwise audits the query."""
    rate_limit_hit(scope="count", key=requester_key(user=user, ip=ip), rate=settings.COUNT_QUERY_RATE,
                   what="count queries")
    audit_record(actor=user, action="count.query", ip=ip, detail={"where": where, "criteria": query.as_params()})


def study_browse_record(*, user: User | None, ip: str | None, rows: list[dict[str, Any]], page: int,
                        where: str) -> None:
    """Audit which study rows a person was shown (ids only: pseudonymised rows, no PHI)."""
    if rows:
        audit_record(actor=user, action="study.browse", ip=ip,
                     detail={"where": where, "page": page, "study_ids": [row["id"] for row in rows]})
