"""Per-event authorisation: may this consumer receive (or call for) this record now, and if not, why.

``decide`` is pure and cheap (it runs once per delivered record). It checks, in this fixed order, and the
first failing check is the answer:

 1. ``unknown_consumer``   the consumer is not a registered node (``consumer_node`` is None)
 2. ``not_shared``         the resource's sharing type is ``none`` (carries the legal basis); no grant helps
 3. ``no_grant``           the consumer holds no grant on the resource
 4. ``grant_mismatch``     the grant given is for another consumer or resource (a caller bug, never allowed)
 5. ``grant_requested`` / ``grant_denied`` / ``grant_revoked`` / ``grant_expired``
                           the grant's state at ``now`` (an active grant past ``valid_to`` is expired)
 6. ``not_yet_valid``      ``now`` is before the grant's ``valid_from``
 7. ``scenario_mismatch``  the request names another scenario than the grant's
 8. ``mode_mismatch``      subscribe vs call differs from the grant's mode
 9. ``field_not_allowed``  a call asked for fields outside the grant's allowed fields (or the resource)
10. ``quota_exceeded``     a call grant's daily quota (China Standard Time days) is used up
11. ``row_out_of_scope``   an ``own_district`` grant and a record of another (or no known) district
12. ``ok``

Request-level checks (1-10) come before the record-level one (11), so a refused caller learns nothing
about the record. Whatever denies at 3-11, a **locality return** is still allowed (reason
``locality_return``) when the resource is flagged ``return_to_locality``, the mode is subscribe and the
record belongs to the consumer's own district (docs/contract.md, Delivery semantics): the provider's flag is a
standing grant of each district's own rows. Clearance never denies: it decides masking (``masking.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from hub.catalogue.model import Node, Resource
from hub.contract import OPERATOR
from hub.identifiers import CHINA_STANDARD_TIME
from hub.policy.model import Grant, Mode, to_epoch_ms

__all__ = ["Decision", "Reason", "decide", "quota_day", "visible_entry"]


class Reason(StrEnum):
    """Machine-readable decision reasons (bounded: safe as a metric label or an audit ``reason``)."""

    OK = "ok"
    LOCALITY_RETURN = "locality_return"
    UNKNOWN_CONSUMER = "unknown_consumer"
    NOT_SHARED = "not_shared"
    NO_GRANT = "no_grant"
    GRANT_MISMATCH = "grant_mismatch"
    GRANT_REQUESTED = "grant_requested"
    GRANT_DENIED = "grant_denied"
    GRANT_REVOKED = "grant_revoked"
    GRANT_EXPIRED = "grant_expired"
    NOT_YET_VALID = "not_yet_valid"
    SCENARIO_MISMATCH = "scenario_mismatch"
    MODE_MISMATCH = "mode_mismatch"
    FIELD_NOT_ALLOWED = "field_not_allowed"
    QUOTA_EXCEEDED = "quota_exceeded"
    ROW_OUT_OF_SCOPE = "row_out_of_scope"


_STATE_REASON: Mapping[str, Reason] = {
    "requested": Reason.GRANT_REQUESTED,
    "denied": Reason.GRANT_DENIED,
    "revoked": Reason.GRANT_REVOKED,
    "expired": Reason.GRANT_EXPIRED,
}


@dataclass(frozen=True, slots=True)
class Decision:
    """Allow or deny, a machine-readable ``reason``, a human ``detail``, the grant judged, any legal basis."""

    allowed: bool
    reason: Reason
    detail: str = ""
    grant: str | None = None
    legal_basis: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for API replies and audit records."""
        return {
            "allowed": self.allowed,
            "reason": str(self.reason),
            "detail": self.detail,
            "grant": self.grant,
            "legal_basis": self.legal_basis,
        }


def quota_day(now: datetime | int) -> date:
    """The China Standard Time calendar day a call at ``now`` counts against (the daily quota's key)."""
    at = now if type(now) is int else to_epoch_ms(now)
    return datetime.fromtimestamp(at / 1000, CHINA_STANDARD_TIME).date()


def _district_code(node: Node) -> str | None:
    """``310115`` for ``district.310115``; None for nodes of other tiers (they have no own district)."""
    node_id = node.id
    return node_id[9:] if node_id.startswith("district.") else None


def _grant_check(
    resource: Resource,
    node: Node,
    grant: Grant | None,
    scenario: str,
    mode: Mode,
    at: int,
    record_district: str | None,
    calls_today: int,
    fields: Collection[str] | None,
    per_record: bool,
) -> Decision:
    """Checks 3-12 of the module docstring, against the grant alone."""
    if grant is None:
        hint = "; request one, it is approved automatically" if resource.sharing == "unconditional" else ""
        return Decision(False, Reason.NO_GRANT, f"{node.id} holds no grant on {resource.id}{hint}")
    gid = grant.id
    if grant.consumer != node.id or grant.resource != resource.id:
        return Decision(
            False, Reason.GRANT_MISMATCH,
            f"grant {gid} is for {grant.consumer} on {grant.resource}, not {node.id} on {resource.id}", gid,
        )
    state = grant.state
    if state == "active" and grant.valid_to is not None and at >= grant.valid_to:
        state = "expired"
    if state != "active":
        return Decision(False, _STATE_REASON[state], f"grant {gid} is {state}" + _why(grant), gid)
    if at < grant.valid_from:
        return Decision(
            False, Reason.NOT_YET_VALID, f"grant {gid} is valid from {grant.valid_from} (epoch ms)", gid
        )
    if scenario != grant.scenario:
        return Decision(
            False, Reason.SCENARIO_MISMATCH,
            f"grant {gid} is for scenario {grant.scenario}, not {scenario!r}", gid,
        )
    if mode != grant.mode:
        return Decision(False, Reason.MODE_MISMATCH, f"grant {gid} allows {grant.mode}, not {mode}", gid)
    if fields:
        permitted = grant.allowed_fields if grant.allowed_fields is not None else resource.field_levels
        extra = [f for f in fields if f not in permitted and f not in resource.primary_key]
        if extra:
            return Decision(
                False, Reason.FIELD_NOT_ALLOWED, f"grant {gid} does not allow field(s) {extra}", gid
            )
    if mode == "call" and grant.daily_quota is not None and calls_today >= grant.daily_quota:
        return Decision(
            False, Reason.QUOTA_EXCEEDED,
            f"grant {gid} allows {grant.daily_quota} calls a day; {calls_today} made today", gid,
        )
    if per_record and grant.row_scope == "own_district":
        own = _district_code(node)
        if own is None or record_district != own:
            return Decision(
                False, Reason.ROW_OUT_OF_SCOPE,
                f"grant {gid} covers only district {own}'s rows, not {record_district}", gid,
            )
    return _ok(gid)


@lru_cache(maxsize=65_536)
def _ok(grant_id: str) -> Decision:
    """The (immutable) allow decision for a grant, built once: the common case of the hot path."""
    return Decision(True, Reason.OK, "", grant_id)


def _why(grant: Grant) -> str:
    """The grant's recorded justification, for the human detail of a state denial."""
    return f" ({grant.reason})" if grant.reason else ""


def decide(
    resource: Resource,
    consumer_node: Node | None,
    grant: Grant | None,
    *,
    scenario: str,
    mode: Mode,
    now: datetime | int,
    record_district: str | None = None,
    calls_today: int = 0,
    fields: Collection[str] | None = None,
    per_record: bool = True,
) -> Decision:
    """Allow or deny one event under one grant, with the first failing check's reason (see module doc).

    ``now`` is epoch ms (UTC) or an aware datetime. ``record_district`` is the record's live district
    (``hub.routing.core.record_district``); None means unknown, which an ``own_district`` grant refuses.
    ``calls_today`` counts the consumer's calls already made under this grant on ``quota_day(now)``.
    ``fields`` are a call's requested fields. ``per_record=False`` judges a request before any record is
    known (a call before its lookup): row scope and locality return are then not considered.
    """
    if consumer_node is None:
        return Decision(False, Reason.UNKNOWN_CONSUMER, "the consumer is not a registered node")
    if resource.sharing == "none":
        return Decision(
            False, Reason.NOT_SHARED, f"{resource.id} is not shared",
            grant.id if grant else None, resource.legal_basis,
        )
    local = (
        per_record
        and resource.return_to_locality
        and mode == "subscribe"
        and record_district is not None
        and record_district == _district_code(consumer_node)
    )
    if local and grant is None:
        return _locality(resource.id, None)
    at = now if type(now) is int else to_epoch_ms(now)
    result = _grant_check(
        resource, consumer_node, grant, scenario, mode, at, record_district, calls_today, fields, per_record
    )
    if local and not result.allowed:
        return _locality(resource.id, result.grant)
    return result


@lru_cache(maxsize=65_536)
def _locality(resource_id: str, grant_id: str | None) -> Decision:
    """The allow decision of a locality return (built once per resource and grant)."""
    return Decision(True, Reason.LOCALITY_RETURN, f"{resource_id} returns each row to its district", grant_id)


_EXISTS_ONLY_KEYS = ("id", "title", "provider", "tier", "sharing", "legal_basis")


def visible_entry(resource: Resource, viewer: Node | None) -> dict[str, Any]:
    """What ``viewer`` may see of a catalogue entry (the catalogue-visibility check point).

    Shared resources (unconditional, authorised) are visible in full to every registered node: the catalogue
    is how consumers learn what to ask for. A ``none`` resource shows only that it exists, is not shared and
    why (its legal basis), except to its provider and the hub operator. Unregistered viewers (None) see the
    same restricted view of every entry. ``visibility`` says which view was given.
    """
    full = viewer is not None and (
        resource.sharing != "none" or viewer.id in (resource.provider, OPERATOR)
    )
    if full:
        entry = resource.model_dump(mode="json")
        entry["visibility"] = "full"
        return entry
    entry = {k: getattr(resource, k) for k in _EXISTS_ONLY_KEYS}
    entry["shared"] = resource.sharing != "none"
    entry["visibility"] = "exists_only"
    return entry
