"""decide(): the exhaustive decision table, the precedence of its checks, and targeted cases.

The table is the product sharing type x grant state x scenario match x requested mode x granted mode x
clearance; ``expected`` is the oracle stating the precedence. A second product switches each grant-level
check on or off independently and asserts that the first failing one (in documented order) is reported.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from hub.catalogue.model import Level, Node, Resource, load_exchange_config
from hub.policy.decision import Decision, Reason, decide, quota_day, visible_entry
from hub.policy.grants import GrantIndex
from hub.policy.masking import Action, field_plan, level_rank, plan_for
from hub.policy.model import MODES, Grant, Mode

ROOT = Path(__file__).resolve().parents[2]
SEED = load_exchange_config(ROOT / "config" / "seed.yaml")
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z
DAY = 86_400_000
SCENARIO = "vaccination-follow-up"
OTHER_SCENARIO = "social-assistance-eligibility"
LEGAL = "《中华人民共和国个人信息保护法》第二十八条"
PUDONG = "district.310115"

SHARINGS = ("unconditional", "authorised", "none")
STATES: tuple[str | None, ...] = (None, "requested", "active", "revoked", "expired", "denied")
CLEARANCES: tuple[Level, ...] = ("L1", "L2", "L3", "L4")


def vaccination(sharing: str = "authorised", **kw: Any) -> Resource:
    """The seed vaccination resource with another sharing type (no locality return unless asked)."""
    base = SEED.resource("municipal.health.vaccination")
    assert base is not None
    data = base.model_dump()
    data.update(sharing=sharing, legal_basis=LEGAL if sharing == "none" else None, return_to_locality=False)
    data.update(kw)
    return Resource.model_validate(data)


def node(node_id: str = PUDONG, clearance: Level = "L2") -> Node:
    return Node(id=node_id, clearance=clearance)


def grant(state: str = "active", **kw: Any) -> Grant:
    base: dict[str, Any] = dict(
        id="g-1", consumer=PUDONG, resource="municipal.health.vaccination", scenario=SCENARIO,
        mode="subscribe", valid_from=T0, state=state, updated_at=T0,
    )
    base.update(kw)
    return Grant.model_validate(base)


# ---------------------------------------------------------------------------------- the decision table


def expected(
    sharing: str, state: str | None, scenario_match: bool, asked: Mode, granted: Mode
) -> tuple[bool, str]:
    """The oracle: not_shared, then no grant, then the grant's state, then scenario, then mode; else ok.

    Clearance is deliberately absent: it never decides allow/deny, only masking.
    """
    if sharing == "none":
        return False, "not_shared"
    if state is None:
        return False, "no_grant"
    if state != "active":
        return False, f"grant_{state}"
    if not scenario_match:
        return False, "scenario_mismatch"
    if asked != granted:
        return False, "mode_mismatch"
    return True, "ok"


TABLE = list(itertools.product(SHARINGS, STATES, (True, False), MODES, MODES, CLEARANCES))


@pytest.mark.parametrize(
    ("sharing", "state", "scenario_match", "asked", "granted", "clearance"), TABLE,
    ids=[
        f"{s}-{st or 'no_grant'}-{'scn' if m else 'other_scn'}-{a}-on-{g}-{c}" for s, st, m, a, g, c in TABLE
    ],
)
def test_decision_table(
    sharing: str, state: str | None, scenario_match: bool, asked: Mode, granted: Mode, clearance: Level
) -> None:
    resource = vaccination(sharing)
    consumer = node(clearance=clearance)
    g = None if state is None else grant(state, mode=granted)
    d = decide(
        resource, consumer, g, scenario=SCENARIO if scenario_match else OTHER_SCENARIO, mode=asked,
        now=T0 + 1000, record_district="310101",
    )
    allowed, reason = expected(sharing, state, scenario_match, asked, granted)
    assert (d.allowed, d.reason) == (allowed, reason), d.detail
    assert d.grant == (g.id if g is not None else None)
    assert (d.legal_basis == LEGAL) is (reason == "not_shared")
    if allowed:  # what the consumer then receives is decided by its clearance
        plan = plan_for(resource, consumer, g)
        kept = {f for f, lvl in resource.field_levels.items() if level_rank(lvl) <= level_rank(clearance)}
        assert set(plan.fields_with(Action.KEEP)) == kept
        assert plan.action("resident_id") is (Action.KEEP if clearance == "L4" else Action.DROP)


def test_the_table_covers_every_combination() -> None:
    assert len(TABLE) == 3 * 6 * 2 * 2 * 2 * 4
    assert {expected(*row[:5])[1] for row in TABLE} == {
        "not_shared", "no_grant", "grant_requested", "grant_revoked", "grant_expired", "grant_denied",
        "scenario_mismatch", "mode_mismatch", "ok",
    }


# ---------------------------------------------------------------------------------- precedence

CHECKS = ("inactive", "early", "scenario", "mode", "fields", "quota", "rows")
CHECK_REASON = {
    "inactive": "grant_revoked", "early": "not_yet_valid", "scenario": "scenario_mismatch",
    "mode": "mode_mismatch", "fields": "field_not_allowed", "quota": "quota_exceeded",
    "rows": "row_out_of_scope",
}
FLAGS = list(itertools.product((False, True), repeat=len(CHECKS)))


FLAG_IDS = ["-".join(c for c, f in zip(CHECKS, fl, strict=True) if f) or "none" for fl in FLAGS]


@pytest.mark.parametrize("flags", FLAGS, ids=FLAG_IDS)
def test_first_failing_check_wins(flags: tuple[bool, ...]) -> None:
    fail = dict(zip(CHECKS, flags, strict=True))
    g = grant(
        "revoked" if fail["inactive"] else "active", mode="call", daily_quota=1, row_scope="own_district",
        allowed_fields=["district"], valid_from=T0,
    )
    d = decide(
        vaccination(), node(), g,
        scenario=OTHER_SCENARIO if fail["scenario"] else SCENARIO,
        mode="subscribe" if fail["mode"] else "call",
        now=T0 - 1 if fail["early"] else T0 + 1,
        fields=["name"] if fail["fields"] else ["district", "record_id"],
        calls_today=1 if fail["quota"] else 0,
        record_district="310101" if fail["rows"] else "310115",
    )
    first = next((CHECK_REASON[c] for c in CHECKS if fail[c]), "ok")
    assert (d.allowed, d.reason) == (first == "ok", first), d.detail


def test_unknown_consumer_comes_first_and_not_shared_beats_any_grant() -> None:
    d = decide(vaccination("none"), None, grant(), scenario=SCENARIO, mode="subscribe", now=T0)
    assert (d.allowed, d.reason) == (False, "unknown_consumer")
    d = decide(vaccination("none"), node(), grant(), scenario=SCENARIO, mode="subscribe", now=T0)
    assert (d.allowed, d.reason, d.legal_basis) == (False, "not_shared", LEGAL)


def test_a_grant_of_someone_else_is_never_honoured() -> None:
    for g in (grant(consumer="district.310101"), grant(resource="municipal.hrss.contribution")):
        d = decide(vaccination(), node(), g, scenario=SCENARIO, mode="subscribe", now=T0)
        assert (d.allowed, d.reason) == (False, "grant_mismatch")


def test_no_grant_on_an_unconditional_resource_says_how_to_get_one() -> None:
    d = decide(vaccination("unconditional"), node(), None, scenario=SCENARIO, mode="subscribe", now=T0)
    assert (d.reason, d.grant) == ("no_grant", None)
    assert "automatically" in d.detail


# ---------------------------------------------------------------------------------- validity window


@pytest.mark.parametrize(
    ("now", "reason"),
    [(T0 - 1, "not_yet_valid"), (T0, "ok"), (T0 + DAY - 1, "ok"), (T0 + DAY, "grant_expired"),
     (T0 + 30 * DAY, "grant_expired")],
)
def test_validity_window(now: int, reason: str) -> None:
    d = decide(vaccination(), node(), grant(valid_to=T0 + DAY), scenario=SCENARIO, mode="subscribe", now=now)
    assert d.reason == reason and d.allowed is (reason == "ok")


def test_open_ended_grant_and_datetime_now() -> None:
    g = grant()
    assert decide(vaccination(), node(), g, scenario=SCENARIO, mode="subscribe", now=T0 + 3650 * DAY).allowed
    late = datetime(2025, 1, 2, tzinfo=UTC)
    d = decide(vaccination(), node(), grant(valid_to=T0 + DAY), scenario=SCENARIO, mode="subscribe", now=late)
    assert d.reason == "grant_expired"
    with pytest.raises(ValueError, match="naive"):
        decide(vaccination(), node(), g, scenario=SCENARIO, mode="subscribe", now=datetime(2025, 1, 2))


def test_stored_state_reason_is_in_the_detail() -> None:
    d = decide(vaccination(), node(), grant("revoked", reason="scenario ended"), scenario=SCENARIO,
               mode="subscribe", now=T0)
    assert d.reason == "grant_revoked" and "scenario ended" in d.detail


# ---------------------------------------------------------------------------------- row scope


@pytest.mark.parametrize(
    ("row_scope", "district", "reason"),
    [("own_district", "310115", "ok"), ("own_district", "310101", "row_out_of_scope"),
     ("own_district", None, "row_out_of_scope"), ("all", "310101", "ok"), ("all", None, "ok")],
)
def test_row_scope(row_scope: str, district: str | None, reason: str) -> None:
    d = decide(vaccination(), node(), grant(row_scope=row_scope), scenario=SCENARIO, mode="subscribe",
               now=T0, record_district=district)
    assert (d.allowed, d.reason) == (reason == "ok", reason)


def test_row_scope_is_skipped_for_request_level_checks() -> None:
    g = grant(row_scope="own_district", mode="call")
    d = decide(vaccination(), node(), g, scenario=SCENARIO, mode="call", now=T0, per_record=False)
    assert d.reason == "ok"


def test_own_district_grant_held_by_a_non_district_covers_nothing() -> None:
    civil = node("municipal.civil-affairs", "L3")
    g = grant(consumer=civil.id, row_scope="own_district")
    d = decide(vaccination(), civil, g, scenario=SCENARIO, mode="subscribe", now=T0, record_district="310115")
    assert d.reason == "row_out_of_scope"


# ---------------------------------------------------------------------------------- locality return


def test_locality_return_delivers_each_district_its_own_rows_without_a_grant() -> None:
    res = vaccination(return_to_locality=True)
    own = decide(res, node(), None, scenario="locality-return", mode="subscribe", now=T0,
                 record_district="310115")
    assert (own.allowed, own.reason) == (True, "locality_return")
    other = decide(res, node(), None, scenario="locality-return", mode="subscribe", now=T0,
                   record_district="310101")
    assert (other.allowed, other.reason) == (False, "no_grant")
    call = decide(res, node(), None, scenario="locality-return", mode="call", now=T0,
                  record_district="310115")
    assert call.reason == "no_grant"
    unknown = decide(res, node(), None, scenario="x", mode="subscribe", now=T0, record_district=None)
    assert unknown.reason == "no_grant"


def test_locality_return_survives_a_revoked_grant_but_never_a_non_shared_resource() -> None:
    res = vaccination(return_to_locality=True)
    d = decide(res, node(), grant("revoked"), scenario=SCENARIO, mode="subscribe", now=T0,
               record_district="310115")
    assert (d.allowed, d.reason, d.grant) == (True, "locality_return", "g-1")
    none = vaccination("none", return_to_locality=True)
    d = decide(none, node(), None, scenario=SCENARIO, mode="subscribe", now=T0, record_district="310115")
    assert d.reason == "not_shared"


def test_locality_return_for_non_districts_does_not_apply() -> None:
    res = vaccination(return_to_locality=True)
    d = decide(res, node("municipal.civil-affairs", "L3"), None, scenario=SCENARIO, mode="subscribe", now=T0,
               record_district="310115")
    assert d.reason == "no_grant"


# ---------------------------------------------------------------------------------- quota and fields


@pytest.mark.parametrize(
    ("quota", "calls", "reason"),
    [(None, 10**9, "ok"), (5, 0, "ok"), (5, 4, "ok"), (5, 5, "quota_exceeded"), (5, 6, "quota_exceeded"),
     (0, 0, "quota_exceeded")],
)
def test_daily_call_quota(quota: int | None, calls: int, reason: str) -> None:
    g = grant(mode="call", daily_quota=quota)
    d = decide(vaccination(), node(), g, scenario=SCENARIO, mode="call", now=T0, calls_today=calls)
    assert (d.allowed, d.reason) == (reason == "ok", reason)


def test_subscriptions_ignore_call_counts() -> None:
    d = decide(vaccination(), node(), grant(), scenario=SCENARIO, mode="subscribe", now=T0, calls_today=10**6)
    assert d.reason == "ok"


def test_quota_day_is_the_china_standard_time_day() -> None:
    assert quota_day(T0 + 16 * 3_600_000 - 1) == date(2025, 1, 1)  # 23:59:59.999 CST
    assert quota_day(T0 + 16 * 3_600_000) == date(2025, 1, 2)  # midnight CST
    assert quota_day(datetime(2024, 12, 31, 16, tzinfo=UTC)) == date(2025, 1, 1)


@pytest.mark.parametrize(
    ("allowed", "fields", "reason"),
    [(None, ["name", "resident_id"], "ok"), (None, ["nope"], "field_not_allowed"),
     (["district"], ["district", "record_id"], "ok"), (["district"], ["name"], "field_not_allowed"),
     (["district"], None, "ok"), (["district"], [], "ok")],
)
def test_requested_fields(allowed: list[str] | None, fields: list[str] | None, reason: str) -> None:
    g = grant(mode="call", allowed_fields=allowed)
    d = decide(vaccination(), node(), g, scenario=SCENARIO, mode="call", now=T0, fields=fields)
    assert d.reason == reason


# ---------------------------------------------------------------------------------- with the index


def test_index_selection_gives_precise_reasons() -> None:
    res = vaccination()
    index = GrantIndex([
        grant(id="sub", mode="subscribe"),
        grant(id="call-old", mode="call", scenario=OTHER_SCENARIO, state="revoked"),
    ])

    def ask(scenario: str, mode: Mode, consumer: str = PUDONG) -> Decision:
        g = index.select(consumer, res.id, scenario=scenario, mode=mode)
        return decide(res, node(consumer), g, scenario=scenario, mode=mode, now=T0)

    assert ask(SCENARIO, "subscribe").reason == "ok"
    assert ask(SCENARIO, "call").reason == "mode_mismatch"
    assert ask(OTHER_SCENARIO, "call").reason == "grant_revoked"
    assert ask(OTHER_SCENARIO, "subscribe").reason == "scenario_mismatch"
    assert ask(SCENARIO, "subscribe", "district.310101").reason == "no_grant"


# ---------------------------------------------------------------------------------- visibility and shape


def test_catalogue_visibility() -> None:
    none = vaccination("none")
    restricted = visible_entry(none, node())
    assert restricted == {
        "id": none.id, "title": none.title, "provider": "municipal.health", "tier": "municipal",
        "sharing": "none", "legal_basis": LEGAL, "shared": False, "visibility": "exists_only",
    }
    assert "field_levels" not in restricted and "subject" not in restricted
    for viewer in (node("municipal.health", "L3"), node("hub", "L4")):
        full = visible_entry(none, viewer)
        assert full["visibility"] == "full" and full["field_levels"] == dict(none.field_levels)
    shared = visible_entry(vaccination("authorised"), node())
    assert shared["visibility"] == "full" and shared["subject"] == "municipal.health.vaccination-value"
    assert visible_entry(vaccination("authorised"), None)["visibility"] == "exists_only"


def test_decision_serialises_and_reasons_are_plain_strings() -> None:
    d = decide(vaccination("none"), node(), None, scenario=SCENARIO, mode="subscribe", now=T0)
    assert d.to_dict() == {
        "allowed": False, "reason": "not_shared", "detail": d.detail, "grant": None, "legal_basis": LEGAL,
    }
    assert d.reason == Reason.NOT_SHARED == "not_shared"
    assert all(r.value == r.value.lower() and " " not in r.value for r in Reason)


def test_plans_follow_decisions_for_the_seed_pudong_subscription() -> None:
    res = SEED.resource("municipal.health.vaccination")
    assert res is not None
    pudong = SEED.node(PUDONG)
    assert pudong is not None and pudong.clearance == "L2"
    plan = field_plan(res, pudong.clearance, None)
    assert plan.action("resident_id") is Action.DROP and plan.action("name") is Action.MASK
