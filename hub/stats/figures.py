"""The exchange figures of docs/domain.md, computed from a CountTable over a date range (pure).

Every figure is a sum of counters (``hub.stats.counts.CountKey``: day, action, from_tier, to_tier, direction,
resource, decision, reason) selected by a predicate stated next to it, so ``/v1/stats``, ``hub stats`` and
``hub top`` all say what they count. The ``deliver`` and ``deny`` counters are the allowed and refused
entries of publish audits' ``deliveries`` (``hub.stats.counts.count_keys``), as one record per delivery
counted before. The catalogue sizes come from the control state (``catalogue_by_tier``),
not from counters: they are the catalogue as it is now, whatever the date range.

Days are statistics days in China Standard Time (``hub.stats.counts.day_of``); a range is inclusive.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from hub.stats.counts import CountKey, CountTable

# positions in a CountKey
DAY, ACTION, FROM_TIER, TO_TIER, DIRECTION, RESOURCE, DECISION, REASON = range(8)


@dataclass(frozen=True)
class Figure:
    """One line of the figures table in docs/domain.md and how the hub computes it."""

    id: str
    label: str
    reported: str  # what Shanghai reported (docs/domain.md), for context
    definition: str  # what the hub counts, in words
    match: Callable[[CountKey], bool] | None = None  # counters summed; None: a catalogue size
    tier: str | None = None  # catalogue sizes: the tier counted


def _calls(k: CountKey) -> bool:
    return k[ACTION] == "call" and k[DECISION] == "allow"


FIGURES: tuple[Figure, ...] = (
    Figure("calls_lateral_municipal", "cross-department sharing calls", "> 10.2 billion calls",
           "call audits allowed (decision allow) from a municipal node to a municipal provider",
           lambda k: _calls(k) and k[FROM_TIER] == "municipal" and k[TO_TIER] == "municipal"),
    Figure("records_down", "records delivered down the tiers", "> 49.2 billion records",
           "deliveries allowed (publish audits' deliveries, decision allow) with direction down",
           lambda k: k[ACTION] == "deliver" and k[DIRECTION] == "down"),
    Figure("records_regional", "records shared with the Yangtze River Delta region", "> 200 million",
           "deliveries allowed (publish audits' deliveries, decision allow) with direction regional",
           lambda k: k[ACTION] == "deliver" and k[DIRECTION] == "regional"),
    Figure("calls_to_national", "calls to national data", "> 3.3 billion calls",
           "call audits allowed (decision allow) to a national provider (to_tier national)",
           lambda k: _calls(k) and k[TO_TIER] == "national"),
    Figure("records_up", "records reported up to national", "> 300 million",
           "deliveries allowed (publish audits' deliveries, decision allow) with direction up",
           lambda k: k[ACTION] == "deliver" and k[DIRECTION] == "up"),
    Figure("locality_returns", "records returned to the 16 districts by locality", "260 million",
           "deliveries allowed with direction down and reason locality-return",
           lambda k: k[ACTION] == "deliver" and k[DIRECTION] == "down" and k[REASON] == "locality-return"),
    Figure("catalogue_municipal", "resource catalogue entries, municipal departments", "7,896",
           "current (not retired) catalogue entries of tier municipal, now", tier="municipal"),
    Figure("catalogue_district", "resource catalogue entries, districts", "9,424",
           "current (not retired) catalogue entries of tier district, now", tier="district"),
)

FIGURE_IDS = tuple(f.id for f in FIGURES)


def parse_day(value: str | date | None) -> str | None:
    """An inclusive range bound as the ISO day string CountKeys carry (None: unbounded)."""
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value.isoformat()
    return date.fromisoformat(value).isoformat()  # ValueError for anything but YYYY-MM-DD


def in_range(table: CountTable, first: str | date | None = None, last: str | date | None = None) -> CountTable:
    """The counters whose day lies in [first, last] (either bound may be open)."""
    lo, hi = parse_day(first), parse_day(last)
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"the range starts ({lo}) after it ends ({hi})")
    if lo is None and hi is None:
        return table
    return CountTable({k: n for k, n in table.counts.items()
                       if (lo is None or k[DAY] >= lo) and (hi is None or k[DAY] <= hi)})


def figure_values(table: CountTable, catalogue_by_tier: Mapping[str, int] | None = None) -> dict[str, int | None]:
    """Each figure's value over the whole table (already restricted to a range); catalogue sizes may be None."""
    values: dict[str, int | None] = {}
    items = [(k, n) for k, n in table.counts.items() if n]
    for figure in FIGURES:
        if figure.match is None:
            values[figure.id] = None if catalogue_by_tier is None else int(catalogue_by_tier.get(figure.tier or "", 0))
        else:
            values[figure.id] = sum(n for k, n in items if figure.match(k))
    return values


