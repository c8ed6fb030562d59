"""The exchange worker: a thin Faust shell around ``process_batch``.

Faust owns the lifecycle, the consumer group, rebalancing and offset commits; the per-event work happens
a batch at a time (``stream.take_events``):

1. resolve the schemas the batch needs (registry, cached), restore the state of newly owned partitions;
2. ``process_batch`` decides everything (pure), skipping events already audited (dedupe window);
3. send feeds and quarantine records and await the broker's acks;
4. seal and send the audit records to ``hub.audit`` partition p (the ingress partition index) and await;
5. add them to the partition's counts, snapshot the counts to ``hub.counts`` now and then;
6. only then let Faust ack (commit) the batch.

At-least-once delivery, nothing lost, and exactly one audit record and count per event across crashes,
restarts and rebalances (see ``partition_state``). Records are produced with an idempotent producer of
the worker's own, so a partition's audit records are never reordered or duplicated by retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import faust
import httpx
import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hub.audit.chain import ChainState, ChainWriter
from hub.broker.kafka_config import kafka_client_kwargs
from hub.broker.topics import AUDIT_TOPIC, COUNTS_TOPIC, SNAPSHOT_MAX_BYTES
from hub.calls.agents import install_call_agents  # calls hook
from hub.catalogue.model import ExchangeConfig
from hub.control.view import ControlView
from hub.metrics.bundle import HubMetrics
from hub.pipeline.core import (
    H_EVENT_ID,
    H_RESOURCE,
    DeliveryPlan,
    EncodedSchema,
    ExchangeContext,
    RawRecord,
    process_batch,
)
from hub.pipeline.faust_io import gather_all, raw_record, schema_text
from hub.pipeline.partition_state import PartitionState, restore_partition
from hub.pipeline.sender import BatchSender
from hub.policy.masking import derived_schema, is_passthrough, plan_for
from hub.policy.model import Grant
from hub.registry import framing
from hub.registry.client import RegistryClient, SchemaNotFound
from hub.settings import Settings
from hub.stats.counts import encode_snapshot

log = logging.getLogger("hub.worker")

AUDIT_SUBJECT = "hub.audit-value"
QUARANTINE_SUBJECT = "hub.quarantine-value"
NEGATIVE_TTL_S = 5.0  # how long an unknown schema id is not asked for again
SNAPSHOT_INTERVAL_S = 1.0  # how often a partition's counts are snapshotted to hub.counts


def ingress_topics(config: ExchangeConfig) -> list[str]:
    return [f"ingress.{node}" for node in config.providers]


def faust_broker_kwargs(settings: Settings, bootstrap: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"broker": f"kafka://{bootstrap}"}
    if settings.kafka_sasl_mechanism and settings.kafka_username:
        kwargs["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_username,
            password=settings.kafka_password.get_secret_value() if settings.kafka_password else "",
            mechanism=settings.kafka_sasl_mechanism,
        )
    return kwargs


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    """The Faust app with settings chosen for batch throughput (see ../shared/PERF.md)."""
    return faust.App(
        settings.app_id,
        **faust_broker_kwargs(settings, bootstrap),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.consumer_session_timeout,
        broker_heartbeat_interval=max(0.5, settings.consumer_session_timeout / 10),
        broker_max_poll_records=settings.batch_max,
        stream_buffer_maxsize=max(4 * settings.batch_max, 16384),
        # Rebalances wait until every taken event is processed and acked: the partition's next owner must
        # see all of this worker's audit records when it restores, or it would audit some events twice.
        stream_wait_empty=True,
        producer_acks=-1,
        producer_linger_ms=5,
        producer_max_batch_size=256 * 1024,
        producer_max_request_size=4 * 1024 * 1024,
        logging_config=None,
    )


class ExchangeWorker:
    """Holds what the agent needs (registry cache, catalogue, metrics) and handles one batch at a time."""

    def __init__(self, settings: Settings, config: ExchangeConfig, metrics: HubMetrics, bootstrap: str) -> None:
        self.settings = settings
        self.config = config
        self.metrics = metrics
        self.app = create_app(settings, bootstrap)
        self.registry: RegistryClient | None = None
        self.ctx: ExchangeContext | None = None
        self.sender: BatchSender | None = None
        self.bootstrap = bootstrap
        self.producer: AIOKafkaProducer | None = None
        self.state_reader: AIOKafkaConsumer | None = None
        self.partitions: dict[int, PartitionState] = {}
        self.control: ControlView | None = None
        self._control_version = -1
        self._masked_encoders: dict[tuple[str, str, int], Any] = {}
        self._subject_ids: dict[str, frozenset[int]] = {}
        self._negative: dict[Any, float] = {}
        self.batches = 0
        topic = self.app.topic(
            *ingress_topics(config), value_serializer="raw", key_serializer="raw", allow_empty=True
        )
        self.app.agent(topic, name="hub.exchange")(self._agent)
        self.app.timer(5.0)(self._measure_lag)
        self.app.timer(max(1.0, settings.audit_checkpoint_seconds / 4))(self._checkpoint_idle)
        self.app.timer(SNAPSHOT_INTERVAL_S)(self._snapshot_idle)
        self._snapshot_lock = asyncio.Lock()
        self._audit_lock = asyncio.Lock()
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.closer = _Closer(self)
        # --- calls (共享调用): the call agent and its state (hub/calls/agents.py) ---
        self.calls = install_call_agents(self)

    # ---------- start-up ----------
    async def _prepare(self) -> ExchangeContext:
        """Connect to the registry and the control plane, register the hub's own schemas, build the context."""
        self.registry = RegistryClient(self.settings.effective_registry_url, token=self.settings.client_token())
        await self._wait_for_registry()
        kafka = kafka_client_kwargs(self.settings)
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
            max_batch_size=256 * 1024, max_request_size=SNAPSHOT_MAX_BYTES, **kafka,
        )
        await self.producer.start()
        self.sender = BatchSender(self.producer)
        self.state_reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, **kafka
        )
        await self.state_reader.start()
        audit_id = await self.registry.register(AUDIT_SUBJECT, schema_text("schemas/hub/audit_record.avsc"))
        quarantine_id = await self.registry.register(
            QUARANTINE_SUBJECT, schema_text("schemas/hub/quarantine_record.avsc")
        )
        audit = await self.registry.schema_by_id(audit_id)
        quarantine = await self.registry.schema_by_id(quarantine_id)
        self._audit_schema = EncodedSchema(audit.id, framing.make_encoder(audit.id, audit.schema_str))
        self._quarantine_schema = EncodedSchema(
            quarantine.id, framing.make_encoder(quarantine.id, quarantine.schema_str)
        )
        self.control = ControlView(self.settings, self.registry, bootstrap=self.bootstrap)
        await self.control.start()
        return await self._build_context()

    async def _build_context(self) -> ExchangeContext:
        """The hot path's view of the live catalogue, nodes and grants (rebuilt when the control plane changes)."""
        assert self.registry is not None and self.control is not None
        snap = self.control.snapshot()
        self._control_version = snap.version
        config = snap.config
        for resource in config.resources:
            if resource.id not in self._subject_ids:
                self._subject_ids[resource.id] = await self._bound_ids(resource.subject)
        grants = {g.id: g for g in snap.grants}
        registry = self.registry
        return ExchangeContext(
            config=config,
            schema_lookup=lambda sid: (s.parsed if (s := registry.cached(sid)) is not None else None),
            subject_ids=self._subject_ids,
            audit_schema=self._audit_schema,
            quarantine_schema=self._quarantine_schema,
            dedupe=lambda partition: self.partitions[partition].dedupe,  # restored with the partition
            grants=grants,
            delivery_plans=await self._delivery_plans(config, grants),
        )

    async def _delivery_plans(
        self, config: ExchangeConfig, grants: dict[str, Grant]
    ) -> dict[tuple[str, str], DeliveryPlan]:
        """For each (resource, consumer) that may receive masked records: the plan and its registered schema.

        Consumers cleared for every field get the publisher's bytes unchanged (no entry here).
        """
        assert self.registry is not None
        grant_of = {(sub.resource, sub.consumer): grants.get(sub.id) for sub in config.subscriptions}
        districts = [n for n in config.nodes if n.tier == "district"]
        plans: dict[tuple[str, str], DeliveryPlan] = {}
        for resource in config.resources:
            consumers = {n.id: n for n in config.nodes if (resource.id, n.id) in grant_of}
            if resource.locality_field:
                consumers.update({n.id: n for n in districts})
            if not consumers or resource.sharing == "none":
                continue
            try:
                latest_id, _, latest_text = await self.registry.latest(resource.subject)
            except SchemaNotFound:
                continue
            schema = json.loads(latest_text)
            for node in consumers.values():
                plan = plan_for(resource, node, grant_of.get((resource.id, node.id)))
                if is_passthrough(schema, plan):
                    continue
                cache_key = (resource.id, plan.key, latest_id)
                encode = self._masked_encoders.get(cache_key)
                if encode is None:
                    derived = derived_schema(schema, plan)
                    derived_id = await self.registry.register(f"{resource.id}.masked.{plan.key}-value", derived)
                    encode = self._masked_encoders[cache_key] = framing.make_encoder(derived_id, derived)
                plans[(resource.id, node.id)] = DeliveryPlan(plan, encode, tuple(plan.masked_fields))
        return plans

    async def _wait_for_registry(self, timeout: float = 120.0) -> None:
        """The registry may start after the worker (``hub up`` starts both); wait until it answers."""
        url = f"{self.settings.effective_registry_url.rstrip('/')}/subjects"
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                try:
                    await http.get(url)
                    return  # it answered (any status): the Confluent calls will say what is wrong
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)

    async def _bound_ids(self, subject: str) -> frozenset[int]:
        assert self.registry is not None
        try:
            return await self.registry.subject_ids(subject, refresh=True)
        except SchemaNotFound:
            return frozenset()

    # ---------- the agent ----------
    async def _agent(self, stream: faust.StreamT) -> None:
        async for events in stream.take_events(self.settings.batch_max, within=self.settings.batch_within):
            records = [raw_record(e.message) for e in events]
            try:
                await self.handle(records)
            except Exception:
                # Faust acks a take_events batch even when its body raises; leaving the loop would commit
                # records that were never delivered. Exit without returning so the batch is read again.
                log.critical("a batch could not be processed; exiting so it is redelivered", exc_info=True)
                logging.shutdown()
                os._exit(70)

    async def handle(self, records: Sequence[RawRecord]) -> None:
        if self.ctx is None:
            self.ctx = await self._prepare()
        elif self.control is not None and self.control.version != self._control_version:
            self.ctx = await self._build_context()  # a catalogue entry, node or grant changed
        await self._resolve_schemas(records)
        for partition in {rec.partition for rec in records} - self.partitions.keys():
            self.partitions[partition] = await self._restore(partition)
        result = process_batch(records, self.ctx)
        assert self.sender is not None
        await gather_all(await self.sender.send(result.outputs))
        await self._write_audit(result.audits)
        self._count(result.tally, result.latencies_from_ms)
        self.batches += 1

    async def _restore(self, partition: int) -> PartitionState:
        assert self.state_reader is not None and self.registry is not None
        settings = self.settings

        def new_chain(state: ChainState) -> ChainWriter:
            return ChainWriter(partition, state, key=settings.audit_key,
                               checkpoint_every=settings.audit_checkpoint_every,
                               checkpoint_seconds=settings.audit_checkpoint_seconds)

        return await restore_partition(self.state_reader, partition, self.registry, new_chain)

    async def _write_audit(self, audits: Sequence[tuple[int, dict[str, Any]]], *, tick: Sequence[int] = ()) -> None:
        """Seal (hash-chain) and write audit records to hub.audit partition p, after the batch's feeds are acked.

        Partitions in ``tick`` with no records get a checkpoint if one is due.
        """
        assert self.ctx is not None and self.producer is not None
        now_ms = int(time.time() * 1000)
        by_partition: dict[int, list[dict[str, Any]]] = {p: [] for p in tick}
        for partition, audit in audits:
            by_partition.setdefault(partition, []).append(audit)
        encode = self.ctx.audit_schema.encode
        pending = []
        async with self._audit_lock:  # sealing and enqueueing in one order per partition (the timer seals too)
            for partition, items in by_partition.items():
                state = self.partitions[partition]
                sealed = state.chain.seal_batch(items, now_ms) if items else state.chain.tick(now_ms)
                if not sealed:
                    continue
                futures, last_batch_size = await self._enqueue_audit(partition, sealed, encode)
                pending.append((state, items, futures, last_batch_size))
        for state, items, futures, last_batch_size in pending:
            metadata = await asyncio.gather(*futures)
            # a batch's metadata carries its base offset: the next offset follows its last record
            state.audit_next_offset = metadata[-1].offset + last_batch_size
            state.counts.add(items)
        await self._maybe_snapshot([state for state, _, _, _ in pending])

    async def _enqueue_audit(
        self, partition: int, sealed: Sequence[dict[str, Any]], encode: Any
    ) -> tuple[list[Any], int]:
        assert self.producer is not None
        batch = self.producer.create_batch()
        futures = []
        for audit in sealed:
            value = encode(audit)
            event_id = audit["event_id"].encode()
            headers = [(H_EVENT_ID, event_id)]
            while batch.append(key=event_id, value=value, timestamp=None, headers=headers) is None:
                futures.append(await self.producer.send_batch(batch, AUDIT_TOPIC, partition=partition))
                batch = self.producer.create_batch()
        last_batch_size = batch.record_count()
        futures.append(await self.producer.send_batch(batch, AUDIT_TOPIC, partition=partition))
        return futures, last_batch_size

    async def _checkpoint_idle(self) -> None:
        """Time-based checkpoints for partitions that went quiet (a batch also checks when it seals)."""
        if self.ctx is None or not self.partitions:
            return
        await self._write_audit([], tick=list(self.partitions))

    async def _snapshot_idle(self) -> None:
        """Snapshot counts a throttled batch or a checkpoint left unsnapshotted (so /v1/stats lags <= ~2 s)."""
        if self.producer is not None and self.partitions:
            try:
                await self._maybe_snapshot(list(self.partitions.values()))
            except Exception as exc:  # the next tick or batch writes it; a restore replays from the last one
                log.warning("count snapshot failed: %r", exc)

    async def _maybe_snapshot(self, states: Sequence[PartitionState], *, force: bool = False) -> None:
        """Write a partition's counts with the audit offset they are exact up to (throttled)."""
        assert self.producer is not None
        async with self._snapshot_lock:  # snapshots of a partition reach hub.counts in the order they were taken
            now = time.monotonic()
            futures = []
            for state in states:
                if not force and now - state.snapshot_at < SNAPSHOT_INTERVAL_S:
                    continue
                offset = state.audit_next_offset  # counts and offset taken together, before any await
                if state.snapshot_offset == offset:
                    continue
                value = encode_snapshot(offset, state.counts, state.chain_head)
                futures.append(await self.producer.send(
                    COUNTS_TOPIC, value, key=str(state.partition).encode(), partition=state.partition))
                state.snapshot_offset, state.snapshot_at = offset, now
            await gather_all(futures)

    async def _on_revoked(self, sender: Any = None, revoked: Any = (), **_: Any) -> None:
        """A partition moving to another worker: snapshot its counts, then forget its state."""
        lost = {tp.partition for tp in revoked if tp.topic.startswith("ingress.")}
        states = [self.partitions[p] for p in lost if p in self.partitions]
        if states and self.producer is not None:
            try:
                await self._maybe_snapshot(states, force=True)
            except Exception as exc:  # the next owner replays from the previous snapshot anyway
                log.warning("count snapshot on revocation failed: %r", exc)
        for p in lost:
            self.partitions.pop(p, None)

    async def close(self) -> None:
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self._maybe_snapshot(list(self.partitions.values()), force=True)
            await self.producer.stop()
        if self.state_reader is not None:
            await self.state_reader.stop()
        if self.control is not None:
            await self.control.stop()
        if self.registry is not None:
            await self.registry.aclose()

    async def _resolve_schemas(self, records: Sequence[RawRecord]) -> None:
        """Fetch, outside the pure core, any schema id or subject version the batch needs and the cache lacks."""
        assert self.registry is not None
        now = time.monotonic()
        unknown: set[int] = set()
        unbound: set[str] = set()
        for rec in records:
            value = rec.value
            if not value or len(value) < 5 or value[0] != 0:
                continue
            sid = int.from_bytes(value[1:5], "big")
            if self.registry.cached(sid) is None and self._negative.get(sid, 0) < now:
                unknown.add(sid)
            resource = next((v for k, v in rec.headers if k == H_RESOURCE), None)
            rid = resource.decode(errors="replace") if resource else None
            bound = self._subject_ids.get(rid) if rid else None
            if bound is not None and sid not in bound and self._negative.get((rid, sid), 0) < now:
                unbound.add(rid)
                self._negative[(rid, sid)] = now + NEGATIVE_TTL_S
        for sid in unknown:
            try:
                await self.registry.schema_by_id(sid)
            except SchemaNotFound:
                self._negative[sid] = now + NEGATIVE_TTL_S
        for rid in unbound:
            resource = self.ctx.resources.get(rid) if self.ctx else None
            if resource is not None:
                self._subject_ids[rid] = await self._bound_ids(resource.subject)

    def _count(self, tally: Any, ingress_ts_ms: Sequence[int]) -> None:
        m = self.metrics
        for (name, labels), n in tally.items():
            if name == "events":
                m.events.labels(*labels).inc(n)
            elif name == "records_delivered":
                m.records_delivered.labels(*labels).inc(n)
            elif name == "quarantined":
                m.quarantined.labels(*labels).inc(n)
        now = time.time()
        for ts in ingress_ts_ms:
            m.latency.observe(max(0.0, now - ts / 1000.0))

    async def _measure_lag(self) -> None:
        """Sum of (end offset - committed position) over this worker's ingress partitions."""
        consumer = self.app.consumer
        try:
            assignment = consumer.assignment()
            if not assignment:
                self.metrics.consumer_lag.set(0)
                return
            highwaters = await consumer.highwaters(*assignment)
            lag = 0
            for tp in assignment:
                position = await consumer.position(tp)
                lag += max(0, (highwaters.get(tp) or 0) - (position or 0))
            self.metrics.consumer_lag.set(lag)
        except Exception as exc:  # lag is advisory: never let it stop the worker
            log.debug("lag measurement failed: %r", exc)


class _Closer(mode.Service):
    """Stops the worker's own producer and readers when the Faust worker stops."""

    def __init__(self, exchange: ExchangeWorker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.exchange = exchange

    async def on_stop(self) -> None:
        await self.exchange.close()
