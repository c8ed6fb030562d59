"""The topics the hub owns, named by node id (so broker ACLs can isolate each node), and their creation."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from hub.settings import Settings

AUDIT_TOPIC = "hub.audit"
CATALOG_TOPIC = "hub.catalog"
GRANTS_TOPIC = "hub.grants"
NODES_TOPIC = "hub.nodes"
SCENARIOS_TOPIC = "hub.scenarios"
SCHEMAS_TOPIC = "_schemas"
COUNTS_TOPIC = "hub.counts"  # per-partition count snapshots, written by the owner of ingress partition p
RECORDS_TOPIC = "hub.records"  # current record per (resource, primary key): the materialised databases
PARTITIONED_COMPACTED = (COUNTS_TOPIC, RECORDS_TOPIC)
SNAPSHOT_MAX_BYTES = 16 * 1024 * 1024
# single-partition control state
COMPACTED_TOPICS = (SCHEMAS_TOPIC, NODES_TOPIC, SCENARIOS_TOPIC, CATALOG_TOPIC, GRANTS_TOPIC)


def node_topics(node_id: str) -> list[str]:
    """Every node-facing topic of one node (docs/contract.md: Topics)."""
    return [
        f"ingress.{node_id}", f"feed.{node_id}", f"call.{node_id}.request", f"call.{node_id}.reply",
        f"quarantine.{node_id}", f"objection.{node_id}",
    ]


def hub_topics(node_ids: Iterable[str]) -> list[str]:
    topics = [AUDIT_TOPIC, COUNTS_TOPIC, RECORDS_TOPIC]
    for node in node_ids:
        if node != "hub":
            topics += node_topics(node)
    return topics


async def ensure_topics(
    settings: Settings, bootstrap: str, names: Iterable[str], *, compacted: Iterable[str] = (),
    partitions: int | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    ``compacted`` topics are control state with one partition, except ``hub.counts``, which is
    compacted but partitioned like the ingress topics (one snapshot per partition owner), and
    ``hub.records``, compacted and partitioned by its key (resource and primary key).
    """
    from hub.broker.kafka_config import kafka_client_kwargs

    wanted = list(dict.fromkeys(names))
    compact = set(compacted)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return []
        new = [
            NewTopic(
                name=t,
                num_partitions=1 if t in compact else (partitions or settings.topic_partitions),
                replication_factor=settings.topic_replication,
                topic_configs=_topic_configs(t, compact),
            )
            for t in missing
        ]
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass  # another worker created them first
        return missing
    finally:
        await admin.close()


def _topic_configs(topic: str, compact: set[str]) -> dict[str, str]:
    if topic == COUNTS_TOPIC:  # whole-table snapshots: allow large messages
        return {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1",
                "max.message.bytes": str(SNAPSHOT_MAX_BYTES)}
    if topic in PARTITIONED_COMPACTED:
        return {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"}
    return {"cleanup.policy": "compact"} if topic in compact else {}
