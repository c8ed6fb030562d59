"""``/v1/grants``: a consumer asks for a resource for a named scenario; the provider (or the operator) decides.

``POST /v1/grants`` requests (the caller is the consumer; the operator may request on behalf of a node): the
grant is ``active`` at once for an ``unconditional`` resource, ``requested`` for an ``authorised`` one, and
``denied`` with the legal basis for a ``none`` one. ``POST /v1/grants/{id}/approve|deny`` (the resource's
provider or the operator), ``POST /v1/grants/{id}/revoke`` (the provider, the consumer or the operator).
A grant past its ``valid_to`` is ``expired`` (``effective_state``; the API writes the expiry down
periodically). Every version is written to the compacted ``hub.grants`` topic, which the workers follow:
a revocation stops delivery (and calls) from the next event on. Every change, and every refused attempt,
is on the control audit log. A node sees the grants it holds and those on its own resources; the
operator sees all.
"""

# No `from __future__ import annotations`: FastAPI must see the local Caller dependency, not its name.

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, Field

from hub.api.auth import Authenticator, Principal
from hub.api.deps import caller_dependency
from hub.api.errors import require_json
from hub.control import grants as grant_ops
from hub.control.service import ControlService
from hub.control.state import ControlState
from hub.policy.grants import effective_state
from hub.policy.model import Grant, GrantState, Mode, RowScope


class GrantOut(BaseModel):
    """One grant (its latest version) and its state now."""

    id: str
    consumer: str
    resource: str
    provider: str | None = Field(description="Provider of the resource (who approves)")
    scenario: str
    mode: Mode
    allowed_fields: list[str] | None = Field(description="null: every field the consumer's clearance allows")
    row_scope: RowScope
    valid_from: int = Field(description="epoch ms, UTC")
    valid_to: int | None = Field(description="epoch ms, UTC; null: open-ended")
    daily_quota: int | None
    state: GrantState = Field(description="The stored state")
    effective_state: GrantState = Field(description="The state now: an active or requested grant past valid_to is "
                                        "expired")
    requested_by: str | None
    decided_by: str | None
    reason: str | None = Field(description="The request's reason, or the decision's justification (a denial of a "
                               "'none' resource carries its legal basis)")
    requested_at: int | None
    updated_at: int

    @classmethod
    def of(cls, grant: Grant, state: ControlState, now: int | None = None) -> "GrantOut":
        data: dict[str, Any] = grant.model_dump()
        data["allowed_fields"] = list(grant.allowed_fields) if grant.allowed_fields is not None else None
        at = now if now is not None else int(time.time() * 1000)
        return cls(**data, provider=grant_ops.provider_of(state, grant), effective_state=effective_state(grant, at))


def grants_router(control: ControlService, auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/v1/grants", tags=["grants"], dependencies=[Depends(require_json)])
    Caller = Annotated[Principal, Depends(caller_dependency(control, auth))]
    Decision = Annotated[grant_ops.GrantDecision | None, Body()]

    @router.post("", status_code=201)
    async def request_grant(spec: grant_ops.GrantRequest, caller: Caller) -> GrantOut:
        """Request a grant for a scenario. The caller is the consumer (the operator names one in ``consumer``).
        ``unconditional``: active at once; ``authorised``: requested, until its provider approves; ``none``: denied,
        with the legal basis in ``reason``."""
        grant = await control.request_grant(spec, caller.node_id)
        return GrantOut.of(grant, control.state)

    @router.get("")
    async def list_grants(
        caller: Caller,
        consumer: Annotated[str | None, Query(max_length=200, description="consumer node id")] = None,
        resource: Annotated[str | None, Query(max_length=200, description="resource id")] = None,
        provider: Annotated[str | None, Query(max_length=200, description="provider of the resource")] = None,
        scenario: Annotated[str | None, Query(max_length=200)] = None,
        mode: Mode | None = None,
        state: Annotated[GrantState | None, Query(description="the state now (expired included)")] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> list[GrantOut]:
        """The grants the caller may see (it holds them, or they are on its resources; the operator: all), newest
        change first, filtered."""
        now = int(time.time() * 1000)
        found = grant_ops.select(control.state, caller.node_id, now=now, consumer=consumer, resource=resource,
                                 provider=provider, scenario=scenario, mode=mode, grant_state=state)
        page = found[offset:] if limit is None else found[offset:offset + limit]
        return [GrantOut.of(g, control.state, now) for g in page]

    @router.get("/{grant_id}")
    async def show_grant(grant_id: str, caller: Caller) -> GrantOut:
        """One grant (404 unless the caller is its consumer, its resource's provider or the operator)."""
        return GrantOut.of(grant_ops.find(control.state, grant_id, caller.node_id), control.state)

    @router.post("/{grant_id}/approve")
    async def approve_grant(grant_id: str, caller: Caller, body: Decision = None) -> GrantOut:
        """requested -> active (the resource's provider or the operator)."""
        grant = await control.decide_grant(grant_id, "approve", caller.node_id, body.reason if body else None)
        return GrantOut.of(grant, control.state)

    @router.post("/{grant_id}/deny")
    async def deny_grant(grant_id: str, caller: Caller, body: Decision = None) -> GrantOut:
        """requested -> denied (the resource's provider or the operator), with a ``reason``."""
        grant = await control.decide_grant(grant_id, "deny", caller.node_id, body.reason if body else None)
        return GrantOut.of(grant, control.state)

    @router.post("/{grant_id}/revoke")
    async def revoke_grant(grant_id: str, caller: Caller, body: Decision = None) -> GrantOut:
        """active -> revoked (the provider, the consumer or the operator), with a ``reason``. Deliveries and calls
        stop from the next event on."""
        grant = await control.decide_grant(grant_id, "revoke", caller.node_id, body.reason if body else None)
        return GrantOut.of(grant, control.state)

    return router
