"""Two workers under continuous load; one is SIGKILLed and restarted. Nothing is lost, nothing double-counted:
every event reaches each entitled feed at least once, and the audit log and counters hold exactly one entry
per event."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hub.broker.manager import LocalBroker, free_port
from hub.contract import AUDIT_TOPIC, COUNTS_TOPIC, H_EVENT_ID, H_RESOURCE, feed_topic
from hub.demo.data import record_generator
from hub.identifiers import DISTRICT_CODES
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings
from hub.stats.counts import CountTable, decode_snapshot

from .hubproc import Group, HubProcess, stable_with, start_hub, start_worker, topic_partitions, until

pytestmark = pytest.mark.integration

PARTITIONS = 4
RESOURCE = "municipal.health.vaccination"
SCHEMA = json.loads((REPO_ROOT / "schemas/health/vaccination_record.avsc").read_text())
PARSED = framing.parse_schema(SCHEMA)


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of this module's own: its topics are created with several partitions."""
    broker = LocalBroker(Settings(state_dir=tmp_path_factory.mktemp("crash-broker")))
    info, _ = broker.start(port=free_port(), controller_port=free_port(), owned=True)
    try:
        yield info.bootstrap
    finally:
        broker.stop()


async def read_all(bootstrap: str, topics: list[str], timeout: float = 60) -> list:
    """Every record on the topics' partitions, from the beginning to the end offsets taken at the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(bootstrap, topics)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            for msgs in (await consumer.getmany(timeout_ms=500, max_records=20_000)).values():
                out.extend(msgs)
        else:
            raise TimeoutError(f"could not read {topics} to their end offsets")
        return out
    finally:
        await consumer.stop()


async def publish_continuously(bootstrap: str, schema_id: int, events: list[tuple[str, dict]], rate: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = []
        for i, (event_id, record) in enumerate(events):
            futures.append(await producer.send(
                "ingress.municipal.health", framing.encode(schema_id, PARSED, record), key=record["record_id"].encode(),
                headers=[(H_RESOURCE, RESOURCE.encode()), (H_EVENT_ID, event_id.encode())]))
            if i % 100 == 99:
                await asyncio.sleep(100 / rate)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def vaccination_events(hub: HubProcess, n: int, *, seed: int) -> tuple[int, list[tuple[str, dict]]]:
    """The vaccination schema registered, and ``n`` (event id, record) pairs to publish."""
    async with RegistryClient(hub.api, token=hub.token) as registry:
        schema_id = await registry.register(f"{RESOURCE}-value", json.dumps(SCHEMA))
    make = record_generator(SCHEMA)
    rng = random.Random(seed)
    return schema_id, [(str(uuid.uuid4()), make(rng)) for _ in range(n)]


def audit_cli(hub: HubProcess, bootstrap: str, tmp_path: Path, verb: str) -> subprocess.CompletedProcess[str]:
    """``hub audit <verb> --json`` against the test's broker and the hub's registry."""
    return subprocess.run(
        [sys.executable, "-m", "hub.cli.main", "audit", verb, "--bootstrap", bootstrap, "--registry", hub.api,
         "--json"],
        env=dict(os.environ, HUB_STATE_DIR=str(tmp_path / "verify")), capture_output=True, text=True, timeout=120,
    )


async def reconciled(hub: HubProcess, bootstrap: str, tmp_path: Path) -> bool:
    """``hub audit reconcile`` equal, with the last count snapshot of every partition covering its whole log."""
    result = await asyncio.to_thread(audit_cli, hub, bootstrap, tmp_path, "reconcile")
    report = json.loads(result.stdout or "{}")
    return result.returncode == 0 and all(p["uncovered"] == 0 for p in report.get("partitions", []))


async def wait_for(predicate, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(1)
    return False


async def test_sigkill_and_restart_loses_nothing_and_counts_once(own_broker: str, tmp_path: Path) -> None:
    app_id = f"crash-{uuid.uuid4().hex[:6]}"
    hub: HubProcess = start_hub(own_broker, tmp_path / "up", free_port(), app_id,
                                extra_env={"HUB_TOPIC_PARTITIONS": str(PARTITIONS)})
    (tmp_path / "w").mkdir()
    worker = start_worker(hub, app_id, tmp_path / "w", PARTITIONS)
    try:
        schema_id, events = await vaccination_events(hub, 6000, seed=99)
        async with Group(own_broker, app_id) as group:
            await until(group.describe, stable_with(2), 90, "both workers holding partitions")
        load = asyncio.ensure_future(publish_continuously(own_broker, schema_id, events, rate=600))
        ids = {eid for eid, _ in events}

        async def under_load() -> bool:  # a good share delivered, most still to come
            feed = await read_all(own_broker, ["feed.municipal.civil-affairs"])
            return len({dict(m.headers).get(H_EVENT_ID, b"").decode() for m in feed} & ids) >= 1500

        assert await wait_for(under_load, 120), "the load never got going"
        worker.send_signal(signal.SIGKILL)  # mid-load, mid-batch: no chance to commit or snapshot
        worker.wait()
        worker = start_worker(hub, app_id, tmp_path / "w", PARTITIONS)
        await load

        async def all_delivered() -> bool:
            feed = await read_all(own_broker, ["feed.municipal.civil-affairs"])
            got = {dict(m.headers).get(H_EVENT_ID, b"").decode() for m in feed}
            return ids <= got

        assert await wait_for(all_delivered, 180), "not every event reached the lateral subscriber"
        assert await wait_for(lambda: reconciled(hub, own_broker, tmp_path), 60), \
            "the count snapshots never covered the whole audit log"  # the last audit batch and snapshot landed
        # the hash chain survived the takeovers: every partition continues from the last record written
        verify = audit_cli(hub, own_broker, tmp_path, "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        await reconcile_and_compare_stats(hub, own_broker, tmp_path, len(events))
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        hub.stop()

    feeds = await read_all(own_broker, ["feed.municipal.civil-affairs"] +
                           [f"feed.district.{r['district']}" for _, r in events])
    delivered = Counter((m.topic, dict(m.headers)[H_EVENT_ID].decode()) for m in feeds)
    for event_id, record in events:  # at least once in each entitled feed
        assert delivered[("feed.municipal.civil-affairs", event_id)] >= 1
        assert delivered[(f"feed.district.{record['district']}", event_id)] >= 1

    audits = await read_all(own_broker, [AUDIT_TOPIC])
    decoded = [framing.decode_body(framing.split(m.value)[1], AUDIT_PARSED) for m in audits]
    per_audit_id = Counter(a["audit_id"] for a in decoded if a["event_id"] in ids)
    assert len(per_audit_id) == len(events)  # one audit record per event: its publish, deliveries listed in it
    assert max(per_audit_id.values()) == 1, [k for k, n in per_audit_id.items() if n > 1][:5]
    assert all(len(a["deliveries"]) == 2 for a in decoded if a["event_id"] in ids)  # lateral + own district

    snapshots = {}
    for m in await read_all(own_broker, [COUNTS_TOPIC]):
        snapshots[m.partition] = m.value
    total = CountTable()
    for value in snapshots.values():
        total.merge(decode_snapshot(value)[1])
    by_action = Counter()
    for key, n in total.counts.items():
        if key[5] == RESOURCE:
            by_action[(key[1], key[4])] += n
    assert by_action[("publish", "")] == len(events)
    assert by_action[("deliver", "lateral")] == len(events)
    assert by_action[("deliver", "down")] == len(events)


AUDIT_PARSED = framing.parse_schema((REPO_ROOT / "schemas/hub/audit_record.avsc").read_text())


async def reconcile_and_compare_stats(hub: HubProcess, bootstrap: str, tmp_path: Path, published: int) -> None:
    """After the SIGKILL and restart: every counter recomputed from the audit log equals the durable counts, and
    /v1/stats equals the test's own count of distinct deliveries on the feeds."""
    reconcile = audit_cli(hub, bootstrap, tmp_path, "reconcile")
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
    result = json.loads(reconcile.stdout)
    assert result["status"] == "equal" and result["differences"] == [] and result["duplicate_count"] == 0
    assert all(p["uncovered"] == 0 for p in result["partitions"]), result["partitions"]  # the whole log compared
    assert result["recounted_total"] == 3 * published

    feeds = await read_all(bootstrap, [feed_topic(n) for n in ("municipal.civil-affairs", *(
        f"district.{c}" for c in DISTRICT_CODES))])
    distinct = {(m.topic, dict(m.headers)[H_EVENT_ID].decode()) for m in feeds}
    expected = {"lateral": sum(1 for t, _ in distinct if t == "feed.municipal.civil-affairs"),
                "down": sum(1 for t, _ in distinct if t.startswith("feed.district."))}

    async def stats_match() -> bool:
        response = httpx.get(f"{hub.api}/v1/stats", headers={"Authorization": f"Bearer {hub.token}"}, timeout=10)
        exchange = response.json()["exchange"] or {"counts": {"by_direction": {}, "by_action": {}}}
        counts = exchange["counts"]
        return counts["by_direction"] == expected and counts["by_action"].get("publish") == published

    assert await wait_for(stats_match, 30), "/v1/stats does not equal the deliveries counted on the feeds"


