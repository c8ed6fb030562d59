"""The demo's objection: one runs its whole course on the running hub (docs/objections.md).

Civil affairs received a vaccination record of Pudong with a wrong dose number; it files an objection, the
operator accepts and flags it, the health commission publishes the corrected record (``hub-objection``) and
records the correction, the operator unflags and archives it. What each recipient received is read back.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import TopicPartition

from hub.broker.clients import make_consumer, make_producer
from hub.contract import H_EVENT_ID, H_FLAG, H_OBJECTION, H_RESOURCE, OPERATOR, feed_topic, ingress_topic
from hub.demo.data import record_generator
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings

RESOURCE = "municipal.health.vaccination"
PROVIDER = "municipal.health"
FILER = "municipal.civil-affairs"
RECIPIENTS = (FILER, "district.310115")
SCHEMA_FILE = REPO_ROOT / "schemas/health/vaccination_record.avsc"


@dataclass
class ObjectionRun:
    """What the demo's objection went through and who received what."""

    objection_id: str = "-"
    states: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    flagged_to: list[str] = field(default_factory=list)  # feeds that got the record with hub-flag
    corrected_to: list[str] = field(default_factory=list)  # feeds that got the correction
    final: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        expected = sorted(feed_topic(n) for n in RECIPIENTS)
        return (self.error is None and self.final.get("state") == "archived" and self.corrected_to == expected
                and self.flagged_to == expected)


async def run_objection(settings: Settings, status: dict[str, Any], timeout: float = 60.0) -> ObjectionRun:
    run = ObjectionRun()
    try:
        await _course(settings, status, run, timeout)
    except Exception as exc:  # the demo reports what went wrong rather than a traceback
        run.error = f"{type(exc).__name__}: {exc}"
    return run


async def _course(settings: Settings, status: dict[str, Any], run: ObjectionRun, timeout: float) -> None:
    api, bootstrap = status["api"], status["bootstrap"]
    tokens = {OPERATOR: Path(status["operator_token_file"]).read_text(encoding="utf-8").strip()}

    def call(node: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, f"{api}{path}", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {tokens[node]}"})

    for node in (PROVIDER, FILER):  # the seed nodes have no tokens yet
        tokens[node] = call(OPERATOR, "POST", f"/v1/nodes/{node}/token").raise_for_status().json()["token"]
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    async with RegistryClient(api, token=tokens[OPERATOR]) as registry:
        schema_id = await registry.register(f"{RESOURCE}-value", json.dumps(schema))
    parsed = framing.parse_schema(schema)
    record = record_generator(schema)(random.Random(7))
    record.update(record_id=f"demo-objection-{uuid.uuid4().hex[:8]}", district="310115", dose_number=1)
    feeds = [feed_topic(n) for n in RECIPIENTS]
    consumer = make_consumer(settings, bootstrap)
    producer = make_producer(settings, bootstrap)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(t, p) for t in feeds for p in (consumer.partitions_for_topic(t) or {0})]
        consumer.assign(tps)
        for tp, offset in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, offset)

        async def publish(value: dict[str, Any], event_id: str, objection: str | None = None) -> None:
            headers = [(H_RESOURCE, RESOURCE.encode()), (H_EVENT_ID, event_id.encode())]
            if objection:
                headers.append((H_OBJECTION, objection.encode()))
            await (await producer.send(ingress_topic(PROVIDER), framing.encode(schema_id, parsed, value),
                                       key=value["record_id"].encode(), headers=headers))

        async def received(event_id: str) -> list[Any]:
            got: list[Any] = []
            deadline = time.monotonic() + timeout
            while len(got) < len(feeds) and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=300)).values():
                    got += [m for m in msgs if dict(m.headers).get(H_EVENT_ID) == event_id.encode()]
            return got

        await publish(record, "demo-wrong")
        await received("demo-wrong")
        body = {"resource": RESOURCE, "record_key": record["record_id"], "reason": "dose number should be 2",
                "field": "dose_number", "proposed_value": "2", "event_id": "demo-wrong"}
        deadline = time.monotonic() + timeout
        while True:  # hub.recipients is written with the feeds: retry until it is there
            response = call(FILER, "POST", "/v1/objections", body)
            if response.status_code == 201 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        objection = response.raise_for_status().json()
        oid = run.objection_id = objection["objection_id"]
        run.recipients = objection["recipients"]
        call(OPERATOR, "POST", f"/v1/objections/{oid}/accept").raise_for_status()
        call(OPERATOR, "POST", f"/v1/objections/{oid}/flag").raise_for_status()
        for _ in range(int(timeout * 2)):  # the worker follows hub.objections: wait until it flags deliveries
            await publish(record, probe := f"demo-flag-{uuid.uuid4().hex[:6]}")
            got = await received(probe)
            if got and all(dict(m.headers).get(H_FLAG) == oid.encode() for m in got):
                run.flagged_to = sorted(m.topic for m in got)
                break
        await publish(dict(record, dose_number=2), "demo-fix", objection=oid)
        run.corrected_to = sorted(m.topic for m in await received("demo-fix")
                                  if dict(m.headers).get(H_OBJECTION) == oid.encode())
        call(PROVIDER, "POST", f"/v1/objections/{oid}/correct",
             {"note": "dose number corrected to 2", "corrected_event_id": "demo-fix"}).raise_for_status()
        call(OPERATOR, "POST", f"/v1/objections/{oid}/unflag").raise_for_status()
        run.final = call(OPERATOR, "POST", f"/v1/objections/{oid}/archive").raise_for_status().json()
        run.states = [s["state"] for s in run.final["history"] if not (s["note"] or "").startswith("escalated")]
    finally:
        await consumer.stop()
        await producer.stop()
