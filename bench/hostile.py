"""Hostile input through a running hub: bad records interleaved with good ones, every one accounted for.

``python -m bench.hostile --bad 100000`` starts a local broker and ``hub up --bootstrap`` (as the integration
tests do), then publishes generated records to ``ingress.municipal.health``: random bytes, truncated frames,
every wrong header combination, unknown and foreign schema ids, Avro bodies claiming 2^31 items or bytes,
deep nesting, invalid UTF-8, near-limit sizes and huge keys, with a good vaccination record every
``--good-every`` records. It then reads ``quarantine.municipal.health`` and the lateral subscriber's feed and
checks: the hub is alive, every bad record was quarantined with a rule (matched by event id: the producer's
when usable, else the one derived from its position), every good record was delivered, no bad one was; and
it samples the hub's RSS before, during and after. ``tests/integration/test_hostile.py`` runs a small version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import struct
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hub.contract import H_EVENT_ID, H_RESOURCE, H_RULE, feed_topic, quarantine_topic
from hub.demo.data import record_generator
from hub.pipeline.core import MAX_EVENT_ID_LENGTH, derived_event_id
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT

NODE = "municipal.health"
INGRESS = f"ingress.{NODE}"
RESOURCE = "municipal.health.vaccination"
SUBJECT = f"{RESOURCE}-value"
LATERAL = feed_topic("municipal.civil-affairs")  # subscribes to every vaccination record
QUARANTINE = quarantine_topic(NODE)
SCHEMA = json.loads((REPO_ROOT / "schemas/health/vaccination_record.avsc").read_text())
PARSED = framing.parse_schema(SCHEMA)
# A resource of the same provider whose schema fastavro cannot decode safely: recursive, with zero-byte items
NEST_SCHEMA = {"type": "record", "name": "Nest", "namespace": "hostile", "fields": [
    {"name": "id", "type": "string"},
    {"name": "next", "type": ["null", "Nest"], "default": None},
    {"name": "marks", "type": {"type": "array", "items": "null"}, "default": []},
]}
FOREIGN_SCHEMA = {"type": "record", "name": "Foreign", "namespace": "hostile", "fields": [
    {"name": "x", "type": "string"}]}
BROKER_MAX = 1_048_588  # Kafka's default message.max.bytes (the hub's topics keep it)


def zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


@dataclass
class Item:
    kind: str
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    good: bool
    key: bytes | None = None
    event_id: str | None = None  # the usable hub-event-id it carries (None: the hub derives one from its position)


@dataclass
class Ids:
    """Schema ids and resources the generator needs from the running hub."""

    good: int
    foreign: int  # a registered schema of another subject
    nest_resource: str | None = None
    nest: int | None = None


def _utf8_broken(good: bytes, text: str) -> bytes:
    """``good`` with the UTF-8 bytes of ``text`` (a field value) replaced by as many invalid ones."""
    raw = text.encode()
    return good.replace(raw, b"\xff" * len(raw), 1)


UNUSABLE_IDS: list[bytes] = [b"", b"\xff\xfe\xfd", b"x" * (MAX_EVENT_ID_LENGTH + 1), b"tab\there",
                             "é".encode("latin-1")]


class Generator:
    """Deterministic hostile items (seeded), cycling through every kind."""

    def __init__(self, ids: Ids, seed: int = 12) -> None:
        self.rng = random.Random(seed)
        self.ids = ids
        self.make = record_generator(SCHEMA)
        kinds = [k for k in dir(self) if k.startswith("bad_")]
        if ids.nest_resource is None:
            kinds = [k for k in kinds if "nest" not in k]
        self.kinds: list[Callable[[], Item]] = [getattr(self, k) for k in sorted(kinds)]
        self.rare: list[Callable[[], Item]] = [self.rare_oversize, self.rare_huge_key_good, self.rare_huge_key_bad]

    def fresh(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128)).hex

    def good_value(self) -> tuple[bytes, dict[str, Any]]:
        record = self.make(self.rng)
        return framing.encode(self.ids.good, PARSED, record), record

    def headers(self, eid: str, resource: bytes = RESOURCE.encode()) -> list[tuple[str, bytes | None]]:
        return [(H_RESOURCE, resource), (H_EVENT_ID, eid.encode())]

    def bad(self, kind: str, value: bytes | None, **kw: Any) -> Item:
        eid = self.fresh()
        return Item(kind, value, kw.pop("headers", None) or self.headers(eid), False, event_id=eid, **kw)

    # ---------------------------------------------------------------- good records
    def good(self) -> Item:
        value, _ = self.good_value()
        if self.rng.random() < 0.2:  # an unusable event id: delivered under the id derived from its position
            return Item("good_derived_id", value, [(H_RESOURCE, RESOURCE.encode()),
                                                   (H_EVENT_ID, self.rng.choice(UNUSABLE_IDS))], True)
        eid = self.fresh()
        return Item("good", value, self.headers(eid), True, key=self.rng.choice([None, eid.encode()]), event_id=eid)

    # ---------------------------------------------------------------- bad values
    def bad_random_bytes(self) -> Item:
        return self.bad("random_bytes", self.rng.randbytes(self.rng.randrange(0, 2048)))

    def bad_random_after_magic(self) -> Item:
        return self.bad("random_after_magic", b"\x00" + self.rng.randbytes(self.rng.randrange(4, 600)))

    def bad_truncated(self) -> Item:
        value, _ = self.good_value()
        return self.bad("truncated_frame", value[: self.rng.randrange(0, len(value))])

    def bad_tombstone(self) -> Item:
        return self.bad("tombstone", None, key=b"tombstone")  # a producer sends no key-less tombstone

    def bad_trailing(self) -> Item:
        value, _ = self.good_value()
        return self.bad("trailing_bytes", value + self.rng.randbytes(self.rng.randrange(1, 64)))

    def bad_unknown_schema(self) -> Item:
        value, _ = self.good_value()
        return self.bad("unknown_schema_id", framing.HEADER.pack(0, self.rng.randrange(10**6, 2**32)) + value[5:])

    def bad_foreign_schema(self) -> Item:
        value, _ = self.good_value()
        return self.bad("foreign_schema_id", framing.HEADER.pack(0, self.ids.foreign) + value[5:])

    def bad_huge_string(self) -> Item:  # the first field (record_id) claims 2^31 (or 2^62, or -5) bytes
        claim = self.rng.choice([2**31, 2**62, -5, 2**31 - 1])
        return self.bad("huge_string_claim", framing.frame(self.ids.good, zigzag(claim) + self.rng.randbytes(40)))

    def bad_invalid_utf8(self) -> Item:
        value, record = self.good_value()
        return self.bad("invalid_utf8", _utf8_broken(value, record["name"]))

    def bad_overlong_varint(self) -> Item:  # a number that never ends
        return self.bad("overlong_varint", framing.frame(self.ids.good, b"\xff" * self.rng.randrange(11, 64)))

    # ---------------------------------------------------------------- bad headers (the value is good)
    def bad_missing_resource(self) -> Item:
        value, _ = self.good_value()
        eid = self.fresh()
        return Item("missing_resource", value, [(H_EVENT_ID, eid.encode())], False, event_id=eid)

    def bad_no_headers(self) -> Item:  # no headers at all: the event id is derived from the position
        value, _ = self.good_value()
        return Item("no_headers", value, [], False)

    def bad_garbage_resource(self) -> Item:
        value, _ = self.good_value()
        eid = self.fresh()
        garbage = self.rng.choice([self.rng.randbytes(self.rng.randrange(1, 300)), b"\xff\xfe", b"x" * 10_000,
                                   b"municipal.health.vaccination\x00", b" municipal.health.vaccination"])
        return Item("garbage_resource", value, self.headers(eid, garbage), False, event_id=eid)

    def bad_other_providers_resource(self) -> Item:
        value, _ = self.good_value()
        eid = self.fresh()
        return Item("not_provider", value, self.headers(eid, b"municipal.big-data.natural-person"), False, event_id=eid)

    def bad_null_resource(self) -> Item:  # a header whose value is Kafka's null, not bytes
        value, _ = self.good_value()
        eid = self.fresh()
        return Item("null_resource", value, [(H_RESOURCE, None), (H_EVENT_ID, eid.encode())], False, event_id=eid)

    def bad_duplicate_resource(self) -> Item:
        value, _ = self.good_value()
        eid = self.fresh()
        second = self.rng.choice([RESOURCE.encode(), b"municipal.health.other"])
        return Item("duplicate_resource", value, [*self.headers(eid), (H_RESOURCE, second)], False, event_id=eid)

    def bad_duplicate_event_id(self) -> Item:
        value, _ = self.good_value()
        eid = self.fresh()  # the hub keys the event by the last one
        headers = [(H_RESOURCE, RESOURCE.encode()), (H_EVENT_ID, b"first-" + eid.encode()), (H_EVENT_ID, eid.encode())]
        return Item("duplicate_event_id", value, headers, False, event_id=eid)

    def bad_unusable_event_id(self) -> Item:  # and a bad body: quarantined under the derived id
        value = framing.frame(self.ids.good, self.rng.randbytes(self.rng.randrange(0, 100)))
        return Item("unusable_event_id", value, [(H_RESOURCE, RESOURCE.encode()),
                                                 (H_EVENT_ID, self.rng.choice(UNUSABLE_IDS))], False)

    def bad_odd_header_names(self) -> Item:  # extra headers of every shape, and a bad body
        eid = self.fresh()
        extra = [("", b""), ("hub-resource ", b"x"), ("Hub-Resource", None), ("x" * 1000, self.rng.randbytes(2000))]
        return Item("odd_headers", framing.frame(self.ids.good, b"\x00"), [*self.headers(eid), *extra], False,
                    event_id=eid)

    def bad_key_types(self) -> Item:  # keys that are not text, empty, or long; with a bad body
        key = self.rng.choice([b"", b"\xff\x00\xfe", struct.pack(">q", -1), self.rng.randbytes(4096)])
        return self.bad("odd_key", b"\x00\x00\x00", key=key)

    # ---------------------------------------------------------------- hostile Avro for a scanned schema
    def bad_nest_deep(self) -> Item:
        eid = self.fresh()
        depth = self.rng.choice([300, 5_000, 200_000])
        body = zigzag(1) + b"a" + b"\x02\x02a" * depth + b"\x00\x00" + b"\x00" * depth
        return Item("deep_nesting", framing.frame(self.ids.nest or 0, body),
                    self.headers(eid, (self.ids.nest_resource or "").encode()), False, event_id=eid)

    def bad_nest_zero_width(self) -> Item:
        eid = self.fresh()
        body = zigzag(1) + b"a" + b"\x00" + zigzag(self.rng.choice([2**31, 2**62, 10**6])) + b"\x00"
        return Item("zero_width_claim", framing.frame(self.ids.nest or 0, body),
                    self.headers(eid, (self.ids.nest_resource or "").encode()), False, event_id=eid)

    # ---------------------------------------------------------------- rare and large
    def rare_oversize(self) -> Item:  # a value just under the broker's limit (its quarantine copy is larger)
        size = self.rng.randrange(BROKER_MAX - 4_000, BROKER_MAX - 300)
        return self.bad("oversize", framing.frame(self.ids.good, self.rng.randbytes(size)))

    def rare_huge_key_good(self) -> Item:
        value, _ = self.good_value()
        eid = self.fresh()
        return Item("huge_key_good", value, self.headers(eid), True, key=self.rng.randbytes(300_000), event_id=eid)

    def rare_huge_key_bad(self) -> Item:
        return self.bad("huge_key_bad", self.rng.randbytes(500_000), key=self.rng.randbytes(500_000))

    def items(self, bad: int, good_every: int, rare_every: int) -> Iterator[Item]:
        """``bad`` bad items, a good one after every ``good_every`` of them, a rare large one every ``rare_every``."""
        for i in range(bad):
            if rare_every and i % rare_every == rare_every - 1:
                yield self.rare[(i // rare_every) % len(self.rare)]()
            else:
                yield self.kinds[i % len(self.kinds)]()
            if i % good_every == good_every - 1:
                yield self.good()


# ---------------------------------------------------------------- the run
def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (MiB), from /proc."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


@dataclass
class Report:
    bad: int = 0
    good: int = 0
    quarantined: int = 0
    delivered: int = 0
    missing_quarantine: list[str] = field(default_factory=list)
    missing_delivery: list[str] = field(default_factory=list)
    bad_delivered: list[str] = field(default_factory=list)
    good_quarantined: list[str] = field(default_factory=list)
    no_rule: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    produce_s: float = 0.0
    drain_s: float = 0.0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)
    alive: bool = True

    @property
    def records_per_s(self) -> float:
        return (self.bad + self.good) / self.drain_s if self.drain_s else 0.0

    def summary(self) -> dict[str, Any]:
        rss = [m for _, m in self.rss_mb]
        return {
            "bad": self.bad, "good": self.good, "quarantined": self.quarantined, "delivered": self.delivered,
            "missing_quarantine": len(self.missing_quarantine), "missing_delivery": len(self.missing_delivery),
            "bad_delivered": len(self.bad_delivered), "good_quarantined": len(self.good_quarantined),
            "quarantined_without_rule": self.no_rule, "hub_alive": self.alive,
            "produce_s": round(self.produce_s, 1), "total_s": round(self.drain_s, 1),
            "records_per_s": round(self.records_per_s), "rss_mb_start": round(rss[0], 1) if rss else None,
            "rss_mb_peak": round(max(rss), 1) if rss else None, "rss_mb_end": round(rss[-1], 1) if rss else None,
            "rss_mb_timeline": [[round(t), round(m)] for t, m in self.rss_mb[:: max(1, len(self.rss_mb) // 12)]],
            "rules": dict(self.rules.most_common()), "kinds": dict(sorted(self.kinds.items())),
        }


async def prepare(api: str, token: str, with_nest: bool = True) -> Ids:
    """The good schema's id, a foreign subject's id, and (optionally) a catalogued resource with a recursive
    schema whose bodies the hub must scan."""
    async with RegistryClient(api, token=token) as client:
        good = await client.register(SUBJECT, json.dumps(SCHEMA))
        foreign = await client.register(f"{NODE}.foreign{uuid.uuid4().hex[:8]}-value", json.dumps(FOREIGN_SCHEMA))
        ids = Ids(good, foreign)
        if with_nest:
            rid = f"{NODE}.hostile{uuid.uuid4().hex[:8]}"
            ids.nest = await client.register(f"{rid}-value", json.dumps(NEST_SCHEMA))
    if with_nest:
        entry = {"id": rid, "title": "Hostile nesting", "provider": NODE, "sharing": "none",
                 "legal_basis": "Test fixture: hostile-input runs only (bench/hostile.py).",
                 "field_levels": {"id": "L1", "next": "L1", "marks": "L1"}, "primary_key": [], "quality_rules": []}
        async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"}) as http:
            response = await http.post("/v1/resources", json=entry, timeout=30)
            if response.status_code != 201:
                raise RuntimeError(f"cataloguing {rid}: {response.status_code} {response.text}")
        ids.nest_resource = rid
    return ids


async def _end_offsets(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer,
                       topics: list[str]) -> dict[TopicPartition, int]:
    partitions = [TopicPartition(t, p) for t in topics for p in sorted(await producer.partitions_for(t))]
    return await consumer.end_offsets(partitions)


async def run(bootstrap: str, api: str, token: str, pid: int, bad: int, good_every: int = 10,
              rare_every: int = 2_000, seed: int = 12, quiet_s: float = 60.0, alive: Callable[[], bool] = lambda: True,
              log: Callable[[str], None] = print) -> Report:
    """Publish the hostile mix to the running hub and account for every record (see the module doc)."""
    report = Report()
    started = time.monotonic()
    report.rss_mb.append((0.0, rss_mb(pid)))
    ids = await prepare(api, token)
    await asyncio.sleep(3)  # the worker picks the new catalogue entry up with the control plane's next version
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20,
                              fetch_max_bytes=16 << 20)
    await reader.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=4 << 20, acks=1,
                                max_batch_size=1 << 20)
    await producer.start()
    try:
        starts = await _end_offsets(reader, producer, [QUARANTINE, LATERAL])
        log(f"reading {len(starts)} partitions of {QUARANTINE} and {LATERAL}")
        reader.assign(list(starts))
        for tp, offset in starts.items():
            reader.seek(tp, offset)
        expect_q: dict[str, str] = {}  # event id -> kind
        expect_d: dict[str, str] = {}
        pending: list[tuple[Item, asyncio.Future[Any]]] = []

        async def settle() -> None:
            for item, fut in pending:
                meta = await fut
                eid = item.event_id or derived_event_id(f"{INGRESS}/{meta.partition}/{meta.offset}")
                (expect_d if item.good else expect_q)[eid] = item.kind
                report.kinds[item.kind] += 1
            pending.clear()

        t0 = time.monotonic()
        for item in Generator(ids, seed).items(bad, good_every, rare_every):
            pending.append((item, await producer.send(INGRESS, item.value, key=item.key, headers=item.headers)))
            if len(pending) >= 2_000:
                await settle()
                report.rss_mb.append((time.monotonic() - started, rss_mb(pid)))
        await settle()
        report.produce_s = time.monotonic() - t0
        report.bad, report.good = len(expect_q), len(expect_d)
        log(f"produced {report.bad} bad + {report.good} good in {report.produce_s:.1f} s")

        seen_q: dict[str, str] = {}
        seen_d: set[str] = set()
        last_progress = time.monotonic()
        last_sample = 0.0
        while len(seen_q) < len(expect_q) or len(seen_d) < len(expect_d):
            batch = await reader.getmany(timeout_ms=500, max_records=5_000)
            for msgs in batch.values():
                for msg in msgs:
                    eid = next((v for k, v in msg.headers if k == H_EVENT_ID), b"").decode(errors="replace")
                    if msg.topic == QUARANTINE:
                        if eid in expect_q or eid in expect_d:
                            rule = next((v for k, v in msg.headers if k == H_RULE), b"").decode()
                            seen_q[eid] = rule
                            last_progress = time.monotonic()
                    elif eid in expect_d or eid in expect_q:
                        seen_d.add(eid)
                        last_progress = time.monotonic()
            now = time.monotonic()
            if now - last_sample > 2:
                last_sample = now
                report.rss_mb.append((now - started, rss_mb(pid)))
            if not alive():
                report.alive = False
                break
            if now - last_progress > quiet_s:
                log(f"no progress for {quiet_s:.0f} s: giving up")
                break
        report.drain_s = time.monotonic() - t0
        await asyncio.sleep(5)
        report.rss_mb.append((time.monotonic() - started, rss_mb(pid)))
        report.alive = report.alive and alive()
    finally:
        await producer.stop()
        await reader.stop()
    report.quarantined = sum(1 for e in seen_q if e in expect_q)
    report.delivered = sum(1 for e in seen_d if e in expect_d)
    report.missing_quarantine = [f"{e} {k}" for e, k in expect_q.items() if e not in seen_q]
    report.missing_delivery = [f"{e} {k}" for e, k in expect_d.items() if e not in seen_d]
    report.bad_delivered = [f"{e} {expect_q[e]}" for e in seen_d if e in expect_q]
    report.good_quarantined = [f"{e} {expect_d[e]} {seen_q[e]}" for e in seen_q if e in expect_d]
    report.no_rule = sum(1 for e, rule in seen_q.items() if not rule)
    report.rules = Counter(rule for e, rule in seen_q.items() if e in expect_q)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from hub.broker.manager import LocalBroker, free_port
    from hub.settings import Settings
    from tests.integration.hubproc import start_hub

    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--bad", type=int, default=100_000, help="bad records to publish")
    parser.add_argument("--good-every", type=int, default=10, help="a good record after every N bad ones")
    parser.add_argument("--rare-every", type=int, default=2_000, help="an oversize/huge-key record every N")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--bootstrap", help="an existing broker (default: start a local one)")
    parser.add_argument("--out", type=Path, help="write the summary as JSON here")
    parser.add_argument("--core", action="store_true", help="only time process_batch over the mix (no Kafka)")
    args = parser.parse_args(argv)
    if args.core:
        figures = core_throughput(args.bad, args.good_every)
        print(json.dumps(figures))
        return figures
    with tempfile.TemporaryDirectory(prefix="hub-hostile-") as tmp:
        state = Path(tmp)
        broker = None
        bootstrap = args.bootstrap
        if bootstrap is None:
            broker = LocalBroker(Settings(state_dir=state / "broker"))
            info, _ = broker.start(port=free_port(), controller_port=free_port(), owned=True)
            bootstrap = info.bootstrap
        hub = start_hub(bootstrap, state / "hub", free_port(), f"hub-hostile-{uuid.uuid4().hex[:6]}")
        try:
            report = asyncio.run(run(bootstrap, hub.api, hub.token, hub.proc.pid, args.bad, args.good_every,
                                     args.rare_every, args.seed, alive=lambda: hub.proc.poll() is None))
        finally:
            code = hub.stop()
            log_tail = [line for line in hub.log_file.read_text().splitlines()[-400:] if "Coordinator" not in line]
            print("\n".join(log_tail[-40:]))
            if broker is not None:
                broker.stop()
    summary = {**report.summary(), "hub_exit": code}
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    print(text)
    for name in ("missing_quarantine", "missing_delivery", "bad_delivered", "good_quarantined"):
        for line in getattr(report, name)[:10]:
            print(name, line)
    if args.out:
        args.out.write_text(text + "\n")
    return summary



def core_throughput(bad: int = 100_000, good_every: int = 10, batch: int = 500) -> dict[str, Any]:
    """The quarantine path without Kafka: ``process_batch`` over the same mix, schemas resolved in advance (what
    the worker's pure core costs per record, apart from the registry lookups of unknown ids and the sends)."""
    from hub.broker.records import RawRecord
    from hub.catalogue.model import load_exchange_config
    from hub.pipeline.core import EncodedSchema, ExchangeContext, process_batch, standing_grants

    good_id, foreign_id, audit_id, quarantine_id = 1, 2, 3, 4
    audit_json = (REPO_ROOT / "schemas/hub/audit_record.avsc").read_text()
    quarantine_json = (REPO_ROOT / "schemas/hub/quarantine_record.avsc").read_text()
    schemas = {good_id: PARSED, foreign_id: framing.parse_schema(FOREIGN_SCHEMA)}
    seed = load_exchange_config(REPO_ROOT / "config" / "seed.yaml")
    ctx = ExchangeContext(
        config=seed, grants=standing_grants(seed.subscriptions), schema_lookup=schemas.get,
        subject_ids={RESOURCE: frozenset({good_id})},
        audit_schema=EncodedSchema(audit_id, framing.make_encoder(audit_id, audit_json)),
        quarantine_schema=EncodedSchema(quarantine_id, framing.make_encoder(quarantine_id, quarantine_json)),
    )
    items = list(Generator(Ids(good_id, foreign_id)).items(bad, good_every, rare_every=2_000))
    records = [RawRecord(INGRESS, 0, offset, item.key, item.value, item.headers, 1_700_000_000_000)  # type: ignore[arg-type]
               for offset, item in enumerate(items)]
    started = time.perf_counter()
    quarantined = 0
    for i in range(0, len(records), batch):
        result = process_batch(records[i:i + batch], ctx)
        quarantined += sum(n for (name, _), n in result.tally.items() if name == "quarantined")
    elapsed = time.perf_counter() - started
    return {"records": len(records), "quarantined": quarantined, "seconds": round(elapsed, 2),
            "records_per_s": round(len(records) / elapsed)}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
