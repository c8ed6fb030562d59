"""Authorisation end to end on the real broker (the session's ``hub up``): grants requested, approved and revoked
over ``/v1/grants`` change what the worker delivers from the next event on; a ``none`` resource never flows;
an L2 district gets L3 fields masked and L4 fields absent; a forged ``hub-provider`` header has no effect; a
node's token cannot act as another node (403); every grant change and failed authentication is on the
hash-chained control audit log, which ``hub audit verify`` checks."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from hub.contract import (
    AUDIT_TOPIC,
    CONTROL_AUDIT_TOPIC,
    H_EVENT_ID,
    H_GRANT,
    H_LINEAGE,
    H_PROVIDER,
    H_RESOURCE,
    H_RULE,
    feed_topic,
    ingress_topic,
)
from hub.demo.data import record_generator
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT

from .hubproc import HubProcess, TopicReader, header

pytestmark = pytest.mark.integration

LEGAL_PERSON = "municipal.big-data.legal-person"  # unconditional
NATURAL_PERSON = "municipal.big-data.natural-person"  # authorised
VACCINATION = "municipal.health.vaccination"  # authorised; district.310115 holds a seed grant (own district)
SEVERE = "municipal.health.severe-mental-disorder"  # none
SCHEMAS = {
    LEGAL_PERSON: "schemas/market/legal_person.avsc",
    NATURAL_PERSON: "schemas/population/natural_person.avsc",
    VACCINATION: "schemas/health/vaccination_record.avsc",
    SEVERE: "schemas/health/severe_mental_disorder_case.avsc",
}


def api(hub: HubProcess, method: str, path: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or hub.token}"}
    return httpx.request(method, f"{hub.api}{path}", headers=headers, timeout=30, **kwargs)


def new_node(hub: HubProcess, node_id: str, clearance: str) -> str:
    response = api(hub, "POST", "/v1/nodes", json={"id": node_id, "title": node_id, "clearance": clearance})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def node_token(hub: HubProcess, node_id: str) -> str:
    response = api(hub, "POST", f"/v1/nodes/{node_id}/token")
    assert response.status_code == 201, response.text
    return response.json()["token"]


class Exchange:
    """Publishes one event at a time on a provider's ingress and collects everything it caused: feed records,
    quarantine records and audit records (the worker writes a batch's audit records only after its feeds and
    quarantine records are acknowledged, so once an event's audit shows, its deliveries are there too)."""

    def __init__(self, hub: HubProcess) -> None:
        self.hub = hub
        self.reader = TopicReader(hub.bootstrap)
        self.producer = AIOKafkaProducer(bootstrap_servers=hub.bootstrap)
        self.registry = RegistryClient(hub.api, token=hub.token)
        self.seen: list[ConsumerRecord] = []
        self.schema_ids: dict[str, int] = {}
        self.rng = random.Random(7)

    async def start(self, topics: list[str]) -> Exchange:
        await self.reader.start(topics)
        await self.producer.start()
        for resource in SCHEMAS:
            self.schema_ids[resource] = await self.registry.register(f"{resource}-value", self.schema(resource))
        return self

    async def stop(self) -> None:
        await self.reader.stop()
        await self.producer.stop()
        await self.registry.aclose()

    @staticmethod
    def schema(resource: str) -> dict[str, Any]:
        return json.loads((REPO_ROOT / SCHEMAS[resource]).read_text())

    def record(self, resource: str, **fields: Any) -> dict[str, Any]:
        return {**record_generator(self.schema(resource))(self.rng), **fields}

    async def publish(self, resource: str, record: dict[str, Any], *, ingress: str | None = None,
                      extra: list[tuple[str, bytes]] | None = None) -> list[ConsumerRecord]:
        """Publish one record and return every record (feeds, quarantine, audit) carrying its event id."""
        event_id = str(uuid.uuid4())
        value = framing.encode(self.schema_ids[resource], framing.parse_schema(self.schema(resource)), record)
        topic = ingress or ingress_topic(resource.rsplit(".", 1)[0])
        headers = [(H_RESOURCE, resource.encode()), (H_EVENT_ID, event_id.encode()), *(extra or [])]
        await (await self.producer.send(topic, value, headers=headers))

        def mine(records: list[ConsumerRecord]) -> list[ConsumerRecord]:
            return [r for r in records if header(r, H_EVENT_ID) == event_id.encode()]

        got = await self.reader.read_until(lambda rs: any(r.topic == AUDIT_TOPIC for r in mine(self.seen + rs)),
                                           timeout=60, quiet=1.0)
        self.seen += got
        ours = mine(self.seen)
        assert any(r.topic == AUDIT_TOPIC for r in ours), f"event {event_id} was never audited"
        return ours

    async def audits(self, records: list[ConsumerRecord]) -> list[dict[str, Any]]:
        out = []
        for r in records:
            if r.topic.startswith(AUDIT_TOPIC):
                schema_id, body = framing.split(r.value)
                out.append(framing.decode_body(body, (await self.registry.schema_by_id(schema_id)).parsed))
        return out

    async def decoded(self, record: ConsumerRecord) -> dict[str, Any]:
        schema_id, body = framing.split(record.value)
        return framing.decode_body(body, (await self.registry.schema_by_id(schema_id)).parsed)


def delivered_to(records: list[ConsumerRecord], consumer: str) -> bool:
    return any(r.topic == feed_topic(consumer) for r in records)


def allowed_to(audits: list[dict[str, Any]], consumer: str) -> bool:
    """Whether an event's audit lists a delivery to ``consumer`` (its publish record's ``deliveries``)."""
    return any(d["counterparty"] == consumer and d["decision"] == "allow"
               for a in audits for d in a.get("deliveries") or ())


async def feed_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if t.startswith("feed."))
    finally:
        await admin.close()


