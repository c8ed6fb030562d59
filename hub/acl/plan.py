"""Which ACLs each node must have, and how to get from the broker's current ACLs there (pure, no I/O).

docs/contract.md (Topics): a node writes only ``ingress.<node>`` and ``call.<node>.request``; it reads only
``feed.<node>``, ``call.<node>.reply``, ``quarantine.<node>`` and ``objection.<node>`` (LITERAL ACLs on these
exact names), and it may use only its own consumer groups, those named ``<node>.`` + anything (one PREFIXED
ACL, trailing dot included, so ``municipal.health.`` never matches ``municipal.healthcare.x``).

Operations: ``WRITE`` on a topic and ``READ`` on a topic or group each imply ``DESCRIBE`` in Kafka's
authorizers, which is all a producer (metadata, idempotent produce since KIP-679) or a consumer (metadata,
list/fetch/commit offsets, join/sync/heartbeat) needs, so no separate ``DESCRIBE`` ACLs are granted.
Nothing is granted on the cluster, on transactional ids, or to create/delete/alter any topic.

Which nodes: the live nodes of the control plane (``hub.nodes``: every entry not flagged removed, without the
operator), :func:`nodes_from_control`; :func:`plan_sync` turns them and the broker's current users and ACLs
into what to create and delete, for every node principal or only for some (``scope``: the nodes that changed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from hub.catalogue.model import NODE_ID
from hub.contract import (
    OPERATOR,
    call_reply_topic,
    call_request_topic,
    feed_topic,
    ingress_topic,
    objection_topic,
    quarantine_topic,
)

HUB_PRINCIPAL = f"User:{OPERATOR}"
"""The hub's own privileged principal: never planned for, never deleted (it is a super user anyway)."""

USER_PREFIX = "User:"


@dataclass(frozen=True, order=True)
class AclSpec:
    """One ACL binding as the hub reasons about it (strings, so the plan needs no Kafka client)."""

    principal: str
    resource_type: str
    name: str
    pattern: str
    operation: str
    permission: str = "ALLOW"
    host: str = "*"

    def __str__(self) -> str:
        return (f"{self.principal} {self.permission} {self.operation} {self.resource_type}:{self.pattern}:"
                f"{self.name}" + ("" if self.host == "*" else f" from {self.host}"))

    def to_json(self) -> dict[str, str]:
        return {"principal": self.principal, "resource_type": self.resource_type, "name": self.name,
                "pattern": self.pattern, "operation": self.operation, "permission": self.permission,
                "host": self.host}


def principal_of(node_id: str) -> str:
    """A node's Kafka principal: its SCRAM user name is its node id."""
    return f"{USER_PREFIX}{node_id}"


def node_of(principal: str) -> str | None:
    """The node id behind a principal the hub manages, else None (the hub itself, operators' own users...)."""
    if not principal.startswith(USER_PREFIX) or principal == HUB_PRINCIPAL:
        return None
    name = principal[len(USER_PREFIX):]
    return name if NODE_ID.match(name) and name != OPERATOR else None


def is_managed(principal: str) -> bool:
    """The hub owns every ACL of node principals (``User:<node id>``), and no other principal's."""
    return node_of(principal) is not None


def node_acls(node_id: str) -> set[AclSpec]:
    """The complete set of ACLs one node gets."""
    if node_of(principal_of(node_id)) is None:
        raise ValueError(f"{node_id!r} is not a node id the hub grants ACLs to")
    who = principal_of(node_id)
    writes = [ingress_topic(node_id), call_request_topic(node_id)]
    reads = [feed_topic(node_id), call_reply_topic(node_id), quarantine_topic(node_id), objection_topic(node_id)]
    acls = {AclSpec(who, "TOPIC", topic, "LITERAL", "WRITE") for topic in writes}
    acls |= {AclSpec(who, "TOPIC", topic, "LITERAL", "READ") for topic in reads}
    acls.add(AclSpec(who, "GROUP", f"{node_id}.", "PREFIXED", "READ"))
    return acls


def desired_acls(node_ids: Iterable[str]) -> set[AclSpec]:
    """Every node's ACLs; the hub's own node id (``hub``) is skipped: its principal is a super user."""
    acls: set[AclSpec] = set()
    for node in node_ids:
        if node != OPERATOR:
            acls |= node_acls(node)
    return acls


def diff(current: Iterable[AclSpec], desired: Iterable[AclSpec]) -> tuple[set[AclSpec], set[AclSpec]]:
    """``(to_create, to_delete)``: create what is desired and missing; delete what the hub manages and no
    longer wants (removed nodes, shrunk rights, hand-added extras on node principals). ACLs of principals the
    hub does not manage (``User:hub``, operators' tools) are never deleted."""
    have = set(current)
    want = set(desired)
    unmanaged = sorted(str(a) for a in want if not is_managed(a.principal))
    if unmanaged:
        raise ValueError(f"refusing to plan ACLs for principals the hub does not manage: {unmanaged}")
    to_create = want - have
    to_delete = {a for a in have - want if is_managed(a.principal)}
    return to_create, to_delete


