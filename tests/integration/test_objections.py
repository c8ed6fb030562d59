"""Objections end to end on a real broker: a consumer's objection flags the record for every recipient (notices on
objection.<node>, hub-flag on later deliveries), the provider's correction reaches exactly those recipients, the
objection ends archived; a breached time limit escalates and shows in the metrics; a non-party gets 403."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from hub.broker.manager import LocalBroker, free_port
from hub.contract import (
    AUDIT_TOPIC,
    CONTROL_AUDIT_TOPIC,
    H_EVENT_ID,
    H_FLAG,
    H_OBJECTION,
    H_RESOURCE,
    feed_topic,
    objection_topic,
)
from hub.demo.data import record_generator
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings

from .hubproc import HubProcess, TopicReader, header, start_hub, until

pytestmark = pytest.mark.integration

RESOURCE = "municipal.health.vaccination"
SUBJECT = f"{RESOURCE}-value"
PROVIDER = "municipal.health"
CIVIL = "municipal.civil-affairs"  # lateral subscriber: receives every record
PUDONG = "district.310115"  # receives its own district's records
XUHUI = "district.310104"  # receives none of Pudong's records: never a party
SCHEMA = json.loads((REPO_ROOT / "schemas/health/vaccination_record.avsc").read_text())
PARSED = framing.parse_schema(SCHEMA)
ACCEPT_LIMIT_S = 4
RECIPIENT_FEEDS = sorted([feed_topic(CIVIL), feed_topic(PUDONG)])


@pytest.fixture(scope="module")
def objection_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub on a broker of its own, with a 4 s limit for accepting an objection and a 0.5 s overdue check."""
    broker = LocalBroker(Settings(state_dir=tmp_path_factory.mktemp("objection-broker")))
    info, _ = broker.start(port=free_port(), controller_port=free_port(), owned=True)
    env = {"HUB_OBJECTION_ACCEPT_LIMIT": str(ACCEPT_LIMIT_S), "HUB_OBJECTION_CHECK_INTERVAL": "0.5"}
    hub = start_hub(info.bootstrap, tmp_path_factory.mktemp("objection-hub"), free_port(),
                    f"hub-obj-{uuid.uuid4().hex[:6]}", extra_env=env)
    try:
        yield hub
    finally:
        code = hub.stop()
        broker.stop()
        assert code == 0, f"hub up did not stop cleanly (exit {code}):\n{hub.log_file.read_text()[-3000:]}"


class Client:
    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub
        self.tokens = {"hub": hub.token}
        for node in (PROVIDER, CIVIL, PUDONG, XUHUI):
            response = self.call("hub", "POST", f"/v1/nodes/{node}/token")
            assert response.status_code == 201, response.text
            self.tokens[node] = response.json()["token"]

    def call(self, node: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.hub.api}{path}", headers={"Authorization": f"Bearer {self.tokens[node]}"},
                             timeout=30, **kw)

    def step(self, node: str, oid: str, action: str, **body: Any) -> dict[str, Any]:
        response = self.call(node, "POST", f"/v1/objections/{oid}/{action}", json=body or None)
        assert response.status_code == 200, response.text
        return response.json()


async def publish(hub: HubProcess, record: dict[str, Any], event_id: str, sid: int,
                  objection: str | None = None) -> None:
    headers = [(H_RESOURCE, RESOURCE.encode()), (H_EVENT_ID, event_id.encode())]
    if objection:
        headers.append((H_OBJECTION, objection.encode()))
    producer = AIOKafkaProducer(bootstrap_servers=hub.bootstrap)
    await producer.start()
    try:
        await (await producer.send(f"ingress.{PROVIDER}", framing.encode(sid, PARSED, record),
                                   key=record["record_id"].encode(), headers=headers))
    finally:
        await producer.stop()


def with_event(records: list, event_id: str) -> list:
    return [r for r in records if header(r, H_EVENT_ID) == event_id.encode()]


async def decode_all(hub: HubProcess, records: list) -> list[dict[str, Any]]:
    async with RegistryClient(hub.api, token=hub.token) as client:
        out = []
        for r in records:
            sid, body = framing.split(r.value)
            out.append(framing.decode_body(body, (await client.schema_by_id(sid)).parsed))
        return out


