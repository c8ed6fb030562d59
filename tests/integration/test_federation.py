"""Two platforms on two Kafka clusters, linked by one MirrorMaker 2 process (docs/federation.md).

The municipal hub (``shanghai``) reports business licences up to the national platform's hub (``national``), and
the national hub shares credit records down; each side's gateway translates schema ids into its own registry and
its hub validates, routes and audits what crosses. MM2 is SIGKILLed and restarted under load: every event arrives
and the national hub audits each exactly once. A consumer group's offset committed on the source appears
translated on the target (MM2 checkpoints + group offset sync). ``make federation`` runs this module.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hub.broker.manager import LocalBroker, free_port
from hub.contract import AUDIT_TOPIC, H_EVENT_ID, H_LINEAGE, H_RESOURCE, H_RULE, feed_topic, quarantine_topic
from hub.demo.data import record_generator
from hub.federation.model import Link, load_federation_config, mirrored_resource_id
from hub.federation.processes import Gateway, MirrorMaker
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings

from .hubproc import HubProcess, start_hub, topic_partitions, until

pytestmark = [pytest.mark.integration, pytest.mark.federation]

LICENCE = "municipal.market.business-licence"  # report_up: municipal -> national
CREDIT = "national.enterprise-credit"  # shared down: national -> municipal.health
LICENCE_SCHEMA = json.loads((REPO_ROOT / "schemas/market/business_licence.avsc").read_text())
CREDIT_SCHEMA = json.loads((REPO_ROOT / "schemas/national/enterprise_credit_record.avsc").read_text())
AUDIT_PARSED = framing.parse_schema((REPO_ROOT / "schemas/hub/audit_record.avsc").read_text())
SCENARIO = "medical-institution-licensing"
UP = Link(source="shanghai", target="national", export_node="national", peer_node="region.shanghai",
          resources=(LICENCE,))
DOWN = Link(source="national", target="shanghai", export_node="region.shanghai", peer_node="national",
            resources=(CREDIT,))


@dataclass
class Federation:
    shanghai: HubProcess
    national: HubProcess
    config_file: Path
    settings: Settings  # the state dir of the federation's processes
    mm2: MirrorMaker


def _broker(tmp: Path) -> LocalBroker:
    return LocalBroker(Settings(state_dir=tmp, broker_heap="512m"))


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    brokers = [_broker(tmp_path_factory.mktemp(f"fed-broker-{name}")) for name in ("shanghai", "national")]
    infos = [b.start(port=free_port(), controller_port=free_port(), owned=True)[0] for b in brokers]
    hubs: list[HubProcess] = []
    gateways: list[Gateway] = []
    mm2: MirrorMaker | None = None
    try:
        for name, info in zip(("shanghai", "national"), infos, strict=True):
            hubs.append(start_hub(info.bootstrap, tmp_path_factory.mktemp(f"fed-hub-{name}"), free_port(),
                                  f"fed-{name}-{uuid.uuid4().hex[:6]}"))
        state = tmp_path_factory.mktemp("fed-state")
        config_file = state / "federation.yaml"
        config_file.write_text(yaml.safe_dump({
            "platforms": {name: {"bootstrap": hub.bootstrap, "api": hub.api,
                                 "token_file": str(hub.state_dir / "operator.token")}
                          for name, hub in zip(("shanghai", "national"), hubs, strict=True)},
            "links": [json.loads(UP.model_dump_json()), json.loads(DOWN.model_dump_json())],
        }))
        settings = Settings(state_dir=state)
        config = load_federation_config(config_file)
        gateways = [Gateway(settings, config_file, link) for link in config.links]
        for gateway in gateways:
            gateway.start(owned=True)
        mm2 = MirrorMaker(settings, config)
        mm2.start(owned=True)
        yield Federation(hubs[0], hubs[1], config_file, settings, mm2)
    finally:
        if mm2 is not None:
            mm2.stop()
        for gateway in gateways:
            gateway.stop()
        for hub in hubs:
            hub.stop()
        for broker in brokers:
            broker.stop()


# ---------------------------------------------------------------- helpers
async def api_json(hub: HubProcess, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    import httpx

    async with httpx.AsyncClient(base_url=hub.api, headers={"Authorization": f"Bearer {hub.token}"}) as http:
        response = await http.request(method, path, json=body, timeout=15)
        return response.status_code, (response.json() if response.content else None)


async def grant(hub: HubProcess, consumer: str, resource: str) -> None:
    status, body = await api_json(hub, "POST", "/v1/grants",
                                  {"consumer": consumer, "resource": resource, "scenario": SCENARIO})
    assert status == 201 and body["state"] == "active", body  # type: ignore[index]


async def catalogued(hub: HubProcess, resource: str) -> bool:
    return (await api_json(hub, "GET", f"/v1/resources/{resource}"))[0] == 200


async def events(hub: HubProcess, resource: str, schema: dict, n: int, seed: int) -> tuple[int, list[tuple[str, dict]]]:
    async with RegistryClient(hub.api) as registry:
        schema_id, _, _ = await registry.latest(f"{resource}-value")
    make, rng = record_generator(schema), random.Random(seed)
    return schema_id, [(f"{resource}-{uuid.uuid4()}", make(rng)) for _ in range(n)]


async def publish(bootstrap: str, node: str, resource: str, schema_id: int, schema: dict,
                  batch: list[tuple[str, dict]], rate: float | None = None) -> None:
    parsed = framing.parse_schema(schema)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i, (event_id, record) in enumerate(batch):
            futures.append(await producer.send(f"ingress.{node}", framing.encode(schema_id, parsed, record),
                                               headers=[(H_RESOURCE, resource.encode()),
                                                        (H_EVENT_ID, event_id.encode())]))
            if rate and i % 50 == 49:
                await asyncio.sleep(50 / rate)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str) -> list:
    """Every record of a topic, from the start to the end offsets taken now (nothing if it does not exist yet)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        out: list = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for msgs in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                out.extend(msgs)
        return out
    finally:
        await consumer.stop()


