"""The call stages in the exchange worker: one Faust agent, a batch at a time, and the changelog-backed state.

``install_call_agents(exchange)`` (called by ``ExchangeWorker.__init__``) adds to the worker's Faust app

* one agent on every ``call.<node>.request`` topic and on ``hub.calls``: requests are admitted (or answered)
  at their partition, admitted calls travel on ``hub.calls`` to the partition owning the state of their next
  stage (``hub.calls.core``: quota -> index -> lookup), and the last stage writes the ``CallReply`` to
  ``call.<node>.reply``, then the ``call`` audit record through the worker's hash chain (``_write_audit``);
* :class:`CallState`: for each partition index p the worker owns, the materialised tables restored from and
  kept current by their compacted changelogs, read by a plain aiokafka consumer (no Faust per-event cost):
  ``hub.records`` p (current record per store key), ``hub.records.index`` p (secondary index) and
  ``hub.call-quota`` p (calls per grant and day).

Faust co-partitions every topic the app subscribes with the same partition count, so partition p of the
``ingress.*``, ``call.*.request`` and ``hub.calls`` topics belongs to one worker, which also holds partition
p of the three state topics and writes partition p of ``hub.audit``. A ``hub.calls`` record keyed by a store
key lands on the partition of that row in ``hub.records`` (both use murmur2, like any Kafka producer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hub.broker.kafka_config import kafka_client_kwargs
from hub.broker.topics import RECORDS_TOPIC
from hub.calls import core
from hub.calls.core import (
    CALLS_TOPIC,
    INDEX_TOPIC,
    QUOTA_TOPIC,
    REPLY_SUBJECT,
    REQUEST_SUBJECT,
    Answer,
    BadRequest,
    CallView,
    Envelope,
    Forward,
    IndexTable,
    QuotaTable,
    RecordTable,
    Reply,
    Row,
    Stage,
)
from hub.catalogue.model import Resource
from hub.pipeline.core import H_EVENT_ID, OutRecord, RawRecord, store_key
from hub.pipeline.faust_io import gather_all, raw_record, schema_text
from hub.pipeline.sender import BatchSender
from hub.policy.masking import apply_mask, derived_schema
from hub.registry import framing
from hub.registry.client import RegistryClient, RegistryClientError
from hub.settings import Settings

log = logging.getLogger("hub.calls")

CALL_BATCH_MAX = 500
CALL_BATCH_WITHIN = 0.002  # seconds a call waits for company before its batch is handled (latency per hop)
STATE_TOPICS = (RECORDS_TOPIC, INDEX_TOPIC, QUOTA_TOPIC)
COMMIT_INTERVAL_S = 0.5  # how often the index emission position (hub.records offsets) is committed
CAUGHT_UP_TIMEOUT_S = 5.0
QUARANTINE_RULE = "bad_call_request"
OPERATOR = "hub"


def install_call_agents(exchange: Any) -> CallAgents:
    """Add the call agent and state to an ``ExchangeWorker`` (see the module docstring)."""
    return CallAgents(exchange)


# ------------------------------------------------------------------------------------------------ topics


def call_topics(settings: Settings, bootstrap: str) -> None:
    """Create ``hub.calls`` and the two compacted state changelogs (P partitions each) before the app subscribes.

    Runs in a thread of its own: the worker's event loop is not running yet and must not be replaced.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_create_topics(settings, bootstrap))
        except BaseException as exc:  # reported below, in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="hub-call-topics")
    thread.start()
    thread.join()
    if errors:
        log.warning("could not create the call topics yet: %r", errors[0])


