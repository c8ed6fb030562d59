"""Calls (共享调用) on the real hub: a CallRequest on call.<node>.request answered on call.<node>.reply from the
materialised hub.records tables — the current record, its next version, lookups through the secondary index,
masking and row scope, every error status, the audit record and the counters of each; and the `hub publish`,
`hub subscribe` and `hub call` verbs as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from hub.calls.client import CallClient, CallResult, jsonable
from hub.calls.core import CallRequest
from hub.contract import AUDIT_TOPIC, H_EVENT_ID, H_REQUEST_ID, H_RESOURCE, H_RULE, ingress_topic
from hub.control.service import ControlService
from hub.demo.data import record_generator
from hub.identifiers import resident_id_check_char
from hub.policy.model import Grant
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings

from .hubproc import HubProcess, TopicReader, header

pytestmark = pytest.mark.integration

PERSON = "municipal.big-data.natural-person"
VACCINATION = "municipal.health.vaccination"
CREDIT = "national.enterprise-credit"
SCHEMAS = {
    PERSON: "schemas/population/natural_person.avsc",
    VACCINATION: "schemas/health/vaccination_record.avsc",
    CREDIT: "schemas/national/enterprise_credit_record.avsc",
}
PROVIDER = {PERSON: "municipal.big-data", VACCINATION: "municipal.health", CREDIT: "national"}
ENROLMENT = "social-insurance-enrolment"


# ---------------------------------------------------------------------------------------------- helpers


def schema(resource: str) -> dict[str, Any]:
    return json.loads((REPO_ROOT / SCHEMAS[resource]).read_text())


def resident_id(rng: random.Random, district: str = "310115") -> str:
    birth = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    first17 = f"{district}{birth}{rng.randint(0, 999):03d}"
    return first17 + resident_id_check_char(first17)


def person(rid: str, **kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = dict(
        resident_id=rid, name="张三丰", gender="M" if int(rid[16]) % 2 else "F", birth_date=date(1960, 5, 1),
        ethnicity="01", phone="13912345678", household_type="local", registered_address="浦东新区世纪大道1号",
        residence_address=None, district=rid[:6], subdistrict_code=f"{rid[:6]}004", marital_status="married",
        status="active", death_date=None, sources=["municipal.public-security"], updated_at=int(time.time() * 1000),
    )
    rec.update(kw)
    return rec


async def grant(hub: HubProcess, consumer: str, resource: str, scenario: str, **kw: Any) -> Grant:
    """An active call grant: through `POST /v1/grants` once the API has it, else written as the API would."""
    now = int(time.time() * 1000)
    body = {"consumer": consumer, "resource": resource, "scenario": scenario, "mode": "call", **kw}
    async with httpx.AsyncClient(base_url=hub.api, headers={"Authorization": f"Bearer {hub.token}"},
                                 timeout=30) as http:
        response = await http.post("/v1/grants", json=body)
        if response.status_code == 409 and response.json().get("code") == "grant_exists":  # an earlier test's
            params = {"consumer": consumer, "resource": resource, "scenario": scenario, "mode": "call",
                      "state": "active"}
            response = await http.get("/v1/grants", params=params)
            assert response.is_success and response.json(), response.text
            return Grant.model_validate({k: v for k, v in response.json()[0].items() if k in Grant.model_fields})
        if response.status_code not in (404, 405):
            assert response.is_success, response.text
            created = response.json()
            if created.get("state") == "requested":
                response = await http.post(f"/v1/grants/{created['id']}/approve", json={"reason": "test"})
                assert response.is_success, response.text
                created = response.json()
            return Grant.model_validate({k: v for k, v in created.items() if k in Grant.model_fields})
    g = Grant(id=f"g-test-{uuid.uuid4().hex[:10]}", consumer=consumer, resource=resource, scenario=scenario,
              mode="call", valid_from=now - 60_000, state="active", updated_at=now, requested_by="hub",
              decided_by="hub", reason="integration test", **kw)
    registry = RegistryClient(hub.api, token=hub.token)
    control = ControlService(Settings(bootstrap=hub.bootstrap, state_dir=hub.state_dir), registry,
                             bootstrap=hub.bootstrap)
    try:
        await control.start()
        await control.put_grants([g])
    finally:
        await control.stop()
        await registry.aclose()
    return g


async def publish(hub: HubProcess, resource: str, records: list[dict[str, Any]]) -> list[str]:
    registry = RegistryClient(hub.api, token=hub.token)
    try:
        sid = await registry.register(f"{resource}-value", json.dumps(schema(resource)))
    finally:
        await registry.aclose()
    parsed = framing.parse_schema(schema(resource))
    producer = AIOKafkaProducer(bootstrap_servers=hub.bootstrap, acks="all")
    await producer.start()
    ids = []
    try:
        for rec in records:
            eid = str(uuid.uuid4())
            ids.append(eid)
            await (await producer.send(ingress_topic(PROVIDER[resource]), framing.encode(sid, parsed, rec),
                                       headers=[(H_RESOURCE, resource.encode()), (H_EVENT_ID, eid.encode())]))
    finally:
        await producer.stop()
    return ids


class Caller:
    """A node's call client on the session hub."""

    def __init__(self, hub: HubProcess, node: str) -> None:
        self.hub = hub
        self.node = node
        self.registry = RegistryClient(hub.api, token=hub.token)
        self.client = CallClient(hub.bootstrap, self.registry, node)

    async def __aenter__(self) -> Caller:
        await self.client.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.stop()
        await self.registry.aclose()

    async def call(self, resource: str, **kw: Any) -> CallResult:
        return await self.client.call(resource, timeout=60, **kw)

    async def until(self, predicate: Callable[[CallResult], bool], resource: str, timeout: float = 60,
                    **kw: Any) -> CallResult:
        """Call again until the answer satisfies ``predicate`` (a record published a moment ago is on its way)."""
        deadline = time.monotonic() + timeout
        while True:
            result = await self.call(resource, **kw)
            if predicate(result) or time.monotonic() > deadline:
                return result
            await asyncio.sleep(0.3)