# ---------------------------------------------------------------- grants change what flows


async def test_grants_decide_what_flows_from_the_next_event_on(hub: HubProcess, unique_id: str) -> None:
    consumer = f"municipal.t{unique_id}"
    token = new_node(hub, consumer, "L2")
    provider_token = node_token(hub, "municipal.big-data")
    ex = await Exchange(hub).start([feed_topic(consumer), AUDIT_TOPIC, CONTROL_AUDIT_TOPIC])
    try:
        # unconditional: active as soon as requested, and the next record flows (masked to the L2 clearance)
        requested = api(hub, "POST", "/v1/grants", token, json={"resource": LEGAL_PERSON,
                                                                "scenario": "market-supervision"})
        assert requested.status_code == 201, requested.text
        assert requested.json()["state"] == "active" and requested.json()["decided_by"] == "hub"
        published = ex.record(LEGAL_PERSON)
        flows = []
        for _ in range(3):  # the worker applies a control change at its next batch
            outcome = await ex.publish(LEGAL_PERSON, published)
            flows.append(delivered_to(outcome, consumer))
            if flows[-1]:
                break
        assert flows[-1] and len(flows) <= 2, flows
        feed = next(r for r in outcome if r.topic == feed_topic(consumer))
        assert header(feed, H_GRANT) == requested.json()["id"].encode()
        assert header(feed, H_PROVIDER) == b"municipal.big-data"
        got = await ex.decoded(feed)
        assert got["uscc"] == published["uscc"]  # L1 as published
        assert got["legal_rep_resident_id"] != published["legal_rep_resident_id"]  # L3 above L2: masked
        assert "*" in got["legal_rep_resident_id"] and got["legal_rep_resident_id"][-4:] == \
            published["legal_rep_resident_id"][-4:]

        # authorised: requested, and nothing flows until the provider approves
        pending = api(hub, "POST", "/v1/grants", token, json={"resource": NATURAL_PERSON,
                                                              "scenario": "social-insurance-enrolment",
                                                              "reason": "enrolment checks"})
        assert pending.status_code == 201 and pending.json()["state"] == "requested", pending.text
        grant_id = pending.json()["id"]
        person = ex.record(NATURAL_PERSON)
        for _ in range(2):
            outcome = await ex.publish(NATURAL_PERSON, person)
            assert not delivered_to(outcome, consumer)
            assert not allowed_to(await ex.audits(outcome), consumer)
        # the consumer cannot approve its own request; the provider can
        self_approval = api(hub, "POST", f"/v1/grants/{grant_id}/approve", token)
        assert self_approval.status_code == 403, self_approval.text
        approved = api(hub, "POST", f"/v1/grants/{grant_id}/approve", provider_token,
                       json={"reason": "enrolment is a legal duty"})
        assert approved.status_code == 200 and approved.json()["state"] == "active", approved.text
        flows = [delivered_to(await ex.publish(NATURAL_PERSON, person), consumer) for _ in range(3)]
        assert flows in ([True, True, True], [False, True, True]), flows  # from the next event (batch) on

        # revoked: stops within one event
        revoked = api(hub, "POST", f"/v1/grants/{grant_id}/revoke", provider_token,
                      json={"reason": "enrolment finished"})
        assert revoked.status_code == 200 and revoked.json()["state"] == "revoked", revoked.text
        after = [await ex.publish(NATURAL_PERSON, person) for _ in range(3)]
        flows = [delivered_to(outcome, consumer) for outcome in after]
        assert flows in ([False, False, False], [True, False, False]), flows
        for outcome in after[1:]:  # no delivery audited either: a denied one, or no proposal at all
            assert not allowed_to(await ex.audits(outcome), consumer)

        # the control audit log has every step, with who did it and why
        trail = [a for a in await ex.audits([r for r in ex.seen if r.topic == CONTROL_AUDIT_TOPIC])
                 if a["grant"] == grant_id and a["action"] == "grant"]
        assert [(a["action"], a["actor"], a["reason"].split(":")[0], a["decision"]) for a in trail] == [
            ("grant", consumer, "request", "allow"),
            ("grant", "municipal.big-data", "approve", "allow"),
            ("grant", "municipal.big-data", "revoke", "deny"),
        ]
        assert trail[2]["reason"] == "revoke: active -> revoked (enrolment finished)"
        forbidden = [a for a in await ex.audits([r for r in ex.seen if r.topic == CONTROL_AUDIT_TOPIC])
                     if a["action"] == "forbidden"]
        assert any(a["actor"] == consumer and a["grant"] == grant_id for a in forbidden)
    finally:
        await ex.stop()


