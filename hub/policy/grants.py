"""The grant lifecycle as a pure state machine, and an immutable index of grants for the hot path.

::

    request --(unconditional)--> active --revoke--> revoked
            --(authorised)-----> requested --approve--> active
                                           --deny-----> denied
            --(none)-----------> denied (reason not_shared + legal basis)
    active | requested --(now >= valid_to)--> expired   (effective_state; expire() writes it down)

Every transition returns a new ``Grant`` version (same id, new ``updated_at``); nothing is mutated and
nothing is stored here. Errors are ``GrantError`` subclasses whose ``code`` is machine-readable, so the
HTTP layer can map them to statuses (``NotAuthorised`` -> 403, ``InvalidTransition`` -> 409, the rest ->
4xx) without parsing messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any

from hub.catalogue.model import Node, Resource
from hub.contract import OPERATOR
from hub.policy.model import Grant, GrantState, Mode, RowScope, Scenario, to_epoch_ms

__all__ = [
    "GrantError",
    "GrantIndex",
    "InvalidRequest",
    "InvalidTransition",
    "NotAuthorised",
    "UnknownScenario",
    "approve",
    "deny",
    "effective_state",
    "expire",
    "request",
    "revoke",
]

GRANT_ID_NAMESPACE = uuid.UUID("0f5c2f0e-6a55-4c1e-9d0b-7d1f3b2a9e44")


class GrantError(Exception):
    """A refused grant operation; ``code`` is the machine-readable reason, the message says what to do."""

    code: str = "grant_error"

    def __init__(self, code: str, message: str) -> None:
        """Carry a bounded machine-readable ``code`` next to the human message."""
        super().__init__(message)
        self.code = code

    def to_dict(self) -> dict[str, str]:
        """JSON body for an API error response."""
        return {"code": self.code, "message": str(self)}


class UnknownScenario(GrantError):
    """The request names a scenario that is not registered (code ``unknown_scenario``)."""


class InvalidRequest(GrantError):
    """The request itself is malformed: unknown field, bad window, row scope or quota, own resource."""


class NotAuthorised(GrantError):
    """The actor may not perform this transition (code ``not_authorised``)."""


class InvalidTransition(GrantError):
    """The grant is not in a state the transition starts from (``invalid_transition``, ``not_expired``)."""


def _now_ms(now: datetime | int) -> int:
    """Epoch ms from either accepted form of ``now`` (ints pass through untouched)."""
    return now if type(now) is int else to_epoch_ms(now)


def effective_state(grant: Grant, now: datetime | int) -> GrantState:
    """The grant's state at ``now``: an active or requested grant past ``valid_to`` is expired."""
    state = grant.state
    if state in ("active", "requested") and grant.valid_to is not None and _now_ms(now) >= grant.valid_to:
        return "expired"
    return state


def _evolve(grant: Grant, **changes: Any) -> Grant:
    """A new, fully re-validated version of ``grant`` with ``changes`` applied."""
    return Grant.model_validate({**grant.model_dump(), **changes})


def _grant_id(consumer: str, resource: str, scenario: str, mode: str, at: int) -> str:
    """A deterministic id, so the same request replayed (after a crash) produces the same grant."""
    return "g-" + uuid.uuid5(GRANT_ID_NAMESPACE, f"{consumer}|{resource}|{scenario}|{mode}|{at}").hex[:20]


