"""Which ACLs each node must have, and how to get from the broker's current ACLs there (pure, no I/O).

docs/contract.md (Topics): a node writes only ``ingress.<node>`` and ``call.<node>.request``; it reads only
``feed.<node>``, ``call.<node>.reply``, ``quarantine.<node>`` and ``objection.<node>`` (LITERAL ACLs on these
exact names), and it may use only its own consumer groups, those named ``<node>.`` + anything (one PREFIXED
ACL, trailing dot included, so ``municipal.health.`` never matches ``municipal.healthcare.x``).

Operations: ``WRITE`` on a topic and ``READ`` on a topic or group each imply ``DESCRIBE`` in Kafka's
authorizers, which is all a producer (metadata, idempotent produce since KIP-679) or a consumer (metadata,
list/fetch/commit offsets, join/sync/heartbeat) needs, so no separate ``DESCRIBE`` ACLs are granted.
Nothing is granted on the cluster, on transactional ids, or to create/delete/alter any topic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
