"""The ACL plan: exactly docs/contract.md's rights per node, nothing for the hub, and a diff that only touches nodes."""

from __future__ import annotations

import pytest

from hub.acl.plan import (
    HUB_PRINCIPAL,
    AclSpec,
    allowed,
    desired_acls,
    diff,
    is_managed,
    node_acls,
    node_of,
    nodes_from_control,
    plan_sync,
    principal_of,
)
from hub.contract import AUDIT_TOPIC, feed_topic
from hub.control import operations as ops
from hub.control import tokens
from hub.control.state import ControlState, NodeEntry

PUDONG, XUHUI, HEALTH = "district.310115", "district.310104", "municipal.health"


def test_one_nodes_acls_are_exactly_the_spec() -> None:
    who = "User:district.310115"
    assert node_acls(PUDONG) == {
        AclSpec(who, "TOPIC", "ingress.district.310115", "LITERAL", "WRITE"),
        AclSpec(who, "TOPIC", "call.district.310115.request", "LITERAL", "WRITE"),
        AclSpec(who, "TOPIC", "feed.district.310115", "LITERAL", "READ"),
        AclSpec(who, "TOPIC", "call.district.310115.reply", "LITERAL", "READ"),
        AclSpec(who, "TOPIC", "quarantine.district.310115", "LITERAL", "READ"),
        AclSpec(who, "TOPIC", "objection.district.310115", "LITERAL", "READ"),
        AclSpec(who, "GROUP", "district.310115.", "PREFIXED", "READ"),
    }


def test_only_literal_topic_acls_and_one_prefixed_group_acl() -> None:
    acls = desired_acls([PUDONG, XUHUI, HEALTH, "national", "region.js"])
    assert all(a.pattern == "LITERAL" for a in acls if a.resource_type == "TOPIC")
    assert all(a.pattern == "PREFIXED" and a.name.endswith(".") for a in acls if a.resource_type == "GROUP")
    assert all(a.permission == "ALLOW" and a.host == "*" for a in acls)
    assert {a.operation for a in acls} == {"READ", "WRITE"}
    assert len(acls) == 5 * 7


def test_the_hub_gets_no_acls_and_is_not_managed() -> None:
    assert desired_acls(["hub", PUDONG]) == node_acls(PUDONG)
    assert not is_managed(HUB_PRINCIPAL) and node_of(HUB_PRINCIPAL) is None
    assert not is_managed("User:hub-controller") and not is_managed("User:ops-tool")
    assert not is_managed("Group:district.310115") and not is_managed("User:*")
    assert is_managed(principal_of(PUDONG)) and node_of("User:municipal.health") == HEALTH
    with pytest.raises(ValueError):
        node_acls("hub")
    with pytest.raises(ValueError):
        node_acls("District.310115")


@pytest.mark.parametrize(
    ("operation", "rtype", "name", "expected"),
    [
        ("READ", "TOPIC", "feed.district.310115", True),
        ("DESCRIBE", "TOPIC", "feed.district.310115", True),  # implied by READ
        ("WRITE", "TOPIC", "feed.district.310115", False),  # only the hub writes feeds
        ("READ", "TOPIC", "feed.district.310104", False),
        ("READ", "TOPIC", "feed.district.3101150", False),  # literal: no longer names
        ("WRITE", "TOPIC", "ingress.district.310115", True),
        ("DESCRIBE", "TOPIC", "ingress.district.310115", True),  # implied by WRITE
        ("READ", "TOPIC", "ingress.district.310115", False),
        ("WRITE", "TOPIC", "ingress.municipal.health", False),
        ("WRITE", "TOPIC", "call.district.310115.request", True),
        ("READ", "TOPIC", "call.district.310115.reply", True),
        ("WRITE", "TOPIC", "call.district.310115.reply", False),
        ("READ", "TOPIC", AUDIT_TOPIC, False),
        ("READ", "GROUP", "district.310115.app", True),
        ("READ", "GROUP", "district.310115.", True),
        ("READ", "GROUP", "district.310115", False),  # the bare id is not under the prefix
        ("READ", "GROUP", "district.3101150.app", False),
        ("READ", "GROUP", "district.310104.x", False),
        ("CREATE", "TOPIC", "ingress.district.310115", False),
        ("DELETE", "TOPIC", "ingress.district.310115", False),
    ],
)
def test_what_pudong_may_do(operation: str, rtype: str, name: str, expected: bool) -> None:
    acls = desired_acls([PUDONG, XUHUI, HEALTH])
    assert allowed(acls, "User:district.310115", operation, rtype, name) is expected


