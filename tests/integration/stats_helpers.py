"""Helpers shared by the statistics and Prometheus integration tests: publish a known mix, read /v1/stats."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hub.contract import AUDIT_TOPIC, H_EVENT_ID, H_RESOURCE, ingress_topic
from hub.demo.data import record_generator
from hub.identifiers import DISTRICT_CODES
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT
from hub.stats.figures import figures_by_id

from .hubproc import HubProcess, topic_partitions

VAX = ("municipal.health", "municipal.health.vaccination", "schemas/health/vaccination_record.avsc")
LICENCE = ("municipal.market", "municipal.market.business-licence", "schemas/market/business_licence.avsc")
FEEDS = ["feed.municipal.civil-affairs", "feed.national", "feed.region.js", "feed.region.zj",
         *(f"feed.district.{c}" for c in DISTRICT_CODES)]


def get_stats(hub: HubProcess, **params: str) -> dict[str, Any]:
    response = httpx.get(f"{hub.api}/v1/stats", params=params, headers={"Authorization": f"Bearer {hub.token}"},
                         timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


async def audit_ends(bootstrap: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(bootstrap, [AUDIT_TOPIC])
        return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def settled_stats(hub: HubProcess, timeout: float = 30) -> dict[str, Any]:
    """/v1/stats once every audit partition's count snapshot covers the whole log (the hub is quiet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = get_stats(hub)
        covered = {s["partition"]: s["audit_offset"] for s in (stats["exchange"] or {}).get("snapshots", [])}
        ends = await audit_ends(hub.bootstrap)
        if stats["exchange"] is not None and all(covered.get(p, 0) >= end for p, end in ends.items()):
            return stats
        if loop.time() > deadline:
            raise AssertionError(f"count snapshots {covered} never covered the audit log {ends}")
        await asyncio.sleep(0.5)


async def wait_until(check: Callable[[], Any], timeout: float = 30) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if result or loop.time() > deadline:
            return result
        await asyncio.sleep(0.5)


def numbers(stats: dict[str, Any]) -> dict[str, int]:
    """The figures and the per-direction / per-action counts of a /v1/stats answer, flat."""
    exchange = stats["exchange"]
    out = {k: v for k, v in figures_by_id(exchange).items() if v is not None}
    out.update({f"direction:{k}": v for k, v in exchange["counts"]["by_direction"].items()})
    out.update({f"action:{k}": v for k, v in exchange["counts"]["by_action"].items()})
    return out


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    changed = {k for k in set(after) | set(before) if after.get(k, 0) != before.get(k, 0)}
    return {k: after.get(k, 0) - before.get(k, 0) for k in changed}


def run_cli(hub: HubProcess, tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HUB_STATE_DIR=str(tmp_path / "cli-state"), HUB_BOOTSTRAP=hub.bootstrap,
               COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "hub.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


async def publish_mix(hub: HubProcess, n_vax: int, n_licences: int, n_bad: int) -> tuple[dict, set[str]]:
    """Vaccination records and business licences to several districts, and some malformed records.

    Returns {event id: (resource, district)} of the good records and the event ids of the bad ones.
    """
    rng = random.Random(2024)
    good: dict[str, tuple[str, str]] = {}
    bad: set[str] = set()
    producer = AIOKafkaProducer(bootstrap_servers=hub.bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        async with RegistryClient(hub.api, token=hub.token) as registry:
            futures = []
            for (node, resource, path), count in ((VAX, n_vax), (LICENCE, n_licences)):
                schema = json.loads((REPO_ROOT / path).read_text())
                sid = await registry.register(f"{resource}-value", json.dumps(schema))
                parsed = framing.parse_schema(schema)
                make = record_generator(schema)
                for i in range(count):
                    record = make(rng)
                    record["district"] = DISTRICT_CODES[(i * 7) % len(DISTRICT_CODES)]
                    event_id = str(uuid.uuid4())
                    good[event_id] = (resource, record["district"])
                    futures.append(await producer.send(
                        ingress_topic(node), framing.encode(sid, parsed, record),
                        headers=[(H_RESOURCE, resource.encode()), (H_EVENT_ID, event_id.encode())]))
                for _ in range(n_bad if resource == VAX[1] else 0):
                    event_id = str(uuid.uuid4())
                    bad.add(event_id)
                    futures.append(await producer.send(
                        ingress_topic(node), b"\x07not avro at all",
                        headers=[(H_RESOURCE, resource.encode()), (H_EVENT_ID, event_id.encode())]))
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return good, bad