def request(
    consumer: Node,
    resource: Resource,
    scenario: str,
    mode: Mode,
    *,
    scenarios: Mapping[str, Scenario],
    now: datetime | int,
    requested_by: str | None = None,
    allowed_fields: Sequence[str] | None = None,
    row_scope: RowScope = "all",
    valid_from: datetime | int | None = None,
    valid_to: datetime | int | None = None,
    daily_quota: int | None = None,
    reason: str | None = None,
    grant_id: str | None = None,
) -> Grant:
    """Open a grant: ``active`` if the resource is unconditional, ``requested`` if authorised, or ``denied``.

    Raises ``UnknownScenario`` for an unregistered scenario, ``NotAuthorised`` when ``requested_by`` is
    neither the consumer nor the hub operator, and ``InvalidRequest`` (codes ``own_resource``,
    ``unknown_field``, ``invalid_row_scope``, ``invalid_window``, ``invalid_quota``) for a malformed request.
    """
    at = _now_ms(now)
    actor = requested_by or consumer.id
    if actor not in (consumer.id, OPERATOR):
        raise NotAuthorised(
            "not_authorised", f"{actor} cannot request a grant for {consumer.id}: a node acts only as itself"
        )
    if scenario not in scenarios:
        known = ", ".join(sorted(scenarios)) or "none registered"
        raise UnknownScenario("unknown_scenario", f"scenario {scenario!r} is not registered (known: {known})")
    if consumer.id == resource.provider:
        raise InvalidRequest("own_resource", f"{consumer.id} provides {resource.id}: it needs no grant")
    if allowed_fields is not None:
        unknown = [f for f in allowed_fields if f not in resource.field_levels]
        if unknown:
            raise InvalidRequest(
                "unknown_field",
                f"{resource.id} has no graded field(s) {unknown}; fields: {sorted(resource.field_levels)}",
            )
        if not allowed_fields:
            raise InvalidRequest("unknown_field", "allowed_fields is empty: omit it for all fields")
    if row_scope == "own_district" and consumer.tier != "district":
        raise InvalidRequest(
            "invalid_row_scope", f"row scope own_district needs a district consumer, not {consumer.id}"
        )
    if daily_quota is not None and (mode != "call" or daily_quota < 0):
        raise InvalidRequest(
            "invalid_quota", "daily_quota must be a non-negative number of calls, on call grants only"
        )
    start = at if valid_from is None else _now_ms(valid_from)
    end = None if valid_to is None else _now_ms(valid_to)
    if end is not None and end <= start:
        raise InvalidRequest("invalid_window", f"valid_to ({end}) must be after valid_from ({start})")

    state: GrantState
    decided_by: str | None
    if resource.sharing == "none":
        state, decided_by = "denied", OPERATOR
        reason = f"not_shared: {resource.legal_basis}"
    elif resource.sharing == "unconditional":
        state, decided_by = "active", OPERATOR
        reason = reason or "auto_approved: unconditional sharing"
    else:
        state, decided_by = "requested", None
    return Grant(
        id=grant_id or _grant_id(consumer.id, resource.id, scenario, mode, at),
        consumer=consumer.id,
        resource=resource.id,
        scenario=scenario,
        mode=mode,
        allowed_fields=tuple(allowed_fields) if allowed_fields is not None else None,
        row_scope=row_scope,
        valid_from=start,
        valid_to=end,
        daily_quota=daily_quota,
        state=state,
        requested_by=actor,
        decided_by=decided_by,
        reason=reason,
        requested_at=at,
        updated_at=at,
    )


def _check_resource(grant: Grant, resource: Resource) -> None:
    """Refuse a transition judged against the wrong catalogue entry (its provider decides who may act)."""
    if grant.resource != resource.id:
        raise InvalidRequest(
            "resource_mismatch", f"grant {grant.id} is for {grant.resource}, not {resource.id}"
        )


def _check_decider(grant: Grant, resource: Resource, actor: str, verb: str) -> None:
    """Only the resource's provider or the hub operator may approve or deny."""
    if actor not in (resource.provider, OPERATOR):
        raise NotAuthorised(
            "not_authorised",
            f"{actor} cannot {verb} grant {grant.id}: only {resource.provider} or the hub operator can",
        )


def _check_from(grant: Grant, now: int, expected: GrantState, verb: str) -> None:
    """Refuse a transition unless the grant's effective state at ``now`` is the one it starts from."""
    state = effective_state(grant, now)
    if state != expected:
        raise InvalidTransition(
            "invalid_transition", f"cannot {verb} grant {grant.id}: it is {state}, not {expected}"
        )


