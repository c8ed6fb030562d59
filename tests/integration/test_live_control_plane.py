"""The control plane changes what two running workers consume, with no restart, on a real broker: a node
registered through ``POST /v1/nodes`` at run time, with its schema registered and its resource catalogued and
granted, has its records delivered by whichever worker owns each partition (each exactly once audited); once
``DELETE /v1/nodes/{id}`` removes it, its ingress topic leaves the group's assignment, a record published there
afterwards is never read, its token gets 401, its grant has ended, and its audit history stays on hub.audit.

The module runs on a broker of its own (like test_crash_recovery and test_calls_workers): two workers need
topics with two partitions, and the session broker's topics may already exist with one; and every hub on a
broker shares the control topics, so the session hub's worker (another consumer group) would deliver and audit
this node's records a second time."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from hub.broker.manager import LocalBroker, free_port
from hub.contract import (
    AUDIT_TOPIC,
    H_EVENT_ID,
    H_GRANT,
    H_PROVIDER,
    H_RESOURCE,
    call_request_topic,
    feed_topic,
    ingress_topic,
)
from hub.demo.data import record_generator
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings

from .hubproc import (
    Group,
    HubProcess,
    TopicReader,
    header,
    stable_with,
    start_hub,
    start_worker,
    topic_partitions,
    until,
)

pytestmark = pytest.mark.integration

PARTITIONS = 2
CONSUMER = "municipal.market"  # a seed node; it also holds the seed grant on LEGAL_PERSON (the sentinel)
SCENARIO = "market-supervision"
LEGAL_PERSON = "municipal.big-data.legal-person"  # unconditional, provided by a seed node
LEGAL_SCHEMA = json.loads((REPO_ROOT / "schemas/market/legal_person.avsc").read_text())
PERMIT = {
    "type": "record", "name": "StreetPermit", "namespace": "cn.gov.sh.test", "doc": "A permit of a new department.",
    "fields": [
        {"name": "permit_id", "type": "string", "doc": "permit number"},
        {"name": "holder", "type": "string", "doc": "holder's name"},
        {"name": "street", "type": "string", "doc": "street"},
        {"name": "issued_on", "type": "string", "doc": "date"},
    ],
}
DELIVERY_TIMEOUT = 60.0
T = TypeVar("T")


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = LocalBroker(Settings(state_dir=tmp_path_factory.mktemp("live-broker")))
    info, _ = broker.start(port=free_port(), controller_port=free_port(), owned=True)
    try:
        yield info.bootstrap
    finally:
        broker.stop()


def api(hub: HubProcess, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{hub.api}{path}", headers={"Authorization": f"Bearer {token or hub.token}"},
                         timeout=30, **kwargs)


def holders(held: dict[str, set[tuple[str, int]]], topic: str) -> dict[int, str]:
    """partition -> member, for the partitions of ``topic`` some member holds."""
    return {p: member for member, tps in held.items() for t, p in tps if t == topic}


class Watch:
    """Everything on the consumer's feed and on hub.audit from now on, audit records decoded."""

    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub
        self.reader = TopicReader(hub.bootstrap)
        self.registry = RegistryClient(hub.api, token=hub.token)
        self.feed: list[ConsumerRecord] = []
        self.audits: list[dict[str, Any]] = []  # decoded, with "_partition"

    async def start(self) -> Watch:
        await self.reader.start([feed_topic(CONSUMER), AUDIT_TOPIC])
        return self

    async def stop(self) -> None:
        await self.reader.stop()
        await self.registry.aclose()

    async def decode(self, record: ConsumerRecord) -> dict[str, Any]:
        schema_id, body = framing.split(record.value)
        return framing.decode_body(body, (await self.registry.schema_by_id(schema_id)).parsed)

    async def collect(self, done: Callable[[], bool], timeout: float, quiet: float = 3.0) -> None:
        """Read until ``done()`` holds, then ``quiet`` seconds more (duplicates and strays show up there)."""
        deadline = time.monotonic() + timeout
        satisfied_at: float | None = None
        consumer = self.reader.consumer
        assert consumer is not None
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    if r.topic == AUDIT_TOPIC:
                        self.audits.append({**await self.decode(r), "_partition": r.partition})
                    else:
                        self.feed.append(r)
            if satisfied_at is None and done():
                satisfied_at = time.monotonic()
            if satisfied_at is not None and time.monotonic() - satisfied_at >= quiet:
                return

    def fed(self, event_id: str) -> list[ConsumerRecord]:
        return [r for r in self.feed if header(r, H_EVENT_ID) == event_id.encode()]

    def audited(self, event_id: str, action: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.audits if a.get("event_id") == event_id and (action is None or a["action"] == action)]


