"""A three-node KRaft cluster (``hub broker start --nodes 3``): the hub's topics get 3 replicas and
``min.insync.replicas=2``; under steady load one broker is SIGKILLed, then (after it is back) the controller
leader. Nothing is lost, no event is audited or counted twice, and the API keeps answering throughout."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from hub.broker.cluster import LocalCluster
from hub.broker.manager import free_port
from hub.contract import AUDIT_TOPIC, H_EVENT_ID
from hub.registry import framing
from hub.settings import Settings

from .hubproc import HubProcess, start_hub
from .test_crash_recovery import (
    AUDIT_PARSED,
    publish_continuously,
    read_all,
    reconcile_and_compare_stats,
    reconciled,
    vaccination_events,
    wait_for,
)

pytestmark = pytest.mark.integration

LATERAL = "feed.municipal.civil-affairs"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    settings = Settings(state_dir=tmp_path_factory.mktemp("cluster"), broker_heap="512m")
    local = LocalCluster(settings)
    local.start(3, ports={i: (free_port(), free_port()) for i in (1, 2, 3)}, owned=True)
    try:
        yield local
    finally:
        local.stop()


async def replication_of(bootstrap: str, topic: str) -> tuple[int, str]:
    """(replicas of partition 0, the topic's min.insync.replicas)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        replicas = len(described[0]["partitions"][0]["replicas"])
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {c[0]: c[1] for c in configs[0].resources[0][4]}
        return replicas, entries["min.insync.replicas"]
    finally:
        await admin.close()


async def test_losing_a_broker_and_then_the_controller_leader_loses_nothing(
        cluster: LocalCluster, tmp_path: Path) -> None:
    info = cluster.status()
    assert info is not None and len(info.nodes) == 3
    bootstrap = info.bootstrap
    hub: HubProcess = start_hub(bootstrap, tmp_path / "up", free_port(), f"cluster-{uuid.uuid4().hex[:6]}",
                                extra_env={"HUB_TOPIC_PARTITIONS": "3"})
    try:
        for topic in (AUDIT_TOPIC, LATERAL, "ingress.municipal.health"):
            assert await replication_of(bootstrap, topic) == (3, "2"), topic
        schema_id, events = await vaccination_events(hub, 3000, seed=3)
        ids = {eid for eid, _ in events}
        first, second = events[:1500], events[1500:]

        async def delivered() -> set[str]:
            feed = await read_all(bootstrap, [LATERAL])
            return {dict(m.headers).get(H_EVENT_ID, b"").decode() for m in feed} & ids

        async def api_answers() -> bool:
            response = httpx.get(f"{hub.api}/v1/stats", headers={"Authorization": f"Bearer {hub.token}"}, timeout=10)
            return response.status_code == 200

        # 1. a broker that is not the controller leader dies under load, and comes back
        leader = cluster.quorum_leader()
        victim = next(n for n in (1, 2, 3) if n != leader)
        load = asyncio.ensure_future(publish_continuously(bootstrap, schema_id, first, rate=200))
        assert await wait_for(lambda: _at_least(delivered, 400), 120), "the load never got going"
        cluster.kill(victim)
        assert await wait_for(api_answers, 30), "the API stopped answering when a broker died"
        await load
        assert await wait_for(lambda: _covers(delivered, {e for e, _ in first}), 180), \
            "not every event of the first half was delivered with a broker down"
        cluster.restart(victim)

        # 2. the controller leader (a broker too) dies under load
        leader = cluster.quorum_leader()
        assert leader is not None
        load = asyncio.ensure_future(publish_continuously(bootstrap, schema_id, second, rate=200))
        assert await wait_for(lambda: _at_least(delivered, 1900), 120), "the second load never got going"
        cluster.kill(leader)
        assert await wait_for(api_answers, 30), "the API stopped answering when the controller leader died"
        await load
        assert await wait_for(lambda: _covers(delivered, ids), 180), "not every event was delivered"
        new_leader = cluster.quorum_leader()
        assert new_leader not in (None, leader)
        assert await wait_for(lambda: reconciled(hub, bootstrap, tmp_path), 120), \
            "the count snapshots never covered the whole audit log"
        await reconcile_and_compare_stats(hub, bootstrap, tmp_path, len(events))
        audits = await read_all(bootstrap, [AUDIT_TOPIC])
        per_event = Counter(framing.decode_body(framing.split(m.value)[1], AUDIT_PARSED)["audit_id"]
                            for m in audits)
        ours = {k: n for k, n in per_event.items() if k.split("/", 1)[0] in ids}
        assert len(ours) == len(events) and max(ours.values()) == 1
        cluster.restart(leader)
    finally:
        code = hub.stop()
    assert code == 0, hub.log_file.read_text()[-3000:]


async def _at_least(delivered, n: int) -> bool:  # noqa: ANN001 - a local probe
    return len(await delivered()) >= n


async def _covers(delivered, wanted: set[str]) -> bool:  # noqa: ANN001 - a local probe
    return wanted <= await delivered()
