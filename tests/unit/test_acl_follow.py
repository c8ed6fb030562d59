"""The ACL follower (hub.acl.follow), without a broker: which control changes it acts on, that it syncs only the
changed nodes in the background, that the HTTP request never waits for it or fails with it, that failures are
logged and retried, and that it stays off without the privileged principal's credentials."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from hub.acl.follow import AclFollower, chain_listeners, node_changes
from hub.acl.sync import SyncReport
from hub.api.app import create_api
from hub.contract import GRANTS_TOPIC, NODES_TOPIC, node_topics
from hub.control.state import ControlState, NodeEntry
from hub.registry.service import RegistryService
from hub.settings import Settings

from .test_grants_api import MemoryControl

NOW = 1_700_000_000_000
PUDONG, HEALTH = "district.310115", "municipal.health"
OPERATOR_TOKEN = "operator-secret-token"


def node(node_id: str, *, removed: bool = False, token_id: str | None = "aaaaaaaaaaaa") -> NodeEntry:
    return NodeEntry(id=node_id, created_at=NOW, updated_at=NOW, removed=removed,
                     token_id=None if removed else token_id)


def secure_settings(tmp_path: Path) -> Settings:
    """The privileged principal's HUB_KAFKA_* (what `hub acl env` prints): the follower is on."""
    return Settings(state_dir=tmp_path, bootstrap="127.0.0.1:1", kafka_security_protocol="SASL_PLAINTEXT",
                    kafka_sasl_mechanism="SCRAM-SHA-256", kafka_username="hub", kafka_password="secret")


class FakeBroker:
    """Records the follower's calls; ``fail`` makes the next syncs raise; ``gate`` holds a sync in its thread."""

    def __init__(self) -> None:
        self.syncs: list[tuple[list[str], list[str] | None]] = []
        self.topics: list[str] = []
        self.fail = 0
        self.gate: threading.Event | None = None

    def sync(self, settings: Settings, node_ids: list[str], *, scope: Any = None, timeout: float = 0,
             keep_existing_users: bool = False) -> SyncReport:
        assert keep_existing_users  # never re-store the password of a user that exists
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("the broker is away")
        self.syncs.append((list(node_ids), None if scope is None else list(scope)))
        return SyncReport(bootstrap=settings.bootstrap or "", admin="User:hub", nodes=list(node_ids))

    async def create_topics(self, settings: Settings, bootstrap: str, names: list[str]) -> list[str]:
        assert settings.kafka_username == "hub"
        self.topics += names
        return names


def follower(settings: Settings, broker: FakeBroker) -> AclFollower:
    return AclFollower(settings, "127.0.0.1:1", retry_delay=0.01, syncer=broker.sync,
                       topic_creator=broker.create_topics)


# ---------------------------------------------------------------- which changes matter


def test_only_registrations_and_removals_of_nodes_change_broker_rights() -> None:
    live, gone = node(PUDONG), node(PUDONG, removed=True)
    rotated = live.model_copy(update={"token_id": "bbbbbbbbbbbb"})
    assert node_changes([(NODES_TOPIC, None, live)]) == {PUDONG: True}  # registered
    assert node_changes([(NODES_TOPIC, live, gone)]) == {PUDONG: False}  # removed
    assert node_changes([(NODES_TOPIC, gone, live)]) == {PUDONG: True}  # registered again
    assert node_changes([(NODES_TOPIC, live, rotated)]) == {}  # a new API token gives no Kafka right
    assert node_changes([(NODES_TOPIC, live, live.model_copy(update={"clearance": "L4"}))]) == {}
    assert node_changes([(NODES_TOPIC, None, node("hub"))]) == {}  # the operator is a super user
    assert node_changes([(GRANTS_TOPIC, None, object())]) == {}
    assert node_changes([(NODES_TOPIC, None, live), (NODES_TOPIC, live, gone)]) == {PUDONG: False}  # the last wins