async def test_a_none_resource_is_never_granted_and_never_flows(hub: HubProcess, unique_id: str) -> None:
    consumer = f"municipal.n{unique_id}"
    token = new_node(hub, consumer, "L4")
    seen = api(hub, "GET", f"/v1/resources/{SEVERE}", token).json()
    assert seen["visibility"] == "exists_only" and seen["shared"] is False
    assert "精神卫生法" in seen["legal_basis"] and "field_levels" not in seen
    denied = api(hub, "POST", "/v1/grants", token, json={"resource": SEVERE, "scenario": "vaccination-follow-up"})
    assert denied.status_code == 201 and denied.json()["state"] == "denied", denied.text
    assert denied.json()["reason"].startswith("not_shared: ") and "精神卫生法" in denied.json()["reason"]
    # the operator cannot open it either: approving a denied request is refused
    assert api(hub, "POST", f"/v1/grants/{denied.json()['id']}/approve").status_code == 409
    ex = await Exchange(hub).start([*await feed_topics(hub.bootstrap), AUDIT_TOPIC])
    try:
        outcome = await ex.publish(SEVERE, ex.record(SEVERE, district="310115"))
        assert not [r for r in outcome if r.topic.startswith("feed.")]
        [audit] = await ex.audits(outcome)  # the event's one audit record: refusals at most
        assert audit["action"] == "publish" and all(d["decision"] == "deny" for d in audit["deliveries"])
    finally:
        await ex.stop()


