"""Broker-level isolation on a real Kafka 4.4 broker with SCRAM + ACLs (``hub broker start --secure``,
``hub acl sync``): every refusal below is Kafka's own authorisation error (codes 29 / 30), not the hub's.

The nodes come from the live control plane (``hub.nodes``), kept here in this process as ``User:hub`` the way
``hub up``'s API keeps it: seeded once from the seed file, then changed through ``/v1/nodes``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from hub.acl.plan import AclSpec, node_acls
from hub.acl.sync import admin_client, current_acls, current_users, password_file
from hub.broker.kafka_config import confluent_config, kafka_client_kwargs, with_credentials
from hub.broker.manager import BrokerInfo, LocalBroker, _pid_alive, free_port
from hub.broker.topics import ensure_topics
from hub.contract import H_EVENT_ID, H_RESOURCE, OPERATOR, call_request_topic, feed_topic, ingress_topic, node_topics
from hub.control.service import ControlService
from hub.settings import Settings

pytestmark = pytest.mark.integration

PUDONG, XUHUI, HEALTH, HEALTHCARE = "district.310115", "district.310104", "municipal.health", "municipal.healthcare"
NODES = [PUDONG, XUHUI, HEALTH, HEALTHCARE]


@dataclass
class SecureHub:
    settings: Settings  # the operator's settings: state dir, seed file; no credentials (sync finds the broker's)
    info: BrokerInfo
    env: dict[str, str]  # the same as HUB_* variables, for `hub` subprocesses

    @property
    def bootstrap(self) -> str:
        return self.info.bootstrap

    def admin_settings(self) -> Settings:
        return with_credentials(self.settings, "hub", self.info.admin_password() or "")

    def node_conf(self, node: str) -> dict[str, str]:
        password = password_file(self.settings, node).read_text().strip()
        return confluent_config(with_credentials(self.settings, node, password), self.bootstrap)

    def write_seed(self, nodes: list[str]) -> None:
        seed = {"nodes": [{"id": "hub"}] + [{"id": n} for n in nodes], "resources": [], "subscriptions": []}
        self.settings.seed_config.write_text(yaml.safe_dump(seed))


def hub_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureHub]:
    """A secure broker of its own (state dir, ports), tied to this process and stopped at the end."""
    state = tmp_path_factory.mktemp("hub-secure")
    seed = state / "seed.yaml"
    settings = Settings(state_dir=state, broker_port=free_port(), broker_controller_port=free_port(),
                        seed_config=seed)
    broker = LocalBroker(settings)
    info, started = broker.start(secure=True, owned=True)
    assert started and info.secure
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env |= {"HUB_STATE_DIR": str(state), "HUB_BROKER_PORT": str(settings.broker_port),
            "HUB_BROKER_CONTROLLER_PORT": str(settings.broker_controller_port), "HUB_SEED_CONFIG": str(seed)}
    hub = SecureHub(settings, info, env)
    try:
        yield hub
    finally:
        broker.stop()
        assert not _pid_alive(info.pid), "the secure broker is still running"


@pytest.fixture(scope="module")
async def control_plane(secure: SecureHub) -> AsyncIterator[ControlService]:
    """The control plane on the secure broker, kept in this process as User:hub (what `hub up`'s API does)."""
    from hub.control.schemas import LocalSchemas
    from hub.registry.service import RegistryService

    registry = RegistryService(secure.admin_settings(), bootstrap=secure.bootstrap)
    await registry.start()
    control = ControlService(secure.admin_settings(), LocalSchemas(registry), bootstrap=secure.bootstrap)
    try:
        await control.start()
        yield control
    finally:
        await control.stop()
        await registry.stop()


@pytest.fixture(scope="module")
async def synced(secure: SecureHub, control_plane: ControlService) -> SecureHub:
    """The nodes' topics (created by the hub principal over aiokafka + SCRAM), the empty control plane seeded
    from the seed file (as `hub up` does) and `hub acl sync` run once."""
    from hub.control.seed import apply_seed, load_seed

    names = [t for node in NODES for t in node_topics(node)]
    await ensure_topics(secure.admin_settings(), secure.bootstrap, names)
    no_control_plane = hub_cli("acl", "sync", "--json", env=secure.env)
    assert no_control_plane.returncode == 1 and "control plane" in no_control_plane.stderr
    secure.write_seed(NODES)
    await apply_seed(control_plane, load_seed(secure.settings.seed_config))
    result = hub_cli("acl", "sync", "--json", env=secure.env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(report["users"]["created"]) == sorted(NODES)
    assert len(report["acls"]["created"]) == 7 * len(NODES) and report["acls"]["deleted"] == []
    assert report["admin"] == "User:hub" and report["bootstrap"] == secure.bootstrap
    # the hub puts one record on each node's feed, so the positive controls have something to read
    producer = Producer(confluent_config(secure.admin_settings(), secure.bootstrap))
    for node in NODES:
        producer.produce(feed_topic(node), f"for {node}".encode())
    assert producer.flush(20) == 0
    return secure


# ---------------------------------------------------------------- clients acting as a node
def consume_one(conf: dict[str, str], topic: str, group: str, timeout: float = 20.0) -> KafkaError | bytes:
    """The first record (its value) or the first error a subscribed consumer gets."""
    consumer = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "log_level": 2})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                return msg.error()
            consumer.commit(msg, asynchronous=False)  # committing offsets in its own group works too
            return msg.value()
        raise AssertionError(f"neither a record nor an error from {topic} within {timeout}s")
    finally:
        consumer.close()


