"""The call state of one worker: for each partition index p it owns, the tables calls are answered from.

One aiokafka consumer (manual assignment, group ``<app id>.calls-state`` used only for commits) reads
partition p of ``hub.records`` (current record per store key), ``hub.records.index`` (secondary index) and
``hub.call-quota`` (calls per grant and day) for every owned p: from the beginning when p is newly assigned
(the restore; ``wait_ready`` returns once the end offsets taken at assignment are reached), then as they grow.
For ``hub.records`` it also maintains the secondary index: each new row version's indexed values are written
to ``hub.records.index`` (retracting values the row no longer has), and the records offset up to which that is
done is committed, so a new owner resumes there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hub.broker.clients import make_consumer, make_producer
from hub.broker.records import OutRecord, partition_of
from hub.broker.sender import BatchSender, gather_all
from hub.calls import core
from hub.calls.core import IndexTable, QuotaTable, RecordTable, Row
from hub.catalogue.model import Resource
from hub.contract import H_WRITER, INDEX_TOPIC, QUOTA_TOPIC, RECORDS_TOPIC, store_key
from hub.registry import framing
from hub.registry.client import RegistryClient, RegistryClientError
from hub.settings import Settings

log = logging.getLogger("hub.calls")

STATE_TOPICS = (RECORDS_TOPIC, INDEX_TOPIC, QUOTA_TOPIC)
COMMIT_INTERVAL_S = 0.5  # how often the index emission position (hub.records offsets) is committed
CAUGHT_UP_TIMEOUT_S = 5.0


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
        self.registry: RegistryClient | None = None
        self.resource_of: Callable[[str], Resource | None] = lambda _: None
        self._index_producer: AIOKafkaProducer | None = None
        self._index_sender: BatchSender | None = None
        self._fields: dict[str, tuple[str, ...]] = {}  # resource id -> indexed fields (per catalogue version)
        self._fields_of: dict[str, Resource] = {}
        self._task: asyncio.Task[None] | None = None
        self._index_partitions: list[int] = []
        self._records_partitions = 0
        self.writer_id = uuid.uuid4().hex.encode()  # marks the hub.records rows this worker applied itself
        # per partition: rows applied here, not yet met on the changelog: (key, the very value object applied)
        self._local: dict[int, deque[tuple[bytes, bytes]]] = {}
        self.applied = 0
        self.applied_locally = 0

    async def start(self, registry: RegistryClient, resource_of: Callable[[str], Resource | None]) -> None:
        self.registry, self.resource_of = registry, resource_of
        # the index's own producer: its writes never queue behind (or hold up) the exchange's produce requests
        self._index_producer = make_producer(self.settings, self.bootstrap, linger_ms=5, max_batch_size=256 * 1024)
        await self._index_producer.start()
        self._index_sender = BatchSender(self._index_producer)
        self.consumer = make_consumer(
            self.settings, self.bootstrap, group_id=f"{self.settings.app_id}.calls-state",
            auto_offset_reset="earliest", max_partition_fetch_bytes=1024 * 1024, fetch_max_wait_ms=500,
        )
        await self.consumer.start()
        self._offsets = make_consumer(self.settings, self.bootstrap)
        await self._offsets.start()
        self._index_partitions = sorted(await self._index_producer.partitions_for(INDEX_TOPIC))
        self._records_partitions = len(await self._index_producer.partitions_for(RECORDS_TOPIC))
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

    def key_exists(self, resource_id: str, key: str) -> bool | None:
        """Whether ``resource_id`` has a current row with primary key ``key`` (``reference`` quality rules).

        None when this worker cannot tell: the row's ``hub.records`` partition is owned by another worker, or is
        still being restored. The quality rule then passes the record (a reference is refused only when known
        to be missing), so a record's fate never depends on which worker happens to read it, only its certainty.
        """
        store = store_key(resource_id, key)
        p = partition_of(store, self._records_partitions) if self._records_partitions else -1
        ready = self._ready.get(p)
        table = self.records.get(p)
        if table is None or ready is None or not ready.is_set():
            return None
        return table.value_of(store) is not None

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
        batch = await self.consumer.getmany(timeout_ms=1000, max_records=2_000)  # short steps: the loop is shared
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
                local = self._local.get(p)
                for m in msgs:
                    if local and m.key == local[0][0] and _writer(m.headers) == self.writer_id:
                        key, value = local.popleft()
                        if table.value_of(key) is value:  # applied and indexed when it was written: nothing to do
                            continue
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

    def materialise(self, rows: Sequence[tuple[OutRecord, Mapping[str, Any]]]) -> list[OutRecord]:
        """``hub.ports.RowSink``: rows the exchange is about to write to ``hub.records``, applied here and now.

        A row whose partition this worker owns (restored and live) goes into its table at once, with its
        indexed values taken from the already decoded record, and its index changes are returned to be written
        with the batch. Every row is marked with this worker's id; when the reading loop meets it on
        ``hub.records`` it skips it (no decoding, no index work) unless another writer's version came in
        between. Rows of partitions other workers own are left to them.
        """
        header = (H_WRITER, self.writer_id)
        count = self._records_partitions
        now = int(time.time() * 1000)
        changes: list[core.IndexChange] = []
        for out, record in rows:
            out.headers = [*out.headers, header]
            if not count or out.key is None:
                continue
            q = out.partition = partition_of(out.key, count)  # the sender need not hash the key again
            ready = self._ready.get(q)
            if q not in self._owned or self._wanted is not None or ready is None or not ready.is_set():
                continue  # not (yet) this worker's to apply: the reading loop applies it when it reads it
            parsed = core.resource_of_store_key(out.key)
            fields = self._indexed(parsed[0]) if parsed is not None else ()
            new = core.index_values(record, fields) if fields else ()
            old = self.records[q].apply(out.key, Row(out.value, -1, now, new))
            self._local.setdefault(q, deque()).append((out.key, out.value))
            self.applied_locally += 1
            if fields and parsed is not None:
                before = (old.indexed if old.indexed is not None else self._values(old.value, fields)) if old else ()
                if new or before:
                    changes.extend(core.index_changes(parsed[0], parsed[1], before, new, now))
        parts = self._index_partitions
        return [OutRecord(INDEX_TOPIC, c.key, c.value, [], core.index_partition(c.partition_key, parts))  # type: ignore[arg-type]
                for c in changes]

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
            table.set_indexed(m.key, new)
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
        records = [OutRecord(INDEX_TOPIC, c.key, c.value, [], core.index_partition(c.partition_key, parts))  # type: ignore[arg-type]
                   for c in changes]
        await gather_all(await self._index_sender.send(records))

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
        for p in lost | new:
            self._local.pop(p, None)
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


def _writer(headers: Sequence[tuple[str, bytes]] | None) -> bytes | None:
    for key, value in headers or ():
        if key == H_WRITER:
            return value
    return None
