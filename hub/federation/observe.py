"""``hub federation status``: each link's replication lag and last transfer, read from both clusters.

Lag compares the source topic's end offsets with the mirrored topic's; the last transfer is the newest record's
timestamp on the mirrored topic (MM2 keeps the source timestamps).
"""

from __future__ import annotations

import contextlib

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from hub.broker.clients import make_consumer
from hub.federation.model import FederationConfig, Link, LinkStatus, link_status
from hub.settings import Settings


async def _ends(bootstrap: str, topic: str) -> tuple[dict[int, int], list[int]]:
    """(partition -> end offset, timestamp of each partition's last record) of a topic; empty if it is missing."""
    consumer = make_consumer(Settings(), bootstrap, request_timeout_ms=10_000)  # HUB_KAFKA_*: SASL if set
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh client's cache may lack it
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return {}, []
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        stamps: list[int] = []
        for tp in tps:
            if ends[tp] > 0:
                consumer.seek(tp, ends[tp] - 1)
        with contextlib.suppress(KafkaError):
            wanted = {tp for tp in tps if ends[tp] > 0}
            for _ in range(10):
                if not wanted:
                    break
                for tp, msgs in (await consumer.getmany(*wanted, timeout_ms=500)).items():
                    if msgs:
                        stamps.append(msgs[-1].timestamp)
                        wanted.discard(tp)
        return {tp.partition: ends[tp] for tp in tps}, stamps
    finally:
        await consumer.stop()


async def link_statuses(config: FederationConfig) -> list[LinkStatus]:
    out = []
    for link in config.links:
        out.append(await one_link(config, link))
    return out


async def one_link(config: FederationConfig, link: Link) -> LinkStatus:
    source_ends, _ = await _ends(config.platforms[link.source].bootstrap, link.source_topic)
    target_ends, stamps = await _ends(config.platforms[link.target].bootstrap, link.target_topic)
    return link_status(link, source_ends, target_ends, stamps)
