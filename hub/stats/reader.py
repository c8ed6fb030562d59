"""Reading the durable counts (``hub.counts``) and the audit log (``hub.audit``) they are derived from.

``hub.counts`` is compacted and partitioned like the ingress topics: partition p holds the count snapshots of
the worker that owns ingress partition index p, each ``{"audit_offset": n, "counts": [...]}`` meaning "every
counted audit record of ``hub.audit`` partition p below offset n, and nothing else". The last record of a
partition is its current snapshot; the hub's counts are the merge of every partition's current snapshot.

* ``latest_snapshots``: one read of each partition's last record (``hub audit reconcile``);
* ``CountsFollower``: tails ``hub.counts`` in the API process and serves the merged table for ``/v1/stats``
  (decoded lazily, at most once per new snapshot);
* ``read_audit``: streams one ``hub.audit`` partition between two offsets, decoding each record with the
  schema version that wrote it (registry, cached).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.broker.clients import describe_partitions, make_consumer
from hub.contract import COUNTS_TOPIC
from hub.registry import framing
from hub.registry.client import RegistryClient, SchemaNotFound
from hub.registry.framing import FramingError
from hub.settings import Settings
from hub.stats.counts import CountTable, decode_snapshot
from hub.stats.figures import exchange_figures

log = logging.getLogger("hub.stats")


class TopicMissing(LookupError):
    """A topic the statistics need does not exist (the hub never ran against this cluster)."""


class ReadStalled(TimeoutError):
    """The broker stopped returning records before the offsets asked for were reached."""


@dataclass(frozen=True)
class Snapshot:
    """The current count snapshot of one partition."""

    partition: int
    audit_offset: int  # every counted audit record of the partition below this offset is in ``table``
    table: CountTable
    chain_head: str | None
    offset: int  # the snapshot's own offset on hub.counts
    timestamp_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "audit_offset": self.audit_offset, "written_at_ms": self.timestamp_ms}


def new_consumer(settings: Settings, bootstrap: str) -> AIOKafkaConsumer:
    """A group-less consumer with manual assignment (reads, never commits)."""
    return make_consumer(settings, bootstrap, max_partition_fetch_bytes=8 * 1024 * 1024)


async def partitions_of(settings: Settings, bootstrap: str, topic: str) -> list[int]:
    """The topic's partition numbers (cluster metadata, without creating it); TopicMissing if there is none."""
    error, partitions = await describe_partitions(settings, bootstrap, topic)
    if error or not partitions:
        raise TopicMissing(f"topic {topic} does not exist on {bootstrap} (error {error})")
    return partitions


async def latest_snapshots(consumer: AIOKafkaConsumer, partitions: list[int], topic: str = COUNTS_TOPIC,
                           timeout: float = 30.0) -> dict[int, Snapshot]:
    """Each partition's last snapshot (partitions never written are absent). The consumer is re-assigned."""
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    wanted = {tp for tp in tps if ends[tp] > 0}
    for tp in wanted:
        consumer.seek(tp, ends[tp] - 1)
    out: dict[int, Snapshot] = {}
    deadline = time.monotonic() + timeout
    while wanted:
        if time.monotonic() > deadline:
            stuck = sorted(t.partition for t in wanted)
            raise ReadStalled(f"no snapshot could be read from {topic} partitions {stuck}")
        batch = await consumer.getmany(*wanted, timeout_ms=500)
        for tp, messages in batch.items():
            for msg in messages:
                if msg.offset == ends[tp] - 1:
                    if msg.value:
                        out[tp.partition] = _snapshot(tp.partition, msg.offset, msg.timestamp, msg.value)
        for tp in list(wanted):  # read past the end (e.g. the last offset was a marker): done with it
            if tp.partition in out or await consumer.position(tp) >= ends[tp]:
                wanted.discard(tp)
    return out


def _snapshot(partition: int, offset: int, timestamp_ms: int, value: bytes) -> Snapshot:
    audit_offset, table, head = decode_snapshot(value)
    return Snapshot(partition, audit_offset, table, head, offset, timestamp_ms)


def merge(snapshots: Mapping[int, Snapshot]) -> CountTable:
    total = CountTable()
    for snap in snapshots.values():
        total.merge(snap.table)
    return total


# ------------------------------------------------------------------------------------------ the API's view


