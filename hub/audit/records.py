"""Building the hub's AuditRecords and QuarantineRecords (pure, no I/O): one place for their shape.

An exchange event gets **one** audit record: its ``publish``, whose ``deliveries`` list every delivery the
event was routed to, allowed or denied (``delivery_entry``), or a ``quarantine`` if it was rejected. A call
gets one ``call`` record. ``hub.stats.counts.count_keys`` expands a record into the counters of its
publish and of each delivery, so the counts are those of one record per act.

Records are built unsealed (``prev_hash``, ``hash`` and ``seq`` None): the worker's
``hub.audit.chain.ChainWriter`` seals them in partition order before they are encoded with
``schemas/hub/audit_record.avsc``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from hub.broker.records import RawRecord
from hub.contract import H_EVENT_ID, H_RULE

PUBLISH = "publish"
QUARANTINE = "quarantine"
ALLOW = "allow"
DENY = "deny"
ACCEPTED = "accepted"  # the reason of a publish
CORRECTION_PREFIX = "correction of objection "  # the reason of a provider's correction (hub-objection header)


def correction_reason(objection_id: str) -> str:
    """The publish reason of a correction: which objection it answers (one count key per objection)."""
    return f"{CORRECTION_PREFIX}{objection_id}"


def source_of(topic: str, partition: int, offset: int) -> str:
    """Where a record entered the hub, ``<topic>/<partition>/<offset>`` (an AuditRecord's ``source``)."""
    return f"{topic}/{partition}/{offset}"


def key_hash(key: bytes | None) -> str | None:
    """SHA-256 hex of a record key (audit records carry this, never the key or the data)."""
    return hashlib.sha256(key).hexdigest() if key is not None else None


def audit_id(event_id: str, action: str, counterparty: str | None = None) -> str:
    """``<event id>/<action>/<counterparty or ->``: the same act replayed gets the same id."""
    return f"{event_id}/{action}/{counterparty or '-'}"


def audit_record(
    now: int, event_id: str, action: str, actor: str, *, decision: str, reason: str,
    counterparty: str | None = None, resource: str | None = None, scenario: str | None = None,
    grant: str | None = None, from_tier: str | None = None, to_tier: str | None = None,
    direction: str | None = None, key_hash: str | None = None, masked_fields: Sequence[str] = (),
    source: str | None = None, deliveries: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An unsealed AuditRecord (every field of the schema; ``deliveries`` is a list the caller may extend)."""
    return {
        "event_id": event_id, "audit_id": f"{event_id}/{action}/{counterparty or '-'}", "ts": now,
        "action": action, "actor": actor, "counterparty": counterparty, "resource": resource,
        "scenario": scenario, "grant": grant, "from_tier": from_tier, "to_tier": to_tier,
        "direction": direction, "decision": decision, "reason": reason, "key_hash": key_hash,
        "masked_fields": list(masked_fields), "prev_hash": None, "hash": None, "source": source, "seq": None,
        "deliveries": [] if deliveries is None else deliveries,
    }


def publish_record(
    now: int, event_id: str, provider: str, resource: str, tier: str, khash: str | None, source: str,
    deliveries: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The one audit record of an accepted event: ``<event_id>/publish/-``, its deliveries listed in it."""
    return audit_record(now, event_id, PUBLISH, provider, decision=ALLOW, reason=ACCEPTED, resource=resource,
                        from_tier=tier, to_tier=tier, key_hash=khash, source=source, deliveries=deliveries)


def delivery_entry(
    counterparty: str, scenario: str | None, grant: str | None, to_tier: str | None, direction: str | None,
    decision: str, reason: str, masked_fields: Sequence[str] = (),
) -> dict[str, Any]:
    """One AuditDelivery: a delivery (decision ``allow``, reason the routing reason) or a refusal (``deny``,
    reason the policy's), with the fields masked for that consumer."""
    return {
        "counterparty": counterparty, "scenario": scenario, "grant": grant, "to_tier": to_tier,
        "direction": direction, "decision": decision, "reason": reason, "masked_fields": list(masked_fields),
    }


def quarantine_value(
    rec: RawRecord, event_id: str, now: int, node: str, rule: str, reason: str, resource: str | None,
    violations: Sequence[tuple[str, str, str]] = (), record_key: str | None = None,
) -> dict[str, Any]:
    """The QuarantineRecord (``schemas/hub/quarantine_record.avsc``) of a rejected record, original bytes kept.

    ``event_id``: the event's id for an ingress record; for a call request, ``source_of`` its position.
    ``violations``: every failed quality rule as (rule, field, message); ``record_key``: the decoded record's
    primary key (how a later delivery of the fixed record is recognised).
    """
    return {
        "event_id": event_id, "ts": now, "node": node, "topic": rec.topic, "partition": rec.partition,
        "offset": rec.offset, "rule": rule, "reason": reason, "resource": resource,
        "original_key": rec.key, "original_value": rec.value,
        "original_headers": {k: bytes(v or b"") for k, v in (rec.headers or ())},
        "violations": [{"rule": r, "field": f, "message": m} for r, f, m in violations],
        "record_key": record_key,
    }


def quarantine_headers(event_id: str, rule: str) -> list[tuple[str, bytes]]:
    """Headers of a record on ``quarantine.<node>``."""
    return [(H_EVENT_ID, event_id.encode()), (H_RULE, rule.encode())]


def quarantine_audit(
    now: int, event_id: str, node: str, tier: str, rule: str, resource: str | None, khash: str | None,
    source: str | None,
) -> dict[str, Any]:
    """The one audit record of a rejected record: action ``quarantine``, decision ``deny``, reason the rule.

    A call request quarantined: ``resource`` None, ``khash`` None, ``event_id`` and ``source`` its position.

    An ingress record's audit id names its position (``<event id>/quarantine/<source>``): a provider may resend
    a rejected event id (the fixed record, or the same bad one again), and each rejection is one act with its
    own identity (``hub audit reconcile`` reports a repeated identity as a duplicate).
    """
    audit = audit_record(now, event_id, QUARANTINE, node, decision=DENY, reason=rule, resource=resource,
                         from_tier=tier, to_tier=tier, key_hash=khash, source=source)
    if source and source != event_id:
        audit["audit_id"] = f"{event_id}/{QUARANTINE}/{source}"
    return audit


QUARANTINED_PREFIX = "\x00"  # event ids are printable (hub.pipeline.core.event_id_for): no event id starts so


def quarantined_position(node: str, source: str) -> tuple[str, str]:
    """The dedupe-window key of a quarantined ingress record: its position, not its event id.

    A quarantined event id must not block the fixed record resent under the same id; the position still makes a
    crash's redelivery of that very record a duplicate (no second quarantine, no second audit record).
    """
    return node, QUARANTINED_PREFIX + source
