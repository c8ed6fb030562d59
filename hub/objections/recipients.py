"""Who received which record: ``hub.recipients``, written by the workers, read when an objection is filed or
flagged.

**The table.** One record per (resource, record key, set of consumers) an event of the record was delivered to,
keyed ``<resource>`` U+001F ``<record key>`` U+001F ``<consumer>,<consumer>...``, value ``<epoch ms> <event id>``
(text: only the hub reads it). A record's versions usually go to the same consumers, so that is one key per
record; keying by the set rather than by each consumer halves what the hot path writes (two consumers per event
is typical). All the keys of one record land on one partition (``partition_of`` of the ``<resource>`` U+001F
``<record key>`` U+001F prefix), so the recipients of a record are the union of the sets on one partition.

**The bound.** The topic is ``cleanup.policy=compact,delete`` with ``retention.ms`` = the objection filing
window (``HUB_OBJECTION_WINDOW_DAYS``, 90 days by default): compaction keeps one record per key, deletion drops
a key whose last write is older than the window. So it holds at most one record per (record, recipient set)
delivered within the window, and a delivery older than that can no longer be objected to.

**The hot path.** A worker writes a key on its first delivery only: :class:`FirstDeliveries`, a bounded
in-memory map, suppresses rewrites of a key written less than ``refresh_ms`` ago (one dict lookup per event).
A key delivered again after that is written again, which moves it forward in the retention window (so a record
delivered yesterday can be objected to for the whole window, give or take ``refresh_ms``). A key evicted from
the map (or forgotten on restart) is simply written again: harmless in a compacted topic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import TopicPartition

from hub.broker.clients import make_consumer, make_producer
from hub.broker.records import partition_of
from hub.contract import RECIPIENTS_TOPIC
from hub.settings import Settings

SEPARATOR = "\x1f"  # cannot occur in a node or resource id; a record key containing it still parses (rpartition)
DEFAULT_CAPACITY = 200_000
DEFAULT_REFRESH_MS = 86_400_000


def record_prefix(resource: str, record_key: str) -> bytes:
    """What every key of one record starts with (and what its partition is computed from)."""
    return f"{resource}{SEPARATOR}{record_key}{SEPARATOR}".encode()


def recipient_key(prefix: bytes, consumers: str) -> bytes:
    """The key of one recipient set (``consumers``: node ids joined by ``,``, which no node id contains)."""
    return prefix + consumers.encode()


def partition_for(prefix: bytes, partitions: int) -> int:
    return partition_of(prefix, partitions)


def recipient_value(event_id: str, at: int) -> bytes:
    """``<epoch ms> <event id>`` as text: written on the hot path, where json.dumps would cost more than the rest of
    the note together."""
    return f"{at} {event_id}".encode()


def parse_value(value: bytes) -> tuple[int, str]:
    """(when it was delivered, the event id) of a ``hub.recipients`` value."""
    at, _, event_id = value.decode("utf-8", errors="replace").partition(" ")
    return int(at), event_id


def consumers_of(key: bytes | None, prefix: bytes) -> str | None:
    """The recipient set a ``hub.recipients`` key names (as written), if it belongs to the record of ``prefix``."""
    if not key or not key.startswith(prefix):
        return None
    consumers = key[len(prefix):].decode("utf-8", errors="replace")
    return consumers if consumers and SEPARATOR not in consumers else None


def recipients_from(records: Iterable[tuple[bytes | None, bytes | None]], prefix: bytes) -> set[str]:
    """The consumers of one record, from ``(key, value)`` pairs in log order (a tombstone forgets a set)."""
    sets: set[str] = set()
    for key, value in records:
        consumers = consumers_of(key, prefix)
        if consumers is None:
            continue
        if value is None:
            sets.discard(consumers)
        else:
            sets.add(consumers)
    return {consumer for joined in sets for consumer in joined.split(",") if consumer}


class FirstDeliveries:
    """Which ``hub.recipients`` keys this worker wrote lately: bounded, oldest forgotten first."""

    __slots__ = ("capacity", "refresh_ms", "_written")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, refresh_ms: int = DEFAULT_REFRESH_MS) -> None:
        self.capacity = capacity
        self.refresh_ms = refresh_ms
        self._written: dict[bytes, int] = {}

    def due(self, key: bytes, now: int) -> bool:
        """True (and remembered as written at ``now``) unless the key was written less than refresh_ms ago."""
        written = self._written.get(key)
        if written is not None and now - written < self.refresh_ms:
            return False
        if written is None and len(self._written) >= self.capacity:
            del self._written[next(iter(self._written))]  # dicts keep insertion order: the oldest goes
        self._written[key] = now
        return True

    def __len__(self) -> int:
        return len(self._written)


async def scan_recipients(settings: Settings, bootstrap: str, resource: str, record_key: str,
                          timeout: float = 30.0) -> set[str]:
    """The consumers ``hub.recipients`` says received the record: reads its one partition to the end."""
    prefix = record_prefix(resource, record_key)
    probe = make_producer(settings, bootstrap)
    await probe.start()
    try:
        partitions = await probe.partitions_for(RECIPIENTS_TOPIC)
    finally:
        await probe.stop()
    if not partitions:
        return set()
    tp = TopicPartition(RECIPIENTS_TOPIC, partition_for(prefix, len(partitions)))
    consumer = make_consumer(settings, bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        pairs: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {RECIPIENTS_TOPIC} partition {tp.partition} took over {timeout:.0f} s")
            batch = await consumer.getmany(tp, timeout_ms=500)
            pairs.extend((m.key, m.value) for m in batch.get(tp, ()))
            await asyncio.sleep(0)
        return recipients_from(pairs, prefix)
    finally:
        await consumer.stop()
