"""Sending a whole batch of output records through aiokafka's batch API, one record batch per partition.

aiokafka's per-record ``send`` costs ~26 µs (a future, a partition lookup, an accumulator append each);
building ``create_batch``/``send_batch`` batches per (topic, partition) is several times cheaper
(../shared/PERF.md). Keys are partitioned exactly like aiokafka's default partitioner (murmur2), so a
record's versions stay in order on one partition whatever the hub's own partitioning.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from hub.pipeline.core import OutRecord

METADATA_REFRESH_S = 30.0


class BatchSender:
    """Groups output records by (topic, partition) into aiokafka record batches and sends them."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.partitioner = DefaultPartitioner()
        self._partitions: dict[str, tuple[list[int], float]] = {}
        self._round_robin = itertools.count()

    async def _partitions_of(self, topic: str) -> list[int]:
        loop_time = asyncio.get_running_loop().time()
        cached = self._partitions.get(topic)
        if cached is not None and loop_time - cached[1] < METADATA_REFRESH_S:
            return cached[0]
        partitions = sorted(await self.producer.partitions_for(topic))
        self._partitions[topic] = (partitions, loop_time)
        return partitions

    async def send(self, outputs: Iterable[OutRecord], timestamp_ms: int | None = None) -> list[asyncio.Future[Any]]:
        """Queue every record; returns the futures of the batches (await them for the broker's acks)."""
        grouped: dict[tuple[str, int], list[OutRecord]] = {}
        for out in outputs:
            partitions = await self._partitions_of(out.topic)
            if out.key is None:
                partition = partitions[next(self._round_robin) % len(partitions)]
            else:
                partition = self.partitioner(out.key, partitions, partitions)
            grouped.setdefault((out.topic, partition), []).append(out)
        futures: list[asyncio.Future[Any]] = []
        for (topic, partition), records in grouped.items():
            batch = self.producer.create_batch()
            for out in records:
                while batch.append(key=out.key, value=out.value, timestamp=timestamp_ms, headers=out.headers) is None:
                    futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
            if batch.record_count():
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        return futures
