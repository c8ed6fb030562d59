"""The hub's contract facts in one place: topic names, header names, subjects, the operator id, key formats.

Everything a node, an operator or another hub process relies on by name lives here (see ``docs/contract.md``);
every other module imports these instead of spelling the strings again.
"""

from __future__ import annotations

# ---------------------------------------------------------------- nodes
OPERATOR = "hub"  # the hub operator's node id (and its Basic-auth user, and its Kafka user)

# ---------------------------------------------------------------- node-facing topics (named by node id, for ACLs)
INGRESS_PREFIX = "ingress."
FEED_PREFIX = "feed."
CALL_PREFIX = "call."
REQUEST_SUFFIX = ".request"
REPLY_SUFFIX = ".reply"
QUARANTINE_PREFIX = "quarantine."
OBJECTION_PREFIX = "objection."


def ingress_topic(node: str) -> str:
    return f"{INGRESS_PREFIX}{node}"


def feed_topic(node: str) -> str:
    return f"{FEED_PREFIX}{node}"


def call_request_topic(node: str) -> str:
    return f"{CALL_PREFIX}{node}{REQUEST_SUFFIX}"


def call_reply_topic(node: str) -> str:
    return f"{CALL_PREFIX}{node}{REPLY_SUFFIX}"


def quarantine_topic(node: str) -> str:
    return f"{QUARANTINE_PREFIX}{node}"


def objection_topic(node: str) -> str:
    return f"{OBJECTION_PREFIX}{node}"


def node_topics(node: str) -> list[str]:
    """Every node-facing topic of one node."""
    return [ingress_topic(node), feed_topic(node), call_request_topic(node), call_reply_topic(node),
            quarantine_topic(node), objection_topic(node)]


def node_of_ingress(topic: str) -> str:
    return topic.removeprefix(INGRESS_PREFIX)


def node_of_request_topic(topic: str) -> str | None:
    """``call.<node>.request`` -> ``<node>`` (None for any other topic)."""
    if topic.startswith(CALL_PREFIX) and topic.endswith(REQUEST_SUFFIX):
        return topic[len(CALL_PREFIX):-len(REQUEST_SUFFIX)] or None
    return None


# ---------------------------------------------------------------- the hub's own topics
AUDIT_TOPIC = "hub.audit"  # AuditRecord, hash-chained per partition
CONTROL_AUDIT_TOPIC = "hub.audit.control"  # the control plane's own audit chain
COUNTS_TOPIC = "hub.counts"  # per-partition count snapshots, written by the owner of partition p
RECORDS_TOPIC = "hub.records"  # current record per (resource, primary key): what calls answer from
CALLS_TOPIC = "hub.calls"  # admitted calls on their way to the partition owning the next stage
INDEX_TOPIC = "hub.records.index"  # compacted changelog of the secondary index
QUOTA_TOPIC = "hub.call-quota"  # calls per (grant, CST day)
RECIPIENTS_TOPIC = "hub.recipients"  # who received which record, within the objection filing window
SCHEMAS_TOPIC = "_schemas"
NODES_TOPIC = "hub.nodes"
SCENARIOS_TOPIC = "hub.scenarios"
CATALOG_TOPIC = "hub.catalog"
GRANTS_TOPIC = "hub.grants"
OBJECTIONS_TOPIC = "hub.objections"  # every objection's latest version (hub.objections.machine)
STATE_TOPICS = (NODES_TOPIC, SCENARIOS_TOPIC, CATALOG_TOPIC, GRANTS_TOPIC, OBJECTIONS_TOPIC)  # the control state
CONTROL_TOPICS = (SCHEMAS_TOPIC, *STATE_TOPICS)  # compacted, one partition each (the registry keeps _schemas)

# ---------------------------------------------------------------- headers
H_RESOURCE = "hub-resource"
H_EVENT_ID = "hub-event-id"
H_GRANT = "hub-grant"
H_SCENARIO = "hub-scenario"
H_PROVIDER = "hub-provider"
H_LINEAGE = "hub-lineage"
H_FLAG = "hub-flag"  # a delivery of a record under objection: the objection id
H_OBJECTION = "hub-objection"  # a provider's correction (ingress) and its redelivery (feeds): the objection id
H_INGRESS_TS = "hub-ingress-ts"
H_RULE = "hub-quarantine-rule"
H_REQUEST_ID = "hub-request-id"
H_STAGE = "hub-call-stage"
H_WRITER = "hub-writer"  # the worker instance that wrote a hub.records row (it skips its own when reading)

# ---------------------------------------------------------------- registry subjects of the hub's own schemas
AUDIT_SUBJECT = "hub.audit-value"
QUARANTINE_SUBJECT = "hub.quarantine-value"
REQUEST_SUBJECT = "hub.call-request-value"
REPLY_SUBJECT = "hub.call-reply-value"


def masked_subject(resource: str, plan_key: str) -> str:
    """The subject of the derived (consumer-side) schema of a resource masked by one plan."""
    return f"{resource}.masked.{plan_key}-value"


# ---------------------------------------------------------------- key formats
def store_key(resource_id: str, key_value: str) -> bytes:
    """Key of a record in ``hub.records``: ``<resource>|<primary key>``; its partition answers calls for it."""
    return f"{resource_id}|{key_value}".encode()
