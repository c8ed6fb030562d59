"""Plain-data Kafka records the pure cores work on, and the hub's own key partitioning.

Every topic the hub writes keyed records to is partitioned by ``partition_of`` (CRC-32 of the key), so the
worker that routes a call to the owner of a ``hub.records`` row and the one that wrote the row agree. CRC-32
rather than Kafka's default murmur2: it runs for every output record, and the pure-Python murmur2 costs
~2.7 µs a key against ~0.07 µs. Nothing outside the hub partitions these topics; a consumer of a feed only
relies on a key's records staying on one partition, which any deterministic hash gives.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RawRecord:
    """One record as read from a topic (``ingress.<node>``, ``call.<node>.request``, ``hub.calls``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp_ms: int


@dataclass(slots=True)
class OutRecord:
    """One record to write; ``partition`` None means: by key (``partition_of``), or spread when keyless."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int | None = None


def raw_record(message: Any) -> RawRecord:
    """The plain-data view of an aiokafka ``ConsumerRecord``."""
    return RawRecord(message.topic, message.partition, message.offset, message.key, message.value,
                     message.headers or (), message.timestamp or 0)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of a keyed record in a topic of ``partitions`` partitions (see the module docstring)."""
    return zlib.crc32(key) % partitions
