"""The exchange agent: a thin shell around the pure ``process_batch``, one batch at a time.

For each batch of ingress records the worker hands it (``handle``):

1. resolve, outside the pure core, the schemas the batch needs (registry, cached; unknown ids are remembered
   for a few seconds so a flood of bad ids costs one lookup each);
2. make sure the partition indices' state is restored (dedupe window, hash chain, counts);
3. ``process_batch`` decides everything (validate, policy and masking, routing, audit records);
4. enqueue the feeds and quarantine records, and hand the audit records to the audit writer, which writes them
   once the feeds are acknowledged. ``handle`` returns that completion without waiting for it: the worker
   decides the next batch meanwhile, and commits the input offsets when it is done.

The hot path's view of the control plane (catalogue, nodes, grants, per-consumer masking plans with their
registered derived schemas) is rebuilt whenever the control plane's version changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from hub.broker.records import RawRecord
from hub.broker.sender import BatchSender
from hub.catalogue.model import ExchangeConfig
from hub.contract import H_RESOURCE, RECIPIENTS_TOPIC, masked_subject
from hub.control.view import ControlView
from hub.metrics.bundle import HubMetrics
from hub.metrics.histograms import observe_many
from hub.objections.recipients import FirstDeliveries
from hub.pipeline.core import DeliveryPlan, EncodedSchema, ExchangeContext, Tally, process_batch
from hub.policy.masking import derived_schema, is_passthrough, plan_for
from hub.policy.model import Grant
from hub.ports import Agent, AuditSink, PartitionOwner, RowSink
from hub.registry import framing
from hub.registry.client import RegistryClient, SchemaNotFound

log = logging.getLogger("hub.exchange")

NEGATIVE_TTL_S = 5.0  # how long an unknown schema id (or an unbound one) is not asked for again
NEGATIVE_MAX = 10_000  # remembered misses beyond which expired ones are dropped (a flood of random ids)


def pruned(negative: dict[Any, float], now: float, cap: int = NEGATIVE_MAX) -> dict[Any, float]:
    """The negative cache without its expired entries once it holds more than ``cap`` (else as is); emptied
    if even the live ones exceed ``cap``: forgetting a miss costs one more lookup, keeping them all costs memory
    without bound (every random schema id a producer sends is a new entry)."""
    if len(negative) <= cap:
        return negative
    live = {k: t for k, t in negative.items() if t >= now}
    return live if len(live) <= cap else {}


class ExchangeAgent(Agent):
    """Decides ingress batches with ``process_batch`` and sends what they produce."""

    def __init__(self, registry: RegistryClient, control: ControlView, sender: BatchSender,
                 partitions: PartitionOwner, audit: AuditSink, metrics: HubMetrics, rows: RowSink | None = None,
                 **kwargs: Any) -> None:
        super().__init__(registry, control, sender, partitions, audit, metrics, **kwargs)
        self.rows = rows
        self.audit_schema: EncodedSchema | None = None  # set by the worker once the hub's schemas are registered
        self.quarantine_schema: EncodedSchema | None = None
        self.ctx: ExchangeContext | None = None
        self._control_version = -1
        self._masked_encoders: dict[tuple[str, str, int], Any] = {}
        self._subject_ids: dict[str, frozenset[int]] = {}
        self._negative: dict[Any, float] = {}
        self.first_deliveries = FirstDeliveries()  # survives context rebuilds: who got which record lately
        self.batches = 0
        self.events = 0

    # ------------------------------------------------------------ the batch
    async def handle(self, records: Sequence[RawRecord]) -> asyncio.Future[None]:
        """Decide and send a batch; returns the future of its audit records being written."""
        ctx = await self.context()
        await self._resolve_schemas(records, ctx)
        await self.partitions.ensure({rec.partition for rec in records})
        result = process_batch(records, ctx)
        outputs = result.outputs
        if result.rows and self.rows is not None:  # the call tables follow without reading the rows back
            outputs = outputs + self.rows.materialise(result.rows)
        sent = await self.sender.send(outputs)
        self.batches += 1
        self.events += len(records)
        # only the counts wait for the audit: the batch's records and decoded values are freed now (a smaller
        # live set for every garbage collection meanwhile)
        tally, latencies = result.tally, result.latencies_from_ms
        return self.audit.submit(sent, result.audits, lambda: self._count(tally, latencies))

    async def context(self) -> ExchangeContext:
        if self.ctx is None or self.control.version != self._control_version:
            self.ctx = await self._build_context()  # a catalogue entry, node or grant changed
        return self.ctx

    def _count(self, tally: Tally, latencies_from_ms: list[int]) -> None:
        m = self.metrics
        for (name, labels), n in tally.items():
            if name == "events":
                m.events.labels(*labels).inc(n)
            elif name == "records_delivered":
                m.records_delivered.labels(*labels).inc(n)
            elif name == "quarantined":
                m.quarantined.labels(*labels).inc(n)
        now = time.time()
        observe_many(m.latency, [max(0.0, now - ts / 1000.0) for ts in latencies_from_ms])

    # ------------------------------------------------------------ the control plane's view
    async def _build_context(self) -> ExchangeContext:
        """The hot path's view of the live catalogue, nodes and grants."""
        assert self.audit_schema is not None and self.quarantine_schema is not None
        snap = self.control.snapshot()
        self._control_version = snap.version
        config = snap.config
        for resource in config.resources:
            if resource.id not in self._subject_ids:
                self._subject_ids[resource.id] = await self._bound_ids(resource.subject)
        grants = {g.id: g for g in snap.grants}
        registry = self.registry
        partitions = self.partitions
        return ExchangeContext(
            config=config,
            schema_lookup=lambda sid: (s.parsed if (s := registry.cached(sid)) is not None else None),
            subject_ids=self._subject_ids,
            audit_schema=self.audit_schema,
            quarantine_schema=self.quarantine_schema,
            dedupe=partitions.dedupe,  # restored with the partition
            grants=grants,
            delivery_plans=await self._delivery_plans(config, grants),
            # reference quality rules look keys up in the call tables this worker holds (None: not held here)
            key_exists=self.rows.key_exists if self.rows is not None else None,
            flags=snap.flags,
            corrections=snap.corrections,
            first_deliveries=self.first_deliveries,
            recipients_partitions=await self._recipients_partitions(),
        )

    async def _recipients_partitions(self) -> int:
        """Partitions of hub.recipients: the core puts all the keys of one record on one of them."""
        try:
            return await self.sender.partition_count(RECIPIENTS_TOPIC)
        except Exception as exc:  # no metadata yet: one partition is what a fresh hub has, and safe to retry
            log.warning("could not read the partitions of %s: %s", RECIPIENTS_TOPIC, exc)
            return 1

    async def _delivery_plans(
        self, config: ExchangeConfig, grants: dict[str, Grant]
    ) -> dict[tuple[str, str], DeliveryPlan]:
        """For each (resource, consumer) that may receive masked records: the plan and its registered schema.

        Consumers cleared for every field get the publisher's bytes unchanged (no entry here).
        """
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
                latest_id, _, _ = await self.registry.latest(resource.subject)
            except SchemaNotFound:
                continue
            schema = await self.registry.resolved(latest_id)  # references written in: masks need the fields
            for node in consumers.values():
                plan = plan_for(resource, node, grant_of.get((resource.id, node.id)))
                if is_passthrough(schema, plan):
                    continue
                cache_key = (resource.id, plan.key, latest_id)
                encode = self._masked_encoders.get(cache_key)
                if encode is None:
                    derived = derived_schema(schema, plan)
                    derived_id = await self.registry.register(masked_subject(resource.id, plan.key), derived)
                    encode = self._masked_encoders[cache_key] = framing.make_encoder(derived_id, derived)
                plans[(resource.id, node.id)] = DeliveryPlan(plan, encode, tuple(plan.masked_fields))
        return plans

    async def _bound_ids(self, subject: str) -> frozenset[int]:
        try:
            return await self.registry.subject_ids(subject, refresh=True)
        except SchemaNotFound:
            return frozenset()

    async def _resolve_schemas(self, records: Sequence[RawRecord], ctx: ExchangeContext) -> None:
        """Fetch any schema id or subject version the batch needs and the cache lacks (no I/O in the core)."""
        registry = self.registry
        now = time.monotonic()
        negative = self._negative = pruned(self._negative, now)
        unknown: set[int] = set()
        unbound: set[str] = set()
        checked: set[tuple[bytes, int]] = set()
        for rec in records:
            value = rec.value
            if not value or len(value) < 5 or value[0] != 0:
                continue
            sid = int.from_bytes(value[1:5], "big")
            resource = next((v for k, v in rec.headers if k == H_RESOURCE), None)
            if resource is None or (resource, sid) in checked:
                continue
            checked.add((resource, sid))
            if registry.cached(sid) is None and negative.get(sid, 0) < now:
                unknown.add(sid)
            rid = resource.decode(errors="replace")
            bound = self._subject_ids.get(rid)
            if bound is not None and sid not in bound and negative.get((rid, sid), 0) < now:
                unbound.add(rid)
                negative[(rid, sid)] = now + NEGATIVE_TTL_S
        for sid in unknown:
            try:
                await registry.schema_by_id(sid)
            except SchemaNotFound:
                negative[sid] = now + NEGATIVE_TTL_S
        for rid in unbound:
            resource_entry = ctx.resources.get(rid)
            if resource_entry is not None:
                self._subject_ids[rid] = await self._bound_ids(resource_entry.subject)
