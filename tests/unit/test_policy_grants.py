"""The grant lifecycle state machine, the Grant/Scenario models and the hot-path GrantIndex."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import ValidationError

from hub.catalogue.model import Node, Resource
from hub.policy.grants import (
    GrantError,
    GrantIndex,
    InvalidRequest,
    InvalidTransition,
    NotAuthorised,
    UnknownScenario,
    approve,
    deny,
    effective_state,
    expire,
    request,
    revoke,
)
from hub.policy.model import Grant, Mode, Scenario, to_epoch_ms

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
DAY = 86_400_000
PROVIDER = "municipal.health"
LEGAL = "《中华人民共和国精神卫生法》第四条"
SCENARIOS = {
    "vaccination-follow-up": Scenario(
        id="vaccination-follow-up", title="疫苗接种随访", legal_basis="疫苗管理法"
    ),
    "social-assistance-eligibility": Scenario(
        id="social-assistance-eligibility", legal_basis="社会救助暂行办法"
    ),
}
CIVIL = Node(id="municipal.civil-affairs", clearance="L3")
PUDONG = Node(id="district.310115", clearance="L2")


def resource(sharing: str = "authorised", **kw: Any) -> Resource:
    return Resource.model_validate(dict(
        id="municipal.health.vaccination", provider=PROVIDER, tier="municipal",
        subject="municipal.health.vaccination-value", sharing=sharing,
        legal_basis=LEGAL if sharing == "none" else None,
        field_levels={"record_id": "L1", "resident_id": "L4", "name": "L3", "district": "L1"},
        primary_key=["record_id"], locality_field="district", **kw,
    ))


def ask(res: Resource | None = None, consumer: Node = CIVIL, mode: Mode = "subscribe", **kw: Any) -> Grant:
    res = res or resource()
    return request(consumer, res, "vaccination-follow-up", mode, scenarios=SCENARIOS, now=T0, **kw)


# ------------------------------------------------------------------------------------------ request


def test_unconditional_request_is_approved_automatically() -> None:
    g = ask(resource("unconditional"))
    assert (g.state, g.decided_by, g.requested_by) == ("active", "hub", CIVIL.id)
    assert g.reason and g.reason.startswith("auto_approved")
    assert (g.valid_from, g.requested_at, g.updated_at, g.valid_to) == (T0, T0, T0, None)


def test_authorised_request_waits_for_the_provider() -> None:
    g = ask(reason="follow up missed second doses")
    assert (g.state, g.decided_by, g.reason) == ("requested", None, "follow up missed second doses")


def test_request_on_a_non_shared_resource_is_denied_with_its_legal_basis() -> None:
    g = ask(resource("none"))
    assert (g.state, g.decided_by) == ("denied", "hub")
    assert g.reason == f"not_shared: {LEGAL}"


def test_unknown_scenario_is_an_error() -> None:
    with pytest.raises(UnknownScenario) as err:
        request(CIVIL, resource(), "fishing-trip", "subscribe", scenarios=SCENARIOS, now=T0)
    assert err.value.code == "unknown_scenario"
    assert "vaccination-follow-up" in str(err.value)
    assert err.value.to_dict()["code"] == "unknown_scenario"


def test_only_the_consumer_or_the_hub_operator_may_request() -> None:
    assert ask(requested_by="hub").requested_by == "hub"
    with pytest.raises(NotAuthorised) as err:
        ask(requested_by="district.310101")
    assert err.value.code == "not_authorised"


@pytest.mark.parametrize(
    ("kwargs", "consumer", "code"),
    [
        ({"allowed_fields": ["nope"]}, CIVIL, "unknown_field"),
        ({"allowed_fields": []}, CIVIL, "unknown_field"),
        ({"row_scope": "own_district"}, CIVIL, "invalid_row_scope"),
        ({"daily_quota": 10}, CIVIL, "invalid_quota"),  # subscribe grant
        ({"valid_from": T0, "valid_to": T0}, CIVIL, "invalid_window"),
        ({}, Node(id=PROVIDER), "own_resource"),
    ],
)
def test_malformed_requests(kwargs: dict[str, Any], consumer: Node, code: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        ask(consumer=consumer, **kwargs)
    assert err.value.code == code
    assert isinstance(err.value, GrantError)


def test_request_options_are_carried_into_the_grant() -> None:
    g = ask(consumer=PUDONG, mode="call", allowed_fields=["district", "name"], row_scope="own_district",
            valid_from=datetime(2025, 2, 1, tzinfo=UTC), valid_to=T0 + 90 * DAY, daily_quota=100)
    assert g.allowed_fields == ("district", "name")
    assert (g.row_scope, g.mode, g.daily_quota) == ("own_district", "call", 100)
    assert g.valid_from == T0 + 31 * DAY and g.valid_to == T0 + 90 * DAY


def test_grant_ids_are_deterministic_unless_given() -> None:
    assert ask().id == ask().id
    assert ask().id != ask(mode="call").id
    assert ask(grant_id="g-custom").id == "g-custom"


# ------------------------------------------------------------------------------------------ transitions


def test_provider_or_hub_approves_a_requested_grant() -> None:
    g = ask()
    for actor in (PROVIDER, "hub"):
        active = approve(g, resource(), actor, now=T0 + 5)
        assert (active.state, active.decided_by, active.updated_at) == ("active", actor, T0 + 5)
        assert active.id == g.id
    assert g.state == "requested"  # versions, not mutation


@pytest.mark.parametrize("actor", [CIVIL.id, "district.310115", "municipal.hrss"])
def test_nobody_else_approves_or_denies(actor: str) -> None:
    with pytest.raises(NotAuthorised):
        approve(ask(), resource(), actor, now=T0)
    with pytest.raises(NotAuthorised):
        deny(ask(), resource(), actor, now=T0, reason="no")


def test_approve_and_deny_only_from_requested() -> None:
    active = approve(ask(), resource(), PROVIDER, now=T0)
    with pytest.raises(InvalidTransition) as err:
        approve(active, resource(), PROVIDER, now=T0)
    assert err.value.code == "invalid_transition"
    with pytest.raises(InvalidTransition):
        deny(active, resource(), PROVIDER, now=T0, reason="changed my mind")


def test_deny_needs_a_reason_and_records_it() -> None:
    with pytest.raises(InvalidRequest) as err:
        deny(ask(), resource(), PROVIDER, now=T0, reason="  ")
    assert err.value.code == "reason_required"
    denied = deny(ask(), resource(), PROVIDER, now=T0 + 1, reason="scenario does not need names")
    assert (denied.state, denied.decided_by) == ("denied", PROVIDER)
    assert denied.reason == "scenario does not need names"


def test_approving_a_request_past_its_window_fails() -> None:
    g = ask(valid_to=T0 + DAY)
    with pytest.raises(InvalidTransition):
        approve(g, resource(), PROVIDER, now=T0 + DAY)


def test_a_request_on_a_resource_that_became_non_shared_cannot_be_approved() -> None:
    with pytest.raises(InvalidTransition) as err:
        approve(ask(), resource("none"), PROVIDER, now=T0)
    assert err.value.code == "not_shared"


def test_transitions_check_the_resource() -> None:
    other = resource().model_copy(update={"id": "municipal.health.other"})
    with pytest.raises(InvalidRequest) as err:
        approve(ask(), other, PROVIDER, now=T0)
    assert err.value.code == "resource_mismatch"


@pytest.mark.parametrize("actor", [PROVIDER, "hub", CIVIL.id])
def test_revoke_by_provider_hub_or_the_consumer_itself(actor: str) -> None:
    active = ask(resource("unconditional"))
    revoked = revoke(active, resource("unconditional"), actor, now=T0 + 9, reason="scenario ended")
    assert (revoked.state, revoked.decided_by, revoked.reason) == ("revoked", actor, "scenario ended")


def test_revoke_rules() -> None:
    res = resource("unconditional")
    active = ask(res)
    with pytest.raises(NotAuthorised):
        revoke(active, res, "district.310101", now=T0, reason="x")
    with pytest.raises(InvalidRequest):
        revoke(active, res, PROVIDER, now=T0, reason="")
    with pytest.raises(InvalidTransition):
        revoke(ask(), resource(), PROVIDER, now=T0, reason="not active yet")
    revoked = revoke(active, res, PROVIDER, now=T0, reason="x")
    with pytest.raises(InvalidTransition):
        revoke(revoked, res, PROVIDER, now=T0, reason="again")


def test_effective_state_expires_active_and_requested_grants_at_valid_to() -> None:
    active = ask(resource("unconditional"), valid_to=T0 + DAY)
    assert effective_state(active, T0 + DAY - 1) == "active"
    assert effective_state(active, T0 + DAY) == "expired"
    assert effective_state(ask(valid_to=T0 + DAY), T0 + DAY) == "expired"
    revoked = revoke(active, resource("unconditional"), PROVIDER, now=T0 + 1, reason="x")
    assert effective_state(revoked, T0 + 2 * DAY) == "revoked"
    assert effective_state(ask(resource("unconditional")), T0 + 10_000 * DAY) == "active"  # open-ended
    assert effective_state(active, datetime(2025, 1, 2, tzinfo=UTC)) == "expired"


def test_expire_writes_the_expiry_down_only_when_due() -> None:
    active = ask(resource("unconditional"), valid_to=T0 + DAY)
    with pytest.raises(InvalidTransition) as err:
        expire(active, now=T0)
    assert err.value.code == "not_expired"
    expired = expire(active, now=T0 + DAY)
    assert (expired.state, expired.decided_by, expired.updated_at) == ("expired", "hub", T0 + DAY)
    with pytest.raises(InvalidTransition):
        expire(expired, now=T0 + 2 * DAY)
    with pytest.raises(InvalidTransition):
        revoke(active, resource("unconditional"), PROVIDER, now=T0 + DAY, reason="too late")


# ------------------------------------------------------------------------------------------ models


def grant(**kw: Any) -> Grant:
    base: dict[str, Any] = dict(
        id="g-1", consumer=CIVIL.id, resource="municipal.health.vaccination",
        scenario="vaccination-follow-up",
        mode="subscribe", valid_from=T0, state="active", updated_at=T0,
    )
    base.update(kw)
    return Grant.model_validate(base)


def test_timestamps_are_epoch_ms_utc_from_any_aware_input() -> None:
    cst = timezone(timedelta(hours=8))
    g = grant(
        valid_from=datetime(2025, 1, 1, 8, tzinfo=cst), valid_to="2025-01-02T00:00:00Z", updated_at=str(T0)
    )
    assert (g.valid_from, g.valid_to, g.updated_at) == (T0, T0 + DAY, T0)
    assert to_epoch_ms(datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)) == -1
    with pytest.raises(ValidationError, match="naive"):
        grant(valid_from=datetime(2025, 1, 1))
    with pytest.raises(ValidationError):
        grant(valid_from=True)
    with pytest.raises(ValidationError):
        grant(valid_from="next tuesday")


@pytest.mark.parametrize(
    "kw",
    [
        {"valid_to": T0}, {"daily_quota": 5}, {"daily_quota": -1, "mode": "call"}, {"allowed_fields": []},
        {"allowed_fields": ["a", "a"]}, {"allowed_fields": "name"}, {"consumer": "district.31"},
        {"scenario": "Not A Slug"}, {"state": "pending"}, {"mode": "stream"}, {"row_scope": "mine"},
        {"decided_by": "someone"}, {"extra": 1},
    ],
)
def test_invalid_grants_are_rejected(kw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        grant(**kw)


def test_grants_are_frozen() -> None:
    g = grant()
    with pytest.raises(ValidationError):
        g.state = "revoked"  # type: ignore[misc]


def test_scenario_model() -> None:
    assert Scenario(id="vaccination-follow-up", legal_basis="x").title == ""
    with pytest.raises(ValidationError):
        Scenario(id="Vaccination", legal_basis="x")
    with pytest.raises(ValidationError):
        Scenario(id="vaccination", legal_basis="")


def test_avro_round_trip_through_the_grant_event_schema() -> None:
    schema = fastavro.parse_schema(json.loads((ROOT / "schemas/hub/grant_event.avsc").read_text()))
    for g in (
        grant(),
        grant(allowed_fields=["name"], valid_to=T0 + DAY, daily_quota=3, mode="call", reason="r",
              decided_by="hub", requested_by=CIVIL.id, requested_at=T0 - 1),
    ):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, g.to_avro())
        buf.seek(0)
        assert Grant.from_avro(fastavro.schemaless_reader(buf, schema)) == g
    assert grant().to_avro()["allowed_fields"] == []


# ------------------------------------------------------------------------------------------ GrantIndex


def test_index_keeps_the_latest_version_per_id() -> None:
    v1 = grant(updated_at=T0)
    v2 = grant(state="revoked", updated_at=T0 + 1)
    for order in ([v1, v2], [v2, v1]):
        index = GrantIndex(order)
        assert len(index) == 1 and index.get("g-1") == v2
        assert index.active_for_resource("municipal.health.vaccination") == ()
    tie = grant(reason="same time, later in list")
    assert GrantIndex([v1, tie]).get("g-1") == tie


def test_index_active_lookups() -> None:
    a = grant(id="a")
    b = grant(id="b", consumer=PUDONG.id, valid_to=T0 + DAY)
    c = grant(id="c", state="requested", consumer="district.310101")
    d = grant(id="d", resource="municipal.hrss.contribution")
    index = GrantIndex([a, b, c, d])
    assert set(index.active_for_resource("municipal.health.vaccination")) == {a, b}
    assert index.active_for_resource("municipal.health.vaccination", now=T0 + DAY) == (a,)
    assert index.active_for_resource("municipal.health.vaccination", now=T0 - 1) == ()
    assert index.active_for_resource("nothing") == ()
    assert index.lookup(PUDONG.id, "municipal.health.vaccination", "subscribe") == (b,)
    assert index.lookup(PUDONG.id, "municipal.health.vaccination", "call") == ()
    assert set(index) == {a, b, c, d}


def test_active_for_record_skips_other_districts_own_district_grants() -> None:
    res = "municipal.health.vaccination"
    everyone = grant(id="all")
    pudong = grant(id="pudong", consumer=PUDONG.id, row_scope="own_district")
    huangpu = grant(id="huangpu", consumer="district.310101", row_scope="own_district")
    revoked = grant(id="gone", consumer="district.310104", row_scope="own_district", state="revoked")
    index = GrantIndex([everyone, pudong, huangpu, revoked])
    assert index.active_for_record(res, "310115") == (everyone, pudong)
    assert index.active_for_record(res, "310101") == (everyone, huangpu)
    assert index.active_for_record(res, "310104") == (everyone,)
    assert index.active_for_record(res, None) == (everyone,)
    assert index.active_for_record("other", "310115") == ()


def test_select_prefers_the_most_specific_grant() -> None:
    res = "municipal.health.vaccination"
    old = grant(id="old", state="revoked", updated_at=T0)
    new_req = grant(id="new", state="requested", updated_at=T0 + 5)
    call = grant(id="call", mode="call", scenario="social-assistance-eligibility")
    other_scn = grant(id="other", scenario="social-assistance-eligibility")
    index = GrantIndex([old, new_req, call, other_scn])
    # exact scenario + mode, none active: the newest
    assert index.select(CIVIL.id, res, scenario="vaccination-follow-up", mode="subscribe") == new_req
    # exact + active wins over newer inactive
    active = grant(id="act", updated_at=T0 + 1)
    with_active = index.with_grant(active)
    assert with_active.select(CIVIL.id, res, scenario="vaccination-follow-up", mode="subscribe") == active
    # exact match beats the same scenario in the other mode
    found = index.select(CIVIL.id, res, scenario="social-assistance-eligibility", mode="subscribe")
    assert found == other_scn
    # same scenario, other mode
    only_call = GrantIndex([call])
    assert only_call.select(CIVIL.id, res, scenario="social-assistance-eligibility", mode="subscribe") == call
    # other scenario, same mode
    assert only_call.select(CIVIL.id, res, scenario="vaccination-follow-up", mode="call") == call
    assert only_call.select(PUDONG.id, res, scenario="vaccination-follow-up", mode="call") is None


def test_with_grant_returns_a_new_index() -> None:
    index = GrantIndex([grant()])
    revoked = grant(state="revoked", updated_at=T0 + 1)
    newer = index.with_grant(revoked)
    assert index.get("g-1").state == "active" and newer.get("g-1").state == "revoked"
    assert newer.active_for_resource("municipal.health.vaccination") == ()
