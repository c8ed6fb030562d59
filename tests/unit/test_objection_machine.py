"""The objection state machine: every legal and illegal transition, every party rule, time limits, escalation."""

from __future__ import annotations

import pytest

from hub.control.errors import Conflict, Forbidden, Invalid
from hub.objections import machine
from hub.objections.machine import ACTIONS, TRANSITIONS, FilingRequest, Limits
from hub.objections.model import STATES, Objection

PROVIDER = "municipal.health"
FILER = "municipal.civil-affairs"
OTHER_RECIPIENT = "district.310115"
STRANGER = "municipal.market"
LIMITS = Limits(filed=1000, accepted=2000, flagged=5000, verified=1000, unflagged=3000)
REQUEST = FilingRequest(resource="municipal.health.vaccination", record_key="r-1", reason="wrong dose date",
                        field="dose_date", proposed_value="2024-05-01")


def filed(now: int = 0) -> Objection:
    return machine.file(REQUEST, objection_id="obj-1", filer=FILER, provider=PROVIDER,
                        recipients=[FILER, OTHER_RECIPIENT], now=now, limits=LIMITS)


def in_state(state: str) -> Objection:
    """An objection walked to ``state`` by the operator (correcting on the way to verified)."""
    obj = filed()
    path = {"filed": [], "accepted": ["accept"], "flagged": ["accept", "flag"],
            "verified": ["accept", "flag", "correct"], "unflagged": ["accept", "flag", "correct", "unflag"],
            "archived": ["accept", "flag", "correct", "unflag", "archive"]}[state]
    for i, action in enumerate(path, start=1):
        obj = machine.transition(obj, action, "hub", i * 10, LIMITS)
    return obj


# ---------------------------------------------------------------- filing

def test_a_recipient_files_and_the_deadline_is_the_accept_limit() -> None:
    obj = filed(now=100)
    assert obj.state == "filed" and obj.filer == FILER and obj.provider == PROVIDER
    assert obj.deadline == 100 + LIMITS.filed
    assert obj.recipients == tuple(sorted((FILER, OTHER_RECIPIENT)))
    assert [(s.state, s.actor) for s in obj.history] == [("filed", FILER)]


def test_the_operator_files_for_a_data_subject_without_having_received_the_record() -> None:
    obj = machine.file(REQUEST, objection_id="o", filer="hub", provider=PROVIDER, recipients=[FILER], now=0,
                       limits=LIMITS)
    assert obj.filer == "hub"


def test_a_node_that_did_not_receive_the_record_cannot_file() -> None:
    with pytest.raises(Forbidden) as exc:
        machine.file(REQUEST, objection_id="o", filer=STRANGER, provider=PROVIDER, recipients=[FILER], now=0,
                     limits=LIMITS)
    assert exc.value.code == "not_a_recipient" and "did not receive" in exc.value.message


def test_the_provider_cannot_object_to_its_own_record() -> None:
    with pytest.raises(Invalid) as exc:
        machine.file(REQUEST, objection_id="o", filer=PROVIDER, provider=PROVIDER, recipients=[PROVIDER], now=0,
                     limits=LIMITS)
    assert exc.value.code == "own_record"


def test_a_blank_reason_is_refused() -> None:
    request = REQUEST.model_copy(update={"reason": "   "})
    with pytest.raises(Invalid):
        machine.file(request, objection_id="o", filer=FILER, provider=PROVIDER, recipients=[FILER], now=0,
                     limits=LIMITS)


# ---------------------------------------------------------------- every legal transition, by its rightful actor

LEGAL = [(action, source, target) for action, (source, target) in TRANSITIONS.items()]


@pytest.mark.parametrize(("action", "source", "target"), LEGAL)
def test_every_legal_transition_by_its_actor(action: str, source: str, target: str) -> None:
    obj = in_state(source)
    actor = PROVIDER if machine.ACTOR_OF[action] == "provider" else "hub"
    note = "the record is right: checked against the register" if action == "reject" else None
    after = machine.transition(obj, action, actor, 1000, LIMITS, note=note, corrected_event_id="ev-2")
    assert after.state == target and after.updated_at == 1000
    assert after.deadline == machine.deadline(target, 1000, LIMITS)
    assert after.history[-1].state == target and after.history[-1].actor == actor
    assert len(after.history) == len(obj.history) + 1


@pytest.mark.parametrize(("action", "source", "target"), LEGAL)
def test_the_operator_may_make_every_move(action: str, source: str, target: str) -> None:
    note = "stands" if action == "reject" else None
    assert machine.transition(in_state(source), action, "hub", 1000, LIMITS, note=note).state == target


# ---------------------------------------------------------------- every illegal transition

ILLEGAL = [(action, state) for action in ACTIONS for state in STATES if TRANSITIONS[action][0] != state]


@pytest.mark.parametrize(("action", "state"), ILLEGAL)
def test_every_illegal_transition_is_refused_with_its_reason(action: str, state: str) -> None:
    with pytest.raises(Conflict) as exc:
        machine.transition(in_state(state), action, "hub", 1000, LIMITS, note="n")
    assert exc.value.code == "invalid_transition"
    assert f"is {state}" in exc.value.message and f"cannot {action}" in exc.value.message