def event_ids(records: list) -> Counter[str]:
    return Counter(dict(m.headers).get(H_EVENT_ID, b"").decode() for m in records)


async def audited(hub: HubProcess) -> Counter[str]:
    """Event id -> audit records of that event on the hub's audit log."""
    out: Counter[str] = Counter()
    for m in await read_topic(hub.bootstrap, AUDIT_TOPIC):
        out[framing.decode_body(framing.split(m.value)[1], AUDIT_PARSED)["event_id"]] += 1
    return out


async def arrived(hub: HubProcess, topic: str, wanted: set[str], timeout: float, what: str) -> list:
    async def probe() -> list:
        return await read_topic(hub.bootstrap, topic)

    try:
        return await until(probe, lambda got: wanted <= set(event_ids(got)), timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {len(wanted - set(event_ids(await probe())))} of {len(wanted)} missing; "
                             f"where the records are: {await whereabouts()}") from exc


WATCHED: list[tuple[str, str]] = []  # (bootstrap, topic) the failure message reports on


async def whereabouts() -> dict[str, object]:
    """Records per watched topic, and the rule and reason of the last quarantined one (a failing test says where
    the records stopped)."""
    out: dict[str, object] = {}
    for bootstrap, topic in WATCHED:
        records = await read_topic(bootstrap, topic)
        out[f"{bootstrap}/{topic}"] = len(records)
        if topic.startswith("quarantine.") and records:
            out[f"{topic} last"] = (records[-1].headers, records[-1].value[-300:])
    return out


def federation_cli(fed: Federation, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli.main", "federation", *args, "--config",
                           str(fed.config_file)], env=dict(os.environ, HUB_STATE_DIR=str(fed.settings.state_dir)),
                          capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- the test