def breakdowns(table: CountTable) -> dict[str, Any]:
    """Totals of the same counters by action, direction, tier pair, resource, decision/reason and day."""
    by_action: Counter[str] = Counter()
    by_direction: Counter[str] = Counter()
    by_tier_pair: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    by_day: Counter[str] = Counter()
    by_resource: dict[str, Counter[str]] = {}
    for k, n in table.counts.items():
        if not n:
            continue
        action = k[ACTION]
        by_action[action] += n
        by_day[k[DAY]] += n
        by_reason[f"{action}/{k[DECISION]}/{k[REASON]}"] += n
        if action == "deliver":
            by_direction[k[DIRECTION] or "-"] += n
        if action in ("deliver", "call"):
            by_tier_pair[f"{action}:{k[FROM_TIER] or '-'}>{k[TO_TIER] or '-'}"] += n
        by_resource.setdefault(k[RESOURCE] or "-", Counter())[action] += n
    return {
        "total": sum(by_action.values()),
        "by_action": dict(sorted(by_action.items())),
        "by_direction": dict(sorted(by_direction.items())),
        "by_tier_pair": dict(sorted(by_tier_pair.items())),
        "by_reason": dict(sorted(by_reason.items())),
        "by_resource": {r: dict(sorted(c.items())) for r, c in sorted(by_resource.items())},
        "by_day": dict(sorted(by_day.items())),
    }


def quality_scores(table: CountTable) -> dict[str, Any]:
    """Per resource and day: records accepted (``publish`` counters) and quarantined (``quarantine`` counters of
    records naming the resource: failed quality rules, or a record that did not decode), and the quality score,
    the share accepted. From the same counters as everything else (one audit record per ingress record), so
    ``hub audit reconcile`` covers it; ``rules`` counts quarantines by the first failed rule (the audit reason).
    """
    per: dict[str, dict[str, Counter[str]]] = {}
    for k, n in table.counts.items():
        action = k[ACTION]
        if not n or not k[RESOURCE] or action not in ("publish", "quarantine"):
            continue
        days = per.setdefault(k[RESOURCE], {})
        day = days.setdefault(k[DAY], Counter())
        day["passed" if action == "publish" else "quarantined"] += n
        if action == "quarantine":
            day[f"rule:{k[REASON]}"] += n

    def score(c: Counter[str]) -> dict[str, Any]:
        total = c["passed"] + c["quarantined"]
        return {"passed": c["passed"], "quarantined": c["quarantined"],
                "score": round(c["passed"] / total, 4) if total else None,
                "rules": {r.removeprefix("rule:"): n for r, n in sorted(c.items()) if r.startswith("rule:")}}

    out: dict[str, Any] = {}
    for resource, days in sorted(per.items()):
        overall = sum(days.values(), Counter())
        out[resource] = {**score(overall), "by_day": {d: score(c) for d, c in sorted(days.items())}}
    return out


def exchange_figures(
    table: CountTable, first: str | date | None = None, last: str | date | None = None,
    catalogue_by_tier: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The ``exchange`` part of ``/v1/stats``: the figures (docs/domain.md) with their definitions, and the breakdowns.

    Raises ValueError for a malformed day or a range that starts after it ends.
    """
    lo, hi = parse_day(first), parse_day(last)
    selected = in_range(table, lo, hi)
    values = figure_values(selected, catalogue_by_tier)
    return {
        "from": lo,
        "to": hi,
        "figures": [
            {"id": f.id, "label": f.label, "value": values[f.id], "definition": f.definition,
             "reported": f.reported, "over": "now" if f.match is None else "range"}
            for f in FIGURES
        ],
        "counts": breakdowns(selected),
        "quality": quality_scores(selected),
    }


def figures_by_id(exchange: Mapping[str, Any]) -> dict[str, int | None]:
    """``{figure id: value}`` from an ``exchange`` object (what clients usually want)."""
    return {f["id"]: f["value"] for f in exchange.get("figures", [])}