async def test_chained_listeners_each_run_even_when_one_fails() -> None:
    seen: list[str] = []

    async def broken(changes: Any) -> None:
        raise RuntimeError("audit down")

    async def second(changes: Any) -> None:
        seen.append("second")

    await chain_listeners(broken, None, second)([(NODES_TOPIC, None, node(PUDONG))])
    assert seen == ["second"]


# ---------------------------------------------------------------- the follower


async def test_a_registration_gets_its_topics_user_and_acls_and_a_removal_loses_them(tmp_path: Path) -> None:
    broker = FakeBroker()
    acl = follower(secure_settings(tmp_path), broker)
    await acl.start()
    try:
        assert acl.enabled
        await acl.on_change([(NODES_TOPIC, None, node(PUDONG))])
        await acl.wait_idle(5)
        assert broker.syncs == [([PUDONG], [PUDONG])]  # only that node: nobody else's rights are touched
        assert broker.topics == node_topics(PUDONG)
        await acl.on_change([(NODES_TOPIC, node(PUDONG), node(PUDONG, removed=True))])
        await acl.wait_idle(5)
        assert broker.syncs[-1] == ([], [PUDONG])  # in scope, not live: its user and ACLs go
        assert broker.topics == node_topics(PUDONG)  # no topics made for a removed node (nor deleted)
        assert acl.synced == 2 and acl.last_error is None
    finally:
        await acl.stop()