async def audits_of(hub: HubProcess, reader: TopicReader, request_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The `call` audit records of these requests (waiting for all of them)."""
    registry = RegistryClient(hub.api)
    found: dict[str, dict[str, Any]] = {}

    async def decode(records: list[Any]) -> None:
        for r in records:
            sid, body = framing.split(r.value)
            rec = framing.decode_body(body, (await registry.schema_by_id(sid)).parsed)
            if rec["action"] == "call" and rec["event_id"] in request_ids:
                assert rec["event_id"] not in found, f"two audit records for call {rec['event_id']}"
                found[rec["event_id"]] = rec

    try:
        ids = {i.encode() for i in request_ids}
        records = await reader.read_until(lambda rs: len({header(r, H_EVENT_ID) for r in rs} & ids) >= len(ids))
        await decode(records)
    finally:
        await registry.aclose()
    return found


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def metrics_after(hub: HubProcess, before: dict, wanted: list[tuple[str, dict[str, str], float]]) -> dict:
    """The metrics once every (name, labels) grew by at least n since ``before`` (counted just after the audit)."""
    deadline = time.monotonic() + 20
    while True:
        after = hub.metrics()
        if all(delta(after, before, name, **labels) >= n for name, labels, n in wanted) or time.monotonic() > deadline:
            return after
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------------------------- the round trip


async def test_a_call_returns_the_current_record_and_the_next_version(hub: HubProcess) -> None:
    rng = random.Random()
    rid = resident_id(rng)
    g = await grant(hub, "municipal.hrss", PERSON, ENROLMENT)
    audit_reader = await TopicReader(hub.bootstrap).start([AUDIT_TOPIC])
    before = hub.metrics()
    async with Caller(hub, "municipal.hrss") as hrss:
        await publish(hub, PERSON, [person(rid, phone="13900000001")])
        first = await hrss.until(lambda r: r.status == "ok", PERSON, scenario=ENROLMENT, key=rid)
        assert first.status == "ok", first.reply
        assert first.record is not None and first.record["resident_id"] == rid
        assert first.record["phone"] == "13900000001"
        assert first.reply["grant"] == g.id and first.reply["scenario"] == ENROLMENT
        assert first.reply["masked_fields"] == []  # hrss is cleared L3: nothing of a natural person above that
        await publish(hub, PERSON, [person(rid, phone="13900000002", status="moved_out")])
        second = await hrss.until(lambda r: (r.record or {}).get("phone") == "13900000002", PERSON,
                                  scenario=ENROLMENT, key=rid)
        assert second.status == "ok" and second.record is not None
        assert (second.record["phone"], second.record["status"]) == ("13900000002", "moved_out")
    try:
        audits = await audits_of(hub, audit_reader, {first.reply["request_id"], second.reply["request_id"]})
    finally:
        await audit_reader.stop()
    for rec in audits.values():
        assert (rec["action"], rec["decision"], rec["reason"]) == ("call", "allow", "ok")
        assert (rec["actor"], rec["counterparty"], rec["resource"], rec["grant"]) == (
            "municipal.hrss", "municipal.big-data", PERSON, g.id)
        assert rec["to_tier"] == "municipal" and rec["direction"] == "lateral" and rec["hash"]
        assert rec["source"].startswith("call.municipal.hrss.request/")
    after = await metrics_after(hub, before, [("hub_calls_total", {"to_tier": "municipal", "outcome": "ok"}, 2)])
    assert delta(after, before, "hub_calls_total", to_tier="municipal", outcome="ok") >= 2
    assert delta(after, before, "hub_events_total", kind="call", from_tier="municipal", to_tier="municipal",
                 outcome="ok") >= 2


async def test_each_error_status_is_a_reply_audited_and_counted(hub: HubProcess) -> None:
    rng = random.Random()
    await grant(hub, "municipal.hrss", PERSON, ENROLMENT)
    quota = await grant(hub, "district.310104", PERSON, ENROLMENT, daily_quota=1)
    audit_reader = await TopicReader(hub.bootstrap).start([AUDIT_TOPIC])
    quarantine = await TopicReader(hub.bootstrap).start(["quarantine.municipal.hrss"])
    before = hub.metrics()
    results: dict[str, CallResult] = {}
    async with Caller(hub, "municipal.hrss") as hrss, Caller(hub, "district.310104") as xuhui:
        results["not_found"] = await hrss.call(PERSON, scenario=ENROLMENT, key=resident_id(rng))
        results["unknown_resource"] = await hrss.call("municipal.nowhere.thing", scenario=ENROLMENT, key="1")
        results["missing_scenario"] = await hrss.call(PERSON, scenario=None, key=resident_id(rng))
        results["no_grant"] = await hrss.call(VACCINATION, scenario="vaccination-follow-up", key="v-1")
        results["denied"] = await hrss.call("municipal.health.severe-mental-disorder", scenario=ENROLMENT, key="c-1")
        results["error"] = await hrss.call(PERSON, scenario=ENROLMENT, field_name="name", value="张三丰")
        results["quota_first"] = await xuhui.call(PERSON, scenario=ENROLMENT, key=resident_id(rng, "310104"))
        results["quota_exceeded"] = await xuhui.call(PERSON, scenario=ENROLMENT, key=resident_id(rng, "310104"))
        # a request that does not decode: answered `error` when its id can be read, else quarantined
        garbled_id = f"garbled-{uuid.uuid4().hex[:8]}"
        fut = hrss.client._pending.setdefault(garbled_id, asyncio.get_running_loop().create_future())
        assert hrss.client.producer is not None
        unknown_schema = framing.HEADER.pack(0, 2_000_000_000) + b"junk"
        await hrss.client.producer.send_and_wait("call.municipal.hrss.request", unknown_schema,
                                                 headers=[(H_REQUEST_ID, garbled_id.encode())])
        garbled, _ = await asyncio.wait_for(fut, 60)
        lost_key = f"lost-{uuid.uuid4().hex[:8]}".encode()
        await hrss.client.producer.send_and_wait("call.municipal.hrss.request", b"not avro", key=b"\xff" + lost_key)
        # a node calls only as itself
        spoof = CallRequest(request_id=uuid.uuid4().hex, caller="municipal.health", resource=PERSON,
                            scenario=ENROLMENT, key="x", requested_at=int(time.time() * 1000))
        spoofed, _ = await asyncio.wait_for(await hrss.client.send(spoof), 60)
    for status in ("not_found", "unknown_resource", "missing_scenario", "no_grant", "denied", "error",
                   "quota_exceeded"):
        reply = results[status].reply
        assert reply["status"] == status, (status, reply)
        assert reply["record"] is None and (reply["message"] or status == "ok")
    assert results["quota_first"].status == "not_found"  # counted: the second call of the day is refused
    assert "1 calls a day" in results["quota_exceeded"].reply["message"]
    assert results["quota_exceeded"].reply["grant"] == quota.id
    assert "legal basis" in results["denied"].reply["message"]
    assert "not an indexed field" in results["error"].reply["message"]
    assert garbled["status"] == "error" and "not in the registry" in garbled["message"]
    assert spoofed["status"] == "denied" and "only as itself" in spoofed["message"]
    # every answered call is audited once, with its status as the reason
    ids = {r.reply["request_id"]: r.reply["status"] for r in results.values()}
    ids[garbled_id] = "error"
    ids[spoof.request_id] = "denied"
    try:
        audits = await audits_of(hub, audit_reader, set(ids))
    finally:
        await audit_reader.stop()
    assert {rid: a["reason"] for rid, a in audits.items()} == ids
    for rid, a in audits.items():
        assert a["decision"] == ("allow" if ids[rid] == "not_found" else "deny")
    # the one that could not be answered went to the caller's quarantine, with the reason
    got = await quarantine.read_until(lambda rs: any(r.key and lost_key in r.key for r in rs))
    await quarantine.stop()
    assert any(header(r, H_RULE) == b"bad_call_request" for r in got)
    after = await metrics_after(hub, before, [
        ("hub_calls_total", {"to_tier": "municipal", "outcome": "denied"}, 5),
        ("hub_calls_total", {"to_tier": "hub", "outcome": "denied"}, 1),
        ("hub_quarantined_total", {"rule": "bad_call_request"}, 1)])
    assert delta(after, before, "hub_calls_total", to_tier="municipal", outcome="denied") >= 5
    assert delta(after, before, "hub_calls_total", to_tier="hub", outcome="denied") >= 1  # unknown resource
    assert delta(after, before, "hub_calls_total", to_tier="municipal", outcome="error") >= 1
    assert delta(after, before, "hub_quarantined_total", rule="bad_call_request") >= 1


# ---------------------------------------------------------------------------------------------- index, masking, tiers


async def test_lookup_by_indexed_field_masking_and_row_scope(hub: HubProcess) -> None:
    rng = random.Random()
    rid = resident_id(rng)
    make = record_generator(schema(VACCINATION))
    doses = []
    for n in range(2):
        rec = make(rng)
        rec.update(record_id=f"vac-{uuid.uuid4().hex[:10]}", resident_id=rid, district="310115", dose_number=n + 1)
        doses.append(rec)
    await grant(hub, "municipal.civil-affairs", VACCINATION, "vaccination-follow-up")
    await grant(hub, "district.310115", PERSON, ENROLMENT, row_scope="own_district")
    other = resident_id(rng, "310104")
    await publish(hub, VACCINATION, doses[:1])
    await publish(hub, VACCINATION, doses[1:])
    await publish(hub, PERSON, [person(rid), person(other)])
    async with Caller(hub, "municipal.civil-affairs") as civil, Caller(hub, "district.310115") as pudong:
        # two doses of one resident: found through the resident_id index, the newest returned
        found = await civil.until(lambda r: r.status == "ok" and "2 records" in r.reply["message"], VACCINATION,
                                  scenario="vaccination-follow-up", field_name="resident_id", value=rid.lower())
        assert found.status == "ok", found.reply
        assert found.record is not None and found.record["record_id"] == doses[1]["record_id"]
        assert "resident_id" not in found.record and "resident_id" in found.reply["masked_fields"]  # L4 > L3
        # its primary key as a field is a key lookup
        by_key = await civil.call(VACCINATION, scenario="vaccination-follow-up", field_name="record_id",
                                  value=doses[0]["record_id"])
        assert by_key.status == "ok" and by_key.record is not None and by_key.record["dose_number"] == 1
        # a district sees its own residents, masked for its clearance (L2), and no one else's
        own = await pudong.until(lambda r: r.status == "ok", PERSON, scenario=ENROLMENT, key=rid)
        assert own.status == "ok" and own.record is not None
        assert own.record["resident_id"] == rid[:6] + "********" + rid[-4:]
        assert own.record["phone"] == "139****5678" and own.record["name"] == "张**"
        async with RegistryClient(hub.api) as registry:
            person_ids = await registry.subject_ids(f"{PERSON}-value")
        assert own.reply["schema_id"] not in person_ids  # a derived (masked) schema, registered in the registry
        elsewhere = await pudong.until(lambda r: r.status != "not_found", PERSON, scenario=ENROLMENT, key=other)
        assert elsewhere.status == "denied" and "310104" in elsewhere.reply["message"]


async def test_calls_to_national_data_count_as_calls_to_national_data(hub: HubProcess) -> None:
    rng = random.Random()
    record = record_generator(schema(CREDIT))(rng)
    record["record_id"] = f"cr-{uuid.uuid4().hex[:10]}"
    await grant(hub, "municipal.health", CREDIT, "medical-institution-licensing")
    before = hub.metrics()
    await publish(hub, CREDIT, [record])
    async with Caller(hub, "municipal.health") as health:
        result = await health.until(lambda r: r.status == "ok", CREDIT, scenario="medical-institution-licensing",
                                    field_name="uscc", value=record["uscc"])
    assert result.status == "ok" and result.record is not None and result.record["record_id"] == record["record_id"]
    after = await metrics_after(hub, before, [("hub_calls_total", {"to_tier": "national", "outcome": "ok"}, 1)])
    assert delta(after, before, "hub_calls_total", to_tier="national", outcome="ok") >= 1
    assert delta(after, before, "hub_events_total", kind="call", from_tier="municipal", to_tier="national",
                 outcome="ok") >= 1


# ---------------------------------------------------------------------------------------------- the CLI verbs


def run_cli(hub: HubProcess, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    port = hub.api.rsplit(":", 1)[1]
    env = dict(os.environ, HUB_BOOTSTRAP=hub.bootstrap, HUB_STATE_DIR=str(hub.state_dir), HUB_API_PORT=port,
               COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "hub.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


async def test_publish_subscribe_and_call_verbs(hub: HubProcess, tmp_path: Path) -> None:
    rng = random.Random()
    rid = resident_id(rng)
    await grant(hub, "municipal.hrss", PERSON, ENROLMENT)
    records = tmp_path / "people.jsonl"
    records.write_text("\n".join(json.dumps(jsonable(person(rid, phone=f"1390000000{n}")), ensure_ascii=False)
                                 for n in range(3)) + "\n", encoding="utf-8")
    published = run_cli(hub, "publish", "--node", "municipal.big-data", "--resource", PERSON, "--file",
                        str(records), "--json-output")
    assert published.returncode == 0, published.stderr
    summary = json.loads(published.stdout)
    assert summary["published"] == 3 and summary["topic"] == "ingress.municipal.big-data"
    # hrss subscribes to natural persons (a seed grant): its feed has them, decoded with the registry
    deadline = time.monotonic() + 90
    while True:
        read = await asyncio.to_thread(run_cli, hub, "subscribe", "--node", "municipal.hrss", "--from-beginning",
                                       "--json", "--timeout", "3")
        assert read.returncode == 0, read.stderr
        lines = [json.loads(line) for line in read.stdout.splitlines() if line.strip()]
        mine = [line for line in lines if line["headers"].get(H_EVENT_ID) in summary["event_ids"]]
        if len(mine) == 3 or time.monotonic() > deadline:
            break
    assert len(mine) == 3, read.stdout[-2000:]
    assert all(line["record"]["resident_id"] == rid and line["headers"][H_RESOURCE] == PERSON for line in mine)
    assert all(line["schema_id"] == summary["schema_id"] for line in mine)
    first = run_cli(hub, "subscribe", "--node", "municipal.hrss", "--from-beginning", "--max", "1")
    assert first.returncode == 0 and "offset" in first.stdout  # the table form
    # the call verb returns the current (last) version
    deadline = time.monotonic() + 60
    while True:
        called = await asyncio.to_thread(run_cli, hub, "call", "--node", "municipal.hrss", "--resource", PERSON,
                                         "--scenario", ENROLMENT, "--key", rid, "--json")
        answer = json.loads(called.stdout) if called.stdout.strip() else {}
        if (answer.get("record") or {}).get("phone") == "13900000002" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert called.returncode == 0, (called.stdout, called.stderr)
    assert answer["status"] == "ok" and answer["record"]["phone"] == "13900000002"
    # a refusal exits 1 with the status; the human form names it
    refused = run_cli(hub, "call", "--node", "municipal.hrss", "--resource", VACCINATION, "--scenario",
                      "vaccination-follow-up", "--key", "v-none")
    assert refused.returncode == 1 and "no_grant" in refused.stdout
