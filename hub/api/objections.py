"""``/v1/objections``: a consumer disputes a record it received; the hub flags it; the provider corrects or rejects.

``POST /v1/objections`` files (the caller is the filer: a consumer the record was delivered to within the filing
window, or the operator for a data subject). ``POST /v1/objections/{id}/accept|flag|unflag|archive`` (the
operator), ``POST /v1/objections/{id}/correct|reject`` (the provider or the operator; ``reject`` needs a
``note``, the reason the record stands). The workflow and time limits are :mod:`hub.objections.machine`.

Every version is written to the compacted ``hub.objections`` topic (the workers follow it: a flagged record's
deliveries carry ``hub-flag``), audited on ``hub.audit.control`` and sent as a notice to ``objection.<node>``
of the filer, the provider and every recipient of the record. A node sees the objections it is a party to;
any other gets 403. See docs/objections.md.
"""

# No `from __future__ import annotations`: FastAPI must see the local Caller dependency, not its name.

import time
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, Field

from hub.api.auth import Authenticator, Principal
from hub.api.deps import caller_dependency
from hub.api.errors import require_json
from hub.control.service import ControlService
from hub.objections import machine
from hub.objections.model import Objection, Outcome, State


class StepOut(BaseModel):
    state: State
    at: int = Field(description="epoch ms, UTC")
    actor: str
    note: str | None


class ObjectionOut(BaseModel):
    """One objection (its latest version), whether it is overdue now, and what comes next."""

    objection_id: str
    resource: str
    record_key: str
    event_id: str | None
    field: str | None
    filer: str
    provider: str
    state: State
    reason: str
    proposed_value: str | None
    outcome: Outcome | None
    resolution: str | None
    corrected_event_id: str | None
    filed_at: int
    updated_at: int
    deadline: int | None = Field(description="epoch ms by which the next step is due (null once archived)")
    overdue: bool = Field(description="past the deadline now")
    escalated: bool
    next: list[str] = Field(description="the step(s) that may come next")
    recipients: list[str]
    history: list[StepOut]

    @classmethod
    def of(cls, o: Objection, now: int | None = None) -> "ObjectionOut":
        at = now if now is not None else int(time.time() * 1000)
        data = o.model_dump(exclude={"recipients", "history"})
        return cls(**data, overdue=machine.overdue(o, at), next=list(machine.NEXT_ACTION[o.state]),
                   recipients=list(o.recipients), history=[StepOut(**s.model_dump()) for s in o.history])


def objections_router(control: ControlService, auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/v1/objections", tags=["objections"], dependencies=[Depends(require_json)])
    Caller = Annotated[Principal, Depends(caller_dependency(control, auth))]
    StepBody = Annotated[machine.StepRequest | None, Body()]

    @router.post("", status_code=201)
    async def file_objection(spec: machine.FilingRequest, caller: Caller) -> ObjectionOut:
        """File an objection to one record the caller received (403 if it did not, within the filing window)."""
        return ObjectionOut.of(await control.file_objection(spec, caller.node_id))

    @router.get("")
    async def list_objections(
        caller: Caller,
        node: Annotated[str | None, Query(max_length=200, description="a party: filer, provider or recipient")] = None,
        state: State | None = None,
        resource: Annotated[str | None, Query(max_length=200)] = None,
        overdue: Annotated[bool, Query(description="only those past their deadline now")] = False,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> list[ObjectionOut]:
        """The objections the caller is a party to (the operator: all), newest change first, filtered."""
        now = int(time.time() * 1000)
        found = machine.select(control.state.objections.values(), caller.node_id, node=node, state=state,
                               resource=resource, overdue_at=now if overdue else None)
        page = found[offset:] if limit is None else found[offset:offset + limit]
        return [ObjectionOut.of(o, now) for o in page]

    @router.get("/{objection_id}")
    async def show_objection(objection_id: str, caller: Caller) -> ObjectionOut:
        """One objection (403 unless the caller is a party: filer, provider, recipient, operator)."""
        return ObjectionOut.of(machine.find(control.state.objections, objection_id, caller.node_id))

    def step(action: machine.Action, doc: str) -> None:
        async def move(objection_id: str, caller: Caller, body: StepBody = None) -> ObjectionOut:
            request = body or machine.StepRequest()
            return ObjectionOut.of(await control.move_objection(objection_id, action, caller.node_id, request))

        move.__doc__ = doc
        move.__name__ = f"{action}_objection"
        router.post(f"/{{objection_id}}/{action}", name=move.__name__)(move)

    step("accept", "filed -> accepted (受理; the operator).")
    step("flag", "accepted -> flagged (标注; the operator): deliveries of the record carry hub-flag from now on.")
    step("correct", "flagged -> verified, outcome corrected (the provider or the operator), after publishing the "
         "corrected record with the hub-objection header; corrected_event_id names it.")
    step("reject", "flagged -> verified, outcome rejected (the provider or the operator); note: why the record "
         "stands (required).")
    step("unflag", "verified -> unflagged (标注撤销; the operator): deliveries stop carrying hub-flag.")
    step("archive", "unflagged -> archived (归档; the operator).")
    return router