def test_trailing_dot_keeps_health_out_of_healthcare_groups() -> None:
    acls = desired_acls([HEALTH, "municipal.healthcare"])
    assert allowed(acls, "User:municipal.health", "READ", "GROUP", "municipal.health.app")
    assert not allowed(acls, "User:municipal.health", "READ", "GROUP", "municipal.healthcare.app")
    assert not allowed(acls, "User:municipal.health", "READ", "TOPIC", "feed.municipal.healthcare")
    assert allowed(acls, "User:municipal.healthcare", "READ", "GROUP", "municipal.healthcare.app")
    assert not allowed(acls, "User:municipal.healthcare", "READ", "GROUP", "municipal.health.app")


def test_municipal_health_reads_no_feed_but_its_own() -> None:
    nodes = [HEALTH, PUDONG, XUHUI, "national", "municipal.hrss", "region.zj"]
    acls = desired_acls(nodes)
    readable = [n for n in nodes if allowed(acls, "User:municipal.health", "READ", "TOPIC", feed_topic(n))]
    assert readable == [HEALTH]


def test_diff_from_nothing_creates_everything() -> None:
    want = desired_acls([PUDONG, HEALTH])
    assert diff(set(), want) == (want, set())


def test_diff_is_empty_when_in_step() -> None:
    want = desired_acls([PUDONG, HEALTH])
    assert diff(set(want), want) == (set(), set())


def test_diff_removes_a_removed_nodes_acls() -> None:
    before = desired_acls([PUDONG, XUHUI, HEALTH])
    to_create, to_delete = diff(before, desired_acls([PUDONG, HEALTH]))
    assert to_create == set() and to_delete == node_acls(XUHUI)


def test_diff_removes_shrunk_or_extra_rights_of_nodes() -> None:
    extra = AclSpec("User:district.310115", "TOPIC", "feed.district.310104", "LITERAL", "READ")
    wider = AclSpec("User:district.310115", "GROUP", "district.", "PREFIXED", "READ")
    other_host = AclSpec("User:district.310115", "TOPIC", "feed.district.310115", "LITERAL", "READ", host="10.0.0.1")
    deny = AclSpec("User:district.310115", "TOPIC", "feed.district.310115", "LITERAL", "READ", "DENY")
    current = desired_acls([PUDONG]) | {extra, wider, other_host, deny}
    to_create, to_delete = diff(current, desired_acls([PUDONG]))
    assert to_create == set() and to_delete == {extra, wider, other_host, deny}


def test_diff_never_touches_unmanaged_principals() -> None:
    keep = {
        AclSpec(HUB_PRINCIPAL, "TOPIC", "*", "LITERAL", "ALL"),
        AclSpec("User:ops-tool", "TOPIC", AUDIT_TOPIC, "LITERAL", "READ"),
        AclSpec("User:*", "TOPIC", "public.", "PREFIXED", "READ"),
        AclSpec("User:hub-controller", "CLUSTER", "kafka-cluster", "LITERAL", "CLUSTER_ACTION"),
    }
    to_create, to_delete = diff(keep | node_acls(XUHUI), desired_acls([PUDONG]))
    assert to_delete == node_acls(XUHUI) and to_create == node_acls(PUDONG)


def test_diff_refuses_to_plan_for_unmanaged_principals() -> None:
    with pytest.raises(ValueError, match="does not manage"):
        diff(set(), {AclSpec(HUB_PRINCIPAL, "TOPIC", "x", "LITERAL", "READ")})


def test_deny_wins_in_the_model() -> None:
    acls = desired_acls([PUDONG]) | {
        AclSpec("User:district.310115", "TOPIC", "feed.district.310115", "LITERAL", "READ", "DENY")}
    assert not allowed(acls, "User:district.310115", "READ", "TOPIC", "feed.district.310115")


# ---------------------------------------------------------------- the sync plan from the control plane

NOW = 1_700_000_000_000
SCRAM = {"SCRAM-SHA-256"}


