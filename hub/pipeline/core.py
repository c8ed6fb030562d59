"""The exchange hot path as plain functions over a batch of raw Kafka records.

ingress record -> check headers -> decode (Confluent framing + Avro, against the registry) -> validate
against the catalogue -> the resource's data quality rules (``hub.quality``, compiled once per context) -> route
-> feed records + one audit record, or a quarantine record with its reason (and every failed quality rule).
Each event gets exactly one audit record: its ``publish``, listing every delivery and refusal in
``deliveries``, or its ``quarantine`` (built by ``hub.audit.records``).
No I/O here: the worker shell resolves schemas before calling ``process_batch`` and sends what it returns.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.audit.records import (
    ALLOW,
    DENY,
    correction_reason,
    delivery_entry,
    key_hash,
    publish_record,
    quarantine_audit,
    quarantine_headers,
    quarantine_value,
    quarantined_position,
    source_of,
)
from hub.broker.records import OutRecord, RawRecord
from hub.catalogue.model import ExchangeConfig, Node, Resource, Subscription, tier_of
from hub.contract import (
    H_EVENT_ID,
    H_FLAG,
    H_GRANT,
    H_INGRESS_TS,
    H_LINEAGE,
    H_OBJECTION,
    H_PROVIDER,
    H_RESOURCE,
    H_SCENARIO,
    OPERATOR,
    RECIPIENTS_TOPIC,
    RECORDS_TOPIC,
    feed_topic,
    node_of_ingress,
    quarantine_topic,
    store_key,
)
from hub.federation.model import PEER_TIERS, continued_lineage
from hub.objections.model import Objection
from hub.objections.recipients import FirstDeliveries, batch_note, partition_for, record_prefix, set_entry
from hub.pipeline.dedupe import DedupeWindow
from hub.policy.decision import Decision, Reason, decide
from hub.policy.masking import MaskPlan, apply_mask
from hub.policy.model import Grant
from hub.quality import Checker, KeyExists, RuleError, Violation, compile_rules
from hub.registry import framing
from hub.registry.framing import FramingError
from hub.routing.core import (
    REASON_REPORT_UP,
    Delivery,
    record_district,
    route_for_district,
    subscriptions_by_resource,
)

EVENT_ID_NAMESPACE = uuid.UUID("5b0a3f1e-8f7c-4d7e-9a51-3c1f0e2d4b6a")
MAX_EVENT_ID_LENGTH = 128
# The hub's producers send at most 1 MiB a request (aiokafka's max_request_size) and the broker takes ~1 MiB a
# record: an accepted record's key and value are copied into feeds and hub.records with the hub's headers added,
# so a record must leave room for them, else its send fails and the worker stops on the same batch again and again.
MAX_RECORD_BYTES = 1_000_000
# A quarantine record keeps the original key, value and headers, each cut to this (the reason says so), so the
# copy of a record of any size still fits.
QUARANTINE_KEEP_BYTES = 256 * 1024

# Metric tallies: (metric name, label values) -> count, applied by the shell once the batch is delivered.
Tally = Counter[tuple[str, tuple[str, ...]]]


@dataclass(slots=True)
class BatchResult:
    """What a batch produces: records to send first, then the audit records (per ingress partition)."""

    outputs: list[OutRecord] = field(default_factory=list)  # feeds and quarantine
    # (partition, unsealed AuditRecord): one per event
    audits: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    tally: Tally = field(default_factory=Counter)
    latencies_from_ms: list[int] = field(default_factory=list)  # ingress timestamps of delivered records
    duplicates: int = 0
    # the hub.records rows among ``outputs`` with their decoded record (the call tables apply them directly)
    rows: list[tuple[OutRecord, Mapping[str, Any]]] = field(default_factory=list)
    # hub.recipients partition -> (set entry, event id) of the first deliveries noted (one note per partition)
    recipient_sets: dict[int, list[tuple[str, str]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EncodedSchema:
    """A registered schema the hub writes with: its id and a compiled ``record -> framed bytes`` encoder."""

    id: int
    encode: Callable[[dict[str, Any]], bytes]


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """How one consumer receives one resource when its clearance or grant masks fields."""

    plan: MaskPlan
    encode: Callable[[dict[str, Any]], bytes]  # to the derived (consumer-side) schema, registered
    masked_fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ResourceStatic:
    resource_id: bytes
    provider: bytes
    publish_tally: tuple[str, tuple[str, ...]]
    materialised: bool  # its rows go to hub.records


@dataclass(frozen=True, slots=True)
class DeliveryStatic:
    topic: str
    header_tail: list[tuple[str, bytes]]
    plan: DeliveryPlan | None
    allowed_entry: dict[str, Any]
    ok_tally: tuple[str, tuple[str, ...]]
    denied_tally: tuple[str, tuple[str, ...]]
    delivered_tally: tuple[str, tuple[str, ...]]


@dataclass
class ExchangeContext:
    """What the hot path needs to decide, all resolved in advance (no I/O while processing a batch).

    ``grants`` and ``delivery_plans`` come from the live control plane: every delivery is checked
    against its grant (``hub.policy.decision.decide``) and masked per consumer on every transfer.
    """

    config: ExchangeConfig
    schema_lookup: Callable[[int], Any | None]  # schema id -> fastavro-parsed schema, None if unknown
    subject_ids: Mapping[str, frozenset[int]]  # resource id -> schema ids of its subject's versions
    audit_schema: EncodedSchema
    quarantine_schema: EncodedSchema
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    dedupe: Callable[[int], DedupeWindow] = field(default_factory=lambda: _fresh_windows())
    grants: Mapping[str, Grant] = field(default_factory=dict)
    delivery_plans: Mapping[tuple[str, str], DeliveryPlan] = field(default_factory=dict)  # absent: as published
    # reference rules ask the worker's call tables (hub.calls.state.CallState.key_exists); None: not checked
    key_exists: KeyExists | None = None
    # objections (hub.control.state.snapshot): resource -> record key -> objection id of every flagged record
    # (resources without a flag are absent: their events pay one dict miss), and the objections a provider may
    # publish a correction for now
    flags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    corrections: Mapping[str, Objection] = field(default_factory=dict)
    # who received which record (hub.recipients): the pairs written lately, None to keep no record of it
    first_deliveries: FirstDeliveries | None = None
    recipients_partitions: int = 1
    resources: dict[str, Resource] = field(init=False)
    subscriptions: dict[str, list[Subscription]] = field(init=False)
    nodes: dict[str, Node] = field(init=False)
    _routes: dict[tuple[str, str | None], list[Delivery]] = field(init=False)  # the cached lists keep the
    # Delivery objects alive, so their ids key _delivery_static safely
    _resource_static: dict[str, ResourceStatic] = field(init=False)
    _delivery_static: dict[int, DeliveryStatic] = field(init=False)
    _checkers: dict[str, Checker] = field(init=False)
    # the batch's policy decisions per (route, record district): a batch is decided at one instant (``now``)
    # against one grant set, so the same route and district decide the same; cleared by every process_batch
    _decisions: dict[tuple[int, str | None], Decision] = field(init=False)

    def __post_init__(self) -> None:
        self.resources = {r.id: r for r in self.config.resources}
        self.subscriptions = subscriptions_by_resource(self.config.subscriptions)
        self.nodes = {n.id: n for n in self.config.nodes}
        self._routes = {}
        self._resource_static = {}
        self._delivery_static = {}
        self._checkers = {}
        self._decisions = {}

    def checker(self, resource: Resource) -> Checker:
        """The resource's quality rules, compiled once per context (one catalogue version)."""
        found = self._checkers.get(resource.id)
        if found is None:
            try:  # reference targets were checked at cataloguing: one retired since must not fail every record
                found = compile_rules(resource, key_exists=self.key_exists)
            except RuleError as exc:  # refused at cataloguing; only a hand-written control topic gets here
                found = _refusing(str(exc))
            self._checkers[resource.id] = found
        return found

    def resource_static(self, resource: Resource) -> ResourceStatic:
        """What every event of ``resource`` shares (header bytes, tally key), computed once per context."""
        found = self._resource_static.get(resource.id)
        if found is None:
            tier = resource.tier
            found = self._resource_static[resource.id] = ResourceStatic(
                resource.id.encode(), resource.provider.encode(), ("events", ("publish", tier, tier, "ok")),
                bool(resource.primary_key) and resource.sharing != "none",  # a "none" resource is never called
            )
        return found

    def delivery_static(self, resource: Resource, d: Delivery) -> DeliveryStatic:
        """What every delivery of this route shares (topic, headers, audit entry, masking plan)."""
        found = self._delivery_static.get(id(d))
        if found is None:
            plan = self.delivery_plans.get((resource.id, d.consumer))
            tier = resource.tier
            found = self._delivery_static[id(d)] = DeliveryStatic(
                topic=feed_topic(d.consumer),
                header_tail=[(H_GRANT, (d.grant or "").encode()), (H_SCENARIO, (d.scenario or "").encode()),
                             (H_LINEAGE, _lineage(resource.provider, d.consumer))],
                plan=plan,
                allowed_entry=delivery_entry(d.consumer, d.scenario, d.grant, d.to_tier, d.direction, ALLOW, d.reason,
                                             plan.masked_fields if plan is not None else ()),
                ok_tally=("events", (d.kind, tier, d.to_tier, "ok")),
                denied_tally=("events", (d.kind, tier, d.to_tier, "denied")),
                delivered_tally=("records_delivered", (d.direction,)),
            )
        return found

    def routes(self, resource: Resource, district: str | None) -> list[Delivery]:
        """The deliveries of a record of ``resource`` belonging to ``district`` (cached: this context is one
        catalogue version)."""
        key = (resource.id, district)
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = route_for_district(district, resource, self.subscriptions.get(resource.id, ()))
        return found


