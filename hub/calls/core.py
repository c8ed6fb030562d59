"""Calls as plain functions: decode a ``CallRequest``, decide it stage by stage, build the ``CallReply`` and audit.

No I/O here (``hub.calls.agents`` wires these to Kafka). A call travels like a Kafka Streams repartition:

1. **admit** (the owner of ``call.<node>.request`` partition q): decode, check the caller owns the topic, the
   resource is catalogued, a scenario is named, the caller's ``call`` grant (``hub.policy.decision.decide``,
   request level), and the lookup (a primary key, or an indexed field's value). Refusals are answered here;
   an admitted call is forwarded on ``hub.calls`` to the partition owning the next stage's state.
2. **quota** (partition of the grant id; only grants with a ``daily_quota``): the grant's calls today, per
   China Standard Time day, counted by exactly one owner and kept in the compacted ``hub.call-quota``.
3. **index** (partition of ``[resource, field, value]``; only lookups by a non-key field): the secondary
   index, value -> primary keys, kept in the compacted ``hub.records.index``.
4. **lookup** (partition of ``store_key(resource, primary key)``, the same partition as the row in
   ``hub.records``): the current record from the materialised table, the record-level decision (row scope),
   masking for the caller (``hub.policy.masking``), the reply.

Every stage re-decides from the control state it sees, so a grant revoked between two hops stops the call.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from hub.catalogue.model import Node, Resource, tier_of
from hub.contract import (
    CALLS_TOPIC,
    H_REQUEST_ID,
    call_reply_topic,
    node_of_request_topic,
    store_key,
)
from hub.policy.decision import Decision, Reason, decide, quota_day
from hub.policy.grants import GrantIndex
from hub.policy.masking import Action, Kind, MaskPlan, field_kind, field_plan
from hub.policy.model import Grant
from hub.registry import framing
from hub.registry.framing import FramingError
from hub.routing.core import direction_between, record_district

MAX_REQUEST_ID = 128


class Status(StrEnum):
    """``CallReply.status`` (schemas/hub/call_reply.avsc): bounded, also the audit reason."""

    OK = "ok"
    NOT_FOUND = "not_found"
    UNKNOWN_RESOURCE = "unknown_resource"
    NO_GRANT = "no_grant"
    MISSING_SCENARIO = "missing_scenario"
    DENIED = "denied"
    QUOTA_EXCEEDED = "quota_exceeded"
    ERROR = "error"


class Stage(StrEnum):
    QUOTA = "quota"
    INDEX = "index"
    LOOKUP = "lookup"


# hub_calls_total / hub_events_total{kind="call"} outcome (bounded, docs/contract.md): a call served is ok, found or not
OUTCOME: Mapping[Status, str] = {
    Status.OK: "ok", Status.NOT_FOUND: "ok", Status.ERROR: "error",
    Status.UNKNOWN_RESOURCE: "denied", Status.NO_GRANT: "denied", Status.MISSING_SCENARIO: "denied",
    Status.DENIED: "denied", Status.QUOTA_EXCEEDED: "denied",
}

# decide()'s reasons as call statuses: no_grant when the caller holds no *active call-mode grant for this
# scenario*; denied when a grant exists but does not allow this call now (or the resource is not shared).
_STATUS_OF_REASON: Mapping[Reason, Status] = {
    Reason.UNKNOWN_CONSUMER: Status.DENIED,
    Reason.NOT_SHARED: Status.DENIED,
    Reason.NO_GRANT: Status.NO_GRANT,
    Reason.GRANT_MISMATCH: Status.DENIED,
    Reason.GRANT_REQUESTED: Status.NO_GRANT,
    Reason.GRANT_DENIED: Status.NO_GRANT,
    Reason.GRANT_REVOKED: Status.DENIED,
    Reason.GRANT_EXPIRED: Status.DENIED,
    Reason.NOT_YET_VALID: Status.DENIED,
    Reason.SCENARIO_MISMATCH: Status.NO_GRANT,
    Reason.MODE_MISMATCH: Status.NO_GRANT,
    Reason.FIELD_NOT_ALLOWED: Status.DENIED,
    Reason.QUOTA_EXCEEDED: Status.QUOTA_EXCEEDED,
    Reason.ROW_OUT_OF_SCOPE: Status.DENIED,
}


def status_for(reason: Reason) -> Status:
    return _STATUS_OF_REASON.get(reason, Status.DENIED)


# ------------------------------------------------------------------------------------------------ requests


class BadRequest(ValueError):
    """A request that cannot be understood; answered with status ``error`` when its id is known."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


