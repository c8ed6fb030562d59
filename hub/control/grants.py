"""Grant operations of the control plane as pure functions: request / approve / deny / revoke / expire.

The state machine itself is :mod:`hub.policy.grants` (pure, typed ``GrantError``); this module binds it to the
control state: it looks the consumer, the resource and the scenarios up, refuses what the state does not allow
(unknown or retired resource, a second open grant for the same purpose), and turns every ``GrantError`` into a
:class:`hub.control.errors.ControlError` with its status, so ``/v1/grants`` answers ``{"code", "message"}``:

* ``not_authorised`` -> 403 (a node acts only as itself: it requests only for itself; only the resource's
  provider or the operator approves or denies; the provider, the consumer or the operator revokes);
* ``invalid_transition`` / ``not_shared`` / ``not_expired`` -> 409;
* every other code (``unknown_scenario``, ``own_resource``, ``unknown_field``, ``invalid_window``, ...) -> 422.

Who sees a grant: its consumer, the provider of its resource and the operator (:func:`visible_to`).

Removing a node (:func:`node_removal`) ends everything the node took part in, in the same write as the removal:
every open grant where it is the consumer or the provider ends (``active`` -> ``revoked``, ``requested`` ->
``denied``, reason ``node removed``, decided by the operator) and its current catalogue entries are retired.
Nothing is deleted: the node keeps its last version (flagged removed), grants and entries get new versions,
so their history (and the audit trail of ``hub.audit`` / ``hub.audit.control``) stays.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.contract import OPERATOR
from hub.control.errors import Conflict, ControlError, Forbidden, Invalid, NotFound
from hub.control.operations import current_entry, remove_node, validation_message
from hub.control.state import CatalogEntry, ControlState, NodeEntry
from hub.policy import grants as lifecycle
from hub.policy.model import Grant, GrantState, Mode, RowScope

Verb = Literal["approve", "deny", "revoke"]
OPEN_STATES: tuple[GrantState, ...] = ("requested", "active")
NODE_REMOVED = "node removed"


class GrantRequest(BaseModel):
    """A consumer asking for a resource, for a named scenario (``POST /v1/grants``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resource: str = Field(min_length=1, max_length=200, description="Catalogue resource id")
    scenario: str = Field(min_length=1, max_length=200, description="Registered scenario the data is needed for")
    consumer: str | None = Field(
        None, max_length=200, description="Node that will receive the data: the caller (the default); the operator "
        "names the node it requests for",
    )
    mode: Mode = Field("subscribe", description="subscribe (a feed) or call (single records on demand)")
    allowed_fields: list[str] | None = Field(
        None, max_length=1000, description="Fields wanted (default: every field the consumer's clearance allows)"
    )
    row_scope: RowScope = Field("all", description="all rows, or own_district (district consumers)")
    valid_from: int | str | None = Field(None, description="Start (epoch ms or ISO-8601 with offset); default now")
    valid_to: int | str | None = Field(None, description="End (epoch ms or ISO-8601 with offset); default open")
    daily_quota: int | None = Field(None, ge=0, description="Calls per day (call grants only)")
    reason: str | None = Field(None, max_length=10_000, description="Why the consumer needs it (shown to the provider)")


class GrantDecision(BaseModel):
    """The justification of an approval, denial or revocation (required for deny and revoke)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str | None = Field(None, max_length=10_000)


def _control_error(exc: lifecycle.GrantError) -> ControlError:
    message = str(exc)
    if isinstance(exc, lifecycle.NotAuthorised):
        return Forbidden(exc.code, message)
    if isinstance(exc, lifecycle.InvalidTransition):
        return Conflict(exc.code, message)
    return Invalid(exc.code, message)


def provider_of(state: ControlState, grant: Grant) -> str | None:
    """The provider of a grant's resource (any version, retired too), or None if it was never catalogued."""
    entry = state.entry(grant.resource)
    return entry.resource.provider if entry is not None else None


def visible_to(state: ControlState, grant: Grant, viewer: str) -> bool:
    """Whether ``viewer`` may see ``grant``: its consumer, its resource's provider, the operator."""
    return viewer in (OPERATOR, grant.consumer) or provider_of(state, grant) == viewer


def find(state: ControlState, grant_id: str, viewer: str) -> Grant:
    """The latest version of a grant the viewer may see; NotFound otherwise (no hint that it exists)."""
    grant = state.grants.get(grant_id)
    if grant is None or not visible_to(state, grant, viewer):
        raise NotFound("unknown_grant", f"no grant {grant_id!r} that {viewer} can see (GET /v1/grants lists them)")
    return grant


def request_grant(state: ControlState, spec: GrantRequest, actor: str, now: int) -> Grant:
    """The new grant: ``active`` (unconditional), ``requested`` (authorised) or ``denied`` (``none``, with why)."""
    consumer_id = spec.consumer or actor
    if consumer_id == OPERATOR:
        raise Invalid(
            "consumer_required",
            "the operator requests grants on behalf of a node: name it in 'consumer' (the operator itself needs none)",
        )
    if actor not in (OPERATOR, consumer_id):
        raise Forbidden(
            "not_authorised",
            f"{actor} cannot request a grant for {consumer_id}: a node acts only as itself "
            "(omit 'consumer', or authenticate as that node)",
        )
    consumer = state.node(consumer_id)
    if consumer is None:
        raise NotFound("unknown_node", f"no registered node {consumer_id!r} (GET /v1/nodes lists them)")
    entry = current_entry(state, spec.resource)
    if entry.retired:
        raise Conflict("resource_retired", f"resource {spec.resource} is retired: nothing can be granted on it")
    for existing in state.grants.values():
        if (existing.consumer, existing.resource, existing.scenario, existing.mode) == (
            consumer_id, spec.resource, spec.scenario, spec.mode,
        ) and lifecycle.effective_state(existing, now) in OPEN_STATES:
            raise Conflict(
                "grant_exists",
                f"{consumer_id} already holds grant {existing.id} ({existing.state}) on {spec.resource} for "
                f"{spec.scenario} ({spec.mode}); revoke it first to ask again",
            )
    scenarios = {k: v.scenario for k, v in state.scenarios.items()}
    try:
        return lifecycle.request(
            consumer.node(), entry.resource, spec.scenario, spec.mode, scenarios=scenarios, now=now,
            requested_by=actor, allowed_fields=spec.allowed_fields, row_scope=spec.row_scope,
            valid_from=spec.valid_from, valid_to=spec.valid_to, daily_quota=spec.daily_quota, reason=spec.reason,
        )
    except lifecycle.GrantError as exc:
        raise _control_error(exc) from exc
    except (ValidationError, ValueError) as exc:  # a timestamp or field the Grant model refuses
        message = validation_message(exc) if isinstance(exc, ValidationError) else str(exc)
        raise Invalid("invalid_grant", f"grant request: {message}") from exc


def decide_grant(
    state: ControlState, grant_id: str, verb: Verb, actor: str, now: int, reason: str | None = None
) -> Grant:
    """The grant's next version after ``verb`` by ``actor`` (see the module doc for who may do what)."""
    grant = find(state, grant_id, actor)
    entry = current_entry(state, grant.resource)
    try:
        if verb == "approve":
            return lifecycle.approve(grant, entry.resource, actor, now=now, reason=reason or None)
        if verb == "deny":
            return lifecycle.deny(grant, entry.resource, actor, now=now, reason=reason or "")
        return lifecycle.revoke(grant, entry.resource, actor, now=now, reason=reason or "")
    except lifecycle.GrantError as exc:
        raise _control_error(exc) from exc


def expire_due(state: ControlState, now: int) -> list[Grant]:
    """A new ``expired`` version of every grant still stored as active or requested but past its ``valid_to``."""
    due = []
    for grant in state.grants.values():
        if grant.state in OPEN_STATES and lifecycle.effective_state(grant, now) == "expired":
            due.append(lifecycle.expire(grant, now=now))
    return sorted(due, key=lambda g: g.id)


def select(
    state: ControlState, viewer: str, *, now: int, consumer: str | None = None, resource: str | None = None,
    provider: str | None = None, scenario: str | None = None, mode: str | None = None,
    grant_state: str | None = None,
) -> list[Grant]:
    """The grants ``viewer`` may see matching every filter; ``grant_state`` is matched against the state at ``now``
    (a grant past its ``valid_to`` is ``expired``). Newest change first."""
    found: Iterable[Grant] = state.grants.values()
    out = []
    for g in found:
        if consumer is not None and g.consumer != consumer:
            continue
        if resource is not None and g.resource != resource:
            continue
        if scenario is not None and g.scenario != scenario:
            continue
        if mode is not None and g.mode != mode:
            continue
        if grant_state is not None and lifecycle.effective_state(g, now) != grant_state:
            continue
        owner = provider_of(state, g)
        if provider is not None and owner != provider:
            continue
        if viewer not in (OPERATOR, g.consumer) and owner != viewer:
            continue
        out.append(g)
    return sorted(out, key=lambda g: (-g.updated_at, g.id))


# ---------------------------------------------------------------- node removal

@dataclass(frozen=True)
class NodeRemoval:
    """What removing a node writes: its removed version, the grants it ends, the catalogue entries it retires."""

    node: NodeEntry
    grants: tuple[Grant, ...]
    retired: tuple[CatalogEntry, ...]


def grants_of_node(state: ControlState, node_id: str, now: int) -> list[Grant]:
    """Open grants (effective state active or requested at ``now``) where ``node_id`` is the consumer or the
    provider of the resource, oldest id first."""
    found = []
    for grant in state.grants.values():
        if node_id not in (grant.consumer, provider_of(state, grant)):
            continue
        if lifecycle.effective_state(grant, now) in OPEN_STATES:
            found.append(grant)
    return sorted(found, key=lambda g: g.id)


def end_grants_of_node(state: ControlState, node_id: str, now: int, reason: str = NODE_REMOVED) -> list[Grant]:
    """The ending version of every open grant of ``node_id`` (see :func:`grants_of_node`), decided by the
    operator: an active grant is revoked; a requested one, never granted, is denied (the lifecycle has no
    ``requested -> revoked``). A grant already past its ``valid_to`` is left to the expiry job."""
    ended = []
    for grant in grants_of_node(state, node_id, now):
        resource = current_entry(state, grant.resource).resource
        try:
            if lifecycle.effective_state(grant, now) == "active":
                ended.append(lifecycle.revoke(grant, resource, OPERATOR, now=now, reason=reason))
            else:
                ended.append(lifecycle.deny(grant, resource, OPERATOR, now=now, reason=reason))
        except lifecycle.GrantError as exc:  # cannot happen for an open grant decided by the operator
            raise _control_error(exc) from exc
    return ended


def retire_entries_of_node(state: ControlState, node_id: str, now: int) -> list[CatalogEntry]:
    """A retired version of every current (not retired) catalogue entry ``node_id`` provides, by the operator.

    Withdrawn rather than left: a removed provider delivers nothing, so its entries must stop being offered
    (no new grant can be requested on a retired entry, and the catalogue lists them as retired). The history
    stays; if the node is registered again, it catalogues them again (POST /v1/resources)."""
    return [
        entry.model_copy(update={"version": entry.version + 1, "retired": True, "updated_by": OPERATOR,
                                 "updated_at": now})
        for entry in state.entries() if entry.resource.provider == node_id
    ]


def node_removal(state: ControlState, node_id: str, actor: str, now: int) -> NodeRemoval:
    """Removing a node (operator only, see :func:`hub.control.operations.remove_node`) with its consequences:
    its token stops working, its open grants end (reason ``node removed``) and its catalogue entries retire."""
    node = remove_node(state, node_id, actor, now)
    return NodeRemoval(node=node, grants=tuple(end_grants_of_node(state, node_id, now)),
                       retired=tuple(retire_entries_of_node(state, node_id, now)))