async def _create_topics(settings: Settings, bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    compact = {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"}
    days = {"cleanup.policy": "delete", "retention.ms": str(3 * 86_400_000)}  # one record per counted call
    wanted = {CALLS_TOPIC: {}, INDEX_TOPIC: compact, QUOTA_TOPIC: days}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(name=t, num_partitions=settings.topic_partitions, replication_factor=settings.topic_replication,
                        topic_configs=configs) for t, configs in wanted.items() if t not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
                await admin.create_topics(new)
            log.info("created %s", ", ".join(t.name for t in new))
    finally:
        await admin.close()


# ------------------------------------------------------------------------------------------------ the worker's parts


def _single_flight(exchange: Any) -> None:
    """Make the worker's lazy start-up and partition restore safe to call from two agents at once.

    The exchange agent and the call agent both need the worker prepared (registry, producer, control plane)
    and partition p's audit chain restored before writing audit records to p; two concurrent restores of one
    partition would fork its chain. Both calls become single-flight: concurrent callers share one result,
    restores run one at a time (they share one reader), and a partition restored again only after its state
    was dropped (revocation).
    """
    prepare, restore = exchange._prepare, exchange._restore
    prepared: list[asyncio.Future[Any]] = []
    restoring: dict[int, asyncio.Future[Any]] = {}
    locks: list[asyncio.Lock] = []

    async def prepare_once() -> Any:
        if not prepared:
            prepared.append(asyncio.ensure_future(prepare()))
        return await asyncio.shield(prepared[0])

    async def restore_serially(partition: int) -> Any:
        if not locks:
            locks.append(asyncio.Lock())
        async with locks[0]:
            state = await restore(partition)
        exchange.partitions[partition] = state  # before the future completes: no window for a second restore
        return state

    def current(fut: asyncio.Future[Any], partition: int) -> bool:
        if not fut.done():
            return True
        if fut.cancelled() or fut.exception() is not None:
            return False
        return exchange.partitions.get(partition) is fut.result()

    async def restore_once(partition: int) -> Any:
        fut = restoring.get(partition)
        if fut is None or not current(fut, partition):
            fut = restoring[partition] = asyncio.ensure_future(restore_serially(partition))
        return await asyncio.shield(fut)

    exchange._prepare = prepare_once
    exchange._restore = restore_once


class CallAgents:
    """The call agent of one worker: decides with ``hub.calls.core``, sends, audits, counts."""

    def __init__(self, exchange: Any) -> None:
        self.exchange = exchange
        self.settings: Settings = exchange.settings
        self.bootstrap: str = exchange.bootstrap
        app: faust.App = exchange.app
        call_topics(self.settings, self.bootstrap)
        _single_flight(exchange)
        topics = [core.request_topic(n.id) for n in exchange.config.nodes if n.id != OPERATOR] + [CALLS_TOPIC]
        topic = app.topic(*topics, value_serializer="raw", key_serializer="raw", allow_empty=True)
        app.agent(topic, name="hub.calls")(self._agent)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_before_shutdown.connect(self._on_shutdown)
        self.state = CallState(self.settings, self.bootstrap)
        self.view: CallView | None = None
        self._ready: asyncio.Future[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self.sender: ImmediateSender | None = None
        self.registry: RegistryClient | None = None
        self.reply_encode: Callable[[dict[str, Any]], bytes] | None = None
        self._masked: dict[tuple[str, str, int], tuple[int, Callable[[dict[str, Any]], bytes]]] = {}
        self.calls = 0

    # ---------- start-up and rebalancing ----------
    async def ready(self) -> None:
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._start())
        await asyncio.shield(self._ready)

    async def _start(self) -> None:
        ex = self.exchange
        if ex.ctx is None:
            ex.ctx = await ex._prepare()
        self.registry = ex.registry
        assert self.registry is not None and ex.producer is not None
        await self.registry.register(REQUEST_SUBJECT, schema_text("schemas/hub/call_request.avsc"))
        reply_id = await self.registry.register(REPLY_SUBJECT, schema_text("schemas/hub/call_reply.avsc"))
        reply = await self.registry.schema_by_id(reply_id)
        self.reply_encode = framing.make_encoder(reply_id, reply.schema_str)
        self.sender = ImmediateSender(ex.producer)
        await self.state.start(ex.producer, self.registry, self._resource)

    def _resource(self, resource_id: str) -> Resource | None:
        return self._view().resources.get(resource_id)

    def _view(self) -> CallView:
        control = self.exchange.control
        if control is None:
            raise RuntimeError("the worker's control plane view is not started")
        if self.view is None or self.view.version != control.version:
            self.view = CallView.from_snapshot(control.snapshot())
        return self.view

    async def _on_assigned(self, sender: Any = None, assigned: Iterable[Any] = (), **_: Any) -> None:
        owned = {tp.partition for tp in assigned if tp.topic == CALLS_TOPIC}
        self.state.assign(owned)
        if self._starting is None:  # start the state (and restore) now rather than at the first call
            self._starting = asyncio.ensure_future(self._start_quietly())

    async def _start_quietly(self) -> None:
        try:
            await self.ready()
        except Exception as exc:  # the first call retries and, failing again, stops the worker
            log.warning("call state could not start yet: %r", exc)
            self._ready = None

    async def _on_shutdown(self, sender: Any = None, **_: Any) -> None:
        await self.state.stop()

    # ---------- the agent ----------
    async def _agent(self, stream: faust.StreamT) -> None:
        async for events in stream.take_events(CALL_BATCH_MAX, within=CALL_BATCH_WITHIN):
            records = [raw_record(e.message) for e in events]
            try:
                await self.handle(records)
            except Exception:
                # as the exchange agent: never let Faust commit a batch that was not answered
                log.critical("a call batch could not be processed; exiting so it is redelivered", exc_info=True)
                logging.shutdown()
                os._exit(70)

    async def handle(self, records: Sequence[RawRecord]) -> None:
        await self.ready()
        assert self.registry is not None and self.sender is not None
        view = self._view()
        now = int(time.time() * 1000)
        batch = _Batch()
        requests = [r for r in records if r.topic != CALLS_TOPIC]
        await self._fetch_schemas(r.value for r in requests)
        for rec in requests:
            self._admit(rec, view, now, batch)
        work = [(rec.partition, env) for rec in records if rec.topic == CALLS_TOPIC
                if (env := self._envelope(rec)) is not None]
        while True:
            work += await self._local(batch)
            if not work:
                break
            await self._stages(work, view, now, batch)
            work = []
        await self._send(batch, now)

    async def _local(self, batch: _Batch) -> list[tuple[int, Envelope]]:
        """Forwards whose next stage this worker owns are handled here and now, without the hop through Kafka
        (every stage with one worker; 1/N of them with N): the same state, the same partition's audit chain."""
        assert self.sender is not None
        parts = await self.sender._partitions_of(CALLS_TOPIC)
        local, remote = [], []
        for _, forward in batch.forwards:
            if forward.envelope.stage is Stage.INDEX:  # the index topic's partitioning
                target = core.index_partition(forward.route_key, parts)
            else:  # the default partitioner's, as hub.records is written with
                target = self.sender.partitioner(forward.route_key, parts, parts)
            (local if target in self.state.owned else remote).append((target, forward))
        batch.forwards = remote
        return [(target, forward.envelope) for target, forward in local]

    async def _stages(self, work: Sequence[tuple[int, Envelope]], view: CallView, now: int, batch: _Batch) -> None:
        """Run admitted calls' next stage at partition p (read from hub.calls, or local forwards)."""
        await self.state.wait_ready({p for p, _ in work})
        lookup_parts = {p for p, env in work if env.stage is Stage.LOOKUP}
        if lookup_parts:
            await self.state.caught_up(lookup_parts)
        lookups: list[tuple[int, Envelope, Row | None]] = []
        for partition, env in work:
            self._stage(partition, env, view, now, batch, lookups)
        await self._lookups(lookups, view, now, batch)

    def _admit(self, rec: RawRecord, view: CallView, now: int, batch: _Batch) -> None:
        node = core.node_of_request_topic(rec.topic) or ""
        source = f"{rec.topic}/{rec.partition}/{rec.offset}"
        try:
            req = core.decode_request(rec.value, self._parsed)
        except BadRequest as exc:
            rid = exc.request_id or core.recover_request_id(rec.value, rec.key, rec.headers)
            if rid is None:
                batch.quarantine.append((rec, str(exc)))
            else:
                batch.reply(rec.partition, core.error_reply(rid, node, source, str(exc)))
            return
        batch.route(rec.partition, core.admit(req, node, source, view, now))

    def _envelope(self, rec: RawRecord) -> Envelope | None:
        try:
            return Envelope.decode(rec.value)
        except BadRequest as exc:
            log.warning("dropping a malformed %s record at %d/%d: %s", CALLS_TOPIC, rec.partition, rec.offset, exc)
            return None

    def _stage(self, partition: int, env: Envelope, view: CallView, now: int, batch: _Batch,
               lookups: list[tuple[int, Envelope, Row | None]]) -> None:
        if env.stage is Stage.QUOTA:
            quota = self.state.quota[partition]
            topic, rid, grant = env.source.split("/", 1)[0], env.request.request_id, env.grant or ""
            counted = quota.counted(grant, now, topic, rid)  # a redelivered call: already counted once
            used = quota.used(grant, now)
            result = core.quota_stage(env, view, now, used - 1 if counted else used)
            if isinstance(result, Forward) and not counted:
                batch.quota_writes.append((partition, quota.count(grant, now, topic, rid)))
            batch.route(partition, result)
        elif env.stage is Stage.INDEX:
            req = env.request
            resource = view.resources.get(req.resource)
            matches: dict[str, int] = {}
            if resource is not None and req.lookup_field and req.lookup_value is not None:
                value = core.normalise(req.lookup_field, req.lookup_value)
                matches = self.state.index[partition].matches(resource.id, req.lookup_field, value)
            batch.route(partition, core.index_stage(env, view, matches))
        else:
            row = self.state.records[partition].get(store_key(env.request.resource, env.pk or ""))
            lookups.append((partition, env, row))

    async def _lookups(self, lookups: Sequence[tuple[int, Envelope, Row | None]], view: CallView, now: int,
                       batch: _Batch) -> None:
        await self._fetch_schemas(row.value for _, _, row in lookups if row is not None)
        for partition, env, row in lookups:
            record: dict[str, Any] | None = None
            writer_id = 0
            if row is not None:
                try:
                    writer_id, body = framing.split(row.value)
                    schema = self.registry.cached(writer_id) if self.registry else None
                    if schema is None:
                        raise ValueError(f"schema id {writer_id} of the stored record is not in the registry")
                    record = framing.decode_body(body, schema.parsed)
                except ValueError as exc:
                    batch.reply(partition, core._reply(env, core.Status.ERROR,
                                                       f"the stored record cannot be read: {exc}"))
                    continue
            result = core.lookup_stage(env, view, now, record)
            if isinstance(result, Reply):
                batch.reply(partition, result)
                continue
            assert row is not None
            try:
                batch.reply(partition, await self._masked_reply(result, row, writer_id))
            except Exception as exc:  # a registry refusal or an encoding failure: say so, never stay silent
                log.warning("call %s: masking failed: %r", env.request.request_id, exc)
                batch.reply(partition, core._reply(env, core.Status.ERROR, f"the hub could not mask the record: {exc}",
                                                   resource=result.resource))

    async def _masked_reply(self, answer: Answer, row: Row, writer_id: int) -> Reply:
        assert self.registry is not None
        writer = self.registry.cached(writer_id)
        assert writer is not None
        schema = json.loads(writer.schema_str)
        if core.passthrough(answer.plan, schema):
            return core.ok_reply(answer, row.value, writer_id)
        cache_key = (answer.resource.id, answer.plan.key, writer_id)
        encoder = self._masked.get(cache_key)
        if encoder is None:
            derived = derived_schema(schema, answer.plan)
            subject = f"{answer.resource.id}.masked.{answer.plan.key}-value"  # as the exchange agent's feeds
            try:
                derived_id = await self.registry.register(subject, derived)
            except RegistryClientError:  # an older writer version's derivation: its own subject
                derived_id = await self.registry.register(
                    f"{answer.resource.id}.masked.{answer.plan.key}.w{writer_id}-value", derived)
            encoder = self._masked[cache_key] = (derived_id, framing.make_encoder(derived_id, derived))
        derived_id, encode = encoder
        return core.ok_reply(answer, encode(apply_mask(answer.record, answer.plan)), derived_id)

    # ---------- sending, auditing, counting ----------
    async def _send(self, batch: _Batch, now: int) -> None:
        ex = self.exchange
        assert self.sender is not None and self.reply_encode is not None
        if batch.quota_writes:  # the count is durable before the call it counts goes on
            counted = [OutRecord(QUOTA_TOPIC, key, b"1", []) for _, key in batch.quota_writes]
            await gather_all(await self.sender.send_now(counted, [p for p, _ in batch.quota_writes]))
        replies = await self._dedupe(batch.replies)
        outputs = [OutRecord(CALLS_TOPIC, f.route_key, f.envelope.encode(),
                             [(core.H_STAGE, str(f.envelope.stage).encode())]) for _, f in batch.forwards]
        partitions: list[int | None] = [p for p, _ in batch.forwards]
        for _, reply in replies:
            headers = [(core.H_REQUEST_ID, reply.request_id.encode()), (H_EVENT_ID, reply.request_id.encode())]
            if reply.resource is not None:
                headers.append((core.H_RESOURCE, reply.resource.id.encode()))
            outputs.append(OutRecord(reply.topic, reply.request_id.encode(), self.reply_encode(reply.to_record(now)),
                                     headers))
        audits = [(p, reply.audit(now)) for p, reply in replies]
        quarantine = [(rec, reason) for rec, reason in batch.quarantine
                      if await self._first(rec.partition, rec.topic, f"{rec.topic}/{rec.partition}/{rec.offset}")]
        for rec, reason in quarantine:
            out, audit = self._quarantine(rec, reason, now)
            outputs.append(out)
            audits.append((rec.partition, audit))
        if outputs:
            await gather_all(await self.sender.send_now(outputs, partitions))
        if audits:
            for p in {p for p, _ in audits}:
                if p not in ex.partitions:
                    await ex._restore(p)
            await ex._write_audit(audits)
        self._count(replies, len(quarantine))

    async def _dedupe(self, replies: Sequence[tuple[int, Reply]]) -> list[tuple[int, Reply]]:
        """Drop answers to requests already answered (a redelivered request; restored from the audit log)."""
        return [(p, reply) for p, reply in replies
                if await self._first(p, reply.source.split("/", 1)[0], reply.request_id)]

    async def _first(self, partition: int, topic: str, event_id: str) -> bool:
        """True the first time (request topic, event id) is seen in partition p's dedupe window, then remembered.

        The window is the exchange's, rebuilt from p's audit records on takeover (``PartitionState.absorb`` keys
        a record by its source topic and event id), so a call audited before a crash is not answered again.
        """
        ex = self.exchange
        if partition not in ex.partitions:
            await ex._restore(partition)
        window = ex.partitions[partition].dedupe
        key = (topic, event_id)
        if key in window:
            return False
        window.add(key)
        return True

    def _quarantine(self, rec: RawRecord, reason: str, now: int) -> tuple[OutRecord, dict[str, Any]]:
        ctx = self.exchange.ctx
        node = core.node_of_request_topic(rec.topic) or ""
        tier = core._safe_tier(node)
        event_id = f"{rec.topic}/{rec.partition}/{rec.offset}"
        value = ctx.quarantine_schema.encode({
            "event_id": event_id, "ts": now, "node": node, "topic": rec.topic, "partition": rec.partition,
            "offset": rec.offset, "rule": QUARANTINE_RULE, "reason": reason, "resource": None,
            "original_key": rec.key, "original_value": rec.value,
            "original_headers": {k: bytes(v or b"") for k, v in (rec.headers or ())},
        })
        out = OutRecord(f"quarantine.{node}", rec.key, value,
                        [(H_EVENT_ID, event_id.encode()), ("hub-quarantine-rule", QUARANTINE_RULE.encode())])
        audit = {
            "event_id": event_id, "audit_id": f"{event_id}/quarantine/-", "ts": now, "action": "quarantine",
            "actor": node, "counterparty": None, "resource": None, "scenario": None, "grant": None,
            "from_tier": tier, "to_tier": tier, "direction": None, "decision": "deny", "reason": QUARANTINE_RULE,
            "key_hash": None, "masked_fields": [], "prev_hash": None, "hash": None, "source": event_id,
        }
        return out, audit

    def _count(self, replies: Sequence[tuple[int, Reply]], quarantined: int) -> None:
        m = self.exchange.metrics
        for _, reply in replies:
            m.calls.labels(reply.to_tier, reply.outcome).inc()
            m.events.labels("call", reply.from_tier, reply.to_tier, reply.outcome).inc()
        if quarantined:
            m.quarantined.labels(QUARANTINE_RULE).inc(quarantined)
        self.calls += len(replies)

    # ---------- schemas ----------
    def _parsed(self, schema_id: int) -> Any:
        assert self.registry is not None
        found = self.registry.cached(schema_id)
        return found.parsed if found is not None else None

    async def _fetch_schemas(self, values: Iterable[bytes | None]) -> None:
        assert self.registry is not None
        await fetch_schemas(self.registry, values)


class ImmediateSender(BatchSender):
    """``BatchSender`` whose record batches leave at once: each is closed when enqueued, so it does not wait out
    the producer's linger (~5 ms a hop on the call path). Records may name their partition."""

    async def send_now(self, outputs: Iterable[OutRecord], partitions: Sequence[int | None] = ()) -> list[Any]:
        grouped: dict[tuple[str, int], list[OutRecord]] = {}
        for n, out in enumerate(outputs):
            partition = partitions[n] if n < len(partitions) else None
            if partition is None:
                parts = await self._partitions_of(out.topic)
                partition = (parts[next(self._round_robin) % len(parts)] if out.key is None
                             else self.partitioner(out.key, parts, parts))
            grouped.setdefault((out.topic, partition), []).append(out)
        futures: list[Any] = []
        for (topic, partition), records in grouped.items():
            batch = self.producer.create_batch()
            for out in records:
                while batch.append(key=out.key, value=out.value, timestamp=None, headers=out.headers) is None:
                    batch.close()
                    futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
            if batch.record_count():
                batch.close()
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        return futures


class _Batch:
    """What one batch produces: replies (with the partition whose audit chain records them), forwards (with the
    partition they came from, then the one they go to), changelog writes and quarantined requests."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, Reply]] = []
        self.forwards: list[tuple[int, Forward]] = []
        self.quota_writes: list[tuple[int, bytes]] = []
        self.quarantine: list[tuple[RawRecord, str]] = []

    def reply(self, partition: int, reply: Reply) -> None:
        self.replies.append((partition, reply))

    def route(self, partition: int, result: Reply | Forward) -> None:
        if isinstance(result, Forward):
            self.forwards.append((partition, result))
        else:
            self.replies.append((partition, result))


async def fetch_schemas(registry: RegistryClient, values: Iterable[bytes | None]) -> None:
    """Fetch the writer schemas of Confluent-framed values the registry cache lacks (unknown ids are skipped)."""
    wanted = set()
    for value in values:
        if value and len(value) >= framing.HEADER_SIZE and value[0] == framing.MAGIC:
            sid = framing.HEADER.unpack_from(value)[1]
            if registry.cached(sid) is None:
                wanted.add(sid)
    for sid in wanted:
        with contextlib.suppress(RegistryClientError):
            await registry.schema_by_id(sid)


# ------------------------------------------------------------------------------------------------ state


class CallState:
    """The state partitions of the calls this worker answers, restored from their changelogs and kept current.

    One aiokafka consumer (manual assignment, group ``<app id>.calls-state`` used only for commits) reads
    partition p of ``hub.records``, ``hub.records.index`` and ``hub.call-quota`` for every owned p: from the
    beginning when p is newly assigned (the restore; ``wait_ready`` returns once the end offsets taken at
    assignment are reached), then as they grow. For ``hub.records`` it also maintains the secondary index:
    each new row version's indexed values are written to ``hub.records.index`` (retracting values the row no
    longer has), and the records offset up to which that is done is committed, so a new owner resumes there.
    """

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.records: dict[int, RecordTable] = {}
        self.index: dict[int, IndexTable] = {}
        self.quota: dict[int, QuotaTable] = {}
        self._ready: dict[int, asyncio.Event] = {}
        self._targets: dict[TopicPartition, int] = {}
        self._emit_from: dict[int, int] = {}
        self._wanted: set[int] | None = None
        self._owned: set[int] = set()
        self._wake = asyncio.Event()
        self._advanced = asyncio.Event()
        self._pending_commit: dict[TopicPartition, int] = {}
        self._committed_at = 0.0
        self.consumer: AIOKafkaConsumer | None = None
        self._offsets: AIOKafkaConsumer | None = None  # asks end offsets only (the reader's wait behind its fetch)
        self.producer: AIOKafkaProducer | None = None
        self.registry: RegistryClient | None = None
        self.resource_of: Callable[[str], Resource | None] = lambda _: None
        self._index_producer: AIOKafkaProducer | None = None
        self._index_sender: ImmediateSender | None = None
        self._fields: dict[str, tuple[str, ...]] = {}  # resource id -> indexed fields (per catalogue version)
        self._fields_of: dict[str, Resource] = {}
        self._task: asyncio.Task[None] | None = None
        self._index_partitions: list[int] = []
        self.applied = 0

    async def start(self, producer: AIOKafkaProducer, registry: RegistryClient,
                    resource_of: Callable[[str], Resource | None]) -> None:
        self.producer, self.registry, self.resource_of = producer, registry, resource_of
        # the index's own producer: its writes never queue behind (or hold up) the exchange's produce requests
        self._index_producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024,
            **kafka_client_kwargs(self.settings))
        await self._index_producer.start()
        self._index_sender = ImmediateSender(self._index_producer)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=f"{self.settings.app_id}.calls-state",
            enable_auto_commit=False, auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=100, **kafka_client_kwargs(self.settings),
        )
        await self.consumer.start()
        self._offsets = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                         **kafka_client_kwargs(self.settings))
        await self._offsets.start()
        self._index_partitions = sorted(await producer.partitions_for(INDEX_TOPIC))
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit(force=True)
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            self.consumer = None
        if self._offsets is not None:
            with contextlib.suppress(Exception):
                await self._offsets.stop()
            self._offsets = None
        if self._index_producer is not None:
            with contextlib.suppress(Exception):
                await self._index_producer.stop()
            self._index_producer = None

    @property
    def owned(self) -> set[int]:
        """Partitions whose state this worker holds (or is restoring): their calls are answered here."""
        return self._wanted if self._wanted is not None else self._owned

    def assign(self, partitions: set[int]) -> None:
        """The partitions this worker owns now (from the rebalance); applied by the reading loop."""
        for p in partitions:
            self._ready.setdefault(p, asyncio.Event())
        self._wanted = set(partitions)
        self._wake.set()

    async def wait_ready(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            await self._ready.setdefault(p, asyncio.Event()).wait()

    async def caught_up(self, partitions: Iterable[int], timeout: float = CAUGHT_UP_TIMEOUT_S) -> None:
        """Wait until the tables hold everything on ``hub.records`` now (a call sees every row written before it)."""
        consumer = self.consumer
        if consumer is None or self._offsets is None:
            return
        tps = [TopicPartition(RECORDS_TOPIC, p) for p in partitions]
        try:
            ends = await self._offsets.end_offsets(tps)
        except Exception as exc:
            log.debug("end offsets for a call failed: %r", exc)
            return
        deadline = time.monotonic() + timeout
        while True:
            behind = False
            for tp in tps:
                try:
                    behind = behind or (await consumer.position(tp)) < ends[tp]
                except Exception:  # being reassigned: answer from what is there
                    return
            if not behind:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("hub.records tables still behind after %.0fs: answering from them", timeout)
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), remaining)

    # ---------- the reading loop ----------
    async def _run(self) -> None:
        while True:
            try:
                if self._wanted is not None:
                    await self._reassign()
                if not self._owned:
                    self._wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 1.0)
                    continue
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("call state: reading the changelogs failed; retrying")
                await asyncio.sleep(1.0)

    async def _step(self) -> None:
        assert self.consumer is not None
        batch = await self.consumer.getmany(timeout_ms=100, max_records=20_000)
        emits: list[core.IndexChange] = []
        record_values = [m.value for tp, msgs in batch.items() if tp.topic == RECORDS_TOPIC for m in msgs]
        if record_values and self.registry is not None:
            await fetch_schemas(self.registry, record_values)
        for tp, msgs in batch.items():
            p = tp.partition
            if p not in self._owned:
                continue
            if tp.topic == RECORDS_TOPIC:
                table = self.records[p]
                emit_from = self._emit_from.get(p, 0)
                for m in msgs:
                    self._apply_record(table, m, m.offset >= emit_from, emits)
                if msgs and msgs[-1].offset + 1 > emit_from:
                    self._pending_commit[tp] = msgs[-1].offset + 1
            elif tp.topic == INDEX_TOPIC:
                index = self.index[p]
                for m in msgs:
                    if m.key is not None:
                        index.apply(m.key, m.value)
            elif tp.topic == QUOTA_TOPIC:
                quota = self.quota[p]
                for m in msgs:
                    if m.key is not None:
                        quota.apply(m.key, m.value)
            self.applied += len(msgs)
        if emits:
            await self._emit(emits)
        await self._commit()
        await self._check_ready()
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    def _apply_record(self, table: RecordTable, m: Any, live: bool, emits: list[core.IndexChange]) -> None:
        """One ``hub.records`` record into the table; a live one (not yet indexed) also into the index changes.

        Restored records are stored undecoded; a row's indexed values are decoded when a newer version needs
        them to retract what changed, so a restore costs no Avro decoding.
        """
        if m.key is None:
            return
        row = Row(m.value, m.offset, m.timestamp) if m.value is not None else None
        old = table.apply(m.key, row)
        if not live:
            return
        parsed = core.resource_of_store_key(m.key)
        fields = self._indexed(parsed[0]) if parsed is not None else ()
        if not fields:
            return
        assert parsed is not None
        new = self._values(m.value, fields)
        if row is not None:
            row.indexed = new
        before = (old.indexed if old.indexed is not None else self._values(old.value, fields)) if old else ()
        if new or before:
            emits.extend(core.index_changes(parsed[0], parsed[1], before, new, m.timestamp))

    def _values(self, value: bytes | None, fields: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
        record = self._decode(value) if value is not None else None
        return core.index_values(record, fields) if record is not None else ()

    def _indexed(self, resource_id: str) -> tuple[str, ...]:
        """The resource's indexed fields, computed once per catalogue entry version."""
        resource = self.resource_of(resource_id)
        if resource is None:
            return ()
        known = self._fields.get(resource_id)
        if known is None or self._fields_of.get(resource_id) is not resource:
            known = self._fields[resource_id] = core.indexed_fields(resource)
            self._fields_of[resource_id] = resource
        return known

    def _decode(self, value: bytes) -> dict[str, Any] | None:
        try:
            sid, body = framing.split(value)
            schema = self.registry.cached(sid) if self.registry else None
            return framing.decode_body(body, schema.parsed) if schema is not None else None
        except ValueError:
            return None

    async def _emit(self, changes: Sequence[core.IndexChange]) -> None:
        assert self._index_sender is not None
        parts = self._index_partitions
        records = [OutRecord(INDEX_TOPIC, c.key, c.value, []) for c in changes]  # type: ignore[arg-type]
        placed: list[int | None] = [core.index_partition(c.partition_key, parts) for c in changes]
        await gather_all(await self._index_sender.send_now(records, placed))

    async def _commit(self, force: bool = False) -> None:
        if not self._pending_commit or self.consumer is None:
            return
        now = time.monotonic()
        if not force and now - self._committed_at < COMMIT_INTERVAL_S:
            return
        offsets = {tp: off for tp, off in self._pending_commit.items() if tp.partition in self._owned}
        self._pending_commit.clear()
        self._committed_at = now
        if offsets:
            await self.consumer.commit(offsets)

    async def _check_ready(self) -> None:
        assert self.consumer is not None
        for p in self._owned:
            event = self._ready.get(p)
            if event is None or event.is_set():
                continue
            done = True
            for topic in STATE_TOPICS:
                tp = TopicPartition(topic, p)
                if await self.consumer.position(tp) < self._targets.get(tp, 0):
                    done = False
                    break
            if done:
                event.set()
                log.info("call state partition %d restored: %d rows, %d index values, %d quota counters", p,
                         len(self.records[p]), len(self.index[p].entries), len(self.quota[p].counts))

    async def _reassign(self) -> None:
        consumer = self.consumer
        assert consumer is not None and self._wanted is not None
        wanted, self._wanted = self._wanted, None
        keep, new, lost = self._owned & wanted, wanted - self._owned, self._owned - wanted
        await self._commit(force=True)
        positions = {}
        for p in keep:
            for topic in STATE_TOPICS:
                tp = TopicPartition(topic, p)
                positions[tp] = await consumer.position(tp)
        for p in lost:
            for d in (self.records, self.index, self.quota, self._emit_from):
                d.pop(p, None)
            self._ready.pop(p, None)
        consumer.assign([TopicPartition(t, p) for p in sorted(wanted) for t in STATE_TOPICS])
        for tp, position in positions.items():
            consumer.seek(tp, position)
        fresh = [TopicPartition(t, p) for p in sorted(new) for t in STATE_TOPICS]
        if fresh:
            await consumer.seek_to_beginning(*fresh)
            self._targets.update(await consumer.end_offsets(fresh))
            for p in new:
                self.records[p], self.index[p], self.quota[p] = RecordTable(), IndexTable(), QuotaTable()
                self._ready.setdefault(p, asyncio.Event())
                committed = await consumer.committed(TopicPartition(RECORDS_TOPIC, p))
                self._emit_from[p] = committed or 0
        self._owned = wanted
        log.info("call state: partitions %s (new %s, dropped %s)", sorted(wanted), sorted(new), sorted(lost))
        await self._check_ready()


# ------------------------------------------------------------------------------------------------ helpers
