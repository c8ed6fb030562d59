"""The topic table behind ensure_topics, worker_topics, and the Kafka client factory."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import SecretStr

from hub.broker import clients, topics
from hub.broker.topics import (
    CONTROL_AUDIT,
    CONTROL_STATE,
    SNAPSHOT_MAX_BYTES,
    ensure_topics,
    replication_for,
    worker_topics,
)
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


class FakeAdmin:
    def __init__(self, existing: set[str], error: Exception | None = None, codes: dict[str, int] | None = None,
                 brokers: int = 1):
        self.existing, self.error, self.codes, self.brokers = existing, error, codes or {}, brokers
        self.created: dict[str, Any] = {}
        self.closed = False

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": i} for i in range(self.brokers)], "controller_id": 0}

    async def list_topics(self) -> list[str]:
        return sorted(self.existing)

    async def create_topics(self, new: list[Any]) -> Any:
        if self.error is not None:
            raise self.error
        self.created.update({t.name: t for t in new})

        class Response:
            topic_errors = [(t.name, self.codes.get(t.name, 0), "nope") for t in new]
        return Response()


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    fake = FakeAdmin({AUDIT_TOPIC})
    monkeypatch.setattr(topics, "make_admin", lambda settings, bootstrap: fake)
    return fake


def create(names: list[str], settings: Settings | None = None, **kw: Any) -> list[str]:
    return asyncio.run(ensure_topics(settings or Settings(topic_partitions=6), "b:9092", names, **kw))


def test_the_table_decides_partitions_and_configs_from_the_name(admin: FakeAdmin) -> None:
    created = create(worker_topics(["municipal.health"]))
    assert AUDIT_TOPIC not in created and admin.closed
    made = admin.created
    for control in CONTROL_TOPICS:
        assert made[control].num_partitions == 1 and made[control].topic_configs == {"cleanup.policy": "compact"}
    assert made[COUNTS_TOPIC].num_partitions == 6
    assert made[COUNTS_TOPIC].topic_configs["cleanup.policy"] == "compact"
    assert made[COUNTS_TOPIC].topic_configs["max.message.bytes"] == str(SNAPSHOT_MAX_BYTES)
    for compacted in (RECORDS_TOPIC, INDEX_TOPIC):
        assert made[compacted].num_partitions == 6 and made[compacted].topic_configs["cleanup.policy"] == "compact"
    assert made[QUOTA_TOPIC].num_partitions == 6
    assert made[QUOTA_TOPIC].topic_configs == {"cleanup.policy": "delete", "retention.ms": str(3 * 86_400_000)}
    assert made[CALLS_TOPIC].num_partitions == 6 and made[CALLS_TOPIC].topic_configs == {}
    for node_topic in node_topics("municipal.health"):
        assert made[node_topic].num_partitions == 6 and made[node_topic].topic_configs == {}
    assert {t.replication_factor for t in made.values()} == {1}  # one broker here


def test_replication_follows_the_cluster_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert replication_for(1) == (1, {}) and replication_for(2) == (1, {})
    assert replication_for(3) == (3, {"min.insync.replicas": "2"}) == replication_for(5)
    assert replication_for(5, 2) == (2, {}) and replication_for(1, 3) == (3, {"min.insync.replicas": "2"})
    three = FakeAdmin(set(), brokers=3)
    monkeypatch.setattr(topics, "make_admin", lambda s, b: three)
    create([AUDIT_TOPIC, CALLS_TOPIC])
    assert {t.replication_factor for t in three.created.values()} == {3}
    assert three.created[AUDIT_TOPIC].topic_configs == {"retention.ms": "-1", "retention.bytes": "-1",
                                                        "min.insync.replicas": "2"}
    configured = FakeAdmin(set(), brokers=3)
    monkeypatch.setattr(topics, "make_admin", lambda s, b: configured)
    create([CALLS_TOPIC], Settings(topic_replication=1))
    assert configured.created[CALLS_TOPIC].replication_factor == 1


def test_worker_topics_cover_hub_node_and_call_topics_once() -> None:
    names = worker_topics([OPERATOR, "a.b", "c.d"])
    assert len(names) == len(set(names))
    assert set(names) == {*CONTROL_TOPICS, AUDIT_TOPIC, COUNTS_TOPIC, RECORDS_TOPIC, CALLS_TOPIC, INDEX_TOPIC,
                          QUOTA_TOPIC, RECIPIENTS_TOPIC, objection_topic(OPERATOR), *node_topics("a.b"),
                          *node_topics("c.d")}


def test_the_recipients_table_is_bounded_by_the_filing_window(admin: FakeAdmin) -> None:
    create([RECIPIENTS_TOPIC])
    configs = admin.created[RECIPIENTS_TOPIC].topic_configs
    assert configs["cleanup.policy"] == "compact,delete"
    assert configs["retention.ms"] == str(90 * 86_400_000)  # HUB_OBJECTION_WINDOW_DAYS


def test_a_spec_or_partitions_override_the_table(admin: FakeAdmin) -> None:
    create(["my.audit"], spec=CONTROL_AUDIT)
    create(["my.store"], spec=CONTROL_STATE)
    create(["test.partitioned"], partitions=3)
    assert admin.created["my.audit"].num_partitions == 1
    assert admin.created["my.audit"].topic_configs["retention.ms"] == "-1"
    assert admin.created["my.store"].topic_configs == {"cleanup.policy": "compact"}
    assert admin.created["test.partitioned"].num_partitions == 3
    assert topics.topic_spec(CONTROL_AUDIT_TOPIC) == CONTROL_AUDIT  # the configured name is the default


def test_existing_topics_and_races_are_fine_other_errors_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topics, "make_admin", lambda s, b: FakeAdmin({CALLS_TOPIC}))
    assert create([CALLS_TOPIC]) == []
    monkeypatch.setattr(topics, "make_admin", lambda s, b: FakeAdmin(set(), TopicAlreadyExistsError()))
    assert create([CALLS_TOPIC]) == [CALLS_TOPIC]
    monkeypatch.setattr(topics, "make_admin", lambda s, b: FakeAdmin(set(), codes={INDEX_TOPIC: 36}))
    assert create([INDEX_TOPIC]) == [INDEX_TOPIC]
    monkeypatch.setattr(topics, "make_admin", lambda s, b: FakeAdmin(set(), codes={QUOTA_TOPIC: 29}))
    with pytest.raises(RuntimeError, match=QUOTA_TOPIC):
        create([QUOTA_TOPIC])


def test_the_client_factory_applies_defaults_security_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    for name in ("AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"):
        monkeypatch.setattr(clients, name, lambda *a, _n=name, **kw: built.append((_n, a, kw)))
    secure = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
                      kafka_username="hub", kafka_password=SecretStr("pw"))
    clients.make_producer(secure, "b:1", linger_ms=5)
    clients.make_consumer(secure, "b:1", "t1", "t2", group_id="g")
    clients.make_admin(secure, "b:1")
    (_, _, producer), (_, topics_, consumer), (_, _, admin) = built
    for kw in (producer, consumer, admin):
        assert kw["bootstrap_servers"] == "b:1" and kw["security_protocol"] == "SASL_PLAINTEXT"
        assert kw["sasl_mechanism"] == "SCRAM-SHA-256" and kw["sasl_plain_password"] == "pw"
    assert producer["acks"] == "all" and producer["linger_ms"] == 5
    assert topics_ == ("t1", "t2") and consumer["group_id"] == "g" and consumer["enable_auto_commit"] is False


def test_describe_partitions_reports_the_error_and_sorted_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    class Admin(FakeAdmin):
        async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
            if names == ["missing"]:
                return [{"error_code": 3, "partitions": []}]
            return [{"error_code": 0, "partitions": [{"partition": 2}, {"partition": 0}, {"partition": 1}]}]

    monkeypatch.setattr(clients, "make_admin", lambda s, b: Admin(set()))
    assert asyncio.run(clients.describe_partitions(Settings(), "b:1", "there")) == (0, [0, 1, 2])
    assert asyncio.run(clients.describe_partitions(Settings(), "b:1", "missing")) == (3, [])
