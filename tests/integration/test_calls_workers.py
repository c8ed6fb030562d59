"""Calls across two workers on a broker of its own (3 partitions): a request admitted by the worker owning its
request partition is answered by the worker owning the row's partition (over hub.calls), and when a worker
leaves, the other restores the moved partitions' tables and quota counts from their changelogs and answers."""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.broker.manager import LocalBroker, free_port
from hub.contract import CALLS_TOPIC
from hub.settings import Settings

from .hubproc import Group, HubProcess, stable_with, start_hub, start_worker, until
from .test_calls import ENROLMENT, PERSON, Caller, person, publish, resident_id

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = LocalBroker(Settings(state_dir=tmp_path_factory.mktemp("calls-broker")))
    info, _ = broker.start(port=free_port(), controller_port=free_port(), owned=True)
    try:
        yield info.bootstrap
    finally:
        broker.stop()


async def api_grant(hub: HubProcess, consumer: str, **kw: object) -> str:
    async with httpx.AsyncClient(base_url=hub.api, headers={"Authorization": f"Bearer {hub.token}"},
                                 timeout=30) as http:
        body = {"consumer": consumer, "resource": PERSON, "scenario": ENROLMENT, "mode": "call", **kw}
        response = await http.post("/v1/grants", json=body)
        assert response.status_code == 201, response.text
        grant = response.json()
        if grant["state"] == "requested":
            response = await http.post(f"/v1/grants/{grant['id']}/approve", json={"reason": "test"})
            assert response.is_success, response.text
        return str(grant["id"])


async def forwarded(bootstrap: str) -> int:
    """Records ever written to hub.calls (calls whose next stage another worker owned)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(CALLS_TOPIC, p) for p in range(PARTITIONS)])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def all_ok(caller: Caller, ids: list[str], phone: str) -> None:
    results = await asyncio.gather(*(caller.until(lambda r: r.status == "ok", PERSON, scenario=ENROLMENT, key=rid)
                                     for rid in ids))
    for rid, result in zip(ids, results, strict=True):
        assert result.status == "ok", result.reply
        assert result.record is not None and (result.record["resident_id"], result.record["phone"]) == (rid, phone)


async def test_calls_are_answered_across_workers_and_after_one_leaves(own_broker: str, tmp_path: Path) -> None:
    app_id = f"calls-{uuid.uuid4().hex[:6]}"
    hub = start_hub(own_broker, tmp_path / "up", free_port(), app_id,
                    extra_env={"HUB_TOPIC_PARTITIONS": str(PARTITIONS)})
    (tmp_path / "w").mkdir()
    worker = start_worker(hub, app_id, tmp_path / "w", PARTITIONS)
    try:
        async with Group(own_broker, app_id) as group:  # the second worker joins: partitions are shared
            await until(group.describe, stable_with(2), 90, "two workers holding partitions")
        await api_grant(hub, "municipal.hrss")
        await api_grant(hub, "district.310115", daily_quota=3)
        rng = random.Random()
        ids = [resident_id(rng) for _ in range(24)]
        await publish(hub, PERSON, [person(rid, phone="13911112222") for rid in ids])
        async with Caller(hub, "municipal.hrss") as hrss, Caller(hub, "district.310115") as pudong:
            await all_ok(hrss, ids, "13911112222")
            assert await forwarded(own_broker) > 0  # some rows lived on the other worker
            quota = [await pudong.call(PERSON, scenario=ENROLMENT, key=ids[0]) for _ in range(2)]
            assert [r.status for r in quota] == ["ok", "ok"]

            worker.send_signal(signal.SIGTERM)  # its partitions move to the hub's worker
            assert worker.wait(60) == 0
            await all_ok(hrss, ids, "13911112222")  # answered from tables restored from hub.records
            last = [await pudong.call(PERSON, scenario=ENROLMENT, key=ids[0]) for _ in range(2)]
            assert [r.status for r in last] == ["ok", "quota_exceeded"], [r.reply for r in last]
    finally:
        if worker.poll() is None:
            worker.kill()
        code = hub.stop()
    assert code == 0, hub.log_file.read_text()[-3000:]