def control_plane() -> ControlState:
    """Seeded with hub, Pudong, Xuhui and health; then national registered and Xuhui removed (through the ops
    behind POST and DELETE /v1/nodes): what hub.nodes says at run time, not what the seed file says."""
    state = ControlState()
    for node_id in ("hub", PUDONG, XUHUI, HEALTH):
        state.apply_node(node_id, NodeEntry(id=node_id, created_at=NOW, updated_at=NOW))
    national = ops.register_node(state, ops.NodeSpec(id="national"), "hub", NOW + 1, tokens.issue())
    state.apply_node("national", national)
    state.apply_node(XUHUI, ops.remove_node(state, XUHUI, "hub", NOW + 2))
    return state


def test_the_nodes_come_from_the_control_plane_without_removed_ones_or_the_hub() -> None:
    state = control_plane()
    assert nodes_from_control(state.nodes.values()) == sorted([PUDONG, HEALTH, "national"])
    assert nodes_from_control([]) == []


def test_the_plan_gives_a_node_registered_at_run_time_its_user_and_acls_and_takes_a_removed_nodes_away() -> None:
    nodes = nodes_from_control(control_plane().nodes.values())
    # the broker as the last sync left it: the seed's four nodes, plus the hub's own user and an operator tool
    users = {n: SCRAM for n in (PUDONG, XUHUI, HEALTH, "hub", "ops-tool")}
    foreign = AclSpec("User:ops-tool", "TOPIC", "hub.audit", "LITERAL", "READ")
    current = desired_acls([PUDONG, XUHUI, HEALTH]) | {foreign}
    plan = plan_sync(nodes, users, current)
    assert plan.nodes == tuple(sorted([PUDONG, HEALTH, "national"]))
    assert plan.users_missing == ("national",) and plan.users_present == (PUDONG, HEALTH)
    assert plan.users_deleted == (XUHUI,)  # not hub, not ops-tool: not the hub's to remove
    assert plan.acls_created == node_acls("national") and plan.acls_deleted == node_acls(XUHUI)
    assert plan.acls_kept == 14
    # once applied, the same control plane plans nothing
    applied = (current - node_acls(XUHUI)) | node_acls("national")
    again = plan_sync(nodes, {n: SCRAM for n in (PUDONG, HEALTH, "national", "hub")}, applied)
    assert (again.users_missing, again.users_deleted, again.acls_created, again.acls_deleted) == ((), (), set(), set())


def test_a_scoped_plan_touches_only_the_changed_nodes() -> None:
    extra = AclSpec(principal_of(PUDONG), "TOPIC", f"feed.{XUHUI}", "LITERAL", "READ")  # someone else's oddity
    current = desired_acls([PUDONG, XUHUI]) | {extra}
    users = {PUDONG: SCRAM, XUHUI: SCRAM, "hub": SCRAM}
    # national registered: only its user and ACLs are planned; Pudong's extra and everyone else stay
    registered = plan_sync(["national"], users, current, scope=["national"])
    assert registered.nodes == ("national",) and registered.users_missing == ("national",)
    assert registered.acls_created == node_acls("national") and registered.acls_deleted == set()
    assert registered.users_deleted == ()
    # Xuhui removed: in scope and not live, so its user and ACLs go, and nothing else
    removed = plan_sync([PUDONG], users, current, scope=[XUHUI])
    assert removed.nodes == () and removed.users_deleted == (XUHUI,)
    assert removed.acls_deleted == node_acls(XUHUI) and removed.acls_created == set()
    # the live list may be longer than the scope: only the scope counts
    assert plan_sync([PUDONG, XUHUI, "national"], users, current, scope=[XUHUI]).acls_created == set()
    # the full plan (no scope) removes the extra and Xuhui
    full = plan_sync([PUDONG], users, current)
    assert full.acls_deleted == node_acls(XUHUI) | {extra} and full.users_deleted == (XUHUI,)


def test_the_plan_refuses_what_is_not_a_node_id() -> None:
    with pytest.raises(ValueError, match="not node ids"):
        plan_sync(["Region JS"], {}, set())
    with pytest.raises(ValueError, match="not node ids"):
        plan_sync([], {}, set(), scope=["User:x"])
    assert plan_sync(["hub"], {"hub": SCRAM}, set()).nodes == ()  # the operator is skipped, never deleted
