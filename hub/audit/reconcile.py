"""``hub audit reconcile``: recount every counter from the audit log and compare it with the durable counts.

How equality is decided (the worker side is ``hub.pipeline.worker`` / ``partition_state``):

* ``hub.counts`` partition p holds snapshots of the counts of ``hub.audit`` partition p, each exact up to an
  ``audit_offset``: it counts every counted audit record of partition p below that offset, nothing else.
  Snapshots are written at most once a second, so the newest one usually lags the end of the log a little.
* Reconcile therefore reads each partition's **current snapshot first**, then recounts exactly the audit
  records of that partition **below the snapshot's audit_offset** (from the partition's first offset),
  with the same ``count_keys`` the worker uses (a publish record counts its publish and each of its
  deliveries and refusals; logs with separate ``deliver``/``deny`` records count the same). Records
  written after the snapshot are not compared (they are reported as ``uncovered``). This is exact while
  the hub keeps running: no quiescence needed. With ``wait`` > 0 it first waits (up to that many seconds)
  for snapshots that cover the log as it was when reconcile started, so a quiet hub is compared completely.
* Checkpoint records are skipped (they are not exchange events). Every audit record is identified by the
  publishing node (the ingress topic in ``source``, else the actor) and its ``audit_id`` (one per event:
  ``<event_id>/publish/-``, or ``.../quarantine/-``; older logs also have one per delivery): a second record
  with the same identity anywhere in the log is a **duplicate**, reported with its partition and offset and
  not counted again. (Identities are kept as 64-bit hashes, ~60 bytes per audit record.)
* The recount of partition p is compared with p's snapshot key by key (CountKey: day, action, tiers,
  direction, resource, decision, reason). Equal means: the same keys with the same non-zero counts, in
  every partition, no duplicates and no record that could not be decoded.

Exit codes (CLI): 0 equal; 1 differences or duplicates (or a snapshot counting records the log no longer
has); 2 could not reconcile (no broker, registry or topic, the log's start expired by retention, a record
that cannot be decoded).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from hub.audit.chain import CHECKPOINT
from hub.contract import AUDIT_TOPIC, COUNTS_TOPIC, INGRESS_PREFIX, node_of_ingress
from hub.registry.client import RegistryClient
from hub.settings import Settings
from hub.stats.counts import CountKey, CountTable, count_keys
from hub.stats.reader import Snapshot, TopicMissing, latest_snapshots, new_consumer, partitions_of, read_audit

KEY_FIELDS = ("day", "action", "from_tier", "to_tier", "direction", "resource", "decision", "reason")
MAX_LISTED = 1000  # duplicates / undecodable records listed in full (all are counted)

EXIT_EQUAL, EXIT_DIFFERENT, EXIT_UNVERIFIABLE = 0, 1, 2


@dataclass(frozen=True)
class Difference:
    partition: int
    key: CountKey
    counted: int  # in the partition's snapshot (what the hub reports)
    recounted: int  # from the audit log

    def to_json(self) -> dict[str, Any]:
        return {"partition": self.partition, **dict(zip(KEY_FIELDS, self.key, strict=True)),
                "counted": self.counted, "recounted": self.recounted, "difference": self.counted - self.recounted}


@dataclass(frozen=True)
class Duplicate:
    partition: int
    offset: int
    node: str
    audit_id: str

    def to_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "offset": self.offset, "node": self.node, "audit_id": self.audit_id}


@dataclass(frozen=True)
class Undecodable:
    partition: int
    offset: int
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "offset": self.offset, "error": self.error}


def audit_identity(audit: Mapping[str, Any]) -> tuple[str, str]:
    """(publishing node, audit_id): event ids are scoped to the node that published them."""
    source = audit.get("source") or ""
    topic = source.split("/", 1)[0]
    node = node_of_ingress(topic) if topic.startswith(INGRESS_PREFIX) else (audit.get("actor") or "")
    return node, audit["audit_id"]


def _identity_hash(node: str, audit_id: str) -> int:
    digest = hashlib.blake2b(f"{node}\x00{audit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Recount:
    """Counts audit records, each identity once, per partition (pure; fed record by record)."""

    def __init__(self, max_listed: int = MAX_LISTED) -> None:
        self.tables: dict[int, CountTable] = {}
        self.records = 0  # audit records read (checkpoints included)
        self.checkpoints = 0
        self.duplicate_count = 0
        self.duplicates: list[Duplicate] = []
        self.undecodable: list[Undecodable] = []
        self.undecodable_count = 0
        self._seen: set[int] = set()
        self._max_listed = max_listed

    def add(self, partition: int, offset: int, audit: Mapping[str, Any] | None, error: str | None = None) -> None:
        self.records += 1
        table = self.tables.setdefault(partition, CountTable())
        if audit is None:
            self.undecodable_count += 1
            if len(self.undecodable) < self._max_listed:
                self.undecodable.append(Undecodable(partition, offset, error or "undecodable"))
            return
        if audit["action"] == CHECKPOINT:
            self.checkpoints += 1
            return
        node, audit_id = audit_identity(audit)
        ident = _identity_hash(node, audit_id)
        if ident in self._seen:
            self.duplicate_count += 1
            if len(self.duplicates) < self._max_listed:
                self.duplicates.append(Duplicate(partition, offset, node, audit_id))
            return
        self._seen.add(ident)
        table.counts.update(count_keys(audit))

    def sink(self, partition: int) -> Callable[[int, dict[str, Any] | None, str | None], None]:
        return lambda offset, audit, error: self.add(partition, offset, audit, error)


def compare(counted: Mapping[int, CountTable], recounted: Mapping[int, CountTable]) -> list[Difference]:
    """Every (partition, key) whose count differs (zero counts are absent counts), sorted."""
    out = []
    for partition in sorted(set(counted) | set(recounted)):
        a = counted.get(partition, CountTable()).counts
        b = recounted.get(partition, CountTable()).counts
        for key in sorted(set(a) | set(b)):
            if a.get(key, 0) != b.get(key, 0):
                out.append(Difference(partition, key, a.get(key, 0), b.get(key, 0)))
    return out


@dataclass(frozen=True)
class PartitionCoverage:
    partition: int
    log_start: int
    log_end: int  # end offset when the partition was read
    snapshot_offset: int | None  # audit_offset of the current snapshot, None: no snapshot
    recounted_records: int
    checkpoints: int

    @property
    def compared_to(self) -> int:
        return min(self.snapshot_offset or 0, self.log_end)

    @property
    def uncovered(self) -> int:
        """Audit records newer than the snapshot (not compared this time)."""
        return max(0, self.log_end - (self.snapshot_offset or 0))

    def to_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "log_start": self.log_start, "log_end": self.log_end,
                "snapshot_offset": self.snapshot_offset, "recounted_records": self.recounted_records,
                "checkpoints": self.checkpoints, "uncovered": self.uncovered}


@dataclass
class Reconciliation:
    audit_topic: str
    counts_topic: str
    partitions: list[PartitionCoverage] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    duplicate_count: int = 0
    undecodable: list[Undecodable] = field(default_factory=list)
    undecodable_count: int = 0
    missing: list[str] = field(default_factory=list)  # snapshots counting records the log no longer has
    unverifiable: list[str] = field(default_factory=list)
    counted_total: int = 0
    recounted_total: int = 0
    duration_s: float = 0.0

    @property
    def equal(self) -> bool:
        return not (self.differences or self.duplicate_count or self.undecodable_count or self.missing
                    or self.unverifiable)

    @property
    def exit_code(self) -> int:
        if self.unverifiable or self.undecodable_count:
            return EXIT_UNVERIFIABLE
        return EXIT_EQUAL if self.equal else EXIT_DIFFERENT

    @property
    def status(self) -> str:
        return {EXIT_EQUAL: "equal", EXIT_DIFFERENT: "different", EXIT_UNVERIFIABLE: "unverifiable"}[self.exit_code]

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status, "equal": self.equal, "audit_topic": self.audit_topic,
            "counts_topic": self.counts_topic, "counted_total": self.counted_total,
            "recounted_total": self.recounted_total, "duration_s": round(self.duration_s, 3),
            "partitions": [p.to_json() for p in self.partitions],
            "differences": [d.to_json() for d in self.differences],
            "duplicate_count": self.duplicate_count, "duplicates": [d.to_json() for d in self.duplicates],
            "undecodable_count": self.undecodable_count, "undecodable": [u.to_json() for u in self.undecodable],
            "missing": self.missing, "unverifiable": self.unverifiable,
        }


def assemble(
    audit_topic: str, counts_topic: str, snapshots: Mapping[int, Snapshot], recount: Recount,
    bounds: Mapping[int, tuple[int, int]], *, checkpoints: Mapping[int, int] | None = None, duration_s: float = 0.0,
) -> Reconciliation:
    """The verdict from the snapshots, the recount and each audit partition's (start, end) offsets (pure)."""
    result = Reconciliation(audit_topic, counts_topic, duration_s=duration_s)
    for partition, (start, end) in sorted(bounds.items()):
        snap = snapshots.get(partition)
        cover = snap.audit_offset if snap is not None else 0
        if cover > end:
            result.missing.append(f"partition {partition}: the counts cover audit offsets up to {cover}, "
                                  f"but the log ends at {end}: audit records were removed")
        if start > 0 and cover > 0:
            result.unverifiable.append(f"partition {partition}: its first {start} audit records expired "
                                       "(retention), the counts cannot be recomputed from the start")
        table = recount.tables.get(partition, CountTable())
        result.partitions.append(PartitionCoverage(
            partition, start, end, None if snap is None else snap.audit_offset, sum(table.counts.values()),
            (checkpoints or {}).get(partition, 0),
        ))
    for partition in sorted(set(snapshots) - set(bounds)):
        result.missing.append(f"partition {partition} of {counts_topic} has counts, but {audit_topic} has no "
                              f"partition {partition}")
    counted = {p: s.table for p, s in snapshots.items()}
    result.differences = compare(counted, recount.tables)
    result.duplicates, result.duplicate_count = list(recount.duplicates), recount.duplicate_count
    result.undecodable, result.undecodable_count = list(recount.undecodable), recount.undecodable_count
    result.counted_total = sum(sum(t.counts.values()) for t in counted.values())
    result.recounted_total = sum(sum(t.counts.values()) for t in recount.tables.values())
    return result