@dataclass(frozen=True, slots=True)
class CallRequest:
    """A decoded ``CallRequest`` (schemas/hub/call_request.avsc)."""

    request_id: str
    caller: str
    resource: str
    scenario: str | None = None
    grant: str | None = None
    key: str | None = None
    lookup_field: str | None = None
    lookup_value: str | None = None
    fields: tuple[str, ...] = ()
    requested_at: int = 0

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> CallRequest:
        """From a decoded Avro record (any writer version with these field names); BadRequest if unusable."""
        rid = rec.get("request_id")
        if not isinstance(rid, str) or not valid_request_id(rid):
            raise BadRequest(f"request_id must be 1-{MAX_REQUEST_ID} printable characters, got {rid!r}")
        texts: dict[str, str | None] = {}
        for name in ("caller", "resource", "scenario", "grant", "key", "lookup_field", "lookup_value"):
            value = rec.get(name)
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"{name} must be a string, got {type(value).__name__}", rid)
            texts[name] = value.strip() if isinstance(value, str) else None
        if not texts["caller"]:
            raise BadRequest("caller is empty: name the calling node", rid)
        if not texts["resource"]:
            raise BadRequest("resource is empty: name a catalogued resource", rid)
        fields = rec.get("fields") or ()
        if not isinstance(fields, list | tuple) or not all(isinstance(f, str) for f in fields):
            raise BadRequest("fields must be a list of field names", rid)
        try:
            requested_at = _ms(rec.get("requested_at") or 0)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadRequest(f"requested_at is not a timestamp: {exc}", rid) from exc
        return cls(
            request_id=rid, caller=texts["caller"] or "", resource=texts["resource"] or "",
            scenario=texts["scenario"] or None, grant=texts["grant"] or None,
            key=rec.get("key"), lookup_field=texts["lookup_field"] or None, lookup_value=rec.get("lookup_value"),
            fields=tuple(fields), requested_at=requested_at,
        )

    def to_record(self) -> dict[str, Any]:
        """The Avro record (for clients sending requests)."""
        return {
            "request_id": self.request_id, "caller": self.caller, "resource": self.resource,
            "scenario": self.scenario, "grant": self.grant, "key": self.key, "lookup_field": self.lookup_field,
            "lookup_value": self.lookup_value, "fields": list(self.fields), "requested_at": self.requested_at,
        }


def valid_request_id(text: str) -> bool:
    return 0 < len(text) <= MAX_REQUEST_ID and text.isprintable()


def decode_request(value: bytes | None, schema_lookup: Any) -> CallRequest:
    """Confluent-framed CallRequest -> CallRequest; BadRequest (with the request id when recoverable)."""
    try:
        schema_id, body = framing.split(value)
    except FramingError as exc:
        raise BadRequest(f"not a Confluent-framed Avro CallRequest: {exc}") from exc
    parsed = schema_lookup(schema_id)
    if parsed is None:
        raise BadRequest(f"schema id {schema_id} is not in the registry")
    try:
        record = framing.decode_body(body, parsed)
    except FramingError as exc:
        raise BadRequest(f"the CallRequest does not decode with schema {schema_id}: {exc}") from exc
    return CallRequest.from_record(record)


