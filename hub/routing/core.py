"""Routing decisions: which consumers one accepted record goes to, in which direction, and why.

Pure functions over plain data (record dict, catalogue entry, subscriptions); no Kafka in sight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.catalogue.model import Resource, Subscription, tier_of
from hub.identifiers import DISTRICTS, resident_id_district

TIER_RANK = {"district": 1, "municipal": 2, "national": 3}

REASON_SUBSCRIPTION = "subscription"
REASON_LOCALITY = "locality-return"
REASON_REPORT_UP = "report-up"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One record going to one consumer's feed."""

    consumer: str
    to_tier: str
    direction: str  # down | up | lateral | regional
    kind: str  # deliver | report | regional  (the hub_events_total kind)
    reason: str  # subscription | locality-return | report-up
    grant: str | None
    scenario: str | None


def direction_between(from_tier: str, to_tier: str) -> str:
    """down / up / lateral between the three tiers; anything touching a regional peer is regional."""
    if from_tier == "region" or to_tier == "region":
        return "regional"
    src, dst = TIER_RANK.get(from_tier, 2), TIER_RANK.get(to_tier, 2)
    return "down" if dst < src else "up" if dst > src else "lateral"


def kind_for(direction: str) -> str:
    return {"up": "report", "regional": "regional"}.get(direction, "deliver")


def record_district(record: Mapping[str, Any], resource: Resource) -> str | None:
    """The live district a record belongs to, from its locality field (a district code or a resident ID).

    A resource marked ``locality_from_resident_id`` without a ``locality_field`` reads ``resident_id``.
    """
    field = resource.locality_field or ("resident_id" if resource.locality_from_resident_id else None)
    if not field:
        return None
    value = record.get(field)
    if not isinstance(value, str):
        return None
    if resource.locality_from_resident_id:
        return resident_id_district(value)
    return value if value in DISTRICTS else None


def route(
    record: Mapping[str, Any], resource: Resource, subscriptions: Iterable[Subscription]
) -> list[Delivery]:
    """Every delivery one accepted record earns: at most one per consumer, the provider never included.

    A district subscription with ``row_scope: own_district`` receives only its own district's rows; a
    resource flagged ``return_to_locality`` returns each row to its district even without a subscription;
    ``report_up`` resources also go to ``national``.
    """
    return route_for_district(record_district(record, resource), resource, subscriptions)


def route_for_district(
    district: str | None, resource: Resource, subscriptions: Iterable[Subscription]
) -> list[Delivery]:
    """``route`` for a record of ``district``: the deliveries depend on nothing else of the record, so the
    hot path computes them once per (resource, district) and catalogue version."""
    from_tier = resource.tier
    local_node = f"district.{district}" if district else None
    chosen: dict[str, Delivery] = {}

    def add(consumer: str, reason: str, grant: str | None, scenario: str | None) -> None:
        if consumer == resource.provider or consumer in chosen:
            return
        to_tier = tier_of(consumer)
        direction = direction_between(from_tier, to_tier)
        chosen[consumer] = Delivery(consumer, to_tier, direction, kind_for(direction), reason, grant, scenario)

    for sub in subscriptions:
        if sub.resource != resource.id:
            continue
        if sub.row_scope == "own_district" and sub.consumer != local_node:
            continue
        reason = REASON_LOCALITY if sub.consumer == local_node else REASON_SUBSCRIPTION
        add(sub.consumer, reason, sub.id, sub.scenario)
    if local_node and resource.return_to_locality:
        add(local_node, REASON_LOCALITY, None, "locality-return")
    if resource.report_up:
        add("national", REASON_REPORT_UP, None, "report-up")
    return list(chosen.values())


def subscriptions_by_resource(subscriptions: Sequence[Subscription]) -> dict[str, list[Subscription]]:
    index: dict[str, list[Subscription]] = {}
    for sub in subscriptions:
        index.setdefault(sub.resource, []).append(sub)
    return index