async def test_sigkill_while_the_next_batch_is_decided_and_acknowledgements_are_pending(
        own_broker: str, tmp_path: Path) -> None:
    """The worker holds each batch's audit write (``HUB_TEST_AUDIT_DELAY_MS``), so batch n+1 is decided and sent
    while batch n waits; it is SIGKILLed with batches in flight. Restarted (without the delay), every event
    reaches its feeds, and the audit log and counts hold exactly one entry per event."""
    app_id = f"inflight-{uuid.uuid4().hex[:6]}"
    env = {"HUB_TOPIC_PARTITIONS": str(PARTITIONS)}
    hub = start_hub(own_broker, tmp_path / "up", free_port(), app_id,
                    extra_env={**env, "HUB_TEST_AUDIT_DELAY_MS": "1500"})
    try:
        schema_id, events = await vaccination_events(hub, 3000, seed=7)
        load = asyncio.ensure_future(publish_continuously(own_broker, schema_id, events, rate=1000))

        async def batches_in_flight() -> bool:
            return hub.metrics().get(("hub_worker_batches_in_flight", ()), 0) >= 2

        assert await wait_for(batches_in_flight, 120), "the worker never had two batches in flight"
        hub.proc.send_signal(signal.SIGKILL)  # batch n+1 decided and sent, batch n's audit write pending
        hub.proc.wait()
        await load
        hub = start_hub(own_broker, tmp_path / "up", free_port(), app_id, extra_env=env)
        ids = {eid for eid, _ in events}

        async def all_delivered_and_audited() -> bool:
            feed = await read_all(own_broker, ["feed.municipal.civil-affairs"])
            if not ids <= {dict(m.headers).get(H_EVENT_ID, b"").decode() for m in feed}:
                return False
            audits = await read_all(own_broker, [AUDIT_TOPIC])
            audited = {framing.decode_body(framing.split(m.value)[1], AUDIT_PARSED)["event_id"] for m in audits}
            return ids <= audited

        assert await wait_for(all_delivered_and_audited, 180), "not every event was delivered and audited"

        assert await wait_for(lambda: reconciled(hub, own_broker, tmp_path), 60), "audit reconcile never came out equal"
        verify = audit_cli(hub, own_broker, tmp_path, "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        code = hub.stop()
    assert code == 0, hub.log_file.read_text()[-3000:]
    audits = await read_all(own_broker, [AUDIT_TOPIC])
    decoded = [framing.decode_body(framing.split(m.value)[1], AUDIT_PARSED) for m in audits]
    per_event = Counter(a["event_id"] for a in decoded if a["event_id"] in ids)
    assert len(per_event) == len(events) and max(per_event.values()) == 1  # exactly one audit record per event
    feeds = await read_all(own_broker, ["feed.municipal.civil-affairs"] +
                           [f"feed.district.{r['district']}" for _, r in events])
    delivered = Counter((m.topic, dict(m.headers)[H_EVENT_ID].decode()) for m in feeds)
    for event_id, record in events:
        assert delivered[("feed.municipal.civil-affairs", event_id)] >= 1
        assert delivered[(f"feed.district.{record['district']}", event_id)] >= 1