def produce_one(conf: dict[str, str], topic: str) -> KafkaError | None:
    producer = Producer({**conf, "enable.idempotence": True, "message.timeout.ms": 15000, "log_level": 2})
    outcome: list[KafkaError | None] = []
    producer.produce(topic, b"probe", on_delivery=lambda error, _msg: outcome.append(error))
    producer.flush(20)
    assert outcome, f"no delivery report for {topic}"
    return outcome[0]


def assert_kafka_denied(result: object, code: int) -> None:
    assert isinstance(result, KafkaError), f"expected Kafka's authorisation error, got {result!r}"
    assert result.code() == code, f"expected error code {code}, got {result!r}"


# ---------------------------------------------------------------- the broker itself
def test_secure_broker_status_and_secrets(secure: SecureHub) -> None:
    status = hub_cli("broker", "status", "--json", env=secure.env)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["bootstrap"] == secure.bootstrap and data["security_protocol"] == "SASL_PLAINTEXT"
    assert data["sasl_mechanism"] == "SCRAM-SHA-256" and data["admin_username"] == "hub"
    for secret in (Path(data["admin_password_file"]), secure.settings.broker_dir / "server.properties"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    again = hub_cli("broker", "start", "--secure", "--json", env=secure.env)
    assert again.returncode == 0 and json.loads(again.stdout)["started"] is False


def test_no_unauthenticated_or_wrong_password_access(secure: SecureHub) -> None:
    for conf in ({"bootstrap.servers": secure.bootstrap},
                 {**confluent_config(with_credentials(secure.settings, "hub", "wrong"), secure.bootstrap)}):
        admin = AdminClient({**conf, "log_level": 0})
        with pytest.raises(Exception, match="Failed to get metadata"):
            admin.list_topics(timeout=4)


# ---------------------------------------------------------------- isolation (the proof)
def test_district_cannot_read_another_districts_feed(synced: SecureHub) -> None:
    result = consume_one(synced.node_conf(PUDONG), feed_topic(XUHUI), f"{PUDONG}.app")
    assert_kafka_denied(result, KafkaError.TOPIC_AUTHORIZATION_FAILED)


def test_district_cannot_write_another_nodes_ingress(synced: SecureHub) -> None:
    assert_kafka_denied(produce_one(synced.node_conf(PUDONG), ingress_topic(HEALTH)),
                        KafkaError.TOPIC_AUTHORIZATION_FAILED)
    # nor the hub's side of its own topics: only the hub writes feed.<node>
    assert_kafka_denied(produce_one(synced.node_conf(PUDONG), feed_topic(PUDONG)),
                        KafkaError.TOPIC_AUTHORIZATION_FAILED)


def test_district_cannot_join_another_nodes_group(synced: SecureHub) -> None:
    result = consume_one(synced.node_conf(PUDONG), feed_topic(PUDONG), f"{XUHUI}.x")
    assert_kafka_denied(result, KafkaError.GROUP_AUTHORIZATION_FAILED)


def test_municipal_health_reads_no_feed_but_its_own(synced: SecureHub) -> None:
    conf = synced.node_conf(HEALTH)
    for node in (PUDONG, XUHUI, HEALTHCARE):
        assert_kafka_denied(consume_one(conf, feed_topic(node), f"{HEALTH}.app"), KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert consume_one(conf, feed_topic(HEALTH), f"{HEALTH}.app") == f"for {HEALTH}".encode()


def test_group_prefix_has_a_trailing_dot(synced: SecureHub) -> None:
    """``municipal.health.`` does not cover ``municipal.healthcare.app`` (nor a bare ``municipal.health``)."""
    conf = synced.node_conf(HEALTH)
    for group in (f"{HEALTHCARE}.app", HEALTH):
        assert_kafka_denied(consume_one(conf, feed_topic(HEALTH), group), KafkaError.GROUP_AUTHORIZATION_FAILED)


def test_positive_controls(synced: SecureHub) -> None:
    conf = synced.node_conf(PUDONG)
    assert consume_one(conf, feed_topic(PUDONG), f"{PUDONG}.app") == f"for {PUDONG}".encode()
    assert produce_one(conf, ingress_topic(PUDONG)) is None
    assert produce_one(conf, call_request_topic(PUDONG)) is None


async def test_aiokafka_clients_get_the_same_errors(synced: SecureHub) -> None:
    """The hub's own client library, configured through kafka_client_kwargs (HUB_KAFKA_* settings)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

    password = password_file(synced.settings, PUDONG).read_text().strip()
    kwargs = kafka_client_kwargs(with_credentials(synced.settings, PUDONG, password))
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT" and kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    producer = AIOKafkaProducer(bootstrap_servers=synced.bootstrap, request_timeout_ms=10000, **kwargs)
    await producer.start()
    try:
        await producer.send_and_wait(ingress_topic(PUDONG), b"ok")
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(ingress_topic(HEALTH), b"denied")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(feed_topic(PUDONG), bootstrap_servers=synced.bootstrap, group_id=f"{XUHUI}.y",
                                auto_offset_reset="earliest", **kwargs)
    with pytest.raises(GroupAuthorizationFailedError):
        await consumer.start()
        await consumer.getone()
    await consumer.stop()


# ---------------------------------------------------------------- sync keeps the broker in step
async def test_sync_removes_removed_nodes_and_shrunk_rights(synced: SecureHub, control_plane: ControlService) -> None:
    """`hub acl sync` follows the control plane: Xuhui removed through it (DELETE /v1/nodes) loses its user and
    ACLs; the seed file, which only seeds an empty control plane, no longer counts (region.ah gets nothing)."""
    admin, _ = admin_client(synced.admin_settings())
    extra_grant = AclBinding(ResourceType.TOPIC, f"feed.{XUHUI}", ResourcePatternType.LITERAL, f"User:{PUDONG}",
                             "*", AclOperation.READ, AclPermissionType.ALLOW)
    foreign = AclBinding(ResourceType.TOPIC, "ops.metrics", ResourcePatternType.LITERAL, "User:ops-tool", "*",
                         AclOperation.READ, AclPermissionType.ALLOW)
    for fut in admin.create_acls([extra_grant, foreign]).values():
        fut.result(15)
    xuhui_conf = synced.node_conf(XUHUI)

    synced.write_seed(NODES + ["region.ah"])  # ignored: the control plane is seeded already
    await control_plane.remove_node(XUHUI, OPERATOR)  # Xuhui leaves the exchange
    result = hub_cli("acl", "sync", "--json", env=synced.env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["nodes"] == sorted([PUDONG, HEALTH, HEALTHCARE])
    deleted = {AclSpec(**a) for a in report["acls"]["deleted"]}
    assert deleted == node_acls(XUHUI) | {AclSpec(f"User:{PUDONG}", "TOPIC", f"feed.{XUHUI}", "LITERAL", "READ")}
    assert report["users"]["deleted"] == [XUHUI] and report["acls"]["created"] == []

    acls = current_acls(admin)
    assert not [a for a in acls if a.principal == f"User:{XUHUI}"]
    assert {a for a in acls if a.principal == f"User:{PUDONG}"} == node_acls(PUDONG)
    assert AclSpec("User:ops-tool", "TOPIC", "ops.metrics", "LITERAL", "READ") in acls  # not the hub's to remove
    assert XUHUI not in current_users(admin) and not password_file(synced.settings, XUHUI).exists()
    # Xuhui's old credentials no longer authenticate
    with pytest.raises(Exception, match="Failed to get metadata"):
        AdminClient({**xuhui_conf, "log_level": 0}).list_topics(timeout=4)

    again = hub_cli("acl", "sync", "--json", env=synced.env)
    assert again.returncode == 0, again.stderr
    quiet = json.loads(again.stdout)
    assert quiet["acls"] == {"created": [], "deleted": [], "kept": 21}
    assert quiet["users"]["created"] == quiet["users"]["updated"] == quiet["users"]["deleted"] == []


# ---------------------------------------------------------------- nodes registered while the hub runs
NEWCOMER = "region.fj"


async def _wait_for(predicate, what: str, timeout: float = 60.0) -> None:  # noqa: ANN001
    import asyncio

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def test_a_node_registered_through_the_api_gets_its_acls_and_loses_them_when_removed(
    synced: SecureHub, control_plane: ControlService
) -> None:
    """The API (in this process, on the control plane above) with the AclFollower wired as hub.runtime will wire
    it: POST /v1/nodes gives the new node its topics, user and ACLs with no manual step (it writes its ingress, not
    another node's); DELETE /v1/nodes/{id} takes them away (its credentials stop authenticating)."""
    import httpx
    from prometheus_client import CollectorRegistry

    from hub.acl.follow import AclFollower, chain_listeners
    from hub.api.app import create_api
    from hub.registry.service import RegistryService

    operator_token = "it-operator-token"
    admin = synced.admin_settings()
    follower = AclFollower(admin, synced.bootstrap, retry_delay=0.5)
    await follower.start(control_plane)
    control_plane.change_listener = chain_listeners(None, follower.on_change)
    app = create_api(RegistryService(admin, bootstrap=synced.bootstrap), CollectorRegistry(), control=control_plane,
                     operator_token=operator_token)
    kafka_admin, _ = admin_client(admin)

    def acls_of(node: str) -> set[AclSpec]:
        return {a for a in current_acls(kafka_admin) if a.principal == f"User:{node}"}

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub",
                                     headers={"Authorization": f"Bearer {operator_token}"}) as api:
            registered = await api.post("/v1/nodes", json={"id": NEWCOMER, "title": "Fujian data exchange"})
            assert registered.status_code == 201, registered.text
            # the follower notes the change when the control plane applies it, which may be after the 201: wait
            # for the outcome itself (wait_idle alone can return before the change was even noted)
            await _wait_for(lambda: acls_of(NEWCOMER) == node_acls(NEWCOMER) and
                            NEWCOMER in current_users(kafka_admin), f"the user and ACLs of {NEWCOMER}", 90)
            await follower.wait_idle(90)
            assert follower.enabled and follower.last_error is None
            conf = synced.node_conf(NEWCOMER)  # its password, generated into <state_dir>/kafka-users
            assert produce_one(conf, ingress_topic(NEWCOMER)) is None  # its topics exist and it may write them
            assert_kafka_denied(produce_one(conf, ingress_topic(PUDONG)), KafkaError.TOPIC_AUTHORIZATION_FAILED)
            # nobody else's rights changed
            assert acls_of(PUDONG) == node_acls(PUDONG) and acls_of(HEALTH) == node_acls(HEALTH)

            removed = await api.delete(f"/v1/nodes/{NEWCOMER}")
            assert removed.status_code == 200, removed.text
            await _wait_for(lambda: acls_of(NEWCOMER) == set() and NEWCOMER not in current_users(kafka_admin) and
                            not password_file(synced.settings, NEWCOMER).exists(),
                            f"{NEWCOMER}'s user, ACLs and password removed", 90)
            await follower.wait_idle(90)
            with pytest.raises(Exception, match="Failed to get metadata"):
                AdminClient({**conf, "log_level": 0}).list_topics(timeout=4)
            assert acls_of(PUDONG) == node_acls(PUDONG)
    finally:
        control_plane.change_listener = None
        await follower.stop()


def test_hub_up_gives_a_node_registered_at_run_time_its_acls(synced: SecureHub, tmp_path: Path) -> None:
    """The same through `hub up` on the secure broker as User:hub: POST /v1/nodes on its HTTP API, no manual
    `hub acl sync`; the node's password lands in hub up's state dir."""
    import uuid

    from hub.settings import REPO_ROOT

    from .hubproc import start_hub

    env = hub_cli("acl", "env", env=synced.env)
    assert env.returncode == 0, env.stderr
    admin_env = dict(line.removeprefix("export ").split("=", 1) for line in env.stdout.splitlines())
    admin_env["HUB_KAFKA_PASSWORD"] = synced.info.admin_password() or ""
    admin_env.pop("HUB_BOOTSTRAP")
    state = tmp_path / "hub-up"
    hub = start_hub(synced.bootstrap, state, free_port(), f"hub-acl-{uuid.uuid4().hex[:6]}",
                    extra_env={**admin_env, "HUB_SEED_CONFIG": str(REPO_ROOT / "config" / "seed.yaml")})
    node = "region.gd"
    admin, _ = admin_client(synced.admin_settings())

    def wait_acls(expected: set[AclSpec]) -> None:
        deadline = time.monotonic() + 90
        while {a for a in current_acls(admin) if a.principal == f"User:{node}"} != expected:
            assert time.monotonic() < deadline, f"the ACLs of {node} never became {expected}:\n" + \
                hub.log_file.read_text()[-3000:]
            time.sleep(0.5)

    try:
        import httpx

        auth = {"Authorization": f"Bearer {hub.token}"}
        registered = httpx.post(f"{hub.api}/v1/nodes", json={"id": node}, headers=auth, timeout=30)
        assert registered.status_code == 201, registered.text
        wait_acls(node_acls(node))
        password = (state / "kafka-users" / f"{node}.password").read_text().strip()
        conf = confluent_config(with_credentials(synced.settings, node, password), synced.bootstrap)
        assert produce_one(conf, ingress_topic(node)) is None
        assert_kafka_denied(produce_one(conf, ingress_topic(PUDONG)), KafkaError.TOPIC_AUTHORIZATION_FAILED)
        assert httpx.delete(f"{hub.api}/v1/nodes/{node}", headers=auth, timeout=30).status_code == 200
        wait_acls(set())
        assert node not in current_users(admin)
    finally:
        assert hub.stop() == 0, hub.log_file.read_text()[-3000:]


# ---------------------------------------------------------------- the hub itself, as User:hub
# (last: `hub up` seeds the repository's seed nodes into the same control plane)
async def test_exchange_runs_through_the_secure_broker(synced: SecureHub, tmp_path: Path) -> None:
    """`hub up` with the privileged principal's HUB_KAFKA_* (what `hub acl env` prints); municipal.health
    publishes with its own credentials, district.310115 reads its feed with its own; both only via their ACLs."""
    import random
    import uuid

    from hub.demo.data import record_generator
    from hub.registry import framing
    from hub.registry.client import RegistryClient
    from hub.settings import REPO_ROOT

    from .hubproc import start_hub

    env = hub_cli("acl", "env", env=synced.env)
    assert env.returncode == 0, env.stderr
    admin_env = dict(line.removeprefix("export ").split("=", 1) for line in env.stdout.splitlines())
    assert admin_env["HUB_KAFKA_USERNAME"] == "hub" and admin_env["HUB_BOOTSTRAP"] == synced.bootstrap
    admin_env["HUB_KAFKA_PASSWORD"] = synced.info.admin_password() or ""  # (shell-quoted in the output)
    admin_env.pop("HUB_BOOTSTRAP")
    hub = start_hub(synced.bootstrap, tmp_path / "hub-up", free_port(), f"hub-sec-{uuid.uuid4().hex[:6]}",
                    extra_env={**admin_env, "HUB_SEED_CONFIG": str(REPO_ROOT / "config" / "seed.yaml")})
    try:
        schema = json.loads((REPO_ROOT / "schemas/health/vaccination_record.avsc").read_text())
        client = RegistryClient(hub.api)
        try:
            sid = await client.register("municipal.health.vaccination-value", json.dumps(schema))
        finally:
            await client.aclose()
        record = record_generator(schema)(random.Random(5))
        record["district"] = "310115"
        event_id = str(uuid.uuid4())
        producer = Producer({**synced.node_conf(HEALTH), "log_level": 2})
        producer.produce(ingress_topic(HEALTH), framing.encode(sid, framing.parse_schema(schema), record),
                         headers=[(H_RESOURCE, b"municipal.health.vaccination"),
                                  (H_EVENT_ID, event_id.encode())])
        assert producer.flush(20) == 0
        consumer = Consumer({**synced.node_conf(PUDONG), "group.id": f"{PUDONG}.e2e-{event_id[:8]}",
                             "auto.offset.reset": "earliest", "log_level": 2})
        consumer.subscribe([feed_topic(PUDONG)])
        try:
            deadline, found = time.monotonic() + 60, None
            while found is None and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                assert not msg.error(), msg.error()
                if dict(msg.headers() or []).get(H_EVENT_ID) == event_id.encode():
                    found = msg
        finally:
            consumer.close()
        assert found is not None, f"the record never reached feed.{PUDONG}:\n{hub.log_file.read_text()[-3000:]}"
    finally:
        assert hub.stop() == 0, hub.log_file.read_text()[-3000:]