class NodeRecord(Protocol):
    """What the plan reads of a control-plane node (``hub.control.state.NodeEntry``)."""

    @property
    def id(self) -> str: ...

    @property
    def removed(self) -> bool: ...


def nodes_from_control(nodes: Iterable[NodeRecord]) -> list[str]:
    """The node ids that get a Kafka user and ACLs: every node of the control plane not flagged removed, except
    the operator (a super user). A removed node keeps its entry on ``hub.nodes``, so it is simply left out and
    the diff takes its user and ACLs away."""
    return sorted({n.id for n in nodes if not n.removed and n.id != OPERATOR})


SCRAM_MECHANISM = "SCRAM-SHA-256"


@dataclass(frozen=True)
class SyncPlan:
    """What to change on the broker (pure; ``hub.acl.sync`` applies it)."""

    nodes: tuple[str, ...]  # the nodes that keep (or get) a user and ACLs, within the scope
    users_missing: tuple[str, ...]  # nodes without a SCRAM-SHA-256 credential: to create
    users_present: tuple[str, ...]  # nodes that have one
    users_deleted: tuple[str, ...]  # managed users of nodes no longer live: to delete (every mechanism)
    acls_created: frozenset[AclSpec]
    acls_deleted: frozenset[AclSpec]
    acls_kept: int


def plan_sync(
    node_ids: Iterable[str], users: Mapping[str, Iterable[str]], acls: Iterable[AclSpec],
    scope: Iterable[str] | None = None,
) -> SyncPlan:
    """From the live node ids, the broker's SCRAM users (user -> mechanisms) and ACLs, what to change.

    ``scope`` None: every node principal is brought in step (``hub acl sync``): users and ACLs of principals
    that are not live nodes are deleted. ``scope`` given: only those nodes' users and ACLs are looked at (the
    follower, after a node was registered or removed): a node of the scope in ``node_ids`` gets exactly its
    user and ACLs, one not in ``node_ids`` loses them, and every other principal is left alone.
    Users and ACLs of principals the hub does not manage (``User:hub``, operators' tools) are never touched.
    """
    wanted = set(node_ids) - {OPERATOR}
    limit = None if scope is None else set(scope) - {OPERATOR}
    if limit is not None:
        wanted &= limit
    bad = sorted(n for n in wanted | (limit or set()) if node_of(principal_of(n)) is None)
    if bad:
        raise ValueError(f"not node ids the hub grants ACLs to: {bad}")

    def in_scope(node: str | None) -> bool:
        return node is not None and (limit is None or node in limit)

    nodes = tuple(sorted(wanted))
    have = {u: set(m) for u, m in users.items()}
    missing = tuple(n for n in nodes if SCRAM_MECHANISM not in have.get(n, set()))
    deleted = tuple(sorted(u for u in have if in_scope(node_of(principal_of(u))) and u not in wanted))
    current = {a for a in acls if limit is None or in_scope(node_of(a.principal))}
    desired = desired_acls(nodes)
    to_create, to_delete = diff(current, desired)
    return SyncPlan(
        nodes=nodes, users_missing=missing, users_present=tuple(n for n in nodes if n not in missing),
        users_deleted=deleted, acls_created=frozenset(to_create), acls_deleted=frozenset(to_delete),
        acls_kept=len(desired) - len(to_create),
    )


def acl_matches(acl: AclSpec, resource_type: str, name: str) -> bool:
    """Whether ``acl``'s resource pattern covers a resource (LITERAL: same name or ``*``; PREFIXED: prefix)."""
    if acl.resource_type != resource_type:
        return False
    if acl.pattern == "LITERAL":
        return acl.name in (name, "*")
    if acl.pattern == "PREFIXED":
        return name.startswith(acl.name)
    return False


def allowed(acls: Iterable[AclSpec], principal: str, operation: str, resource_type: str, name: str) -> bool:
    """A small model of Kafka's decision for one request (DENY wins; READ/WRITE imply DESCRIBE), for tests and
    for ``hub acl check``-style explanations. The broker's authorizer remains the authority."""
    implied = {"DESCRIBE": {"DESCRIBE", "READ", "WRITE", "DELETE", "ALTER", "ALL"}}.get(operation, {operation, "ALL"})
    relevant = [a for a in acls if a.principal in (principal, "User:*") and acl_matches(a, resource_type, name)]
    if any(a.permission == "DENY" and a.operation in (operation, "ALL") for a in relevant):
        return False
    return any(a.permission == "ALLOW" and a.operation in implied for a in relevant)