async def test_objection_flags_corrects_exactly_the_recipients_and_escalates(objection_hub: HubProcess) -> None:
    hub = objection_hub
    client = Client(hub)
    async with RegistryClient(hub.api, token=hub.token) as registry:
        sid = await registry.register(SUBJECT, json.dumps(SCHEMA))
    record = record_generator(SCHEMA)(random.Random(3))
    record.update(district="310115", record_id=f"obj-{uuid.uuid4().hex[:8]}")
    key = record["record_id"]
    feeds = [feed_topic(n) for n in (CIVIL, PUDONG, XUHUI, "national", "municipal.hrss")]
    notices = [objection_topic(n) for n in (CIVIL, PUDONG, XUHUI, PROVIDER, "hub")]
    reader = await TopicReader(hub.bootstrap).start([*feeds, *notices, AUDIT_TOPIC, CONTROL_AUDIT_TOPIC])
    seen: list = []

    async def read_until(done: Any, timeout: float = 60) -> list:
        seen.extend(await reader.read_until(lambda rs: done(seen + rs), timeout=timeout, quiet=0.5))
        return seen

    try:
        # 1. the wrong record reaches civil affairs and Pudong
        await publish(hub, record, "wrong-1", sid)
        await read_until(lambda rs: len([r for r in with_event(rs, "wrong-1") if r.topic.startswith("feed.")]) >= 2)
        assert sorted(r.topic for r in with_event(seen, "wrong-1") if r.topic.startswith("feed.")) == RECIPIENT_FEEDS

        # 2. only a recipient files (hub.recipients is written with the feeds: wait for it, not a fixed time)
        body = {"resource": RESOURCE, "record_key": key, "reason": "wrong dose number", "field": "dose_number",
                "proposed_value": "2", "event_id": "wrong-1"}
        refused = client.call(XUHUI, "POST", "/v1/objections", json=body)
        assert refused.status_code == 403 and refused.json()["code"] == "not_a_recipient"

        async def file_it() -> httpx.Response:
            return client.call(CIVIL, "POST", "/v1/objections", json=body)

        filed = await until(file_it, lambda r: r.status_code == 201, 30, "civil affairs files its objection")
        objection = filed.json()
        oid = objection["objection_id"]
        assert objection["recipients"] == sorted([CIVIL, PUDONG]) and objection["provider"] == PROVIDER
        # a node that is not a party gets 403 everywhere
        assert client.call(XUHUI, "GET", f"/v1/objections/{oid}").status_code == 403
        assert client.call(XUHUI, "POST", f"/v1/objections/{oid}/accept").status_code == 403
        assert client.call(XUHUI, "GET", "/v1/objections").json() == []
        # a party that may not make a step gets 403 too, an illegal step 409
        assert client.call(CIVIL, "POST", f"/v1/objections/{oid}/accept").status_code == 403
        assert client.call("hub", "POST", f"/v1/objections/{oid}/archive").status_code == 409

        # 3. the hub accepts and flags it: every party is told, at every step
        client.step("hub", oid, "accept")
        client.step("hub", oid, "flag", note="disputed dose number")

        def notices_of(rs: list, node: str) -> list[dict[str, Any]]:
            return [r for r in rs if r.topic == objection_topic(node) and r.key == oid.encode()]

        await read_until(lambda rs: all(len(notices_of(rs, n)) >= 3 for n in (CIVIL, PUDONG, PROVIDER)))
        for node in (CIVIL, PUDONG, PROVIDER):
            states = [o["state"] for o in await decode_all(hub, notices_of(seen, node))]
            assert states[:3] == ["filed", "accepted", "flagged"], node
        assert notices_of(seen, XUHUI) == []

        # 4. while flagged, later deliveries of the record carry hub-flag; other records do not
        await publish(hub, record, "again-2", sid)
        other = dict(record, record_id=f"{key}-other")
        await publish(hub, other, "other-3", sid)
        await read_until(lambda rs: len([r for r in with_event(rs, "again-2") + with_event(rs, "other-3")
                                         if r.topic.startswith("feed.")]) >= 4)
        flagged = [r for r in with_event(seen, "again-2") if r.topic.startswith("feed.")]
        assert sorted(r.topic for r in flagged) == RECIPIENT_FEEDS
        assert {header(r, H_FLAG) for r in flagged} == {oid.encode()}
        assert {header(r, H_FLAG) for r in with_event(seen, "other-3") if r.topic.startswith("feed.")} == {None}

        # 5. the provider's correction, moved to Xuhui's district, reaches exactly the two recipients
        corrected = dict(record, dose_number=2, district="310104")
        await publish(hub, corrected, "fix-4", sid, objection=oid)
        await read_until(lambda rs: len([r for r in with_event(rs, "fix-4") if r.topic.startswith("feed.")]) >= 2
                         and any(r.topic == AUDIT_TOPIC for r in with_event(rs, "fix-4")))
        fixes = [r for r in with_event(seen, "fix-4") if r.topic.startswith("feed.")]
        assert sorted(r.topic for r in fixes) == RECIPIENT_FEEDS  # not Xuhui, nor anyone else
        assert {header(r, H_OBJECTION) for r in fixes} == {oid.encode()}
        [publish_audit] = await decode_all(hub, [r for r in with_event(seen, "fix-4") if r.topic == AUDIT_TOPIC])
        assert publish_audit["reason"] == f"correction of objection {oid}"
        assert sorted(d["counterparty"] for d in publish_audit["deliveries"]) == sorted([CIVIL, PUDONG])

        # 6. the provider records the correction; the hub unflags and archives
        assert client.step(PROVIDER, oid, "correct", corrected_event_id="fix-4")["outcome"] == "corrected"
        client.step("hub", oid, "unflag")
        final = client.step("hub", oid, "archive")
        assert final["state"] == "archived" and final["deadline"] is None
        shown = client.call(PUDONG, "GET", f"/v1/objections/{oid}").json()
        assert [s["state"] for s in shown["history"] if not (s["note"] or "").startswith("escalated")] == [
            "filed", "accepted", "flagged", "verified", "unflagged", "archived"]
        await publish(hub, record, "after-5", sid)
        await read_until(lambda rs: len([r for r in with_event(rs, "after-5") if r.topic.startswith("feed.")]) >= 2)
        assert {header(r, H_FLAG) for r in with_event(seen, "after-5") if r.topic.startswith("feed.")} == {None}

        # 7. an objection nobody accepts within its limit escalates: flagged to the operator, in the metrics
        late = (await until(file_it, lambda r: r.status_code == 201, 30, "a second objection")).json()

        async def state_of() -> dict[str, Any]:
            return client.call("hub", "GET", f"/v1/objections/{late['objection_id']}").json()

        escalated = await until(state_of, lambda o: o["escalated"], ACCEPT_LIMIT_S + 30, "escalation")
        assert escalated["overdue"] and escalated["history"][-1]["note"].startswith("escalated: accept")

        async def metrics() -> dict:
            return hub.metrics()

        await until(metrics, lambda m: m.get(("hub_objections_overdue", ())) >= 1
                    and m.get(("hub_objections_open", (("state", "filed"),))) >= 1, 15, "objection metrics")
        await read_until(lambda rs: any(r.key == late["objection_id"].encode() for r in rs
                                        if r.topic == objection_topic("hub")))

        # every step is on the control audit chain
        control = await decode_all(hub, [r for r in seen if r.topic == CONTROL_AUDIT_TOPIC])
        verbs = [a["reason"].split(":")[0] for a in control if a["action"] == "objection" and oid in a["source"]]
        assert verbs == ["file", "accept", "flag", "correct", "unflag", "archive"] or "escalate" in verbs
        assert {"file", "accept", "flag", "correct", "unflag", "archive"} <= set(verbs)
        assert any(a["action"] == "objection" and a["reason"].startswith("escalate")
                   and late["objection_id"] in a["source"] for a in control)
    finally:
        await reader.stop()