class CountsFollower:
    """Tails ``hub.counts`` and keeps every partition's latest snapshot: what ``/v1/stats`` reports.

    Snapshots are kept as bytes and decoded only when asked for (a busy hub writes one per partition per
    second); the merged table is cached until a partition's snapshot changes. Never raises into its caller:
    a broker problem is logged and the tail restarts; until the first read completes ``figures`` is None.
    """

    def __init__(self, settings: Settings, bootstrap: str, topic: str = COUNTS_TOPIC) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topic = topic
        self._raw: dict[int, tuple[int, int, bytes]] = {}  # partition -> (offset, timestamp, value)
        self._decoded: dict[int, Snapshot] = {}
        self._merged: tuple[tuple[tuple[int, int], ...], CountTable] | None = None
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait: float = 10.0) -> None:
        """Start tailing; wait (at most ``wait`` seconds) until every partition was read to its end once."""
        self._task = asyncio.ensure_future(self._run())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._loaded.wait(), wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    async def _run(self) -> None:
        while True:
            consumer = new_consumer(self.settings, self.bootstrap)
            try:
                await consumer.start()
                await self._tail(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API keeps serving; the figures wait for the broker
                log.warning("reading %s failed (%r); retrying", self.topic, exc)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(2.0)

    async def _tail(self, consumer: AIOKafkaConsumer) -> None:
        partitions = await partitions_of(self.settings, self.bootstrap, self.topic)
        tps = [TopicPartition(self.topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - 1))
        pending = {tp for tp in tps if ends[tp] > 0}
        if not pending:
            self._loaded.set()
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            for tp, messages in batch.items():
                for msg in messages:
                    if msg.value:
                        self._raw[tp.partition] = (msg.offset, msg.timestamp, msg.value)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if not pending:
                self._loaded.set()

    def snapshots(self) -> dict[int, Snapshot]:
        """Each partition's current snapshot, decoded."""
        out = {}
        for partition, (offset, ts, value) in list(self._raw.items()):
            snap = self._decoded.get(partition)
            if snap is None or snap.offset != offset:
                snap = self._decoded[partition] = _snapshot(partition, offset, ts, value)
            out[partition] = snap
        return out

    def table(self) -> tuple[CountTable, dict[int, Snapshot]]:
        """The merged counts of every partition, and the snapshots they were merged from."""
        snaps = self.snapshots()
        version = tuple(sorted((p, s.offset) for p, s in snaps.items()))
        if self._merged is None or self._merged[0] != version:
            self._merged = (version, merge(snaps))
        return self._merged[1], snaps

    def figures(self, first: date | None, last: date | None,
                catalogue_by_tier: Mapping[str, int] | None) -> dict[str, Any] | None:
        """The ``exchange`` object of ``/v1/stats`` (None until ``hub.counts`` was read once)."""
        if not self.loaded:
            return None
        table, snaps = self.table()
        figures = exchange_figures(table, first, last, catalogue_by_tier)
        figures["snapshots"] = [s.to_json() for _, s in sorted(snaps.items())]
        return figures


# ------------------------------------------------------------------------------------------ the audit log


AuditSink = Callable[[int, "dict[str, Any] | None", "str | None"], None]  # (offset, record, decode error)


async def read_audit(
    consumer: AIOKafkaConsumer, registry: RegistryClient, tp: TopicPartition, start: int, stop: int,
    sink: AuditSink, *, on_progress: Callable[[int], None] | None = None, stall_timeout: float = 60.0,
) -> None:
    """Stream the records of ``tp`` with offsets in [start, stop) to ``sink``, decoded (None + error if not).

    The consumer is assigned ``tp`` alone. Raises ReadStalled if no record arrives for ``stall_timeout``.
    """
    if stop <= start:
        return
    consumer.assign([tp])
    consumer.seek(tp, start)
    position = start
    last_progress = time.monotonic()
    while position < stop:
        batch = await consumer.getmany(tp, timeout_ms=500, max_records=10_000)
        messages = [m for m in batch.get(tp, []) if m.offset < stop]
        for msg in messages:  # fetch unknown writer schemas first, then decode synchronously
            if msg.value and len(msg.value) >= framing.HEADER_SIZE and msg.value[0] == 0:
                schema_id = framing.split(msg.value)[0]
                if registry.cached(schema_id) is None:
                    with contextlib.suppress(SchemaNotFound):
                        await registry.schema_by_id(schema_id)
        for msg in messages:
            record, error = _decode(msg.value, registry)
            sink(msg.offset, record, error)
        now_at = min(await consumer.position(tp), stop)
        if now_at > position:
            if on_progress is not None:
                on_progress(now_at - position)
            position = now_at
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_timeout:
            raise ReadStalled(f"no records from {tp.topic} partition {tp.partition} for {stall_timeout:.0f} s "
                              f"(at offset {position} of {stop})")


def _decode(value: bytes | None, registry: RegistryClient) -> tuple[dict[str, Any] | None, str | None]:
    try:
        schema_id, body = framing.split(value)
    except FramingError as exc:
        return None, f"{exc.rule}: {exc}"
    schema = registry.cached(schema_id)
    if schema is None:
        return None, f"schema id {schema_id} is not in the registry"
    try:
        return framing.decode_body(body, schema.parsed), None
    except FramingError as exc:
        return None, f"{exc.rule}: {exc}"
