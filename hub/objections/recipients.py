"""Who received which record: ``hub.recipients``, written by the workers, read when an objection is filed or
flagged.

**The table.** A worker notes, per batch and partition, every (resource, record key, set of consumers) an event
of the batch was delivered to: one Kafka record per partition a batch touches, not one per event (a record per
event cost the hot path about a tenth of its throughput). Its key is U+001E ``<first event id>/<last event
id>/<entries>`` (unique per batch, so compaction keeps every batch note), its value JSON
``{"at": <epoch ms>, "sets": [["<resource>\x1f<record key>\x1f<consumer>,<consumer>...", "<event id>"], ...]}``
(only the hub reads it). A record's versions usually go to the same consumers, so that is one entry per record;
noting the set rather than each consumer halves the entries (two consumers per event is typical). All the
entries of one record land on one partition (``partition_of`` of the ``<resource>`` U+001F ``<record key>``
U+001F prefix), so the recipients of a record are the union of its sets on one partition.

Records of the earlier layout, one per set (key ``<resource>`` U+001F ``<record key>`` U+001F ``<consumers>``,
value ``<epoch ms> <event id>``; a tombstone forgets the set), are still read.

**The bound.** The topic is ``cleanup.policy=compact,delete`` with ``retention.ms`` = the objection filing
window (``HUB_OBJECTION_WINDOW_DAYS``, 90 days by default): deletion drops a note older than the window. A worker
notes a set at most once per ``refresh_ms`` (a day by default) while it keeps being delivered, so the topic holds
at most one entry per (record, recipient set) and day of the window it was delivered on, and a delivery older
than the window can no longer be objected to.

**The hot path.** :class:`FirstDeliveries`, a bounded in-memory map, suppresses notes of a set written less than
``refresh_ms`` ago (one dict lookup per event). A set noted again after that moves forward in the retention
window (so a record delivered yesterday can be objected to for the whole window, give or take ``refresh_ms``).
A set evicted from the map (or forgotten on restart) is simply noted again: the union does not change.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence

import orjson
from aiokafka import TopicPartition

from hub.broker.clients import make_consumer, make_producer
from hub.broker.records import partition_of
from hub.contract import RECIPIENTS_TOPIC
from hub.settings import Settings

SEPARATOR = "\x1f"  # cannot occur in a node or resource id; a record key containing it still parses (rpartition)
BATCH_MARKER = b"\x1e"  # the first byte of a batch note's key (a resource id never starts with it)
DEFAULT_CAPACITY = 200_000
DEFAULT_REFRESH_MS = 86_400_000


def record_prefix(resource: str, record_key: str) -> bytes:
    """What every key of one record starts with (and what its partition is computed from)."""
    return f"{resource}{SEPARATOR}{record_key}{SEPARATOR}".encode()


def partition_for(prefix: bytes, partitions: int) -> int:
    return partition_of(prefix, partitions)


def set_entry(resource: str, record_key: str, consumers: str) -> str:
    """The entry of one recipient set in a batch note (``consumers``: node ids joined by ``,``)."""
    return f"{resource}{SEPARATOR}{record_key}{SEPARATOR}{consumers}"


def batch_note(at: int, entries: Sequence[tuple[str, str]]) -> tuple[bytes, bytes]:
    """(key, value) of the note of a batch's ``(set entry, event id)`` pairs on one partition, at ``at``.

    The key names the batch's first and last event and its size: unique, so compaction keeps every note (the
    same batch processed again after a crash writes the same key and value)."""
    key = BATCH_MARKER + f"{entries[0][1]}/{entries[-1][1]}/{len(entries)}".encode()
    return key, orjson.dumps({"at": at, "sets": entries})  # ~10x json.dumps: a batch note lists ~2,000 entries


def consumers_of(key: bytes | None, prefix: bytes) -> str | None:
    """The recipient set a ``hub.recipients`` key names (as written), if it belongs to the record of ``prefix``."""
    if not key or not key.startswith(prefix):
        return None
    consumers = key[len(prefix):].decode("utf-8", errors="replace")
    return consumers if consumers and SEPARATOR not in consumers else None


def batch_sets(value: bytes, prefix: bytes) -> list[str]:
    """The recipient sets a batch note lists for the record of ``prefix`` (none if the value is not a note)."""
    try:
        note = json.loads(value)
        entries = note["sets"]
    except (ValueError, TypeError, KeyError):
        return []
    text = prefix.decode("utf-8", errors="replace")
    found = []
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, list) and entry and isinstance(entry[0], str) and entry[0].startswith(text):
            consumers = entry[0][len(text):]
            if consumers and SEPARATOR not in consumers:
                found.append(consumers)
    return found


def recipients_from(records: Iterable[tuple[bytes | None, bytes | None]], prefix: bytes) -> set[str]:
    """The consumers of one record, from ``(key, value)`` pairs in log order: the sets of the batch notes, and of
    the earlier per-set records (a tombstone forgets such a set)."""
    sets: set[str] = set()
    for key, value in records:
        if key and key.startswith(BATCH_MARKER):
            if value is not None:
                sets.update(batch_sets(value, prefix))
            continue
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
        self._written: dict[str | bytes, int] = {}

    def due(self, key: str | bytes, now: int) -> bool:
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