def test_an_unknown_action_is_refused() -> None:
    with pytest.raises(Invalid):
        machine.transition(filed(), "delete", "hub", 1, LIMITS)  # type: ignore[arg-type]


# ---------------------------------------------------------------- party rules

NON_OPERATOR_ACTORS = [PROVIDER, FILER, OTHER_RECIPIENT, STRANGER]


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("actor", NON_OPERATOR_ACTORS)
def test_party_rules(action: str, actor: str) -> None:
    obj = in_state(TRANSITIONS[action][0])  # the state the action is legal in: only the actor decides
    note = "stands" if action == "reject" else None
    allowed = machine.ACTOR_OF[action] == "provider" and actor == PROVIDER
    if allowed:
        assert machine.transition(obj, action, actor, 1000, LIMITS, note=note).state == TRANSITIONS[action][1]
    else:
        with pytest.raises(Forbidden) as exc:
            machine.transition(obj, action, actor, 1000, LIMITS, note=note)
        assert exc.value.code == "not_authorised" and actor in exc.value.message


def test_a_rejection_needs_a_reason() -> None:
    with pytest.raises(Invalid) as exc:
        machine.transition(in_state("flagged"), "reject", PROVIDER, 1000, LIMITS, note="  ")
    assert exc.value.code == "resolution_required"


def test_reject_and_correct_record_the_outcome() -> None:
    rejected = machine.transition(in_state("flagged"), "reject", PROVIDER, 1000, LIMITS, note="checked: right")
    assert (rejected.outcome, rejected.resolution, rejected.corrected_event_id) == ("rejected", "checked: right", None)
    corrected = machine.transition(in_state("flagged"), "correct", PROVIDER, 1000, LIMITS, corrected_event_id="e9")
    assert (corrected.outcome, corrected.corrected_event_id) == ("corrected", "e9")


def test_flagging_refreshes_the_recipients() -> None:
    flagged = machine.transition(in_state("accepted"), "flag", "hub", 1000, LIMITS, recipients=["region.js", FILER])
    assert flagged.recipients == tuple(sorted({FILER, OTHER_RECIPIENT, "region.js"}))


def test_archived_has_no_deadline() -> None:
    assert in_state("archived").deadline is None and not in_state("archived").is_open


# ---------------------------------------------------------------- parties and notices

def test_parties_are_filer_provider_recipients_and_operator() -> None:
    obj = filed()
    assert machine.parties(obj) == {FILER, PROVIDER, OTHER_RECIPIENT, "hub"}
    assert machine.may_see(obj, OTHER_RECIPIENT) and not machine.may_see(obj, STRANGER)


def test_notices_go_to_filer_provider_recipients_and_the_operator_once_escalated() -> None:
    obj = filed()
    assert machine.notice_targets(obj) == sorted([FILER, PROVIDER, OTHER_RECIPIENT])
    assert "hub" in machine.notice_targets(machine.escalate(obj, obj.deadline + 1))


# ---------------------------------------------------------------- time limits and escalation

def test_overdue_only_past_the_deadline() -> None:
    obj = filed(now=0)
    assert not machine.overdue(obj, LIMITS.filed) and machine.overdue(obj, LIMITS.filed + 1)
    assert not machine.overdue(in_state("archived"), 10**12)


def test_escalation_once_per_step() -> None:
    obj = filed(now=0)
    assert machine.due_escalations([obj], 500) == []
    [escalated] = machine.due_escalations([obj], 5000)
    assert escalated.escalated and escalated.state == "filed"
    assert escalated.history[-1].actor == "hub" and escalated.history[-1].note.startswith("escalated: accept")
    assert machine.due_escalations([escalated], 9000) == []  # this step is escalated already
    with pytest.raises(Conflict):
        machine.escalate(escalated, 9000)
    accepted = machine.transition(escalated, "accept", "hub", 9000, LIMITS)
    assert accepted.escalated  # sticky: it was escalated once
    assert machine.due_escalations([accepted], 9000 + LIMITS.accepted + 1)  # the next step escalates again


def test_limits_from_settings() -> None:
    from hub.settings import Settings

    limits = Limits.from_settings(Settings(objection_verify_limit=2.5))
    assert limits.flagged == 2500 and limits.filed == 86_400_000


def test_avro_round_trip() -> None:
    from hub.registry import framing
    from hub.registry.files import schema_text

    obj = machine.transition(in_state("flagged"), "reject", PROVIDER, 1000, LIMITS, note="stands")
    encode = framing.make_encoder(7, schema_text("schemas/hub/objection.avsc"))
    _, body = framing.split(encode(obj.to_avro()))
    parsed = framing.parse_schema(__import__("json").loads(schema_text("schemas/hub/objection.avsc")))
    assert Objection.from_avro(framing.decode_body(body, parsed)) == obj
