"""Writing ``hub.audit``: seal each partition's records into its hash chain, after what they record is acknowledged.

The invariant: a feed (or a call reply) is acknowledged by the broker before its audit record is written, and
the input offsets are committed only after both. ``submit`` meets it without idle waits: it returns at once,
and a task per submission waits for that batch's acknowledgements, then (in submission order, so every chain
stays in order) seals and enqueues its audit records, then waits for their acknowledgements and adds them to
the partition's counts. Meanwhile the agents decide the next batch: batch n+1 is decided while batch n's
acknowledgements are on their way.

Counts are snapshotted to ``hub.counts`` partition p (at most once a second, with the audit offset they are
exact up to); an idle timer writes what a quiet partition has not snapshotted yet and checkpoints that are
due, and does nothing at all when nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hub.broker.records import OutRecord
from hub.broker.sender import BatchSender, gather_all
from hub.contract import AUDIT_TOPIC, COUNTS_TOPIC, H_EVENT_ID
from hub.pipeline.partition_state import PartitionState
from hub.ports import Audit
from hub.stats.counts import encode_snapshot
from hub.worker.partitions import PartitionStates

log = logging.getLogger("hub.worker")

SNAPSHOT_INTERVAL_S = 1.0  # how often a partition's counts are snapshotted to hub.counts (at most)


class Fenced(RuntimeError):
    """This worker may no longer own the partitions it was about to write audit records or counts for."""


class AuditWriter:
    """``hub.ports.AuditSink`` over the worker's producer and partition states."""

    def __init__(self, sender: BatchSender, partitions: PartitionStates,
                 on_failure: Callable[[BaseException], None], *, in_flight: Any = None, test_delay_s: float = 0.0,
                 fenced: Callable[[], str | None] = lambda: None,
                 ) -> None:
        self.sender = sender
        self.in_flight = in_flight  # a Gauge of the submissions not yet written, if given
        self.test_delay_s = test_delay_s
        self.partitions = partitions
        self.on_failure = on_failure
        self.fenced = fenced  # why this worker may have lost its partitions (hub.worker.service.SessionClock)
        self.encode: Callable[[dict[str, Any]], bytes] | None = None  # the AuditRecord encoder, set at start
        self._sealed_tail: asyncio.Future[None] | None = None
        self._inflight: set[asyncio.Future[None]] = set()
        self._snapshot_lock = asyncio.Lock()
        self.written = 0

    # ------------------------------------------------------------ writing
    def submit(self, sent: Sequence[asyncio.Future[Any]], audits: Sequence[Audit],
               on_written: Callable[[], None] | None = None, *, tick: Iterable[int] = ()) -> asyncio.Future[None]:
        """Write ``audits`` once every future in ``sent`` is acknowledged; the returned future is done when they are.

        ``tick``: partitions that get a checkpoint if one is due, even without records.
        """
        prev = self._sealed_tail
        sealed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sealed_tail = sealed
        task = asyncio.ensure_future(self._complete(prev, sealed, sent, audits, on_written, tuple(tick)))
        self._inflight.add(task)
        task.add_done_callback(self._finished)
        if self.in_flight is not None:
            self.in_flight.set(len(self._inflight))
        return task

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (a rebalance or a stop)."""
        while self._inflight:
            await asyncio.wait(list(self._inflight))

    @property
    def pending(self) -> int:
        return len(self._inflight)

    async def wait_below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` submissions are in flight (backpressure for the intake)."""
        while len(self._inflight) >= limit:
            await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)

    def _finished(self, task: asyncio.Future[None]) -> None:
        self._inflight.discard(task)
        if self.in_flight is not None:
            self.in_flight.set(len(self._inflight))
        if not task.cancelled() and task.exception() is not None:
            self.on_failure(task.exception())  # type: ignore[arg-type]

    async def _complete(
        self, prev: asyncio.Future[None] | None, sealed: asyncio.Future[None], sent: Sequence[asyncio.Future[Any]],
        audits: Sequence[Audit], on_written: Callable[[], None] | None, tick: tuple[int, ...],
    ) -> None:
        try:
            if sent:
                await asyncio.gather(*sent)  # the feeds are acknowledged before their audit records exist
            if self.test_delay_s and audits:
                await asyncio.sleep(self.test_delay_s)  # settings.test_audit_delay_ms: tests only
            if prev is not None:
                await prev  # seal in submission order: every partition's chain stays in order
            pending = await self._seal_and_enqueue(audits, tick)
        except BaseException as exc:
            sealed.set_exception(exc)
            sealed.exception()  # retrieved: the failure is reported once, by on_failure
            raise
        sealed.set_result(None)
        if self._sealed_tail is sealed:
            self._sealed_tail = None
        states = []
        for state, items, futures, count in pending:
            metadata = await asyncio.gather(*futures)
            # one writer per partition and an idempotent producer: this submission's offsets are contiguous
            state.audit_next_offset = metadata[0].offset + count
            state.counts.add(items)
            states.append(state)
            self.written += count
        if on_written is not None:
            on_written()
        if states:
            await self.snapshot(states)

    async def _seal_and_enqueue(
        self, audits: Sequence[Audit], tick: tuple[int, ...]
    ) -> list[tuple[PartitionState, list[dict[str, Any]], list[Any], int]]:
        encode = self.encode
        assert encode is not None, "the audit schema is not registered yet"
        reason = self.fenced()
        if reason is not None:  # another worker may own these partitions now: write nothing, start again
            raise Fenced(reason)
        by_partition: dict[int, list[dict[str, Any]]] = {p: [] for p in tick}
        for partition, audit in audits:
            items = by_partition.get(partition)
            if items is None:
                items = by_partition[partition] = []
            items.append(audit)
        now_ms = int(time.time() * 1000)
        pending = []
        for partition, items in by_partition.items():
            state = self.partitions.states.get(partition)
            if state is None:
                if items:
                    raise RuntimeError(f"audit records for partition {partition}, whose state is not restored")
                continue  # a tick for a partition given away meanwhile
            sealed = state.chain.seal_batch(items, now_ms) if items else state.chain.tick(now_ms)
            if not sealed:
                continue
            records = [OutRecord(AUDIT_TOPIC, (eid := a["event_id"].encode()), encode(a), [(H_EVENT_ID, eid)])
                       for a in sealed]
            futures = await self.sender.send_partition(AUDIT_TOPIC, partition, records)
            pending.append((state, items, futures, len(sealed)))
        return pending

    # ------------------------------------------------------------ idle work (timers)
    def checkpoints_due(self) -> list[int]:
        now_ms = int(time.time() * 1000)
        return [p for p, state in self.partitions.states.items() if state.chain.checkpoint_due(now_ms)]

    async def idle(self) -> None:
        """Checkpoints that are due and snapshots not written yet; nothing at all when nothing changed."""
        due = self.checkpoints_due()
        if due:
            await self.submit((), (), tick=due)
        stale = [s for s in self.partitions.states.values() if s.snapshot_offset != s.audit_next_offset]
        if stale:
            try:
                await self.snapshot(stale)
            except Exception as exc:  # the next tick or batch writes it; a restore replays from the last one
                log.warning("count snapshot failed: %r", exc)

    async def snapshot(self, states: Sequence[PartitionState], *, force: bool = False) -> None:
        """Write partitions' counts with the audit offset they are exact up to (throttled per partition)."""
        async with self._snapshot_lock:  # snapshots of a partition reach hub.counts in the order they were taken
            if self.fenced() is not None:  # partitions perhaps someone else's now: their owner writes the counts
                return
            now = time.monotonic()
            records: list[OutRecord] = []
            for state in states:
                if not force and now - state.snapshot_at < SNAPSHOT_INTERVAL_S:
                    continue
                offset = state.audit_next_offset  # counts and offset taken together, before any await
                if state.snapshot_offset == offset:
                    continue
                value = encode_snapshot(offset, state.counts, state.chain_head)
                records.append(OutRecord(COUNTS_TOPIC, str(state.partition).encode(), value, [], state.partition))
                state.snapshot_offset, state.snapshot_at = offset, now
            if records:
                await gather_all(await self.sender.send(records))