async def test_changes_noted_while_a_sync_runs_are_synced_next_together(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.gate = threading.Event()
    acl = follower(secure_settings(tmp_path), broker)
    await acl.start()
    try:
        await acl.on_change([(NODES_TOPIC, None, node(PUDONG))])  # returns at once: the sync is held
        await asyncio.sleep(0.05)
        await acl.on_change([(NODES_TOPIC, None, node(HEALTH)), (NODES_TOPIC, None, node("national"))])
        assert broker.syncs == []
        broker.gate.set()
        await acl.wait_idle(5)
        assert broker.syncs == [([PUDONG], [PUDONG]), ([HEALTH, "national"], [HEALTH, "national"])]
    finally:
        await acl.stop()


async def test_a_failed_sync_is_logged_and_retried_until_it_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = FakeBroker()
    broker.fail = 2
    acl = follower(secure_settings(tmp_path), broker)
    await acl.start()
    try:
        with caplog.at_level(logging.INFO, logger="hub.acl"):
            await acl.on_change([(NODES_TOPIC, None, node(PUDONG))])
            await acl.wait_idle(5)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2
        assert f"could not sync the Kafka users and ACLs of {PUDONG} (attempt 1)" in errors[0].getMessage()
        assert "the broker is away" in errors[0].getMessage() and "retrying" in errors[0].getMessage()
        assert broker.syncs == [([PUDONG], [PUDONG])]
        assert acl.failures == 0 and acl.last_error is None
        assert "synced again after 2 failed attempt(s)" in caplog.text
    finally:
        await acl.stop()


async def test_a_newer_change_supersedes_a_retry(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.fail = 1
    broker.gate = threading.Event()
    acl = follower(secure_settings(tmp_path), broker)
    await acl.start()
    try:
        await acl.on_change([(NODES_TOPIC, None, node(PUDONG))])
        await asyncio.sleep(0.05)  # the failing attempt is held in its thread
        await acl.on_change([(NODES_TOPIC, node(PUDONG), node(PUDONG, removed=True))])
        broker.gate.set()
        await acl.wait_idle(5)
        assert broker.syncs == [([], [PUDONG])]  # the removal, not the retried registration
    finally:
        await acl.stop()


async def test_start_catches_up_with_a_full_sync_of_the_live_nodes(tmp_path: Path) -> None:
    class Control:
        state = ControlState()

    for entry in (node("hub"), node(PUDONG), node(HEALTH, removed=True)):
        Control.state.apply_node(entry.id, entry)
    broker = FakeBroker()
    acl = follower(secure_settings(tmp_path), broker)
    await acl.start(Control())
    try:
        await acl.wait_idle(5)
        assert broker.syncs == [([PUDONG], None)]  # every node principal: removed ones lose their rights
    finally:
        await acl.stop()

    class Empty:
        state = ControlState()

    empty = FakeBroker()
    acl = follower(secure_settings(tmp_path), empty)
    await acl.start(Empty())  # never seeded: no full sync (it would delete every node's user)
    try:
        await acl.wait_idle(5)
        assert empty.syncs == []
    finally:
        await acl.stop()


async def test_without_the_privileged_credentials_it_follows_nothing(tmp_path: Path) -> None:
    broker = FakeBroker()
    acl = AclFollower(Settings(state_dir=tmp_path), "127.0.0.1:1", syncer=broker.sync,
                      topic_creator=broker.create_topics)
    await acl.start()
    assert not acl.enabled and "no credentials" in acl.reason
    await acl.on_change([(NODES_TOPIC, None, node(PUDONG))])
    await acl.wait_idle(1)
    await acl.stop()
    assert broker.syncs == [] and broker.topics == []


async def test_a_broker_without_authorizer_turns_it_off(tmp_path: Path) -> None:
    from hub.acl.sync import AclSyncError

    def no_acls(*args: Any, **kwargs: Any) -> SyncReport:
        raise AclSyncError("the broker has no authorizer (ACLs are disabled): run a secure broker")

    broker = FakeBroker()
    acl = AclFollower(secure_settings(tmp_path), "127.0.0.1:1", retry_delay=0.01, syncer=no_acls,
                      topic_creator=broker.create_topics)
    await acl.start()
    try:
        await acl.on_change([(NODES_TOPIC, None, node(PUDONG))])
        await acl.wait_idle(5)
        assert not acl.enabled and "no authorizer" in acl.reason
    finally:
        await acl.stop()


# ---------------------------------------------------------------- through the API


class FakeSchemas:
    def parsed(self, schema_id: int) -> None:
        return None

    async def load(self, schema_ids: object) -> None:
        return None

    async def register(self, subject: str, schema: str) -> int:
        return 1

    async def describe(self, subject: str) -> None:
        return None




@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, AclFollower, FakeBroker]]:
    settings = secure_settings(tmp_path)
    control = MemoryControl(settings, FakeSchemas())
    broker = FakeBroker()
    broker.fail = 10**6  # the broker never answers
    acl = follower(settings, broker)
    audited: list[Any] = []

    async def audit(changes: Any) -> None:
        audited.extend(changes)

    app = create_api(RegistryService(settings), CollectorRegistry(), control=control, operator_token=OPERATOR_TOKEN)

    async def wire() -> None:  # what hub.runtime.ApiService.on_start adds (see hub.acl.follow)
        await acl.start(control)
        control.change_listener = chain_listeners(audit, acl.on_change)

    with TestClient(app, raise_server_exceptions=False) as client:
        client.portal.call(wire)  # type: ignore[union-attr]
        client.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
        yield client, acl, broker
        client.portal.call(acl.stop)  # type: ignore[union-attr]
    assert audited, "the audit listener ran as well"


def test_registering_and_removing_never_wait_for_or_fail_with_the_broker(
    api: tuple[TestClient, AclFollower, FakeBroker],
) -> None:
    client, acl, broker = api
    registered = client.post("/v1/nodes", json={"id": PUDONG})
    assert registered.status_code == 201, registered.text
    assert client.delete(f"/v1/nodes/{PUDONG}").status_code == 200
    assert client.post("/v1/nodes", json={"id": HEALTH}).status_code == 201

    async def failing() -> tuple[int, str | None]:
        for _ in range(200):
            if acl.failures >= 2:
                break
            await asyncio.sleep(0.01)
        return acl.failures, acl.last_error

    failures, error = client.portal.call(failing)  # type: ignore[union-attr]
    assert failures >= 2 and error == "RuntimeError: the broker is away"
    assert broker.syncs == [] and acl.enabled  # still retrying
