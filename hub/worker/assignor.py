"""Partition assignment by partition index: partition p of every subscribed topic goes to one worker.

The worker owning index p alone writes partition p of ``hub.audit`` and ``hub.counts`` (one hash chain, one
count table) and holds partition p of the call state. Kafka's range assignor gives the same result only while
every member subscribes to exactly the same topics; with subscriptions that follow the live control plane, two
members can briefly disagree (one has seen a new node, the other not yet). Here an index belongs to exactly one
member whatever the subscriptions: a member is given partition p of the topics *it* subscribes to, and a topic
only the other members know yet is left unassigned until the next rebalance (which the lagging member's
re-subscription triggers within moments).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

log = logging.getLogger("hub.worker")


def owners_of_indices(indices: Iterable[int], members: Iterable[str]) -> dict[int, str]:
    """Contiguous ranges of partition indices per member (sorted member ids), like the range assignor."""
    ordered_members = sorted(members)
    ordered = sorted(set(indices))
    if not ordered_members:
        return {}
    per, extra = divmod(len(ordered), len(ordered_members))
    owners: dict[int, str] = {}
    start = 0
    for n, member in enumerate(ordered_members):
        size = per + (1 if n < extra else 0)
        for index in ordered[start:start + size]:
            owners[index] = member
        start += size
    return owners


def assign_by_index(
    partitions_of: Mapping[str, Iterable[int]], subscriptions: Mapping[str, Iterable[str]]
) -> dict[str, dict[str, list[int]]]:
    """{member: {topic: [partition, ...]}}: every index to one member, each member only its own topics (pure)."""
    indices = {p for parts in partitions_of.values() for p in parts}
    owners = owners_of_indices(indices, subscriptions)
    assignment: dict[str, dict[str, list[int]]] = {member: {} for member in subscriptions}
    for member, topics in subscriptions.items():
        for topic in sorted(set(topics)):
            mine = sorted(p for p in partitions_of.get(topic, ()) if owners.get(p) == member)
            if mine:
                assignment[member][topic] = mine
    return assignment


class PartitionIndexAssignor(AbstractPartitionAssignor):
    """aiokafka assignor over ``assign_by_index`` (every hub worker of a group must use it)."""

    name = "hub-partition-index"
    version = 0

    @classmethod
    def assign(
        cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        partitions_of: dict[str, set[int]] = {}
        for metadata in members.values():
            for topic in metadata.subscription:
                if topic not in partitions_of:
                    found = cluster.partitions_for_topic(topic)
                    if found is None:
                        log.debug("no partition metadata for %s yet", topic)
                        continue
                    partitions_of[topic] = set(found)
        plan = assign_by_index(partitions_of, {m: meta.subscription for m, meta in members.items()})
        return {member: ConsumerProtocolMemberAssignment(cls.version, sorted(topics.items()), b"")
                for member, topics in plan.items()}

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass
