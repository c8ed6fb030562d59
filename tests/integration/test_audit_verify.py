"""``hub audit verify`` on the real broker: an untouched copy of an audit log passes; a copy altered in each
of the four ways (a record changed, removed, reordered, inserted) fails at the right partition and offset.

The log is a sealed chain on two partitions, written as Confluent-framed Avro with the AuditRecord schema
registered in the session hub's registry; each copy is the original read back from Kafka and re-produced
with one alteration in partition 1, and the CLI runs as a user runs it, in a child process. Partition 1
holds the hub's audit records (one per event, its deliveries listed in it); partition 0 records of the
format before ``deliveries`` (one per delivery), which must verify unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hub.audit.chain import ChainWriter, resume_state, seal
from hub.audit.records import delivery_entry, publish_record
from hub.audit.verify import latest_verification
from hub.broker.topics import ensure_topics
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings

from .hubproc import HubProcess

pytestmark = pytest.mark.integration

AUDIT_JSON = (REPO_ROOT / "schemas/hub/audit_record.avsc").read_text(encoding="utf-8")
NOW = 1_767_225_600_000
SIZES = {0: 30, 1: 40}  # audit records per partition (checkpoints come on top, every 10)

Message = tuple[bytes | None, bytes]  # key, value


def audit(partition: int, i: int) -> dict[str, Any]:
    """Partition 1: a publish record as the hub writes it; partition 0: a deliver record of the older format."""
    event = f"00000000-0000-4000-8000-{partition:04d}{i:08d}"
    if partition == 1:
        return publish_record(NOW + i, event, "municipal.health", "municipal.health.vaccination", "municipal",
                              f"{i:064x}", f"ingress.municipal.health/{partition}/{i}", [
                                  delivery_entry("district.310115", "vaccination-follow-up", "g-1", "district",
                                                 "down", "allow", "locality-return", ["name"]),
                                  delivery_entry("national", None, None, "national", "up", "allow", "report-up"),
                                  delivery_entry("municipal.civil-affairs", "vaccination-follow-up", "g-2",
                                                 "municipal", "lateral", "deny", "grant_revoked"),
                              ])
    return {
        "event_id": event, "audit_id": f"{event}/deliver/district.310115", "ts": NOW + i, "action": "deliver",
        "actor": "municipal.health", "counterparty": "district.310115", "resource": "municipal.health.vaccination",
        "scenario": "vaccination-follow-up", "grant": "g-1", "from_tier": "municipal", "to_tier": "district",
        "direction": "down", "decision": "allow", "reason": "subscription", "key_hash": f"{i:064x}",
        "masked_fields": ["name"], "prev_hash": None, "hash": None,
        "source": f"ingress.municipal.health/{partition}/{i}",
    }


async def produce(bootstrap: str, topic: str, partitions: dict[int, list[Message]]) -> None:
    await ensure_topics(Settings(), bootstrap, [topic], partitions=len(partitions))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for partition, messages in partitions.items():
            for key, value in messages:
                await producer.send(topic, value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def read_back(bootstrap: str, topic: str) -> dict[int, list[Message]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in SIZES]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out: dict[int, list[Message]] = {p: [] for p in SIZES}
        for tp in tps:
            consumer.seek(tp, 0)
        while any(len(out[tp.partition]) < ends[tp] for tp in tps):
            for tp, msgs in (await consumer.getmany(timeout_ms=1000)).items():
                out[tp.partition] += [(m.key, m.value) for m in msgs]
        return out
    finally:
        await consumer.stop()


def run_verify(hub: HubProcess, topic: str, state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HUB_STATE_DIR=str(state_dir))
    env.pop("HUB_AUDIT_HMAC_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "hub.cli.main", "audit", "verify", "--topic", topic, "--bootstrap", hub.bootstrap,
         "--registry", hub.api, *args],
        env=env, capture_output=True, text=True, timeout=180,
    )


@pytest.fixture(scope="module")
async def original(hub: HubProcess) -> dict[str, Any]:
    """A sealed two-partition audit log on the broker, and how to encode and decode its records."""
    token = (hub.state_dir / "operator.token").read_text().strip()
    async with RegistryClient(hub.api, auth=("hub", token)) as registry:
        schema_id = await registry.register(f"audit-verify-{os.getpid()}-value", AUDIT_JSON)
        parsed = (await registry.schema_by_id(schema_id)).parsed
    encode = framing.make_encoder(schema_id, AUDIT_JSON)
    sealed = {
        p: ChainWriter(p, checkpoint_every=10).seal_batch([audit(p, i) for i in range(n)], NOW)
        for p, n in SIZES.items()
    }
    topic = f"audit-original-{os.getpid()}-{hub.api.rsplit(':', 1)[1]}"
    await produce(hub.bootstrap, topic, {
        p: [(r["event_id"].encode(), encode(r)) for r in records] for p, records in sealed.items()
    })
    messages = await read_back(hub.bootstrap, topic)
    assert {p: len(m) for p, m in messages.items()} == {p: len(rs) for p, rs in sealed.items()}

    def decode(value: bytes) -> dict[str, Any]:
        return framing.decode_body(framing.split(value)[1], parsed)

    return {"topic": topic, "messages": messages, "encode": encode, "decode": decode, "sealed": sealed}


def change(messages: list[Message], at: int, original: dict[str, Any]) -> None:
    record = original["decode"](messages[at][1])
    record["deliveries"][0]["counterparty"] = "district.310101"  # e.g. hide to whom a record really went
    messages[at] = (messages[at][0], original["encode"](record))


def remove(messages: list[Message], at: int, original: dict[str, Any]) -> None:
    del messages[at]


def reorder(messages: list[Message], at: int, original: dict[str, Any]) -> None:
    messages[at], messages[at + 1] = messages[at + 1], messages[at]


def insert(messages: list[Message], at: int, original: dict[str, Any]) -> None:
    """A forged record sealed in place: the right seq and prev_hash and a valid hash (no key needed)."""
    before = original["decode"](messages[at - 1][1])
    forged = audit(1, 999)
    forged["deliveries"][0]["counterparty"] = "district.310101"
    seal(forged, before["hash"], before["seq"] + 1)
    messages.insert(at, (forged["event_id"].encode(), original["encode"](forged)))


ALTERATIONS: list[tuple[Callable[[list[Message], int, dict[str, Any]], None], int, str]] = [
    (change, 7, "changed"),
    (remove, 12, "removed"),
    (reorder, 21, "reordered"),
    (insert, 33, "inserted"),
]


async def test_an_untouched_copy_of_the_audit_log_verifies(
    hub: HubProcess, original: dict[str, Any], tmp_path: Path
) -> None:
    copy_topic = f"{original['topic']}-copy"
    await produce(hub.bootstrap, copy_topic, original["messages"])
    done = run_verify(hub, copy_topic, tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["first_break"] is None
    assert report["records"] == sum(len(m) for m in original["messages"].values())
    for p in report["partitions"]:
        assert p["ok"] and p["first_seq"] == 0 and p["head_seq"] == len(original["messages"][p["partition"]]) - 1
        assert p["checkpoints"] == SIZES[p["partition"]] // 10
    saved = latest_verification(Settings(state_dir=tmp_path), copy_topic)
    assert saved is not None and saved.ok and set(saved.anchors) == {0, 1}
    human = run_verify(hub, copy_topic, tmp_path)  # now also against the anchors just saved
    assert human.returncode == 0, human.stdout + human.stderr
    assert "verified" in human.stdout


@pytest.mark.parametrize(("alter", "offset", "kind"), ALTERATIONS, ids=[a.__name__ for a, _, _ in ALTERATIONS])
async def test_an_altered_copy_fails_at_the_altered_offset(
    hub: HubProcess, original: dict[str, Any], tmp_path: Path,
    alter: Callable[[list[Message], int, dict[str, Any]], None], offset: int, kind: str,
) -> None:
    messages = {p: list(m) for p, m in original["messages"].items()}
    alter(messages[1], offset, original)
    copy_topic = f"{original['topic']}-{alter.__name__}"
    await produce(hub.bootstrap, copy_topic, messages)
    done = run_verify(hub, copy_topic, tmp_path, "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    first = report["first_break"]
    assert (first["partition"], first["offset"], first["kind"]) == (1, offset, kind), first["message"]
    by_partition = {p["partition"]: p for p in report["partitions"]}
    assert by_partition[0]["ok"] is True  # the untouched partition still verifies
    saved = latest_verification(Settings(state_dir=tmp_path), copy_topic)
    assert saved is not None and not saved.ok and saved.first_break is not None
    human = run_verify(hub, copy_topic, tmp_path)
    assert human.returncode == 1
    assert f"partition 1 offset {offset}: {kind}" in " ".join(human.stdout.split())


async def test_a_chain_resumed_by_a_new_owner_verifies_and_a_missing_topic_is_an_error(
    hub: HubProcess, original: dict[str, Any], tmp_path: Path
) -> None:
    """A takeover: the new writer resumes from the last record of the partition as read back from Kafka."""
    messages = {p: list(m) for p, m in original["messages"].items()}
    last = original["decode"](messages[1][-1][1])
    more = ChainWriter(1, resume_state(last), checkpoint_every=10).seal_batch(
        [audit(1, i) for i in range(100, 125)], NOW
    )
    messages[1] += [(r["event_id"].encode(), original["encode"](r)) for r in more]
    topic = f"{original['topic']}-resumed"
    await produce(hub.bootstrap, topic, messages)
    done = run_verify(hub, topic, tmp_path, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    missing = run_verify(hub, f"{original['topic']}-no-such-topic", tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
