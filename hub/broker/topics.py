"""Creating the hub's topics: one table decides each topic's partitions and configs from its name.

The names themselves are contract facts (``hub.contract``); node-facing topics are named by node id so broker
ACLs can isolate each node.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from hub.broker.clients import make_admin
from hub.contract import (
    AUDIT_TOPIC,
    CALLS_TOPIC,
    CONTROL_AUDIT_TOPIC,
    CONTROL_TOPICS,
    COUNTS_TOPIC,
    INDEX_TOPIC,
    OPERATOR,
    QUOTA_TOPIC,
    RECIPIENTS_TOPIC,
    RECORDS_TOPIC,
    node_topics,
    objection_topic,
)
from hub.settings import Settings

log = logging.getLogger(__name__)

SNAPSHOT_MAX_BYTES = 16 * 1024 * 1024  # a hub.counts message is a whole count table
_TOPIC_ALREADY_EXISTS = 36


class TopicSpec(NamedTuple):
    """How a topic is created: ``partitions`` None means ``settings.topic_partitions`` (partitioned like ingress)."""

    partitions: int | None
    configs: Mapping[str, str]


_COMPACT_OFTEN = {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"}

CONTROL_STATE = TopicSpec(1, {"cleanup.policy": "compact"})  # one partition: one total order of control changes
CONTROL_AUDIT = TopicSpec(1, {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"})  # forever
PARTITIONED = TopicSpec(None, {})

TOPIC_SPECS: Mapping[str, TopicSpec] = {
    **dict.fromkeys(CONTROL_TOPICS, CONTROL_STATE),
    CONTROL_AUDIT_TOPIC: CONTROL_AUDIT,
    AUDIT_TOPIC: TopicSpec(None, {"retention.ms": "-1", "retention.bytes": "-1"}),  # the audit log is kept
    COUNTS_TOPIC: TopicSpec(None, {**_COMPACT_OFTEN, "max.message.bytes": str(SNAPSHOT_MAX_BYTES)}),
    RECORDS_TOPIC: TopicSpec(None, _COMPACT_OFTEN),  # current record per (resource, primary key)
    INDEX_TOPIC: TopicSpec(None, _COMPACT_OFTEN),  # secondary index changelog
    QUOTA_TOPIC: TopicSpec(None, {"cleanup.policy": "delete", "retention.ms": str(3 * 86_400_000)}),  # a call a record
    CALLS_TOPIC: PARTITIONED,
    # one record per (resource, record key, consumer) delivered: compaction keeps one per pair, deletion drops a
    # pair not refreshed within the filing window (retention.ms, from settings.objection_window_days)
    RECIPIENTS_TOPIC: TopicSpec(None, {"cleanup.policy": "compact,delete", "segment.ms": "3600000",
                                       "min.cleanable.dirty.ratio": "0.1"}),
}


def replication_for(brokers: int, configured: int | None = None) -> tuple[int, dict[str, str]]:
    """(replication factor, extra topic configs) for a cluster of ``brokers``.

    Unless configured: 3 copies from three brokers on, with ``min.insync.replicas=2`` so an ``acks=all`` write
    (every hub producer's) is on two brokers before it counts, and one broker may fail without refusing
    writes; otherwise one copy. The in-sync minimum is set on the topic, not left to the cluster's default,
    since an existing cluster's default may be 1.
    """
    factor = configured or (3 if brokers >= 3 else 1)
    return factor, ({"min.insync.replicas": "2"} if factor >= 3 else {})


async def _cluster_brokers(admin: object) -> int:
    described = await admin.describe_cluster()  # type: ignore[attr-defined]
    return len(described.get("brokers") or ())


def settings_configs(settings: Settings, name: str) -> dict[str, str]:
    """Configs of ``name`` that follow the settings rather than the table."""
    if name == RECIPIENTS_TOPIC:
        return {"retention.ms": str(int(settings.objection_window_days * 86_400_000))}
    return {}


def topic_spec(name: str) -> TopicSpec:
    """The table's spec for ``name``; any other topic (the node-facing ones) is partitioned, default configs."""
    return TOPIC_SPECS.get(name, PARTITIONED)


def hub_topics(node_ids: Iterable[str]) -> list[str]:
    """The data-path topics: the hub's audit, counts and records, and every node's node-facing topics."""
    topics = [AUDIT_TOPIC, COUNTS_TOPIC, RECORDS_TOPIC, RECIPIENTS_TOPIC, objection_topic(OPERATOR)]
    for node in node_ids:
        if node != OPERATOR:
            topics += node_topics(node)
    return topics


def worker_topics(node_ids: Iterable[str]) -> list[str]:
    """Every topic a worker needs: control state, hub topics, each node's node-facing topics, the calls topics."""
    return [*CONTROL_TOPICS, *hub_topics(node_ids), CALLS_TOPIC, INDEX_TOPIC, QUOTA_TOPIC]


async def ensure_topics(
    settings: Settings, bootstrap: str, names: Iterable[str], *, spec: TopicSpec | None = None,
    partitions: int | None = None,
) -> list[str]:
    """Create the topics that do not exist yet, each as ``topic_spec(name)`` says; returns the names created.

    ``spec`` creates every name that way instead (a control store or audit log under a configured name);
    ``partitions`` overrides the partition count of every name. A topic another process created first is
    fine; any other error raises.
    """
    wanted = list(dict.fromkeys(names))
    admin = make_admin(settings, bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return []
        brokers = 0 if settings.topic_replication else await _cluster_brokers(admin)
        factor, replication_configs = replication_for(brokers, settings.topic_replication)
        new = []
        for name in missing:
            how = spec or topic_spec(name)
            new.append(NewTopic(
                name=name, num_partitions=partitions or how.partitions or settings.topic_partitions,
                replication_factor=factor,
                topic_configs={**how.configs, **replication_configs, **settings_configs(settings, name)},
            ))
        response = None
        with contextlib.suppress(TopicAlreadyExistsError):  # another process created them first
            response = await admin.create_topics(new)
        for error in getattr(response, "topic_errors", []):
            if error[1] not in (0, _TOPIC_ALREADY_EXISTS):
                message = error[2] if len(error) > 2 else ""
                raise RuntimeError(f"cannot create the topic {error[0]}: error {error[1]} {message}")
        log.info("created %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()