def approve(
    grant: Grant, resource: Resource, actor: str, *, now: datetime | int, reason: str | None = None
) -> Grant:
    """requested -> active, by the resource's provider or the hub operator."""
    at = _now_ms(now)
    _check_resource(grant, resource)
    _check_decider(grant, resource, actor, "approve")
    if resource.sharing == "none":
        raise InvalidTransition("not_shared", f"{resource.id} is not shared: {resource.legal_basis}")
    _check_from(grant, at, "requested", "approve")
    return _evolve(grant, state="active", decided_by=actor, reason=reason or "approved", updated_at=at)


def deny(grant: Grant, resource: Resource, actor: str, *, now: datetime | int, reason: str) -> Grant:
    """requested -> denied, by the resource's provider or the hub operator, with a justification."""
    at = _now_ms(now)
    _check_resource(grant, resource)
    _check_decider(grant, resource, actor, "deny")
    if not reason.strip():
        raise InvalidRequest("reason_required", f"denying grant {grant.id} needs a reason")
    _check_from(grant, at, "requested", "deny")
    return _evolve(grant, state="denied", decided_by=actor, reason=reason, updated_at=at)


def revoke(grant: Grant, resource: Resource, actor: str, *, now: datetime | int, reason: str) -> Grant:
    """active -> revoked, by the provider, the hub operator, or the consumer giving its own grant up."""
    at = _now_ms(now)
    _check_resource(grant, resource)
    if actor not in (resource.provider, OPERATOR, grant.consumer):
        raise NotAuthorised(
            "not_authorised",
            f"{actor} cannot revoke grant {grant.id}: "
            f"only {resource.provider}, {grant.consumer} or the hub operator can",
        )
    if not reason.strip():
        raise InvalidRequest("reason_required", f"revoking grant {grant.id} needs a reason")
    _check_from(grant, at, "active", "revoke")
    return _evolve(grant, state="revoked", decided_by=actor, reason=reason, updated_at=at)


def expire(grant: Grant, *, now: datetime | int) -> Grant:
    """Write down a time-based expiry as a new version (state ``expired``, decided by ``hub``).

    Raises ``InvalidTransition`` with code ``not_expired`` unless ``effective_state`` is expired while the
    stored state is still active or requested.
    """
    at = _now_ms(now)
    if grant.state == "expired" or effective_state(grant, at) != "expired":
        raise InvalidTransition("not_expired", f"grant {grant.id} is {grant.state} and not past its valid_to")
    return _evolve(grant, state="expired", decided_by=OPERATOR, reason="valid_to passed", updated_at=at)


_EMPTY: tuple[Grant, ...] = ()


