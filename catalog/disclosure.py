"""The one disclosure rule: every count of studies or patients shown to a person passes here.

- No shown cell of 1..threshold-1 (DISCLOSURE_THRESHOLD, default 11; a dataset may raise it)
  to anyone not entitled to the rows. Entitled: superusers and staff allowed to view every
  dataset, and members of the provider of every dataset the answer counts. An answer that mixes entitled and other datasets is
  treated as an outsider's: an exact own part next to a shown total would give the rest.
- Complementary suppression: within one partition (the rows of a facet, a chart, the
  datasets of a cohort), a hidden cell never stands alone and the hidden cells together
  hold at least the threshold, so subtracting the shown cells from a shown (or known)
  total gives nothing smaller than the threshold and no single hidden cell.
- Hidden cells of any kind look the same (SUPPRESSED) and sort after the shown ones, so
  neither the label nor the position tells a small cell from one hidden to protect it.
- Quotes and orders below the threshold are refused (``require_disclosable``).

What this cannot stop (two answers about nested selections differenced by the asker) is
slowed by rate limits and recorded in the audit trail (marketplace/ratelimit.py); the
README states that residual risk.
"""
from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings

from catalog.exceptions import CatalogError
from marketplace.models import Membership, User

SUPPRESSED = "suppressed"
K = TypeVar("K", bound=Hashable)
Shown = int | str


class BelowThresholdError(CatalogError):
    code = "below_disclosure_threshold"


def base_threshold() -> int:
    return settings.DISCLOSURE_THRESHOLD


def effective_threshold(own: int | None) -> int:
    """A dataset's threshold: its own setting can only raise the marketplace's."""
    return max(base_threshold(), own or 0)


def entitled_provider_ids(user: User | None) -> set[int] | None:
    """Providers whose rows the user may count exactly; None: every provider (staff with
    the permission to view every dataset, superusers; not the bare is_staff flag)."""
    if user is None or not user.is_authenticated:
        return set()
    if user.has_perm("catalog.view_dataset"):  # catalog.datasets.selectors.ALL_DATASETS_PERMISSION
        return None
    cached = getattr(user, "_entitled_provider_ids", None)  # one query per request, not per card
    if cached is None:
        cached = frozenset(Membership.objects.filter(user=user).values_list("organization_id", flat=True))
        user._entitled_provider_ids = cached
    return set(cached)


@dataclass(frozen=True)
class Rule:
    """How one answer is shown to one person."""

    threshold: int
    exact: bool = False

    def hides(self, count: int) -> bool:
        return not self.exact and 0 < count < self.threshold

    def count(self, count: int) -> Shown:
        """A lone count (a total): hidden when small."""
        return SUPPRESSED if self.hides(count) else count

    def partition(self, counts: Mapping[K, int], *, within: Iterable[Iterable[K]] = (),
                  force: Iterable[K] = ()) -> dict[K, Shown]:
        """The cells of one breakdown, with complementary suppression: if any cell is
        hidden, more are hidden (smallest first) until at least two are and they hold the
        threshold together. When that is impossible every non-zero cell is hidden, and the
        total is then itself below the threshold (hidden by ``count``).

        ``within``: groups of cells whose sum is shown too (the values a facet is filtered
        by add up to the answer's total): the same holds inside each group.

        ``force``: cells to hide whatever their size (one another number on the page would
        give, such as a dataset's total minus a small remainder)."""
        if self.exact:
            return dict(counts)
        hidden = {key for key, n in counts.items() if self.hides(n)} | {k for k in force if counts.get(k)}
        groups = [set(counts), *({k for k in group if k in counts} for group in within)]
        changed = bool(hidden)
        while changed:  # a cell hidden for one group may leave another group one hidden cell
            changed = False
            for group in groups:
                if not hidden & group:
                    continue
                others = sorted((counts[k], str(k), k) for k in group if counts[k] and k not in hidden)
                while others and (len(hidden & group) < 2
                                  or sum(counts[k] for k in hidden & group) < self.threshold):
                    hidden.add(others.pop(0)[2])
                    changed = True
        return {key: SUPPRESSED if key in hidden else n for key, n in counts.items()}

    def describe(self, count: Shown, noun: str = "studies") -> str:
        """For messages and e-mails: "12 studies" or "a number of studies too small to show"."""
        if count == SUPPRESSED:
            return f"fewer than {self.threshold} {noun} (or a number withheld to protect a small one)"
        return f"{count:,} {noun}"


def is_shown(value: Any) -> bool:
    return value != SUPPRESSED


def rule_for(*, user: User | None, datasets: Iterable[tuple[int, int | None]],
             entitled: set[int] | None | bool = False) -> Rule:
    """The rule for an answer counting these datasets, given as (provider id, own
    threshold or None). ``entitled`` may pass ``entitled_provider_ids(user)`` already read."""
    pairs = list(datasets)
    providers = entitled_provider_ids(user) if entitled is False else entitled
    threshold = max([base_threshold(), *(own or 0 for _, own in pairs)])
    exact = providers is None or (bool(pairs) and all(p in providers for p, _ in pairs))
    return Rule(threshold=threshold, exact=exact)


def rule_for_dataset(*, user: User | None, dataset: Any) -> Rule:
    """The rule for an answer about one dataset (a Dataset or a search DatasetInfo)."""
    return rule_for(user=user, datasets=[(dataset.provider_id, dataset.disclosure_threshold)])


def require_disclosable(*, count: int, threshold: int, whole_dataset: bool, dataset_total: int) -> None:
    """Quotes and orders are never priced for fewer studies than the threshold (the price
    would give the count), nor for a selection leaving out fewer than the threshold of the
    dataset's studies (its total minus the selection would give them)."""
    left_out = dataset_total - count
    if 0 < left_out < threshold and not whole_dataset and count >= threshold:
        raise BelowThresholdError(
            f"This selection leaves out fewer than {threshold} of the dataset's studies; order the whole "
            f"dataset, or narrow the selection further.")
    if 0 < count < threshold:
        if whole_dataset or dataset_total < threshold:
            raise BelowThresholdError(
                f"This dataset has fewer than {threshold} studies that can be ordered; too few to sell "
                f"without putting its patients at risk of being identified.")
        raise BelowThresholdError(
            f"This selection has fewer than {threshold} studies; widen it or order the whole dataset.")


def shown_rows(rows: list[dict[str, Any]], *, key: str = "count") -> list[dict[str, Any]]:
    """Hidden rows after the shown ones (in label order): a hidden row's place in a list
    sorted by count would bound its value."""
    shown = [r for r in rows if is_shown(r[key])]
    hidden = sorted((r for r in rows if not is_shown(r[key])), key=lambda r: str(r.get("label", "")))
    return shown + hidden


def dataset_counts(*, dataset: Any, user: User | None) -> dict[str, Shown]:
    """A dataset's headline counts as shown to the user (cards, dataset page, API)."""
    rule = rule_for_dataset(user=user, dataset=dataset)
    return {"studies": rule.count(dataset.study_count), "patients": rule.count(dataset.patient_count),
            "series": rule.count(dataset.series_count), "images": rule.count(dataset.instance_count),
            "exact": rule.exact, "threshold": rule.threshold}
