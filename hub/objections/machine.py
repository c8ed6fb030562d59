"""The objection workflow of DB3208/T 219-2024 as a pure state machine: who may move an objection, where to,
and by when.

::

    filed (提出) --accept--> accepted (受理) --flag--> flagged (标注)
        --correct | reject--> verified (核实处理) --unflag--> unflagged (标注撤销) --archive--> archived (归档)

Who acts (the operator ``hub`` may make every move):

* **file**: a consumer the hub delivered the record to (``recipients``), or the operator on behalf of a data
  subject; never the provider (it corrects its records by publishing them again);
* **accept**, **flag**, **unflag**, **archive**: the hub, i.e. the operator;
* **correct** / **reject**: the provider of the resource; a rejection needs a reason (``resolution``).

Each state has a time limit (:class:`Limits`, from ``HUB_OBJECTION_*_LIMIT``): the step out of it is due by
``deadline = entered + limit``. Past it the objection is overdue; :func:`escalate` marks it ``escalated`` and
adds a history step (note ``escalated: ...``) so each step escalates once. Nothing here does I/O or reads a
clock: ``now`` is always given. Every refusal is a :class:`hub.control.errors.ControlError` saying why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hub.contract import OPERATOR
from hub.control.errors import Conflict, Forbidden, Invalid, NotFound
from hub.objections.model import ESCALATION_NOTE, STATES, Objection, State, Step

Action = Literal["accept", "flag", "correct", "reject", "unflag", "archive"]
ACTIONS: tuple[Action, ...] = ("accept", "flag", "correct", "reject", "unflag", "archive")
Role = Literal["operator", "provider"]

# action -> (the state it leaves, the state it enters)
TRANSITIONS: dict[Action, tuple[State, State]] = {
    "accept": ("filed", "accepted"),
    "flag": ("accepted", "flagged"),
    "correct": ("flagged", "verified"),
    "reject": ("flagged", "verified"),
    "unflag": ("verified", "unflagged"),
    "archive": ("unflagged", "archived"),
}
# who, besides the operator, may make each move
ACTOR_OF: dict[Action, Role] = {
    "accept": "operator", "flag": "operator", "correct": "provider", "reject": "provider",
    "unflag": "operator", "archive": "operator",
}
NEXT_ACTION: dict[State, tuple[Action, ...]] = {
    "filed": ("accept",), "accepted": ("flag",), "flagged": ("correct", "reject"), "verified": ("unflag",),
    "unflagged": ("archive",), "archived": (),
}
MAX_TEXT = 10_000
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Limits:
    """Milliseconds allowed in each state before the step out of it is overdue (archived: none)."""

    filed: int = DAY_MS  # the hub accepts within one day
    accepted: int = DAY_MS  # and flags the record within one day
    flagged: int = 5 * DAY_MS  # the provider verifies within five days
    verified: int = DAY_MS  # the hub lifts the flag within one day
    unflagged: int = 3 * DAY_MS  # and archives within three

    def of(self, state: State) -> int | None:
        return None if state == "archived" else int(getattr(self, state))

    @classmethod
    def from_settings(cls, settings: object) -> Limits:
        """From ``HUB_OBJECTION_{ACCEPT,FLAG,VERIFY,UNFLAG,ARCHIVE}_LIMIT`` (seconds)."""
        def ms(name: str) -> int:
            return max(1, int(float(getattr(settings, f"objection_{name}_limit")) * 1000))

        return cls(filed=ms("accept"), accepted=ms("flag"), flagged=ms("verify"), verified=ms("unflag"),
                   unflagged=ms("archive"))


class FilingRequest(BaseModel):
    """What a consumer submits to object to one record it received (``POST /v1/objections``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resource: str = Field(min_length=1, max_length=200, description="Catalogue resource id of the record")
    record_key: str = Field(min_length=1, max_length=1000, description="Primary key value of the disputed record")
    reason: str = Field(min_length=1, max_length=MAX_TEXT, description="Why the record is believed wrong")
    event_id: str | None = Field(None, max_length=200, description="hub-event-id of the delivery disputed")
    field: str | None = Field(None, max_length=200, description="The disputed field (null: the whole record)")
    proposed_value: str | None = Field(None, max_length=MAX_TEXT, description="What the value should be")


class StepRequest(BaseModel):
    """The body of a move (``POST /v1/objections/{id}/<action>``): a note, required to reject."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    note: str | None = Field(None, max_length=MAX_TEXT, description="Comment; for reject, the reason (required)")
    corrected_event_id: str | None = Field(
        None, max_length=200, description="correct: hub-event-id of the corrected record the provider published")


def deadline(state: State, entered_at: int, limits: Limits) -> int | None:
    """When the step out of ``state`` is due, or None (archived)."""
    limit = limits.of(state)
    return None if limit is None else entered_at + limit


def file(
    request: FilingRequest, *, objection_id: str, filer: str, provider: str, recipients: Iterable[str], now: int,
    limits: Limits,
) -> Objection:
    """A new objection in state ``filed``; refused unless the filer received the record (or is the operator)."""
    received = tuple(sorted(set(recipients)))
    if filer == provider:
        raise Invalid("own_record", f"{filer} provides {request.resource}: a provider corrects its own records by "
                      "publishing them again, it does not object to them")
    if filer != OPERATOR and filer not in received:
        raise Forbidden("not_a_recipient", f"{filer} did not receive record {request.record_key!r} of "
                        f"{request.resource} within the filing window: only a consumer that received a record "
                        "(or the operator, for a data subject) may object to it")
    if not request.reason.strip():
        raise Invalid("reason_required", "an objection needs a reason: say why the record is wrong")
    return Objection(
        objection_id=objection_id, resource=request.resource, record_key=request.record_key,
        event_id=request.event_id, field=request.field, filer=filer, provider=provider, state="filed",
        reason=request.reason, proposed_value=request.proposed_value, filed_at=now, updated_at=now,
        deadline=deadline("filed", now, limits), recipients=received,
        history=(Step(state="filed", at=now, actor=filer, note=None),),
    )


def check_actor(objection: Objection, action: Action, actor: str) -> None:
    """Forbidden unless ``actor`` may ``action`` this objection (see the module doc)."""
    if actor == OPERATOR:
        return
    role = ACTOR_OF[action]
    if role == "provider" and actor == objection.provider:
        return
    who = "the hub operator" if role == "operator" else f"the provider {objection.provider} or the hub operator"
    raise Forbidden("not_authorised", f"{actor} cannot {action} objection {objection.objection_id}: only {who} can")


def transition(
    objection: Objection, action: Action, actor: str, now: int, limits: Limits, *, note: str | None = None,
    corrected_event_id: str | None = None, recipients: Iterable[str] | None = None,
) -> Objection:
    """The objection's next version after ``action`` by ``actor``; refused (with why) if it is not legal.

    ``recipients`` (flag only) refreshes who received the record: deliveries between filing and flagging count.
    """
    if action not in TRANSITIONS:
        raise Invalid("unknown_action", f"{action!r} is not a step of an objection (steps: {', '.join(ACTIONS)})")
    check_actor(objection, action, actor)
    source, target = TRANSITIONS[action]
    if objection.state != source:
        expected = " or ".join(NEXT_ACTION[objection.state]) or "nothing (it is archived)"
        raise Conflict("invalid_transition", f"objection {objection.objection_id} is {objection.state}, not "
                       f"{source}: it cannot {action} now; its next step is {expected}")
    text = note.strip() if note else None
    update: dict[str, object] = {}
    if action == "reject":
        if not text:
            raise Invalid("resolution_required", "rejecting an objection needs the reason the record stands (note)")
        update = {"outcome": "rejected", "resolution": text}
    elif action == "correct":
        update = {"outcome": "corrected", "resolution": text or "record corrected",
                  "corrected_event_id": corrected_event_id}
    elif action == "flag" and recipients is not None:
        update = {"recipients": tuple(sorted(set(objection.recipients) | set(recipients)))}
    return objection.model_copy(update={
        **update, "state": target, "updated_at": now, "deadline": deadline(target, now, limits),
        "history": (*objection.history, Step(state=target, at=now, actor=actor, note=text)),
    })


def overdue(objection: Objection, now: int) -> bool:
    """Past the time limit of its current step."""
    return objection.deadline is not None and now > objection.deadline


def escalated_in_current_step(objection: Objection) -> bool:
    """Whether the current step has already been escalated (an escalation step after the last state change)."""
    for step in reversed(objection.history):
        if step.note and step.note.startswith(ESCALATION_NOTE):
            return True
        return False
    return False


def escalation_due(objection: Objection, now: int) -> bool:
    """Overdue and not yet escalated in this step."""
    return overdue(objection, now) and not escalated_in_current_step(objection)


def escalate(objection: Objection, now: int) -> Objection:
    """The version that records the breach: ``escalated`` and a history step for the hub operator."""
    if not escalation_due(objection, now):
        raise Conflict("not_overdue", f"objection {objection.objection_id} is not past an unescalated time limit")
    assert objection.deadline is not None
    late_s = (now - objection.deadline) // 1000
    waiting = " or ".join(NEXT_ACTION[objection.state])
    note = f"{ESCALATION_NOTE}{waiting} was due {late_s} s ago; referred to the hub operator"
    return objection.model_copy(update={
        "escalated": True, "updated_at": now,
        "history": (*objection.history, Step(state=objection.state, at=now, actor=OPERATOR, note=note)),
    })


def due_escalations(objections: Iterable[Objection], now: int) -> list[Objection]:
    """The escalated version of every objection whose current step is overdue and not yet escalated."""
    return [escalate(o, now) for o in sorted(objections, key=lambda o: o.objection_id) if escalation_due(o, now)]


def parties(objection: Objection) -> frozenset[str]:
    """Everyone concerned: the filer, the provider, every recipient of the record, and the operator."""
    return frozenset((objection.filer, objection.provider, OPERATOR, *objection.recipients))


def may_see(objection: Objection, node: str) -> bool:
    return node in parties(objection)


def notice_targets(objection: Objection) -> list[str]:
    """The nodes whose ``objection.<node>`` topic gets a notice of this version: the filer, the provider, every
    recipient; the operator too once it is escalated (``objection.hub``)."""
    nodes = {objection.filer, objection.provider, *objection.recipients}
    if objection.escalated:
        nodes.add(OPERATOR)
    else:
        nodes.discard(OPERATOR)
    return sorted(nodes)


# ---------------------------------------------------------------- finding objections (what /v1/objections reads)

def find(objections: Mapping[str, Objection], objection_id: str, viewer: str) -> Objection:
    """The objection, if ``viewer`` is a party to it: NotFound if there is none, Forbidden if it is not a party."""
    objection = objections.get(objection_id)
    if objection is None:
        raise NotFound("unknown_objection", f"no objection {objection_id!r} (GET /v1/objections lists yours)")
    if not may_see(objection, viewer):
        raise Forbidden("not_a_party", f"{viewer} is not a party to objection {objection_id}: only its filer, the "
                        "provider, the record's recipients and the hub operator see it")
    return objection


def select(
    objections: Iterable[Objection], viewer: str, *, node: str | None = None, state: str | None = None,
    resource: str | None = None, overdue_at: int | None = None,
) -> list[Objection]:
    """The objections ``viewer`` is a party to, matching every filter (``node``: a party; ``overdue_at``: only
    those overdue then), newest change first."""
    found = []
    for o in objections:
        if not may_see(o, viewer):
            continue
        if node is not None and node not in parties(o):
            continue
        if state is not None and o.state != state:
            continue
        if resource is not None and o.resource != resource:
            continue
        if overdue_at is not None and not overdue(o, overdue_at):
            continue
        found.append(o)
    return sorted(found, key=lambda o: (-o.updated_at, o.objection_id))


def open_counts(objections: Iterable[Objection], now: int) -> tuple[dict[str, int], int]:
    """(open objections by state, how many are overdue): ``hub_objections_open{state}``, ``hub_objections_overdue``."""
    by_state = {s: 0 for s in STATES if s != "archived"}
    late = 0
    for o in objections:
        if o.is_open:
            by_state[o.state] += 1
            late += overdue(o, now)
    return by_state, late