async def test_report_up_share_down_survive_mm2_restart_and_translate_offsets(federation: Federation) -> None:
    fed = federation
    sh, nat = fed.shanghai, fed.national
    mirrored_licence, mirrored_credit = mirrored_resource_id("region.shanghai", LICENCE), \
        mirrored_resource_id("national", CREDIT)
    WATCHED[:] = [(sh.bootstrap, "ingress.municipal.market"), (sh.bootstrap, UP.source_topic),
                  (nat.bootstrap, UP.target_topic), (nat.bootstrap, UP.ingress), (nat.bootstrap, "feed.national"),
                  (nat.bootstrap, quarantine_topic(UP.peer_node)), (sh.bootstrap, quarantine_topic("municipal.market")),
                  (nat.bootstrap, "ingress.national"), (nat.bootstrap, DOWN.source_topic),
                  (sh.bootstrap, DOWN.target_topic), (sh.bootstrap, DOWN.ingress),
                  (sh.bootstrap, quarantine_topic(DOWN.peer_node))]
    # the gateways register the peer nodes, the mirrored subjects and catalogue entries on their side
    await until(lambda: catalogued(nat, mirrored_licence), bool, 90, "the mirrored licence entry on national")
    await until(lambda: catalogued(sh, mirrored_credit), bool, 90, "the mirrored credit entry on shanghai")
    await grant(nat, "region.shanghai", CREDIT)  # the national platform shares credit records with Shanghai
    await grant(sh, "municipal.health", mirrored_credit)  # ... which Shanghai passes on to its health commission

    # 1. reporting up: municipal.market -> shanghai hub -> feed.national -> MM2 -> national hub -> its feed.national
    licence_id, licences = await events(sh, LICENCE, LICENCE_SCHEMA, 200, seed=1)
    await publish(sh.bootstrap, "municipal.market", LICENCE, licence_id, LICENCE_SCHEMA, licences)
    up_ids = {eid for eid, _ in licences}
    got = await arrived(nat, feed_topic("national"), up_ids, 150, "licences reported up to the national platform")
    sample = next(m for m in got if dict(m.headers)[H_EVENT_ID].decode() in up_ids)
    assert json.loads(dict(sample.headers)[H_LINEAGE]) == [
        "municipal.market", "hub", "national", "region.shanghai", "hub", "national"]
    assert dict(sample.headers)[H_RESOURCE].decode() == mirrored_licence
    # the national hub decodes with its own copy of Shanghai's schema, under the mirrored subject
    async with RegistryClient(nat.api) as registry:
        mirrored_ids = await registry.subject_ids(f"shanghai.{LICENCE}-value")
    assert framing.split(sample.value)[0] in mirrored_ids

    # 2. sharing down: national -> national hub -> feed.region.shanghai -> MM2 -> shanghai hub -> municipal.health
    credit_id, credits = await events(nat, CREDIT, CREDIT_SCHEMA, 100, seed=2)
    await publish(nat.bootstrap, "national", CREDIT, credit_id, CREDIT_SCHEMA, credits)
    down = await arrived(sh, feed_topic("municipal.health"), {eid for eid, _ in credits}, 120,
                         "credit records shared down to the municipal health commission")
    sample = next(m for m in down if dict(m.headers)[H_RESOURCE].decode() == mirrored_credit)
    assert json.loads(dict(sample.headers)[H_LINEAGE]) == [
        "national", "hub", "region.shanghai", "national", "hub", "municipal.health"]

    # 3. a record that fails validation on the receiving side lands in that side's quarantine, with its reason
    # (written straight to the mirrored topic, as a corrupted or forged copy would arrive)
    broken = framing.frame(licence_id, b"\xff\xff\xff")  # the source id, a body no Avro decoder accepts
    foreign = framing.frame(987_654, b"\x00")  # an id the source registry never issued: it cannot be translated
    producer = AIOKafkaProducer(bootstrap_servers=nat.bootstrap, acks="all")
    await producer.start()
    try:
        for value, event_id in ((broken, b"broken-1"), (foreign, b"foreign-1")):
            await producer.send_and_wait(UP.target_topic, value, headers=[
                (H_RESOURCE, LICENCE.encode()), (H_EVENT_ID, event_id)])
    finally:
        await producer.stop()
    quarantined = await arrived(nat, quarantine_topic("region.shanghai"), {"broken-1", "foreign-1"}, 60,
                                "the crossings that fail validation in the national quarantine")
    rules = {dict(m.headers)[H_EVENT_ID]: dict(m.headers)[H_RULE] for m in quarantined}
    assert rules[b"foreign-1"] == b"unknown_schema"  # re-framed with id 0, never decoded with an unrelated schema
    assert rules[b"broken-1"] not in (b"unknown_schema", b"schema_not_bound"), rules  # translated, then undecodable

    # 4. MM2 SIGKILLed and restarted under load: nothing lost, each event audited once on the national side
    _, more = await events(sh, LICENCE, LICENCE_SCHEMA, 900, seed=3)
    load = asyncio.ensure_future(publish(sh.bootstrap, "municipal.market", LICENCE, licence_id, LICENCE_SCHEMA,
                                         more, rate=300))
    more_ids = {eid for eid, _ in more}

    async def crossed() -> int:
        return len(set(event_ids(await read_topic(nat.bootstrap, UP.target_topic))) & more_ids)

    await until(crossed, lambda n: n >= 150, 90, "part of the load crossed before the kill")
    fed.mm2.kill()
    fed.mm2.start(owned=True)
    await load
    await arrived(nat, feed_topic("national"), more_ids, 150, "every event after the MM2 restart")
    everything = up_ids | more_ids
    audits = await until(lambda: audited(nat), lambda a: everything <= set(a), 60, "every crossing audited")
    assert max(audits[e] for e in everything) == 1  # re-sent copies are dropped by event id, audited once

    # 5. offsets are translated: a group's commit on feed.national (shanghai) appears on its mirror (national)
    group = f"failover-{uuid.uuid4().hex[:6]}"
    reader = AIOKafkaConsumer(bootstrap_servers=sh.bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        tps = await topic_partitions(sh.bootstrap, [UP.source_topic])
        reader.assign(tps)
        source_ends = await reader.end_offsets(tps)
        await reader.commit({tp: source_ends[tp] for tp in tps})
    finally:
        await reader.stop()
    target_tps = [TopicPartition(UP.target_topic, tp.partition) for tp in tps]

    async def translated() -> dict[int, int]:
        probe = AIOKafkaConsumer(bootstrap_servers=nat.bootstrap, group_id=group, enable_auto_commit=False)
        await probe.start()
        try:
            return {tp.partition: (await probe.committed(tp)) or -1 for tp in target_tps}
        finally:
            await probe.stop()

    offsets = await until(translated, lambda o: all(v > 0 for v in o.values()), 90,
                          "the group's translated offsets on the target")
    probe = AIOKafkaConsumer(bootstrap_servers=nat.bootstrap)
    await probe.start()
    try:
        target_ends = await probe.end_offsets(target_tps)
    finally:
        await probe.stop()
    for tp in target_tps:  # a failed-over consumer resumes at most offset.lag.max records early, never late
        assert target_ends[tp] - 20 <= offsets[tp.partition] <= target_ends[tp], (offsets, target_ends)

    # 6. hub federation status: both links, no lag, a last transfer time
    async def status() -> dict:
        result = await asyncio.to_thread(federation_cli, fed, "status", "--json")
        return json.loads(result.stdout) if result.returncode == 0 else {"error": result.stderr}

    report = await until(status, lambda r: all(link["lag"] == 0 for link in r.get("links", [])), 60, "no lag")
    assert {link["link"] for link in report["links"]} == {"shanghai->national", "national->shanghai"}
    assert all(link["last_transfer_ms"] for link in report["links"]) and report["mm2"] is not None
