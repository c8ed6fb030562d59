"""What the owner of ingress partition index p keeps, and how a new owner rebuilds it.

Partition p of every ``ingress.*`` topic is assigned to one worker (``hub.worker.assignor`` assigns by
partition index), and that worker alone writes partition p of ``hub.audit`` and of ``hub.counts``.
The audit log is the source of truth: a batch's feeds are acknowledged before its audit records are
written, so an event with an audit record was delivered. A worker taking p over

* reads the last count snapshot of p (``hub.counts`` partition p: counts up to an audit offset),
* reads ``hub.audit`` partition p from that offset (or from ``RESTORE_WINDOW`` records back, whichever
  is earlier) to the end: newer records are added to the counts, every record's (node, event id) goes
  into the dedupe window, and the last record (its seq and hash) is where the hash chain continues.

A redelivered event is then skipped, so audit records and counts hold exactly one entry per event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.audit.chain import CHECKPOINT, ChainState, ChainWriter, resume_state
from hub.audit.records import QUARANTINE, quarantined_position
from hub.contract import AUDIT_TOPIC, COUNTS_TOPIC, INGRESS_PREFIX
from hub.pipeline.dedupe import DedupeWindow
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.stats.counts import CountTable, decode_snapshot

log = logging.getLogger("hub.worker")

RESTORE_WINDOW = 100_000  # audit records (one per event) re-read for dedupe: far more than the few batches
# in flight between two commits, which is all a crash or rebalance redelivers


@dataclass
class PartitionState:
    partition: int
    chain: ChainWriter
    dedupe: DedupeWindow = field(default_factory=DedupeWindow)
    counts: CountTable = field(default_factory=CountTable)
    audit_next_offset: int = 0  # offset the next audit record of this partition will get
    snapshot_offset: int = -1  # audit offset of the last snapshot written
    snapshot_at: float = 0.0

    @property
    def chain_head(self) -> str | None:
        return self.chain.state.head

    def absorb(self, audit: dict[str, Any], *, count: bool) -> None:
        """Fold one existing audit record of this partition into the state (restore path).

        One record is one event (a publish with its ``deliveries``, a quarantine, a call): its (node, event
        id) goes into the dedupe window (a quarantine's: its ingress position, ``quarantined_position``), and
        with ``count`` its counters (``count_keys``: the publish and each
        delivery or refusal) into the counts. Older logs' separate deliver/deny records repeat their event's
        dedupe key and count one counter each.
        """
        if audit["action"] == CHECKPOINT:
            return
        source = audit.get("source") or ""
        topic = source.split("/", 1)[0]
        node = topic.removeprefix(INGRESS_PREFIX) if topic else audit.get("actor", "")
        if audit["action"] == QUARANTINE and topic.startswith(INGRESS_PREFIX):
            # an ingress record's rejection: by position, so the fixed record may reuse the event id (a call
            # request's quarantine is keyed by its position already: (request topic, event id = position))
            self.dedupe.add(quarantined_position(node, source))
        else:
            self.dedupe.add((node, audit["event_id"]))
        if count:
            self.counts.add((audit,))


async def restore_partition(
    consumer: AIOKafkaConsumer, partition: int, registry: RegistryClient,
    new_chain: Callable[[ChainState], ChainWriter],
) -> PartitionState:
    """Rebuild partition p's state from its last count snapshot and the tail of its audit log.

    The chain continues from the partition's last audit record (``resume_state``), whoever wrote it.
    """
    state = PartitionState(partition, new_chain(resume_state(None)))
    counts_tp = TopicPartition(COUNTS_TOPIC, partition)
    audit_tp = TopicPartition(AUDIT_TOPIC, partition)
    consumer.assign([counts_tp, audit_tp])
    ends = await consumer.end_offsets([counts_tp, audit_tp])
    snapshot_offset = 0
    if ends[counts_tp] > 0:
        consumer.seek(counts_tp, ends[counts_tp] - 1)
        last = await _read_one(consumer, counts_tp)
        if last is not None and last.value:
            snapshot_offset, state.counts, _ = decode_snapshot(last.value)
    audit_end = ends[audit_tp]
    start = max(0, min(snapshot_offset, audit_end - RESTORE_WINDOW, audit_end - 1))  # always the last record
    consumer.seek(audit_tp, start)
    position = start
    last: dict[str, Any] | None = None
    while position < audit_end:
        batch = await consumer.getmany(audit_tp, timeout_ms=1000, max_records=10_000)
        msgs = batch.get(audit_tp, [])
        for msg in msgs:  # resolve every writer schema first: decoding below is synchronous
            if msg.value and len(msg.value) >= framing.HEADER_SIZE:
                schema_id = framing.split(msg.value)[0]
                if registry.cached(schema_id) is None:
                    await registry.schema_by_id(schema_id)
        for msg in msgs:
            position = msg.offset + 1
            if msg.value:
                last = decode_audit(msg.value, registry)
                state.absorb(last, count=msg.offset >= snapshot_offset)
    state.chain = new_chain(resume_state(last))
    state.audit_next_offset = audit_end
    state.snapshot_offset = snapshot_offset
    log.info("partition %d restored: %d audit records re-read, counts from audit offset %d",
             partition, audit_end - start, snapshot_offset)
    return state


async def _read_one(consumer: AIOKafkaConsumer, tp: TopicPartition) -> Any:
    for _ in range(20):
        batch = await consumer.getmany(tp, timeout_ms=500, max_records=1)
        if batch.get(tp):
            return batch[tp][0]
    return None


def decode_audit(value: bytes, registry: RegistryClient) -> dict[str, Any]:
    """Decode a Confluent-framed AuditRecord with the (already cached) schema version that wrote it."""
    schema_id, body = framing.split(value)
    schema = registry.cached(schema_id)
    if schema is None:
        raise ValueError(f"audit record written with unknown schema id {schema_id}")
    return framing.decode_body(body, schema.parsed)