async def test_an_l2_district_gets_l3_fields_masked_and_l4_fields_absent(hub: HubProcess) -> None:
    ex = await Exchange(hub).start(["feed.district.310115", "feed.municipal.civil-affairs", AUDIT_TOPIC])
    try:
        record = ex.record(VACCINATION, district="310115", name="张三丰", phone="13912345678")
        outcome = await ex.publish(VACCINATION, record)
        district = next(r for r in outcome if r.topic == "feed.district.310115")
        got = await ex.decoded(district)
        assert "resident_id" not in got  # L4 above L2: dropped
        assert got["name"] == "张**" and got["phone"] == "139****5678"  # L3 above L2: partially masked
        assert got["district"] == "310115" and got["record_id"] == record["record_id"]  # L1 as published
        civil = await ex.decoded(next(r for r in outcome if r.topic == "feed.municipal.civil-affairs"))
        assert civil["name"] == "张三丰" and "resident_id" not in civil  # L3 clearance: L3 kept, L4 still dropped
        deliver = next(d for a in await ex.audits(outcome) for d in a["deliveries"]
                       if d["counterparty"] == "district.310115")
        assert {"resident_id", "name", "phone"} <= set(deliver["masked_fields"])
    finally:
        await ex.stop()


async def test_forged_provider_headers_and_other_nodes_resources(hub: HubProcess) -> None:
    ex = await Exchange(hub).start(["feed.municipal.civil-affairs", "quarantine.municipal.health", AUDIT_TOPIC])
    try:
        forged = [(H_PROVIDER, b"municipal.big-data"), (H_GRANT, b"forged"), (H_LINEAGE, b"[]")]
        outcome = await ex.publish(VACCINATION, ex.record(VACCINATION, district="310104"), extra=forged)
        feed = next(r for r in outcome if r.topic == "feed.municipal.civil-affairs")
        assert [v for k, v in feed.headers if k == H_PROVIDER] == [b"municipal.health"]
        assert header(feed, H_GRANT) == b"seed-civil-vaccination"
        assert json.loads(header(feed, H_LINEAGE))[0] == "municipal.health"
        # a record of another node's resource on municipal.health's own ingress: quarantined, never delivered
        stolen = await ex.publish(LEGAL_PERSON, ex.record(LEGAL_PERSON), ingress="ingress.municipal.health",
                                  extra=[(H_PROVIDER, b"municipal.big-data")])
        assert [r.topic for r in stolen if not r.topic.startswith(AUDIT_TOPIC)] == ["quarantine.municipal.health"]
        quarantined = next(r for r in stolen if r.topic == "quarantine.municipal.health")
        assert header(quarantined, H_RULE) == b"not_provider"
        assert [(a["action"], a["reason"]) for a in await ex.audits(stolen)] == [("quarantine", "not_provider")]
    finally:
        await ex.stop()


# ---------------------------------------------------------------- the API: a node acts only as itself