def recover_request_id(value: bytes | None, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> str | None:
    """The request id of a request that did not decode: the ``hub-request-id`` header, else the first field
    of the Avro body (``request_id`` is the schema's first field), else the record key."""
    candidates: list[bytes] = [v for k, v in headers or () if k == H_REQUEST_ID and v]
    if value and len(value) > framing.HEADER_SIZE and value[0] == framing.MAGIC:
        length, pos, shift, body = 0, framing.HEADER_SIZE, 0, value
        while pos < len(body) and shift < 35:
            byte = body[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            shift += 7
            if not byte & 0x80:
                break
        length = (length >> 1) ^ -(length & 1)  # zigzag
        if 0 < length <= MAX_REQUEST_ID and pos + length <= len(body):
            candidates.append(bytes(body[pos:pos + length]))
    if key:
        candidates.append(key)
    for raw in candidates:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if valid_request_id(text):
            return text
    return None


# ------------------------------------------------------------------------------------------------ lookups


_INDEX_SUFFIXES = ("resident_id", "uscc")


def indexed_fields(resource: Resource) -> tuple[str, ...]:
    """Non-key fields a call may look a record up by: the catalogued identifier fields (resident IDs, USCCs)."""
    pk = set(resource.primary_key)
    return tuple(
        f for f in resource.field_levels
        if f not in pk and (f.endswith(_INDEX_SUFFIXES) or field_kind(f) is Kind.RESIDENT_ID)
    )


def normalise(field_name: str, value: Any) -> str:
    """The string a field value is indexed and compared by (dates ISO, identifiers upper-case)."""
    if isinstance(value, datetime):
        text = value.isoformat()
    elif isinstance(value, date):
        text = value.isoformat()
    else:
        text = str(value).strip()
    if field_name.endswith(_INDEX_SUFFIXES) or field_kind(field_name) is Kind.RESIDENT_ID:
        text = text.upper()
    return text


@dataclass(frozen=True, slots=True)
class Target:
    """What a call looks up: a primary key value, or an indexed field's value."""

    pk: str | None
    field: str | None = None
    value: str | None = None


def lookup_target(req: CallRequest, resource: Resource) -> Target:
    """The lookup a request asks for; BadRequest says what is wrong with it."""
    pk_fields = resource.primary_key
    if not pk_fields:
        raise BadRequest(f"{resource.id} has no primary key: its records cannot be called", req.request_id)
    if req.key is not None:
        if len(pk_fields) == 1:
            return Target(req.key)
        try:
            parts = json.loads(req.key)
        except ValueError:
            parts = None
        if not isinstance(parts, list) or len(parts) != len(pk_fields):
            raise BadRequest(
                f"{resource.id} has the composite primary key {pk_fields}: give key as a JSON array of "
                f"{len(pk_fields)} values in that order", req.request_id)
        return Target("|".join(str(p) for p in parts))
    if req.lookup_field is None or req.lookup_value is None:
        raise BadRequest("give key (the primary key value), or lookup_field and lookup_value", req.request_id)
    name = req.lookup_field
    if [name] == pk_fields:
        return Target(req.lookup_value)
    indexed = indexed_fields(resource)
    if name in indexed:
        return Target(None, name, normalise(name, req.lookup_value))
    if name not in resource.field_levels:
        raise BadRequest(f"{resource.id} has no field {name!r}; fields: {sorted(resource.field_levels)}",
                         req.request_id)
    hint = f"or by lookup_field one of {list(indexed)}" if indexed else "(it has no other indexed field)"
    raise BadRequest(
        f"{name} is not an indexed field of {resource.id}: look up by key (primary key {pk_fields}) {hint}",
        req.request_id)


SEP = "\x1f"  # ASCII unit separator: joins the parts of index keys (never part of an id, field name or value)


def index_partition_key(resource_id: str, field_name: str, value: str) -> bytes:
    """Key whose partition (murmur2, as any Kafka producer) holds the index entries of one field value."""
    return f"{resource_id}{SEP}{field_name}{SEP}{value}".encode()


def index_entry_key(resource_id: str, field_name: str, value: str, pk: str) -> bytes:
    """Key of one index entry on ``hub.records.index`` (one per value and primary key: compaction keeps it)."""
    return f"{resource_id}{SEP}{field_name}{SEP}{value}{SEP}{pk}".encode()


def index_partition(partition_key: bytes, partitions: Sequence[int]) -> int:
    """The partition of ``hub.records.index`` (and of the index stage on ``hub.calls``) for a partition key.

    CRC-32 rather than the default partitioner's murmur2: it runs once or twice per indexed record, and the
    pure-Python murmur2 costs ~10 µs a key; nothing outside the hub partitions these topics.
    """
    return partitions[zlib.crc32(partition_key) % len(partitions)]


def parse_index_entry_key(key: bytes) -> tuple[str, str, str, str] | None:
    parts = key.decode("utf-8", errors="replace").split(SEP, 3)
    return (parts[0], parts[1], parts[2], parts[3]) if len(parts) == 4 else None


# ------------------------------------------------------------------------------------------------ the view


@dataclass(frozen=True)
class CallView:
    """What the call stages decide by: current catalogue, live nodes, every grant (from a ControlSnapshot)."""

    resources: Mapping[str, Resource]
    nodes: Mapping[str, Node]
    grants: GrantIndex
    version: int = 0

    @classmethod
    def build(cls, resources: Collection[Resource], nodes: Collection[Node], grants: Collection[Grant],
              version: int = 0) -> CallView:
        return cls({r.id: r for r in resources}, {n.id: n for n in nodes}, GrantIndex(grants), version)

    @classmethod
    def from_snapshot(cls, snap: Any) -> CallView:
        """From a ``hub.control.state.ControlSnapshot``."""
        return cls.build(snap.config.resources, snap.config.nodes, snap.grants, snap.version)

    def grant_for(self, req: CallRequest, chosen: str | None = None) -> Grant | None:
        """The grant named (by the request, or chosen by an earlier stage), else the best match (GrantIndex)."""
        gid = chosen or req.grant
        if gid:
            return self.grants.get(gid)
        return self.grants.select(req.caller, req.resource, scenario=req.scenario or "", mode="call")


# ------------------------------------------------------------------------------------------------ stage results


@dataclass(frozen=True, slots=True)
class Envelope:
    """An admitted call on ``hub.calls``: the request, where it came from, and what earlier stages resolved."""

    stage: Stage
    request: CallRequest
    source: str  # call.<node>.request/<partition>/<offset>
    grant: str | None
    pk: str | None = None
    matches: int = 0  # records the index matched (field lookups)
    received_ms: int = 0

    @property
    def node(self) -> str:
        return node_of_request_topic(self.source.split("/", 1)[0]) or self.request.caller

    def encode(self) -> bytes:
        req = self.request
        return json.dumps({
            "stage": str(self.stage), "source": self.source, "grant": self.grant, "pk": self.pk,
            "matches": self.matches, "received_ms": self.received_ms,
            "request": {**req.to_record(), "fields": list(req.fields)},
        }, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes | None) -> Envelope:
        try:
            data = json.loads(value or b"")
            return cls(
                stage=Stage(data["stage"]), request=CallRequest.from_record(data["request"]),
                source=str(data["source"]), grant=data.get("grant"), pk=data.get("pk"),
                matches=int(data.get("matches") or 0), received_ms=int(data.get("received_ms") or 0),
            )
        except BadRequest:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise BadRequest(f"malformed {CALLS_TOPIC} record: {exc}") from exc


@dataclass(slots=True)
class Reply:
    """A call's final answer (becomes a CallReply on ``call.<node>.reply`` and an audit record)."""

    request_id: str
    node: str  # owner of the request topic: the reply goes to call.<node>.reply
    source: str
    status: Status
    message: str = ""
    request: CallRequest | None = None
    resource: Resource | None = None
    grant: str | None = None
    pk: str | None = None
    record: bytes | None = None
    schema_id: int | None = None
    masked_fields: tuple[str, ...] = ()

    @property
    def topic(self) -> str:
        return call_reply_topic(self.node)

    def to_record(self, now_ms: int) -> dict[str, Any]:
        """The CallReply Avro record."""
        req = self.request
        return {
            "request_id": self.request_id, "status": str(self.status), "message": self.message,
            "resource": self.resource.id if self.resource else (req.resource if req else None),
            "grant": self.grant, "scenario": req.scenario if req else None, "record": self.record,
            "schema_id": self.schema_id, "masked_fields": list(self.masked_fields), "flagged": False,
            "replied_at": now_ms,
        }

    @property
    def from_tier(self) -> str:
        return safe_tier(self.node)

    @property
    def to_tier(self) -> str:
        """The tier called: the resource's, or the hub's own when the resource is unknown."""
        return self.resource.tier if self.resource else "hub"

    @property
    def outcome(self) -> str:
        return OUTCOME[self.status]

    def audit(self, now_ms: int) -> dict[str, Any]:
        """An unsealed AuditRecord (action ``call``; reason = status) for the worker's hash chain."""
        req = self.request
        resource = self.resource
        allowed = self.status in (Status.OK, Status.NOT_FOUND)
        khash = (hashlib.sha256(store_key(resource.id, self.pk)).hexdigest()
                 if resource is not None and self.pk is not None else None)
        counterparty = resource.provider if resource else None
        return {
            "event_id": self.request_id, "audit_id": f"{self.request_id}/call/{counterparty or '-'}", "ts": now_ms,
            "action": "call", "actor": self.node, "counterparty": counterparty,
            "resource": resource.id if resource else (req.resource if req else None),
            "scenario": req.scenario if req else None, "grant": self.grant, "from_tier": self.from_tier,
            "to_tier": self.to_tier, "direction": direction_between(self.from_tier, self.to_tier),
            "decision": "allow" if allowed else "deny", "reason": str(self.status), "key_hash": khash,
            "masked_fields": list(self.masked_fields), "prev_hash": None, "hash": None, "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class Forward:
    """An admitted call for the next stage: send ``envelope`` to ``hub.calls`` keyed by ``route_key``."""

    envelope: Envelope
    route_key: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """A lookup allowed and found: the record (decoded) and the plan to mask it with for the caller."""

    envelope: Envelope
    resource: Resource
    grant: Grant
    plan: MaskPlan
    record: dict[str, Any]


def safe_tier(node: str) -> str:
    try:
        return tier_of(node)
    except ValueError:
        return "hub"


def make_reply(env_or_req: Envelope | tuple[CallRequest, str, str], status: Status, message: str, **kw: Any) -> Reply:
    if isinstance(env_or_req, Envelope):
        req, node, source = env_or_req.request, env_or_req.node, env_or_req.source
        kw.setdefault("grant", env_or_req.grant)
        kw.setdefault("pk", env_or_req.pk)
    else:
        req, node, source = env_or_req
    return Reply(req.request_id, node, source, status, message, request=req, **kw)


def error_reply(request_id: str, node: str, source: str, message: str) -> Reply:
    """The answer to a request that could not be understood."""
    return Reply(request_id, node, source, Status.ERROR, message)


def _denial(decision: Decision) -> str:
    detail = decision.detail or str(decision.reason)
    return f"{detail} (legal basis: {decision.legal_basis})" if decision.legal_basis else detail


def _judge(req: CallRequest, resource: Resource, view: CallView, grant: Grant | None, now: int, *,
           calls_today: int = 0, target: Target | None = None) -> Decision:
    fields = list(req.fields)
    if target is not None and target.field is not None:
        fields.append(target.field)
    return decide(resource, view.nodes.get(req.caller), grant, scenario=req.scenario or "", mode="call", now=now,
                  calls_today=calls_today, fields=fields or None, per_record=False)


def _next(env: Envelope, resource: Resource, target: Target) -> Forward:
    if target.pk is not None:
        env = replace(env, stage=Stage.LOOKUP, pk=target.pk)
        return Forward(env, store_key(resource.id, target.pk))
    assert target.field is not None and target.value is not None
    return Forward(replace(env, stage=Stage.INDEX), index_partition_key(resource.id, target.field, target.value))


def admit(req: CallRequest, node: str, source: str, view: CallView, now: int) -> Reply | Forward:
    """Stage 1, at the request partition: answer what needs no state, forward the rest (see module doc)."""
    origin = (req, node, source)
    resource = view.resources.get(req.resource)
    if req.caller != node:
        return make_reply(origin, Status.DENIED,
                      f"caller {req.caller} wrote to call.{node}.request: a node calls only as itself",
                      resource=resource)
    if resource is None:
        return make_reply(origin, Status.UNKNOWN_RESOURCE, f"resource {req.resource!r} is not in the catalogue")
    if not req.scenario:
        return make_reply(origin, Status.MISSING_SCENARIO, "the request names no scenario: a call is made for a "
                      "named application scenario, which the grant binds with caller and resource", resource=resource)
    try:
        target = lookup_target(req, resource)
    except BadRequest as exc:
        return make_reply(origin, Status.ERROR, str(exc), resource=resource)
    grant = view.grant_for(req)
    decision = _judge(req, resource, view, grant, now, target=target)
    if not decision.allowed:
        return make_reply(origin, status_for(decision.reason), _denial(decision), resource=resource,
                      grant=decision.grant)
    assert grant is not None
    env = Envelope(Stage.LOOKUP, req, source, grant.id, received_ms=now)
    if grant.daily_quota is not None:
        return Forward(replace(env, stage=Stage.QUOTA), grant.id.encode())
    return _next(env, resource, target)


def _recheck(env: Envelope, view: CallView, now: int, calls_today: int = 0) -> tuple[
    Reply | None, Resource | None, Grant | None, Target | None
]:
    """A later stage's request-level decision on the control state it sees now."""
    req = env.request
    resource = view.resources.get(req.resource)
    if resource is None:
        unknown = make_reply(env, Status.UNKNOWN_RESOURCE, f"resource {req.resource!r} is not in the catalogue")
        return unknown, None, None, None
    try:
        target = lookup_target(req, resource)
    except BadRequest as exc:
        return make_reply(env, Status.ERROR, str(exc), resource=resource), None, None, None
    grant = view.grant_for(req, env.grant)
    decision = _judge(req, resource, view, grant, now, calls_today=calls_today, target=target)
    if not decision.allowed:
        denied = make_reply(env, status_for(decision.reason), _denial(decision), resource=resource,
                            grant=decision.grant)
        return denied, None, None, None
    return None, resource, grant, target


def quota_stage(env: Envelope, view: CallView, now: int, calls_today: int) -> Reply | Forward:
    """Stage 2, at the grant's partition: refuse once the day's quota is used; otherwise the call counts."""
    refused, resource, _, target = _recheck(env, view, now, calls_today)
    if refused is not None:
        return refused
    assert resource is not None and target is not None
    return _next(env, resource, target)


def index_stage(env: Envelope, view: CallView, matches: Mapping[str, int]) -> Reply | Forward:
    """Stage 3, at the value's partition: the primary keys with that field value (the newest one is fetched)."""
    req = env.request
    resource = view.resources.get(req.resource)
    if resource is None:
        return make_reply(env, Status.UNKNOWN_RESOURCE, f"resource {req.resource!r} is not in the catalogue")
    if not matches:
        return make_reply(env, Status.NOT_FOUND,
                      f"no {resource.id} record with {req.lookup_field} = {req.lookup_value!r}", resource=resource)
    pk = max(matches, key=lambda k: (matches[k], k))
    env = replace(env, stage=Stage.LOOKUP, pk=pk, matches=len(matches))
    return Forward(env, store_key(resource.id, pk))


def lookup_stage(env: Envelope, view: CallView, now: int, record: Mapping[str, Any] | None) -> Reply | Answer:
    """Stage 4, at the row's partition: the record-level decision on the current record, and the masking plan."""
    refused, resource, grant, target = _recheck(env, view, now)
    if refused is not None:
        return refused
    assert resource is not None and grant is not None and target is not None
    req = env.request
    what = (f"with {target.field} = {req.lookup_value!r}" if target.field else f"with key {env.pk!r}")
    if record is None:
        return make_reply(env, Status.NOT_FOUND, f"no {resource.id} record {what}", resource=resource)
    if target.field is not None and normalise(target.field, record.get(target.field)) != target.value:
        # the index named a row whose value has changed since: the row no longer matches
        return make_reply(env, Status.NOT_FOUND, f"no {resource.id} record {what}", resource=resource)
    decision = decide(resource, view.nodes.get(req.caller), grant, scenario=req.scenario or "", mode="call",
                      now=now, record_district=record_district(record, resource))
    if not decision.allowed:
        return make_reply(env, status_for(decision.reason), _denial(decision), resource=resource, grant=decision.grant)
    node = view.nodes[req.caller]
    allowed = req.fields or grant.allowed_fields
    plan = field_plan(resource, node.clearance, allowed)
    return Answer(env, resource, grant, plan, dict(record))


def ok_reply(answer: Answer, record: bytes, schema_id: int) -> Reply:
    """The reply carrying the masked record, Confluent-framed with ``schema_id``."""
    env = answer.envelope
    message = ""
    if env.matches > 1:
        message = (f"{env.matches} records match {env.request.lookup_field} = {env.request.lookup_value!r}; "
                   "the most recently updated is returned")
    return make_reply(env, Status.OK, message, resource=answer.resource, grant=answer.grant.id, record=record,
                  schema_id=schema_id, masked_fields=answer.plan.masked_fields)


def passthrough(plan: MaskPlan, writer_schema: Mapping[str, Any]) -> bool:
    """True when the caller receives the stored bytes unchanged (every field graded and kept)."""
    return all(plan.action(f["name"]) is Action.KEEP for f in writer_schema["fields"])


# ------------------------------------------------------------------------------------------------ state


@dataclass(slots=True)
class Row:
    """The current version of one record in a ``hub.records`` partition (a view: tables store less)."""

    value: bytes
    offset: int = -1
    ts: int = 0
    indexed: tuple[tuple[str, str], ...] | None = None  # its indexed values; None: not decoded yet (restored)


class RecordTable:
    """One ``hub.records`` partition materialised: store key -> current row (compaction's view, in memory).

    Stored compactly, because a city's person table has millions of rows: per resource, primary key bytes ->
    the framed value (the resource id is not repeated in every key), and the indexed values only of rows
    that have them. About 250 bytes a row plus the value, against 470 as one object per row.
    """

    __slots__ = ("values", "indexed", "count")

    def __init__(self) -> None:
        self.values: dict[str, dict[bytes, bytes]] = {}
        # indexed values as text (``pack_indexed``): the dict gains an entry per row, and neither a string nor a
        # dict of strings is tracked by the garbage collector, where tuples are until a collection scans them
        self.indexed: dict[bytes, str | tuple[tuple[str, str], ...]] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @staticmethod
    def _split(key: bytes) -> tuple[str, bytes]:
        rid, _, pk = key.partition(b"|")
        return rid.decode("utf-8", errors="replace"), pk

    def value_of(self, key: bytes) -> bytes | None:
        rid, pk = self._split(key)
        rows = self.values.get(rid)
        return rows.get(pk) if rows is not None else None

    def get(self, key: bytes) -> Row | None:
        value = self.value_of(key)
        return Row(value, -1, 0, self._indexed_of(key)) if value is not None else None

    def _indexed_of(self, key: bytes) -> tuple[tuple[str, str], ...] | None:
        packed = self.indexed.get(key)
        return unpack_indexed(packed) if packed is not None else None

    def apply(self, key: bytes, row: Row | None) -> Row | None:
        """Set (or with None, delete) a key's row; returns the previous row."""
        rid, pk = self._split(key)
        rows = self.values.get(rid)
        if rows is None:
            if row is None:
                return None
            rows = self.values[rid] = {}
        old_value = rows.pop(pk, None) if row is None else rows.get(pk)
        old = Row(old_value, -1, 0, self._indexed_of(key)) if old_value is not None else None
        if row is None:
            self.indexed.pop(key, None)
            self.count -= old is not None
            return old
        rows[pk] = row.value
        self.count += old is None
        self.set_indexed(key, row.indexed)
        return old

    def set_indexed(self, key: bytes, indexed: tuple[tuple[str, str], ...] | None) -> None:
        """Remember a row's indexed values (an empty set is not stored: it is decoded again if ever needed)."""
        if not indexed:
            self.indexed.pop(key, None)
        else:
            self.indexed[key] = pack_indexed(indexed)


_PAIR, _ITEM = "\x1f", "\x1e"


def pack_indexed(indexed: tuple[tuple[str, str], ...]) -> str | tuple[tuple[str, str], ...]:
    """A row's indexed (field, value) pairs as one string, or as given if a value holds a separator."""
    packed = _ITEM.join([f"{f}{_PAIR}{v}" for f, v in indexed])
    return packed if packed.count(_PAIR) == len(indexed) and packed.count(_ITEM) == len(indexed) - 1 else indexed


def unpack_indexed(packed: str | tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    if not isinstance(packed, str):
        return packed
    return tuple((f, v) for f, _, v in (item.partition(_PAIR) for item in packed.split(_ITEM)))


def resource_of_store_key(key: bytes) -> tuple[str, str] | None:
    """(resource id, primary key value) of a ``hub.records`` key (resource ids contain no ``|``)."""
    text = key.decode("utf-8", errors="replace")
    rid, sep, pk = text.partition("|")
    return (rid, pk) if sep else None


def index_values(record: Mapping[str, Any], fields: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((f, normalise(f, record[f])) for f in fields if record.get(f) is not None)


@dataclass(frozen=True, slots=True)
class IndexChange:
    """One write to ``hub.records.index``: an entry (value = the row's timestamp) or its tombstone."""

    partition_key: bytes
    key: bytes
    value: bytes | None


def index_changes(
    resource_id: str, pk: str, old: Sequence[tuple[str, str]], new: Sequence[tuple[str, str]], ts: int
) -> list[IndexChange]:
    """Entries to retract (values the row no longer has) and to add or refresh (its current values)."""
    changes = [
        IndexChange(index_partition_key(resource_id, f, v), index_entry_key(resource_id, f, v, pk), None)
        for f, v in old if (f, v) not in new
    ]
    stamp = str(ts).encode()
    changes += [
        IndexChange(index_partition_key(resource_id, f, v), index_entry_key(resource_id, f, v, pk), stamp)
        for f, v in new if (f, v) not in old
    ]
    return changes


class IndexTable:
    """One ``hub.records.index`` partition: (resource, field, value) -> {primary key: row timestamp}.

    Keyed by the entry key's text without the primary key (``<resource>`` U+001F ``<field>`` U+001F ``<value>``),
    a string rather than a tuple: the table gains an entry per indexed value, and a string is never tracked by the
    garbage collector (nor is the inner dict of strings and ints)."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, int]] = {}

    def apply(self, key: bytes, value: bytes | None) -> None:
        text = key.decode("utf-8", errors="replace")
        parts = text.split(SEP, 3)
        if len(parts) != 4:
            return
        pk = parts[3]
        slot = text[: len(text) - len(pk) - 1]
        if value is None:
            pks = self.entries.get(slot)
            if pks is not None:
                pks.pop(pk, None)
                if not pks:
                    del self.entries[slot]
            return
        try:
            ts = int(value)
        except ValueError:
            ts = 0
        self.entries.setdefault(slot, {})[pk] = ts

    def matches(self, resource_id: str, field_name: str, value: str) -> dict[str, int]:
        return dict(self.entries.get(f"{resource_id}{SEP}{field_name}{SEP}{value}", {}))


def quota_key(grant_id: str, day: date) -> str:
    return f"{grant_id}|{day.isoformat()}"


def quota_entry_key(grant_id: str, day: date, request_topic: str, request_id: str) -> bytes:
    """Key of one counted call on ``hub.call-quota``: one record per call, so a call is never counted twice."""
    return json.dumps([grant_id, day.isoformat(), request_topic, request_id], separators=(",", ":")).encode()


class QuotaTable:
    """One ``hub.call-quota`` partition: the calls counted per (grant, CST day), each call once.

    The changelog holds one record per counted call (key: grant, day, request topic, request id), so the count
    is the number of distinct keys: a request redelivered after a crash or a rebalance is recognised, by this
    worker or the next owner, and not counted again.
    """

    __slots__ = ("counts", "seen")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.seen: set[bytes] = set()

    def used(self, grant_id: str, now_ms: int) -> int:
        return self.counts.get(quota_key(grant_id, quota_day(now_ms)), 0)

    def counted(self, grant_id: str, now_ms: int, request_topic: str, request_id: str) -> bool:
        return quota_entry_key(grant_id, quota_day(now_ms), request_topic, request_id) in self.seen

    def count(self, grant_id: str, now_ms: int, request_topic: str, request_id: str) -> bytes:
        """Count one call (once); returns the changelog key to write."""
        key = quota_entry_key(grant_id, quota_day(now_ms), request_topic, request_id)
        self.apply(key, b"1")
        return key

    def apply(self, key: bytes, value: bytes | None) -> None:
        """A changelog record (restored, or our own read back): each key counts once."""
        if value is None or key in self.seen:
            return
        try:
            grant_id, day, _, _ = json.loads(key)
        except (ValueError, TypeError):
            return
        self.seen.add(key)
        slot = f"{grant_id}|{day}"
        self.counts[slot] = self.counts.get(slot, 0) + 1
