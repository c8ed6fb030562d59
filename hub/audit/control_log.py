"""The control plane's audit log: ``hub.audit.control``, one hash chain written by the API.

The data-plane log ``hub.audit`` has one writer per partition (the worker owning that ingress partition),
so the API never writes there. What the API decides goes to a topic of its own, with the same
``AuditRecord`` schema and the same hash chain (:class:`hub.audit.chain.ChainWriter`, checkpoints and
``HUB_AUDIT_HMAC_KEY`` included), so ``hub audit verify`` checks it like any audit topic:

* ``grant``: every grant version written, with the transition as its reason: ``request: active
  (auto_approved: unconditional sharing)``, ``request: denied (not_shared: <legal basis>)``, ``approve:
  requested -> active (...)``, ``deny: ...``, ``revoke: ...``, ``expire: ...``;
* ``node``, ``scenario``, ``catalog``: every registration, change, token issue, removal, catalogue version
  and retirement (who did it, what changed; never a token or its hash);
* ``auth_failure``: a wrong or malformed credential (the claimed node, the client address, the endpoint,
  why; never the secret presented) and ``rate_limited`` refusals (once per client and window);
* ``forbidden``: a request refused with 403 (acting as another node, operator-only endpoints), by whom.

The topic has one partition, ``cleanup.policy=delete`` with unlimited retention (never compacted): the whole
history is kept. **Single writer**: the API process running :class:`ControlAuditLog` is the only one that
may write it; it resumes the chain from the topic's last record at start, serialises its writes with a
lock and, before each write, checks that nobody else wrote since (else it continues from the new last
record). A second API instance on the same cluster must still not write it: two writers at the same moment
fork the chain, which ``hub audit verify`` reports as ``inserted``. To run several API instances, give each
its own topic (``HUB_CONTROL_AUDIT_TOPIC``) and verify them all (``hub audit verify --topic ...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hub.audit.chain import ChainWriter, resume_state
from hub.broker.clients import make_consumer, make_producer
from hub.broker.topics import CONTROL_AUDIT, ensure_topics
from hub.catalogue.model import tier_of
from hub.contract import (
    CATALOG_TOPIC,
    GRANTS_TOPIC,
    H_EVENT_ID,
    NODES_TOPIC,
    OBJECTIONS_TOPIC,
    OPERATOR,
    SCENARIOS_TOPIC,
)
from hub.objections.model import ESCALATION_NOTE
from hub.registry import framing
from hub.registry.files import AUDIT_SCHEMA_FILE, schema_text
from hub.settings import Settings

log = logging.getLogger("hub.audit")

MAX_TEXT = 2000  # caller-controlled text (claimed user names, paths) is cut to this in audit records
PARTITION = 0


class AuditSink(Protocol):
    """Where control-plane audit records go (the Kafka log, or a list in tests)."""

    async def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Seal and persist ``records`` in order (unsealed AuditRecord dicts)."""


class MemoryAuditSink:
    """An :class:`AuditSink` keeping sealed records in memory (tests, a hub without Kafka)."""

    def __init__(self, key: bytes | None = None) -> None:
        self.chain = ChainWriter(PARTITION, key=key, checkpoint_every=1_000_000, checkpoint_seconds=1e9)
        self.records: list[dict[str, Any]] = []

    async def write(self, records: Sequence[dict[str, Any]]) -> None:
        self.records.extend(self.chain.seal_batch([dict(r) for r in records], now_ms()))


def now_ms() -> int:
    return int(time.time() * 1000)


def _tier(node: str | None) -> str | None:
    if not node:
        return None
    try:
        return tier_of(node)
    except ValueError:
        return None