class GrantIndex:
    """Latest version of every grant, indexed for the per-event lookups of the hot path.

    Built once from a list of grant versions (e.g. a replay of ``hub.grants``; the newest ``updated_at``
    per id wins, later in the list on a tie) and never mutated: ``with_grant`` returns a new index.
    """

    __slots__ = ("_by_id", "_active_by_resource", "_by_consumer", "_all_rows", "_for_district")

    def __init__(self, grants: Iterable[Grant] = ()) -> None:
        """Index the latest version of each grant id."""
        latest: dict[str, Grant] = {}
        for g in grants:
            seen = latest.get(g.id)
            if seen is None or g.updated_at >= seen.updated_at:
                latest[g.id] = g
        active: dict[str, list[Grant]] = {}
        by_consumer: dict[tuple[str, str, str], list[Grant]] = {}
        for g in latest.values():
            if g.state == "active":
                active.setdefault(g.resource, []).append(g)
            by_consumer.setdefault((g.consumer, g.resource, g.mode), []).append(g)
        self._by_id: Mapping[str, Grant] = MappingProxyType(latest)
        self._active_by_resource: dict[str, tuple[Grant, ...]] = {k: tuple(v) for k, v in active.items()}
        self._by_consumer: dict[tuple[str, str, str], tuple[Grant, ...]] = {
            k: tuple(sorted(v, key=lambda g: -g.updated_at)) for k, v in by_consumer.items()
        }
        all_rows: dict[str, list[Grant]] = {}
        own_rows: dict[tuple[str, str], list[Grant]] = {}
        for resource, grants in active.items():
            for g in grants:
                if g.row_scope == "all":
                    all_rows.setdefault(resource, []).append(g)
                elif g.consumer.startswith("district."):  # own_district elsewhere covers no row at all
                    own_rows.setdefault((resource, g.consumer[9:]), []).append(g)
        self._all_rows: dict[str, tuple[Grant, ...]] = {k: tuple(v) for k, v in all_rows.items()}
        self._for_district: dict[tuple[str, str], tuple[Grant, ...]] = {
            (res, code): self._all_rows.get(res, _EMPTY) + tuple(own) for (res, code), own in own_rows.items()
        }

    def __len__(self) -> int:
        """Number of distinct grants."""
        return len(self._by_id)

    def __iter__(self) -> Iterator[Grant]:
        """The latest version of every grant."""
        return iter(self._by_id.values())

    def get(self, grant_id: str) -> Grant | None:
        """The latest version of one grant, or None."""
        return self._by_id.get(grant_id)

    def with_grant(self, grant: Grant) -> GrantIndex:
        """A new index with ``grant`` as the latest version of its id (what a ``hub.grants`` update does)."""
        return GrantIndex([*self._by_id.values(), grant])

    def active_for_resource(self, resource: str, now: datetime | int | None = None) -> tuple[Grant, ...]:
        """Grants stored as active on ``resource``; with ``now``, only those inside their validity window."""
        grants = self._active_by_resource.get(resource, _EMPTY)
        if now is None:
            return grants
        at = _now_ms(now)
        return tuple(g for g in grants if g.valid_from <= at and (g.valid_to is None or at < g.valid_to))

    def active_for_record(self, resource: str, district: str | None) -> tuple[Grant, ...]:
        """Active grants on ``resource`` whose row scope can cover a record of ``district`` (the hot path).

        Row-scope ``all`` grants plus the ``own_district`` grants of that district, so a record costs one
        ``decide`` per grant that may receive it rather than one per district. Validity windows, scenario
        and mode are still for ``decide`` to check.
        """
        if district is not None:
            hit = self._for_district.get((resource, district))
            if hit is not None:
                return hit
        return self._all_rows.get(resource, _EMPTY)

    def lookup(self, consumer: str, resource: str, mode: Mode) -> tuple[Grant, ...]:
        """Every grant (any state, newest first) of ``consumer`` on ``resource`` in ``mode``."""
        return self._by_consumer.get((consumer, resource, mode), _EMPTY)

    def select(self, consumer: str, resource: str, *, scenario: str, mode: Mode) -> Grant | None:
        """The grant ``decide`` should judge a request by: the most specific one, so a denial names why.

        Preference: same scenario and mode, active first, else the newest of any state (-> its state's
        reason). Otherwise a near miss, active ones first: the same scenario in the other mode
        (-> mode_mismatch), then the same mode for another scenario (-> scenario_mismatch), then any other
        grant; newest first within each. None when the consumer holds no grant on the resource (-> no_grant).
        """
        same_mode = self._by_consumer.get((consumer, resource, mode), _EMPTY)
        exact = [g for g in same_mode if g.scenario == scenario]
        if exact:
            return next((g for g in exact if g.state == "active"), exact[0])
        other = "call" if mode == "subscribe" else "subscribe"
        other_mode = self._by_consumer.get((consumer, resource, other), _EMPTY)
        near = [g for g in other_mode if g.scenario == scenario]
        near += same_mode
        near += [g for g in other_mode if g.scenario != scenario]
        return next((g for g in near if g.state == "active"), near[0] if near else None)
