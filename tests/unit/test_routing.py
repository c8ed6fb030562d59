"""Routing decisions: lateral subscribers, locality return, row scope, reporting up, regional peers."""

from __future__ import annotations

import pytest

from hub.catalogue.model import Resource, Subscription
from hub.routing.core import direction_between, kind_for, record_district, route


def vaccination(**overrides: object) -> Resource:
    base: dict[str, object] = dict(
        id="municipal.health.vaccination", provider="municipal.health", tier="municipal",
        subject="municipal.health.vaccination-value", sharing="authorised", primary_key=["record_id"],
        locality_field="district", return_to_locality=True,
    )
    base.update(overrides)
    return Resource.model_validate(base)


def sub(consumer: str, **kw: object) -> Subscription:
    return Subscription.model_validate(
        dict(id=f"s-{consumer}", consumer=consumer, resource="municipal.health.vaccination", scenario="follow-up", **kw)
    )


@pytest.mark.parametrize(
    ("src", "dst", "direction"),
    [
        ("municipal", "district", "down"), ("national", "municipal", "down"), ("district", "municipal", "up"),
        ("municipal", "national", "up"), ("municipal", "municipal", "lateral"), ("district", "district", "lateral"),
        ("municipal", "region", "regional"), ("region", "municipal", "regional"),
    ],
)
def test_direction_between_tiers(src: str, dst: str, direction: str) -> None:
    assert direction_between(src, dst) == direction


def test_kind_follows_direction() -> None:
    assert [kind_for(d) for d in ("down", "lateral", "up", "regional")] == ["deliver", "deliver", "report", "regional"]


def test_lateral_subscriber_and_locality_return() -> None:
    out = route({"district": "310115"}, vaccination(), [sub("municipal.civil-affairs")])
    by_consumer = {d.consumer: d for d in out}
    assert set(by_consumer) == {"municipal.civil-affairs", "district.310115"}
    assert by_consumer["municipal.civil-affairs"].direction == "lateral"
    assert by_consumer["municipal.civil-affairs"].grant == "s-municipal.civil-affairs"
    local = by_consumer["district.310115"]
    assert (local.direction, local.reason, local.kind, local.to_tier) == (
        "down", "locality-return", "deliver", "district"
    )


def test_own_district_scope_only_receives_own_rows() -> None:
    subs = [sub("district.310104", row_scope="own_district")]
    res = vaccination(return_to_locality=False)
    assert route({"district": "310115"}, res, subs) == []
    [d] = route({"district": "310104"}, res, subs)
    assert (d.consumer, d.reason, d.grant) == ("district.310104", "locality-return", "s-district.310104")


def test_district_subscription_and_locality_give_one_delivery() -> None:
    out = route({"district": "310115"}, vaccination(), [sub("district.310115", row_scope="own_district")])
    assert [(d.consumer, d.grant) for d in out] == [("district.310115", "s-district.310115")]


def test_no_locality_return_without_flag_or_subscription() -> None:
    assert route({"district": "310115"}, vaccination(return_to_locality=False), []) == []


@pytest.mark.parametrize("value", ["310102", "999999", "", None, 310115])
def test_retired_unknown_or_missing_district_returns_nowhere(value: object) -> None:
    assert route({"district": value}, vaccination(), []) == []


def test_locality_from_resident_id() -> None:
    res = vaccination(locality_field="resident_id", locality_from_resident_id=True)
    assert record_district({"resident_id": "310115198807061234"}, res) == "310115"
    [d] = route({"resident_id": "310115198807061234"}, res, [])
    assert d.consumer == "district.310115"


def test_report_up_and_regional() -> None:
    out = route({"district": "310115"}, vaccination(return_to_locality=False, report_up=True), [sub("region.js")])
    by_consumer = {d.consumer: d for d in out}
    assert (by_consumer["national"].direction, by_consumer["national"].kind) == ("up", "report")
    assert (by_consumer["region.js"].direction, by_consumer["region.js"].kind) == ("regional", "regional")


def test_provider_never_receives_its_own_records() -> None:
    assert route({"district": "x"}, vaccination(), [sub("municipal.health")]) == []


def test_subscriptions_of_other_resources_are_ignored() -> None:
    other = Subscription(id="o", consumer="municipal.hrss", resource="other", scenario="s")
    assert route({"district": "x"}, vaccination(), [other]) == []


def test_locality_from_resident_id_defaults_to_the_resident_id_field() -> None:
    res = vaccination(locality_field=None, locality_from_resident_id=True)
    assert record_district({"resident_id": "310104195905293861"}, res) == "310104"