def _cut(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def audit_record(
    now: int, event_id: str, action: str, actor: str, *, decision: str, reason: str,
    counterparty: str | None = None, resource: str | None = None, scenario: str | None = None,
    grant: str | None = None, source: str | None = None,
) -> dict[str, Any]:
    """An unsealed AuditRecord (schemas/hub/audit_record.avsc) of a control-plane act."""
    return {
        "event_id": event_id, "audit_id": f"{event_id}/{action}/{counterparty or '-'}", "ts": now,
        "action": action, "actor": _cut(actor) or "-", "counterparty": counterparty, "resource": resource,
        "scenario": scenario, "grant": grant, "from_tier": _tier(actor), "to_tier": _tier(counterparty),
        "direction": None, "decision": decision, "reason": _cut(reason) or "-", "key_hash": None,
        "masked_fields": [], "prev_hash": None, "hash": None, "source": _cut(source),
    }


# ------------------------------------------------------------------ what a control change means (pure)

_VERBS = {("requested", "active"): "approve", ("requested", "denied"): "deny", ("active", "revoked"): "revoke"}


def grant_transition(before: Any, after: Any) -> str:
    """What turned ``before`` into ``after``: request, approve, deny, revoke, expire or update."""
    if before is None:
        return "request"
    if after.state == "expired" and before.state != "expired":
        return "expire"
    return _VERBS.get((before.state, after.state), "update")


def grant_audit(before: Any, after: Any, now: int) -> dict[str, Any]:
    """The audit record of one grant version (hub.policy.model.Grant) written after ``before`` (None: new)."""
    verb = grant_transition(before, after)
    if verb == "request":
        actor = after.requested_by or after.consumer
        change = after.state
    else:
        actor = after.decided_by or OPERATOR
        change = f"{before.state} -> {after.state}"
    reason = f"{verb}: {change}" + (f" ({after.reason})" if after.reason else "")
    decision = "allow" if after.state in ("active", "requested") else "deny"
    return audit_record(
        now, f"grant:{after.id}:{after.updated_at}:{after.state}", "grant", actor, decision=decision,
        reason=reason, counterparty=after.consumer, resource=after.resource, scenario=after.scenario, grant=after.id,
        source=f"hub.grants/{after.id}",
    )


def node_change(before: Any, after: Any) -> str:
    """What changed on a node (hub.control.state.NodeEntry): never the token or its hash, only its public id."""
    if before is None or (before.removed and not after.removed):
        what = ["registered"]
        if after.token_id:
            what.append(f"token issued (id {after.token_id})")
        return "; ".join(what) + f"; clearance {after.clearance}"
    if after.removed and not before.removed:
        return "removed (its token no longer authenticates)"
    what = []
    if after.token_id != before.token_id:
        what.append(f"token issued (id {after.token_id}); the previous one stops working")
    if after.clearance != before.clearance:
        what.append(f"clearance {before.clearance} -> {after.clearance}")
    if after.title != before.title:
        what.append("title changed")
    return "; ".join(what) or "updated"


_OBJECTION_VERBS = {
    ("filed", "accepted"): "accept", ("accepted", "flagged"): "flag", ("verified", "unflagged"): "unflag",
    ("unflagged", "archived"): "archive",
}


def objection_transition(before: Any, after: Any) -> str:
    """What turned ``before`` into ``after`` (hub.objections.model.Objection): file, accept, flag, correct,
    reject, unflag, archive, escalate or update."""
    if before is None:
        return "file"
    last = after.history[-1] if after.history else None
    if after.state == before.state and last is not None and (last.note or "").startswith(ESCALATION_NOTE):
        return "escalate"
    if (before.state, after.state) == ("flagged", "verified"):
        return "correct" if after.outcome == "corrected" else "reject"
    return _OBJECTION_VERBS.get((before.state, after.state), "update")


def objection_audit(before: Any, after: Any, now: int) -> dict[str, Any]:
    """The audit record of one objection version: who moved it, from where to where, and why."""
    verb = objection_transition(before, after)
    last = after.history[-1] if after.history else None
    actor = last.actor if last is not None else after.filer
    change = after.state if before is None else f"{before.state} -> {after.state}"
    detail = after.reason if before is None else (last.note if last is not None else None)
    if verb == "correct" and after.corrected_event_id:
        detail = f"{detail or 'corrected'}; corrected record {after.corrected_event_id}"
    reason = f"{verb}: {change} (record {after.record_key})" + (f": {detail}" if detail else "")
    return audit_record(
        now, f"objection:{after.objection_id}:{len(after.history)}", "objection", actor, decision="allow",
        reason=reason, counterparty=after.provider if actor != after.provider else after.filer,
        resource=after.resource, source=f"hub.objections/{after.objection_id}",
    )


def change_records(changes: Sequence[tuple[str, Any, Any]], now: int) -> list[dict[str, Any]]:
    """Audit records for control changes ``(topic, previous version or None, new version)``, in order."""
    out = []
    for topic, before, after in changes:
        if topic == GRANTS_TOPIC:
            out.append(grant_audit(before, after, now))
        elif topic == NODES_TOPIC:
            out.append(audit_record(
                now, f"node:{after.id}:{after.updated_at}", "node", after.updated_by or OPERATOR, decision="allow",
                reason=node_change(before, after), counterparty=after.id, source=f"hub.nodes/{after.id}",
            ))
        elif topic == SCENARIOS_TOPIC:
            verb = "registered" if after.version == 1 else f"updated to version {after.version}"
            out.append(audit_record(
                now, f"scenario:{after.id}:{after.version}", "scenario", after.updated_by or OPERATOR,
                decision="allow", reason=f"{verb}; legal basis: {after.scenario.legal_basis}", scenario=after.id,
                source=f"hub.scenarios/{after.id}",
            ))
        elif topic == OBJECTIONS_TOPIC:
            out.append(objection_audit(before, after, now))
        elif topic == CATALOG_TOPIC:
            r = after.resource
            if after.retired:
                verb = f"retired in version {after.version}"
            elif after.version == 1:
                verb = "catalogued"
            else:
                verb = f"version {after.version}"
            basis = f"; legal basis: {r.legal_basis}" if r.sharing == "none" and r.legal_basis else ""
            out.append(audit_record(
                now, f"catalog:{after.key}", "catalog", after.updated_by or r.provider, decision="allow",
                reason=f"{verb}; sharing {r.sharing}{basis}", counterparty=r.provider, resource=r.id,
                source=f"hub.catalog/{after.key}",
            ))
    return out


def request_source(client: str | None, method: str, path: str) -> str:
    return f"http {client or '?'} {method} {path}"


def auth_failure_audit(
    now: int, claimed: str | None, reason: str, client: str | None, method: str, path: str
) -> dict[str, Any]:
    """A failed authentication: who was claimed (``anonymous`` if nobody could be), why, from where."""
    return audit_record(
        now, f"auth:{uuid.uuid4()}", "auth_failure", claimed or "anonymous", decision="deny", reason=reason,
        source=request_source(client, method, path),
    )


def forbidden_audit(
    now: int, actor: str, code: str, message: str, client: str | None, method: str, path: str,
    *, resource: str | None = None, grant: str | None = None,
) -> dict[str, Any]:
    """A request refused with 403 (acting as another node, an operator-only endpoint, ...)."""
    return audit_record(
        now, f"forbidden:{uuid.uuid4()}", "forbidden", actor, decision="deny", reason=f"{code}: {message}",
        resource=resource, grant=grant, source=request_source(client, method, path),
    )


# ------------------------------------------------------------------ the Kafka writer


class ControlAuditLog:
    """The writer of ``hub.audit.control`` (see the module doc): seals, writes, checkpoints.

    Before each write it compares the topic's end offset with the offset its own last write left: if anything
    else was written in between (another API instance, against the advice above), it continues the chain from
    the topic's last record rather than forking it. That narrows the harm of a second writer; it does not make
    two simultaneous writers safe.
    """

    def __init__(
        self, settings: Settings, bootstrap: str, schemas: Any, *, topic: str | None = None,
    ) -> None:
        """``schemas``: a :class:`hub.control.schemas.SchemaSource` (register, load, parsed); ``topic``: else
        ``settings.control_audit_topic`` (``hub.audit.control``)."""
        self.settings = settings
        self.bootstrap = bootstrap
        self.schemas = schemas
        self.topic = topic or settings.control_audit_topic
        self.chain: ChainWriter | None = None
        self._tp = TopicPartition(self.topic, PARTITION)
        self._encode: Any = None
        self._producer: AIOKafkaProducer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._next_offset: int | None = None  # where the next record lands if no one else writes; None: unknown
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the topic if missing, register the schema, resume the chain from the last record."""
        await ensure_topics(self.settings, self.bootstrap, [self.topic], spec=CONTROL_AUDIT)
        text = schema_text(AUDIT_SCHEMA_FILE)
        schema_id = await self.schemas.register(f"{self.topic}-value", text)
        self._encode = framing.make_encoder(schema_id, text)
        self._producer = make_producer(self.settings, self.bootstrap, enable_idempotence=True)
        self._reader = make_consumer(self.settings, self.bootstrap)
        try:
            await self._producer.start()
            await self._reader.start()
            self._reader.assign([self._tp])
            async with self._lock:
                await self._catch_up()
        except BaseException:
            await self.stop()
            raise
        interval = max(1.0, self.settings.audit_checkpoint_seconds / 4)
        self._ticker = asyncio.ensure_future(self._tick_forever(interval))
        log.info("control audit log %s: chain continues at seq %d", self.topic,
                 self.chain.state.next_seq if self.chain else 0)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ticker
            self._ticker = None
        for client in (self._producer, self._reader):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._producer = self._reader = None

    async def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Seal ``records`` into the chain and write them, in order; returns once the broker has them."""
        if not records:
            return
        async with self._lock:
            await self._catch_up()
            assert self.chain is not None
            await self._send(self.chain.seal_batch([dict(r) for r in records], now_ms()))

    async def control_changes(self, changes: Sequence[tuple[str, Any, Any]]) -> None:
        """The :class:`hub.control.service.ControlService` change listener: audit every control change."""
        await self.write(change_records(changes, now_ms()))

    # ---------------------------------------------------------------- internals

    async def _send(self, sealed: Sequence[dict[str, Any]]) -> None:
        assert self._producer is not None
        try:
            futures = []
            for record in sealed:
                key = record["event_id"].encode()
                futures.append(await self._producer.send(
                    self.topic, self._encode(record), key=key, partition=PARTITION,
                    headers=[(H_EVENT_ID, key)],
                ))
            metadata = await asyncio.gather(*futures)
        except BaseException:
            self._next_offset = None  # what reached the topic is unknown: resume from it before the next write
            raise
        self._next_offset = metadata[-1].offset + 1 if metadata else self._next_offset

    async def _tick_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._lock:
                    await self._catch_up()
                    assert self.chain is not None
                    due = self.chain.tick(now_ms())
                    if due:
                        await self._send(due)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("control audit checkpoint failed: %s", exc)

    async def _catch_up(self) -> None:
        """Make the chain continue from the topic's last record, unless it already does (the caller holds the
        lock): one end-offset query when nothing changed."""
        assert self._reader is not None
        end = (await self._reader.end_offsets([self._tp]))[self._tp]
        if self.chain is not None and end == self._next_offset:
            return
        if self.chain is not None:
            log.warning("%s was written by another process (end offset %s, expected %s): continuing the chain from "
                        "its last record; run one control audit writer per topic", self.topic, end, self._next_offset)
        last = await self._read_at(end - 1) if end > 0 else None
        self.chain = ChainWriter(
            PARTITION, resume_state(last), key=self.settings.audit_key,
            checkpoint_every=self.settings.audit_checkpoint_every,
            checkpoint_seconds=self.settings.audit_checkpoint_seconds,
        )
        self._next_offset = end

    async def _read_at(self, offset: int) -> dict[str, Any]:
        assert self._reader is not None
        self._reader.seek(self._tp, offset)
        for _ in range(40):
            batch = await self._reader.getmany(self._tp, timeout_ms=500, max_records=1)
            if batch.get(self._tp):
                return await self._decode(batch[self._tp][0].value)
        raise RuntimeError(f"could not read the last record of {self.topic} (offset {offset})")

    async def _decode(self, value: bytes | None) -> dict[str, Any]:
        try:
            schema_id, body = framing.split(value)
            if self.schemas.parsed(schema_id) is None:
                await self.schemas.load([schema_id])
            parsed = self.schemas.parsed(schema_id)
            if parsed is None:
                raise ValueError(f"schema id {schema_id} is not in the registry")
            return framing.decode_body(body, parsed)
        except (framing.FramingError, ValueError) as exc:
            raise RuntimeError(
                f"the last record of {self.topic} is not a readable AuditRecord ({exc}): the chain cannot continue "
                "from it; run `hub audit verify` and investigate before starting the API again"
            ) from exc