Progress = Callable[[int], None]


async def reconcile(
    settings: Settings, bootstrap: str, *, registry_url: str | None = None, audit_topic: str = AUDIT_TOPIC,
    counts_topic: str = COUNTS_TOPIC, wait: float = 10.0, on_total: Progress | None = None,
    on_progress: Progress | None = None,
) -> Reconciliation:
    """Recount ``audit_topic`` below each partition's snapshot offset and compare (see the module docstring).

    Raises TopicMissing if the audit topic does not exist, ReadStalled, or the Kafka/registry clients' errors.
    """
    started = time.monotonic()
    consumer = new_consumer(settings, bootstrap)
    registry = RegistryClient(registry_url or settings.effective_registry_url, token=settings.client_token())
    try:
        await consumer.start()
        tps = [TopicPartition(audit_topic, p) for p in await partitions_of(settings, bootstrap, audit_topic)]
        try:
            count_partitions = await partitions_of(settings, bootstrap, counts_topic)
        except TopicMissing:
            count_partitions = []
        ends_at_start = await consumer.end_offsets(tps)
        snapshots = await latest_snapshots(consumer, count_partitions, counts_topic)
        deadline = time.monotonic() + wait
        while _lagging(snapshots, ends_at_start) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            snapshots = await latest_snapshots(consumer, count_partitions, counts_topic)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        stops = {tp: min(snapshots[tp.partition].audit_offset if tp.partition in snapshots else 0, ends[tp])
                 for tp in tps}
        if on_total is not None:
            on_total(sum(max(0, stops[tp] - starts[tp]) for tp in tps))
        recount = Recount()
        checkpoints: dict[int, int] = {}
        for tp in tps:
            before = recount.checkpoints
            recount.tables.setdefault(tp.partition, CountTable())
            await read_audit(consumer, registry, tp, starts[tp], stops[tp], recount.sink(tp.partition),
                             on_progress=on_progress)
            checkpoints[tp.partition] = recount.checkpoints - before
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await registry.aclose()
    bounds = {tp.partition: (starts[tp], ends[tp]) for tp in tps}
    return assemble(audit_topic, counts_topic, snapshots, recount, bounds, checkpoints=checkpoints,
                    duration_s=time.monotonic() - started)


def _lagging(snapshots: Mapping[int, Snapshot], ends: Mapping[TopicPartition, int]) -> bool:
    """Whether some partition's snapshot does not yet cover the log as it was at the start."""
    return any((snapshots[tp.partition].audit_offset if tp.partition in snapshots else 0) < end
               for tp, end in ends.items())
