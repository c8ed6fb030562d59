"""The first exchange end to end on the real broker: publish -> decode/validate -> feeds, audit, counters,
quarantine; and a record produced by confluent_kafka's own AvroSerializer."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer

from hub.contract import (
    AUDIT_TOPIC,
    FEED_PREFIX,
    H_EVENT_ID,
    H_LINEAGE,
    H_PROVIDER,
    H_RESOURCE,
    H_RULE,
    H_SCENARIO,
    OPERATOR,
    feed_topic,
)
from hub.demo.data import record_generator
from hub.identifiers import DISTRICT_CODES
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT

from .hubproc import HubProcess, TopicReader, header

pytestmark = pytest.mark.integration

RESOURCE = "municipal.health.vaccination"
SUBJECT = "municipal.health.vaccination-value"
INGRESS = "ingress.municipal.health"
SCHEMA = json.loads((REPO_ROOT / "schemas/health/vaccination_record.avsc").read_text())
PARSED = framing.parse_schema(SCHEMA)
DISTRICT_FEEDS = [f"feed.district.{c}" for c in DISTRICT_CODES]
LATERAL_FEED = "feed.municipal.civil-affairs"


async def publish(hub: HubProcess, items: list[tuple[bytes | None, list[tuple[str, bytes]]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=hub.bootstrap, linger_ms=2)
    await producer.start()
    try:
        for value, headers in items:
            await (await producer.send(INGRESS, value, headers=headers))
    finally:
        await producer.stop()


async def schema_id(hub: HubProcess) -> int:
    client = RegistryClient(hub.api, token=hub.token)
    try:
        return await client.register(SUBJECT, json.dumps(SCHEMA))
    finally:
        await client.aclose()


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_records_reach_entitled_feeds_with_audit_and_counters(hub: HubProcess) -> None:
    sid = await schema_id(hub)
    make = record_generator(SCHEMA)
    rng = random.Random(11)
    records = []
    for district in ("310115", "310104", "310151", "310101", "310115"):
        rec = make(rng)
        rec["district"] = district
        records.append((str(uuid.uuid4()), rec))
    reader = await TopicReader(hub.bootstrap).start([LATERAL_FEED, *DISTRICT_FEEDS, AUDIT_TOPIC])
    before = hub.metrics()
    try:
        await publish(hub, [(framing.encode(sid, PARSED, r), [(H_RESOURCE, RESOURCE.encode()),
                                                                (H_EVENT_ID, eid.encode())])
                            for eid, r in records])
        ids = {eid for eid, _ in records}

        def ours(rs):
            return [r for r in rs if (header(r, H_EVENT_ID) or b"").decode() in ids]

        got = ours(await reader.read_until(lambda rs: len(ours(rs)) >= 2 * len(ids) + len(ids)))  # feeds, audits
    finally:
        await reader.stop()
    feeds = [r for r in got if r.topic.startswith("feed.")]
    audits = [r for r in got if r.topic == AUDIT_TOPIC]
    # each record: the lateral subscriber and exactly its own district, nothing else
    for eid, rec in records:
        topics = sorted(r.topic for r in feeds if header(r, H_EVENT_ID) == eid.encode())
        assert topics == sorted([LATERAL_FEED, f"feed.district.{rec['district']}"]), eid
    for r in feeds:
        assert header(r, H_RESOURCE) == RESOURCE.encode()
        assert header(r, H_PROVIDER) == b"municipal.health"
        assert json.loads(header(r, H_LINEAGE))[0] == "municipal.health"
        assert header(r, H_SCENARIO)
    # masked per consumer on every transfer, decodable with the consumer-side schema the registry holds
    originals = {eid: rec for eid, rec in records}
    async with RegistryClient(hub.api, token=hub.token) as client:
        for r in feeds:
            sid_out, body = framing.split(r.value)
            assert sid_out != sid  # a derived schema: no consumer here is cleared for L4
            delivered = framing.decode_body(body, (await client.schema_by_id(sid_out)).parsed)
            original = originals[header(r, H_EVENT_ID).decode()]
            assert "resident_id" not in delivered  # L4 above every consumer's clearance: dropped
            assert delivered["district"] == original["district"] and delivered["record_id"] == original["record_id"]
            if r.topic == LATERAL_FEED:  # cleared to L3: name and phone as published
                assert delivered["name"] == original["name"]
            else:  # districts are cleared to L2: L3 fields partially masked
                assert delivered["name"] != original["name"] and delivered["name"][0] == original["name"][0]
                assert "*" in delivered["name"]
    # exactly one audit record per event: its publish, listing each delivery
    actions: Counter[tuple[str, str]] = Counter()
    delivered_to: dict[str, list[str]] = {}
    client = RegistryClient(hub.api, token=hub.token)
    try:
        for a in audits:
            aid, body = framing.split(a.value)
            rec = framing.decode_body(body, (await client.schema_by_id(aid)).parsed)
            actions[(rec["action"], rec["event_id"])] += 1
            assert rec["audit_id"] == f"{rec['event_id']}/publish/-" and rec["source"].startswith("ingress.")
            for d in rec["deliveries"]:
                assert d["decision"] == "allow"
                assert "resident_id" in d["masked_fields"]  # the audit names the masked fields, never their values
                delivered_to.setdefault(rec["event_id"], []).append(f"feed.{d['counterparty']}")
    finally:
        await client.aclose()
    assert sorted(actions) == sorted(("publish", eid) for eid in ids) and all(n == 1 for n in actions.values())
    assert sum(len(v) for v in delivered_to.values()) == len(feeds) == 2 * len(records)
    for eid, rec in records:
        assert sorted(delivered_to[eid]) == sorted([LATERAL_FEED, f"feed.district.{rec['district']}"])
    # counters moved by exactly what was delivered
    after = hub.metrics()
    assert delta(after, before, "hub_records_delivered_total", direction="down") == len(records)
    assert delta(after, before, "hub_records_delivered_total", direction="lateral") == len(records)
    assert delta(after, before, "hub_events_total", kind="publish", from_tier="municipal",
                 to_tier="municipal", outcome="ok") == len(records)
    assert delta(after, before, "hub_events_total", kind="deliver", from_tier="municipal",
                 to_tier="district", outcome="ok") == len(records)


async def test_malformed_records_are_quarantined_and_the_worker_carries_on(hub: HubProcess) -> None:
    sid = await schema_id(hub)
    rng = random.Random(5)
    good = framing.encode(sid, PARSED, record_generator(SCHEMA)(rng))
    res = [(H_RESOURCE, RESOURCE.encode())]
    cases = {
        "bad_magic": (b"\x05" + good[1:], res),
        "unknown_schema": (framing.HEADER.pack(0, 2_000_000_000) + good[5:], res),
        "truncated": (good[: len(good) - 7], res),
        "missing_header": (good, []),
    }
    items, good_ids, bad_ids = [], set(), {}
    for rule, (value, headers) in cases.items():
        bad_id, good_id = str(uuid.uuid4()), str(uuid.uuid4())
        bad_ids[bad_id] = rule
        good_ids.add(good_id)
        items.append((value, headers + [(H_EVENT_ID, bad_id.encode())]))
        items.append((good, res + [(H_EVENT_ID, good_id.encode())]))
    reader = await TopicReader(hub.bootstrap).start(["quarantine.municipal.health", LATERAL_FEED])
    before = hub.metrics()
    try:
        await publish(hub, items)

        def seen(rs):
            ids = {(header(r, H_EVENT_ID) or b"").decode() for r in rs}
            return good_ids | set(bad_ids) <= ids

        got = await reader.read_until(seen)
    finally:
        await reader.stop()
    quarantined = {(header(r, H_EVENT_ID) or b"").decode(): r for r in got if r.topic.startswith("quarantine")}
    client = RegistryClient(hub.api, token=hub.token)
    try:
        for bad_id, rule in bad_ids.items():
            record = quarantined[bad_id]
            qsid, body = framing.split(record.value)
            body_rec = framing.decode_body(body, (await client.schema_by_id(qsid)).parsed)
            assert body_rec["rule"] == rule and body_rec["reason"], body_rec
            assert header(record, H_RULE) == rule.encode()
            assert body_rec["original_value"] == cases[rule][0]
    finally:
        await client.aclose()
    delivered = {(header(r, H_EVENT_ID) or b"").decode() for r in got if r.topic == LATERAL_FEED}
    assert good_ids <= delivered
    after = hub.metrics()
    for rule in cases:
        assert delta(after, before, "hub_quarantined_total", rule=rule) == 1


async def test_confluent_avro_serializer_record_is_accepted(hub: HubProcess) -> None:
    """A record from confluent_kafka's own Producer + AvroSerializer against the hub's registry is delivered."""
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    # the serializer registers under ingress.municipal.health-value (topic name strategy): a registry write, so it
    # authenticates, here as the operator (a provider would send its node id and token)
    registry = SchemaRegistryClient({"url": hub.api, "basic.auth.user.info": f"hub:{hub.token}"})
    serializer = AvroSerializer(registry, json.dumps(SCHEMA))
    record = record_generator(SCHEMA)(random.Random(3))
    record["district"] = "310112"
    event_id = str(uuid.uuid4())
    value = serializer(record, SerializationContext(INGRESS, MessageField.VALUE))
    reader = await TopicReader(hub.bootstrap).start([LATERAL_FEED, "feed.district.310112"])
    try:
        producer = Producer({"bootstrap.servers": hub.bootstrap})
        producer.produce(INGRESS, value=value, key=record["record_id"].encode(),
                         headers=[(H_RESOURCE, RESOURCE.encode()), (H_EVENT_ID, event_id.encode())])
        assert producer.flush(30) == 0

        def ours(rs):
            return [r for r in rs if header(r, H_EVENT_ID) == event_id.encode()]

        got = ours(await reader.read_until(lambda rs: len(ours(rs)) >= 2))
    finally:
        await reader.stop()
    assert sorted(r.topic for r in got) == sorted([LATERAL_FEED, "feed.district.310112"])
    assert all(r.key == record["record_id"].encode() for r in got)


async def test_report_up_regional_share_and_locality_in_one_publish(hub: HubProcess) -> None:
    """A business licence is reported up to feed.national, shared with the YRD peers holding grants
    (feed.region.js, feed.region.zj) and returned to its district, each with the right lineage."""
    schema = json.loads((REPO_ROOT / "schemas/market/business_licence.avsc").read_text())
    subject = "municipal.market.business-licence-value"
    async with RegistryClient(hub.api, token=hub.token) as client:
        sid = await client.register(subject, json.dumps(schema))
    record = record_generator(schema)(random.Random(21))
    record["district"] = "310105"
    event_id = str(uuid.uuid4())
    expected = {"feed.national": "up", "feed.region.js": "regional", "feed.region.zj": "regional",
                "feed.district.310105": "down"}
    reader = await TopicReader(hub.bootstrap).start([*expected, AUDIT_TOPIC])
    try:
        producer = AIOKafkaProducer(bootstrap_servers=hub.bootstrap)
        await producer.start()
        try:
            await (await producer.send("ingress.municipal.market", framing.encode(sid, framing.parse_schema(schema),
                                                                                 record),
                                       headers=[(H_RESOURCE, b"municipal.market.business-licence"),
                                                (H_EVENT_ID, event_id.encode()),
                                                (H_PROVIDER, b"national")]))  # forged: the hub ignores it
        finally:
            await producer.stop()

        def ours(rs):
            return [r for r in rs if header(r, H_EVENT_ID) == event_id.encode()]

        got = ours(await reader.read_until(lambda rs: len(ours(rs)) >= len(expected) + 1))  # feeds + the audit
    finally:
        await reader.stop()
    feeds = {r.topic: r for r in got if r.topic.startswith("feed.")}
    assert set(feeds) == set(expected)
    for topic, r in feeds.items():
        assert header(r, H_PROVIDER) == b"municipal.market"  # never the publisher's forged header
        assert json.loads(header(r, H_LINEAGE)) == ["municipal.market", OPERATOR, topic.removeprefix(FEED_PREFIX)]
    async with RegistryClient(hub.api, token=hub.token) as client:
        directions = {}
        for a in (r for r in got if r.topic == AUDIT_TOPIC):
            aid, body = framing.split(a.value)
            rec = framing.decode_body(body, (await client.schema_by_id(aid)).parsed)
            if rec["action"] == "publish":
                directions.update({feed_topic(d["counterparty"]): d["direction"] for d in rec["deliveries"]
                                   if d["decision"] == "allow"})
    assert directions == expected