def standing_grants(subscriptions: Sequence[Subscription]) -> dict[str, Grant]:
    """Active subscribe grants for seed-file subscriptions (a hub running without its control plane)."""
    return {
        sub.id: Grant(id=sub.id, consumer=sub.consumer, resource=sub.resource, scenario=sub.scenario,
                      mode="subscribe", row_scope=sub.row_scope, valid_from=0, state="active", updated_at=0)
        for sub in subscriptions
    }


def _fresh_windows() -> Callable[[int], DedupeWindow]:
    windows: dict[int, DedupeWindow] = {}
    return lambda partition: windows.setdefault(partition, DedupeWindow())


def _refusing(problem: str) -> Checker:
    """A checker failing every record: rules that do not compile must not let unchecked data through."""
    return Checker((("invalid_rules", "", lambda record: f"the resource's quality rules do not compile: {problem}",
                     False),))


class Rejected(Exception):
    """A record that must go to quarantine; ``rule`` is the bounded label, the message says why.

    A record failing quality rules carries them all in ``violations`` (``rule`` is the first one's name) and its
    primary key in ``record_key``."""

    def __init__(self, rule: str, message: str, resource: str | None = None,
                 violations: Sequence[Violation] = (), record_key: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.resource = resource
        self.violations = violations
        self.record_key = record_key


def quality_rejection(resource: Resource, record: Mapping[str, Any], violations: Sequence[Violation]) -> Rejected:
    message = "; ".join(f"{v.field}: {v.message}" if v.field else v.message for v in violations)
    record_key = primary_key_value(record, resource) if resource.primary_key else None
    return Rejected(violations[0].rule, f"quality rules failed: {message}", resource.id, violations, record_key)


def header_map(headers: Sequence[tuple[str, bytes]]) -> dict[str, bytes]:
    return {k: v for k, v in headers} if headers else {}


def event_id_for(rec: RawRecord, headers: Mapping[str, bytes]) -> str:
    """The producer's ``hub-event-id`` if usable, else one derived from the record's position.

    Derived ids are stable: the same ingress record read twice (after a crash) gets the same id.
    """
    given = headers.get(H_EVENT_ID)
    if given:
        try:
            text = given.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if text and len(text) <= MAX_EVENT_ID_LENGTH and text.isprintable():
            return text
    return derived_event_id(f"{rec.topic}/{rec.partition}/{rec.offset}")


_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes


def derived_event_id(position: str) -> str:
    """``str(uuid.uuid5(EVENT_ID_NAMESPACE, position))``, computed directly (a third of the time: no UUID object)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + position.encode(), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def primary_key_value(record: Mapping[str, Any], resource: Resource) -> str:
    """The record's primary key as one string (fields joined by ``|``)."""
    return "|".join(str(record.get(f)) for f in resource.primary_key)


def feed_key(rec: RawRecord, record: Mapping[str, Any], resource: Resource) -> bytes | None:
    """Keep the publisher's key; without one, key by the primary key so a row's versions stay in order."""
    if rec.key is not None or not resource.primary_key:
        return rec.key
    return primary_key_value(record, resource).encode()


def decode_and_validate(rec: RawRecord, headers: Mapping[str, bytes], ctx: ExchangeContext) -> tuple[
    Resource, dict[str, Any]
]:
    """Decode the value and check it belongs to a catalogued resource of the publishing node."""
    node = node_of_ingress(rec.topic)
    if len(headers) != len(rec.headers or ()):  # a header repeated: cheap to notice, rare to happen
        _reject_repeated(rec.headers)
    size = len(rec.value or b"") + len(rec.key or b"")
    if size > MAX_RECORD_BYTES:
        raise Rejected("too_large", f"key and value are {size} bytes; the hub accepts at most {MAX_RECORD_BYTES}")
    raw_resource = headers.get(H_RESOURCE)
    if not raw_resource:
        raise Rejected("missing_header", f"the {H_RESOURCE} header is missing: every record must name its resource")
    resource_id = raw_resource.decode("utf-8", errors="replace")
    resource = ctx.resources.get(resource_id)
    if resource is None:
        raise Rejected("unknown_resource", f"resource {resource_id!r} is not in the catalogue", resource_id)
    if resource.provider != node:
        raise Rejected(
            "not_provider", f"node {node} published to resource {resource_id}, which belongs to {resource.provider}",
            resource_id,
        )
    try:
        schema_id, body = framing.split(rec.value)
        parsed = ctx.schema_lookup(schema_id)
        if parsed is None:
            raise Rejected("unknown_schema", f"schema id {schema_id} is not in the registry", resource_id)
        if schema_id not in ctx.subject_ids.get(resource_id, frozenset()):
            raise Rejected(
                "schema_not_bound",
                f"schema id {schema_id} is not a version of {resource.subject}, the subject of {resource_id}",
                resource_id,
            )
        record = framing.decode_body(body, parsed)
    except FramingError as exc:
        raise Rejected(exc.rule, str(exc), resource_id) from exc
    return resource, record


_SINGLE_HEADERS = (H_RESOURCE, H_EVENT_ID)


def _reject_repeated(headers: Sequence[tuple[str, bytes]]) -> None:
    """Two ``hub-resource`` (or ``hub-event-id``) headers make a record ambiguous: which one is meant depends on
    the reader (``header_map`` keeps the last, a Kafka client's lookup the first), so the hub accepts neither."""
    for name in _SINGLE_HEADERS:
        if sum(1 for k, _ in headers if k == name) > 1:
            raise Rejected("duplicate_header", f"the {name} header appears more than once: a record names one")


def process_batch(records: Sequence[RawRecord], ctx: ExchangeContext) -> BatchResult:
    """Decide and encode everything a batch of ingress records produces, in input order.

    An event already delivered (same publishing node and event id, in the partition's dedupe window) is
    skipped: it was delivered and audited before a crash or rebalance made Kafka deliver it again. A quarantined
    record is remembered by its position, not its event id: the fixed record resent under the same id is
    delivered, while a redelivery of the rejected record itself is still a duplicate.

    A record that decodes is checked against its resource's quality rules (``hub.quality``); failing any sends
    it to quarantine with every failed rule.
    """
    result = BatchResult()
    now = ctx.clock_ms()
    ctx._decisions.clear()
    for rec in records:
        headers = header_map(rec.headers)
        event_id = event_id_for(rec, headers)
        window = ctx.dedupe(rec.partition)
        node = node_of_ingress(rec.topic)
        event_key = (node, event_id)
        source = source_of(rec.topic, rec.partition, rec.offset)
        position_key = quarantined_position(node, source)
        if event_key in window or position_key in window:
            result.duplicates += 1
            continue
        try:
            resource, record = decode_and_validate(rec, headers, ctx)
            violations = ctx.checker(resource)(record)
            if violations:
                raise quality_rejection(resource, record, violations)
        except Rejected as rej:
            window.add(position_key)
            _quarantine(rec, event_id, rej, now, ctx, result, source)
            continue
        window.add(event_key)
        district = record_district(record, resource)
        prior = headers.get(H_LINEAGE) if resource.tier in PEER_TIERS else None  # only another platform's hops
        _deliver(rec, event_id, resource, record, district, ctx.routes(resource, district), now, ctx, result, source,
                 headers.get(H_OBJECTION), prior_lineage=prior)
    for partition, entries in result.recipient_sets.items():  # after the batch's feeds: one note per partition
        key, value = batch_note(now, entries)
        result.outputs.append(OutRecord(RECIPIENTS_TOPIC, key, value, [], partition))
    return result


def _deliver(
    rec: RawRecord, event_id: str, resource: Resource, record: Mapping[str, Any], district: str | None,
    deliveries: Sequence[Delivery], now: int, ctx: ExchangeContext, result: BatchResult, source: str,
    objection: bytes | None = None, *, prior_lineage: bytes | None = None,
) -> None:
    """The feed records of an accepted event and its one audit record: the publish, every delivery and
    refusal listed in its ``deliveries``.

    Objections: a record under objection (``ctx.flags``) is delivered with ``hub-flag``; a provider's correction
    (``hub-objection`` naming a flagged objection on this record) goes to the objection's recipients only, with
    ``hub-objection``, and its publish says so. Every first delivery of a record to a consumer is noted on
    ``hub.recipients`` (``ctx.first_deliveries``). A record that crossed from another platform (``prior_lineage``,
    carried by the federation gateway) keeps its hops there ahead of this hub's."""
    static = ctx.resource_static(resource)
    key = feed_key(rec, record, resource)
    base_headers = [
        (H_RESOURCE, static.resource_id),
        (H_EVENT_ID, event_id.encode()),
        (H_PROVIDER, static.provider),
        (H_INGRESS_TS, str(rec.timestamp_ms).encode()),
    ]
    pk = primary_key_value(record, resource) if static.materialised else None
    correction: Objection | None = None
    correction_districts: dict[str, str | None] | None = None  # a correction's route district per consumer
    if objection is not None:
        correction = _correction_of(objection, resource, pk, ctx)
        if correction is None:
            rej = Rejected("invalid_correction", f"{H_OBJECTION} {objection.decode(errors='replace')!r} names no "
                           f"flagged objection on record {pk!r} of {resource.id}", resource.id)
            _quarantine(rec, event_id, rej, now, ctx, result, source)
            return
        deliveries, correction_districts = _correction_routes(resource, district, correction.recipients, ctx)
        base_headers.append((H_OBJECTION, objection))
    tally = result.tally
    tally[static.publish_tally] += 1
    entries: list[dict[str, Any]] = []
    audit = publish_record(now, event_id, resource.provider, resource.id, resource.tier, key_hash(key), source,
                           entries)
    result.audits.append((rec.partition, audit))
    assert rec.value is not None  # decode succeeded
    if pk is not None:  # the current row, for calls (共享调用)
        # internal: its reader (the call state) needs only the writer's mark, added by the row sink; the event
        # id says which event wrote the version (each header costs the writer and every reader)
        row = OutRecord(RECORDS_TOPIC, store_key(resource.id, pk), rec.value, [base_headers[1]])
        result.outputs.append(row)
        result.rows.append((row, record))
        flagged = ctx.flags.get(resource.id)
        if flagged is not None and correction is None:
            flag = flagged.get(pk)
            if flag is not None:
                base_headers = [*base_headers, (H_FLAG, flag.encode())]
    if correction is not None:  # the publish says so; the control audit's "correct" names this event id
        audit["reason"] = correction_reason(correction.objection_id)
    outputs = result.outputs
    delivered_before = len(outputs)
    for d in deliveries:
        out = ctx.delivery_static(resource, d)
        decision = _decide(resource, d, ctx, now,
                           district if correction_districts is None else correction_districts[d.consumer])
        if not decision.allowed:  # checked on every transfer: a revoked or expired grant stops here
            entries.append(delivery_entry(d.consumer, d.scenario, d.grant, d.to_tier, d.direction, DENY,
                                          str(decision.reason)))
            tally[out.denied_tally] += 1
            continue
        plan = out.plan
        value = rec.value if plan is None else plan.encode(apply_mask(record, plan.plan))
        tail = out.header_tail if prior_lineage is None else [  # the lineage is the tail's last header
            *out.header_tail[:-1],
            (H_LINEAGE, continued_lineage(prior_lineage, resource.provider, d.consumer, OPERATOR))]
        outputs.append(OutRecord(out.topic, key, value, base_headers + tail))
        entries.append(out.allowed_entry)  # shared by every event of this route: never mutated
        tally[out.ok_tally] += 1
        tally[out.delivered_tally] += 1
        result.latencies_from_ms.append(rec.timestamp_ms)
    first = ctx.first_deliveries
    if first is not None and pk is not None and correction is None and len(outputs) > delivered_before:
        _note_recipients(resource.id, pk, event_id, entries, now, first, ctx.recipients_partitions,
                         result.recipient_sets)


def _note_recipients(
    resource_id: str, pk: str, event_id: str, entries: Sequence[dict[str, Any]], now: int, first: FirstDeliveries,
    partitions: int, noted: dict[int, list[tuple[str, str]]],
) -> None:
    """Note the set of consumers this record went to for the batch's ``hub.recipients`` note, unless noted
    lately."""
    entry = set_entry(resource_id, pk, ",".join([e["counterparty"] for e in entries if e["decision"] == ALLOW]))
    if first.due(entry, now):
        partition = partition_for(record_prefix(resource_id, pk), partitions)
        found = noted.get(partition)
        if found is None:
            noted[partition] = [(entry, event_id)]
        else:
            found.append((entry, event_id))


def _correction_of(
    objection: bytes, resource: Resource, pk: str | None, ctx: ExchangeContext
) -> Objection | None:
    """The flagged objection a correction names, if it is on this very record (the provider was checked)."""
    found = ctx.corrections.get(objection.decode("utf-8", errors="replace"))
    if found is None or pk is None or found.resource != resource.id or found.record_key != pk:
        return None
    return found


def _correction_routes(
    resource: Resource, district: str | None, recipients: Sequence[str], ctx: ExchangeContext
) -> tuple[list[Delivery], dict[str, str | None]]:
    """The routes of a correction, exactly to the recipients of the wrong record, with the district each route
    was computed for. A district that received it under its own district's route still does when the correction
    moves the record elsewhere (the district field may be what was wrong)."""
    wanted = set(recipients)
    chosen = [d for d in ctx.routes(resource, district) if d.consumer in wanted]
    districts: dict[str, str | None] = {d.consumer: district for d in chosen}
    for consumer in sorted(wanted - set(districts)):
        if consumer.startswith("district."):
            own = consumer.removeprefix("district.")
            for d in ctx.routes(resource, own):
                if d.consumer == consumer:
                    chosen.append(d)
                    districts[consumer] = own
    return chosen, districts


def _lineage(provider: str, consumer: str) -> bytes:
    """The ``hub-lineage`` header of a delivery: the hops, as a JSON array."""
    return json.dumps([provider, OPERATOR, consumer]).encode()


def _decide(resource: Resource, d: Delivery, ctx: ExchangeContext, now: int, district: str | None) -> Decision:
    """The policy decision for one delivery, made once per batch for each route and record district (the
    batch's ``now`` and grants are the same for all its events)."""
    key = (id(d), district)
    found = ctx._decisions.get(key)
    if found is None:
        found = ctx._decisions[key] = _decide_now(resource, d, ctx, now, district)
    return found


def _decide_now(resource: Resource, d: Delivery, ctx: ExchangeContext, now: int, district: str | None) -> Decision:
    """The policy decision for one delivery. Reporting up is the provider's catalogued duty, not a grant:
    it flows for every shared resource marked ``report_up`` (a ``none`` resource is still refused)."""
    node = ctx.nodes.get(d.consumer)
    if d.reason == REASON_REPORT_UP and resource.sharing != "none" and node is not None:
        return Decision(True, Reason.OK, "reported up to the national tier (catalogue: report_up)")
    grant = ctx.grants.get(d.grant) if d.grant else None
    return decide(resource, node, grant, scenario=d.scenario or "", mode="subscribe", now=now,
                  record_district=district)


def _quarantine(
    rec: RawRecord, event_id: str, rej: Rejected, now: int, ctx: ExchangeContext, result: BatchResult, source: str
) -> None:
    node = node_of_ingress(rec.topic)
    tier = _safe_tier(node)
    kept, cut = bounded_copy(rec)
    reason = f"{rej}; {cut}" if cut else str(rej)
    value = ctx.quarantine_schema.encode(quarantine_value(kept, event_id, now, node, rej.rule, reason, rej.resource,
                                                          rej.violations, rej.record_key))
    result.outputs.append(OutRecord(quarantine_topic(node), kept.key, value, quarantine_headers(event_id, rej.rule)))
    result.audits.append((rec.partition, quarantine_audit(now, event_id, node, tier, rej.rule, rej.resource,
                                                          key_hash(rec.key), source)))
    result.tally[("events", ("publish", tier, tier, "quarantined"))] += 1
    if rej.violations:  # each failed rule once (label: the rule's name only, never the field)
        for rule in dict.fromkeys(v.rule for v in rej.violations):
            result.tally[("quarantined", (rule,))] += 1
    else:
        result.tally[("quarantined", (rej.rule,))] += 1


def bounded_copy(rec: RawRecord, keep: int = QUARANTINE_KEEP_BYTES) -> tuple[RawRecord, str]:
    """``rec`` with its key, value and headers (in all) cut to ``keep`` bytes each, and what was cut ("" if
    nothing): what a quarantine record can carry of a record of any size."""
    key, value, headers = rec.key, rec.value, rec.headers or ()
    header_bytes = sum(len(k) + len(v or b"") for k, v in headers)
    if len(key or b"") <= keep and len(value or b"") <= keep and header_bytes <= keep:
        return rec, ""
    cut = []
    if key is not None and len(key) > keep:
        cut.append(f"key {len(key)} bytes")
        key = key[:keep]
    if value is not None and len(value) > keep:
        cut.append(f"value {len(value)} bytes")
        value = value[:keep]
    if header_bytes > keep:
        cut.append(f"headers {header_bytes} bytes")
        kept_headers, total = [], 0
        for k, v in headers:
            total += len(k) + len(v or b"")
            if total > keep:
                break
            kept_headers.append((k, v))
        headers = kept_headers
    copy = RawRecord(rec.topic, rec.partition, rec.offset, key, value, headers, rec.timestamp_ms)
    return copy, f"kept the first {keep} bytes of each of: {', '.join(cut)}"


def _safe_tier(node: str) -> str:
    try:
        return tier_of(node)
    except ValueError:
        return "hub"
