"""The one place the hub builds its aiokafka clients: connection settings (SASL/TLS) and defaults applied once.

Every client gets ``kafka_client_kwargs(settings)`` (security protocol, SASL mechanism and credentials, TLS);
``overrides`` replace the defaults below or add any other aiokafka option.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from hub.broker.kafka_config import kafka_client_kwargs
from hub.settings import Settings

# Producers wait for every in-sync replica (a record the hub sent is a record it may audit) and send at once;
# batching writers pass ``linger_ms``, writers of control state ``enable_idempotence=True``.
PRODUCER_DEFAULTS: Mapping[str, Any] = {"acks": "all", "linger_ms": 0}
# Consumers read assigned partitions without a group and keep their own position; a reader in a group passes
# ``group_id`` (and ``enable_auto_commit=True`` where losing its place costs nothing).
CONSUMER_DEFAULTS: Mapping[str, Any] = {"group_id": None, "enable_auto_commit": False}


def make_producer(settings: Settings, bootstrap: str, **overrides: Any) -> AIOKafkaProducer:
    """A producer on ``bootstrap`` (not started): ``PRODUCER_DEFAULTS`` updated with ``overrides``."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **_options(settings, PRODUCER_DEFAULTS, overrides))


def make_consumer(settings: Settings, bootstrap: str, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer on ``bootstrap`` (not started), subscribed to ``topics`` if any (else ``assign`` it):
    ``CONSUMER_DEFAULTS`` updated with ``overrides``."""
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, **_options(settings, CONSUMER_DEFAULTS, overrides))


def make_admin(settings: Settings, bootstrap: str) -> AIOKafkaAdminClient:
    """An admin client on ``bootstrap`` (not started)."""
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_client_kwargs(settings))


async def describe_partitions(settings: Settings, bootstrap: str, topic: str) -> tuple[int, list[int]]:
    """(Kafka error code, partition numbers) of ``topic`` from the cluster's metadata, without creating it.

    A missing topic is error 3 (UNKNOWN_TOPIC_OR_PARTITION) with no partitions.
    """
    admin = make_admin(settings, bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return described.get("error_code") or 0, sorted(p["partition"] for p in described.get("partitions") or ())


def _options(settings: Settings, defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {**defaults, **kafka_client_kwargs(settings), **overrides}