async def test_a_node_token_cannot_act_as_another_node(hub: HubProcess, unique_id: str) -> None:
    me, other = "district.310101", f"municipal.o{unique_id}"
    mine, theirs = node_token(hub, me), new_node(hub, other, "L3")
    reader = await TopicReader(hub.bootstrap).start([CONTROL_AUDIT_TOPIC])
    try:
        cases = [
            ("POST", "/v1/grants", {"json": {"resource": LEGAL_PERSON, "scenario": "market-supervision",
                                              "consumer": other}}, "cannot request a grant for"),
            ("POST", f"/v1/nodes/{other}/token", {}, "a node acts only as itself"),
            ("POST", "/v1/resources", {"json": {"id": f"{other}.x", "provider": other}}, "cannot catalogue"),
            ("POST", "/v1/nodes", {"json": {"id": f"municipal.x{unique_id}"}}, "only the hub operator"),
        ]
        for method, path, kwargs, fragment in cases:
            response = api(hub, method, path, mine, **kwargs)
            assert response.status_code == 403, (path, response.text)
            assert fragment in response.json()["message"]
        # a grant the other node requested: the district cannot see, approve or revoke it
        theirs_grant = api(hub, "POST", "/v1/grants", theirs, json={"resource": NATURAL_PERSON,
                                                                    "scenario": "social-insurance-enrolment"})
        gid = theirs_grant.json()["id"]
        for verb in ("approve", "revoke", "deny"):
            assert api(hub, "POST", f"/v1/grants/{gid}/{verb}", mine, json={"reason": "x"}).status_code == 404
        assert gid not in {g["id"] for g in api(hub, "GET", "/v1/grants", mine).json()}
        # another node's id with one's own token: not authenticated at all
        basic = httpx.get(f"{hub.api}/v1/grants", auth=(other, mine), timeout=30)
        assert basic.status_code == 401 and "does not belong to" in basic.json()["message"]
        wrong = api(hub, "GET", "/v1/grants", mine.split(".")[0] + ".wrong-secret")
        assert wrong.status_code == 401

        records = await reader.read_until(
            lambda rs: sum(1 for r in rs if b"auth:" in (r.key or b"")) >= 2
            and sum(1 for r in rs if b"forbidden:" in (r.key or b"")) >= len(cases), timeout=30, quiet=0.5)
    finally:
        await reader.stop()
    async with RegistryClient(hub.api) as registry:
        audits = []
        for r in records:
            schema_id, body = framing.split(r.value)
            audits.append(framing.decode_body(body, (await registry.schema_by_id(schema_id)).parsed))
    refused = [a for a in audits if a["action"] == "forbidden" and a["actor"] == me]
    assert len(refused) >= len(cases) and all(a["decision"] == "deny" for a in refused)
    failures = [a for a in audits if a["action"] == "auth_failure"]
    assert {a["actor"] for a in failures} >= {other, me}  # the claimed node: the Basic user, the token's owner
    assert all("wrong-secret" not in json.dumps(a, default=str) for a in audits)
    assert all(a["source"].startswith("http 127.0.0.1 GET /v1/grants") for a in failures)


# ---------------------------------------------------------------- the CLI and the audit chain


def run_cli(hub: HubProcess, *args: str, token: str | None = None, state: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HUB_API_PORT=hub.api.rsplit(":", 1)[1], HUB_STATE_DIR=str(state or hub.state_dir),
               COLUMNS="200")
    env.pop("HUB_TOKEN", None)
    if token:
        env["HUB_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "hub.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_hub_grant_cli_and_the_control_audit_chain_verifies(hub: HubProcess, unique_id: str, tmp_path: Path) -> None:
    consumer = f"municipal.c{unique_id}"
    token = new_node(hub, consumer, "L3")
    requested = run_cli(hub, "grant", "request", LEGAL_PERSON, "--scenario", "market-supervision", "--json",
                        token=token)
    assert requested.returncode == 0, requested.stderr
    grant = json.loads(requested.stdout)
    assert grant["state"] == "active" and grant["consumer"] == consumer
    again = run_cli(hub, "grant", "request", LEGAL_PERSON, "--scenario", "market-supervision", token=token)
    assert again.returncode == 1 and "already holds grant" in again.stderr
    shown = run_cli(hub, "grant", "show", grant["id"], token=token)
    assert shown.returncode == 0 and "active" in shown.stdout and LEGAL_PERSON in shown.stdout
    not_mine = run_cli(hub, "grant", "request", LEGAL_PERSON, "--scenario", "market-supervision", "--consumer",
                       "municipal.health", token=token)
    assert not_mine.returncode == 1 and "403" in not_mine.stderr
    revoked = run_cli(hub, "grant", "revoke", grant["id"], "--reason", "done", token=token)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    listed = json.loads(run_cli(hub, "grant", "list", "--state", "revoked", "--json", token=token).stdout)
    assert [g["id"] for g in listed] == [grant["id"]]
    provider_view = run_cli(hub, "grant", "list", "--consumer", consumer, token=node_token(hub, "municipal.big-data"))
    assert provider_view.returncode == 0 and grant["id"] in provider_view.stdout

    # both audit logs verify; the control log is one partition holding every control act
    verified = run_cli(hub, "audit", "verify", "--bootstrap", hub.bootstrap, "--registry", hub.api, "--json",
                       state=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and [t["topic"] for t in report["topics"]] == [AUDIT_TOPIC, CONTROL_AUDIT_TOPIC]
    control = report["topics"][1]
    assert len(control["partitions"]) == 1 and control["records"] > 0