async def publish(bootstrap: str, topic: str, resource: str, values: list[tuple[int, bytes]]) -> list[str]:
    """Publish (partition, value) pairs, each with a fresh event id; the ids in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    ids = []
    try:
        for partition, value in values:
            event_id = str(uuid.uuid4())
            await (await producer.send(topic, value, partition=partition,
                                       headers=[(H_RESOURCE, resource.encode()), (H_EVENT_ID, event_id.encode())]))
            ids.append(event_id)
    finally:
        await producer.stop()
    return ids


async def read_audit_log(bootstrap: str, registry: RegistryClient) -> list[dict[str, Any]]:
    """hub.audit from its beginning to its current end, decoded."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(bootstrap, [AUDIT_TOPIC])
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "could not read hub.audit to its end"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    schema_id, body = framing.split(r.value)
                    out.append(framing.decode_body(body, (await registry.schema_by_id(schema_id)).parsed))
        return out
    finally:
        await consumer.stop()


async def test_a_node_added_and_removed_at_run_time_flows_then_stops(
    own_broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    monkeypatch.setenv("HUB_LOG_LEVEL", "INFO")  # both processes log their subscription changes
    app_id = f"live-{uuid.uuid4().hex[:6]}"
    hub = start_hub(own_broker, tmp_path / "up", free_port(), app_id,
                    extra_env={"HUB_TOPIC_PARTITIONS": str(PARTITIONS)})
    (tmp_path / "w").mkdir()
    worker = start_worker(hub, app_id, tmp_path / "w", PARTITIONS)
    node = f"municipal.newdept-{uuid.uuid4().hex[:8]}"
    ingress, requests = ingress_topic(node), call_request_topic(node)
    resource, subject = f"{node}.street-permit", f"{node}.street-permit-value"
    rng = random.Random()
    permit = framing.parse_schema(PERMIT)
    legal = framing.parse_schema(LEGAL_SCHEMA)

    def permit_value(schema_id: int) -> bytes:
        return framing.encode(schema_id, permit, {"permit_id": f"P{rng.randrange(10**9):09d}", "holder": "张三",
                                                  "street": "淮海中路", "issued_on": "2026-12-07"})

    try:
        async with Group(own_broker, app_id) as group:
            # 1. both workers (hub up's and the standalone one) hold partitions of the group
            await until(group.describe, stable_with(2), 90, "two workers holding assignments")

            # 2. a new department: registered, its schema and resource, a grant for a seed consumer
            registered = api(hub, "POST", "/v1/nodes", json={"id": node, "title": "New department",
                                                             "clearance": "L3"})
            assert registered.status_code == 201, registered.text
            node_token = registered.json()["token"]
            registered_at = time.monotonic()
            async with RegistryClient(hub.api, token=node_token) as as_node:  # a node writes its own subjects
                permit_id = await as_node.register(subject, json.dumps(PERMIT))
            catalogued = api(hub, "POST", "/v1/resources", node_token, json={
                "id": resource, "title": "Street permits", "provider": node, "subject": subject,
                "sharing": "unconditional", "primary_key": ["permit_id"],
                "field_levels": {"permit_id": "L1", "holder": "L2", "street": "L1", "issued_on": "L1"},
            })
            assert catalogued.status_code == 201, catalogued.text
            granted = api(hub, "POST", "/v1/grants", json={"resource": resource, "scenario": SCENARIO,
                                                           "consumer": CONSUMER})
            assert granted.status_code == 201, granted.text
            assert granted.json()["state"] == "active", granted.json()
            grant_id = granted.json()["id"]

            # 3. it publishes at once (as a node would); the group follows: each partition of the node's
            # topics is held, by different workers, and its records reach the consumer, each audited once
            watch = await Watch(hub).start()
            try:
                ids = await publish(own_broker, ingress, resource,
                                    [(i % PARTITIONS, permit_value(permit_id)) for i in range(6)])
                _, held = await until(
                    group.describe,
                    stable_with(2, lambda h: len(holders(h, ingress)) == len(holders(h, requests)) == PARTITIONS),
                    60, f"{ingress} and {requests} assigned in the group")
                subscribed_after = time.monotonic() - registered_at
                assert len(set(holders(held, ingress).values())) == PARTITIONS, held
                await watch.collect(lambda: all(watch.fed(e) and watch.audited(e, "publish") for e in ids),
                                    DELIVERY_TIMEOUT)
                missing = {e: [a["action"] for a in watch.audited(e)] for e in ids if not watch.fed(e)}
                assert not missing, f"not delivered to {CONSUMER} (audit actions per event): {missing}"
                for event_id in ids:
                    [audit] = watch.audited(event_id, "publish")
                    assert watch.audited(event_id) == [audit]  # nothing but its one publish record
                    assert audit["source"].rsplit("/", 2)[0] == ingress  # <topic>/<partition>/<offset>
                    assert [(d["counterparty"], d["decision"]) for d in audit["deliveries"]] == [(CONSUMER, "allow")]
                    for fed in watch.fed(event_id):
                        assert header(fed, H_PROVIDER) == node.encode()
                        assert header(fed, H_RESOURCE) == resource.encode()
                        assert header(fed, H_GRANT) == grant_id.encode()
                # partition p of hub.audit is written by the owner of index p: both workers did their share
                assert {a["_partition"] for e in ids for a in watch.audited(e)} == set(range(PARTITIONS))

                # 4. removed: its topics leave the assignment, and what it publishes afterwards is never read
                removed = api(hub, "DELETE", f"/v1/nodes/{node}")
                assert removed.status_code == 200 and removed.json()["removed"] is True, removed.text
                await until(group.describe, stable_with(2, lambda h: not holders(h, ingress) and not
                                                        holders(h, requests)),
                            60, f"{ingress} and {requests} no longer assigned")
                late = await publish(own_broker, ingress, resource,
                                     [(p, permit_value(permit_id)) for p in range(PARTITIONS)])
                legal_id = await watch.registry.register(f"{LEGAL_PERSON}-value", json.dumps(LEGAL_SCHEMA))
                make_legal = record_generator(LEGAL_SCHEMA)
                sentinels = await publish(own_broker, ingress_topic("municipal.big-data"), LEGAL_PERSON,
                                          [(p, framing.encode(legal_id, legal, make_legal(rng)))
                                           for p in range(PARTITIONS)])
                await watch.collect(lambda: all(watch.fed(s) and watch.audited(s, "publish") for s in sentinels),
                                    DELIVERY_TIMEOUT)
                assert all(watch.fed(s) for s in sentinels), "the seed provider's sentinels never arrived"
                for event_id in late:
                    assert not watch.fed(event_id), "a removed node's record was delivered"
                    assert not watch.audited(event_id), "a removed node's ingress was still read"
                # nor consumed at all: the group's offsets stay before the late records (3 per partition)
                committed = await group.committed(ingress, PARTITIONS)
                assert all(offset <= len(ids) // PARTITIONS for offset in committed.values()), committed
            finally:
                await watch.stop()

        # its token no longer works, its grant has ended, its audit history stays
        refused = api(hub, "GET", "/v1/nodes", node_token)
        assert refused.status_code == 401, refused.text
        grant = api(hub, "GET", f"/v1/grants/{grant_id}").json()
        assert grant["state"] == "revoked" and grant["effective_state"] == "revoked", grant
        assert "node removed" in (grant["reason"] or ""), grant
        retired = api(hub, "GET", f"/v1/resources/{resource}").json()
        assert retired["retired"] is True, retired
        async with RegistryClient(hub.api, token=hub.token) as registry:
            history = await read_audit_log(own_broker, registry)
        publishes = [a["event_id"] for a in history if a["action"] == "publish"
                     and a["source"].startswith(f"{ingress}/")]
        assert sorted(publishes) == sorted(ids)
        print(f"\n{ingress} assigned {subscribed_after:.1f} s after registration; "
              f"test body {time.monotonic() - started:.1f} s")
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            worker_code = worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker_code = worker.wait()
        hub_code = hub.stop()
    assert worker_code == 0, (tmp_path / "w" / "worker.log").read_text()[-3000:]
    assert hub_code == 0, hub.log_file.read_text()[-3000:]
