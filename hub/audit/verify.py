"""``hub audit verify``'s shell: stream every partition of an audit topic through the pure chain verifier.

Each partition is read from its first offset to the end offset it had when verification started
(``read_committed``), decoding each Confluent-framed AuditRecord with the schema version that wrote it
(fetched from the registry by id, cached), and fed to a :class:`~hub.audit.chain.ChainVerifier`. A
partition stops being read as soon as its first break is known.

The result is also saved as JSON under ``<state_dir>/audit/`` (one file per topic, replaced atomically):
``latest_verification(settings)`` reads it back, which is how the process serving ``/metrics`` can set
``hub_audit_chain_ok`` from a verification run by the CLI. The file also keeps each partition's last
verified head (seq and hash) as an anchor: the next verification fails if the log no longer holds that
record as it was, so truncating or rewriting the end of the log between two verifications is caught.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from hub.audit.chain import Anchor, Break, ChainVerifier, VerifyResult
from hub.broker.clients import describe_partitions, make_consumer
from hub.contract import AUDIT_TOPIC
from hub.registry import framing
from hub.registry.client import RegistryClient, SchemaNotFound
from hub.registry.framing import FramingError
from hub.settings import Settings

_UNKNOWN_TOPIC = 3


class AuditTopicMissing(LookupError):
    """The audit topic does not exist on the cluster."""


class VerificationStalled(TimeoutError):
    """The broker stopped returning records before the end offsets taken at the start were reached."""


@dataclass(frozen=True)
class PartitionReport:
    partition: int
    start_offset: int  # the partition's first offset when verification started (> 0 after retention)
    end_offset: int  # the end offset taken at the start: records from here on were not examined
    result: VerifyResult

    def to_json(self) -> dict[str, Any]:
        return {"partition": self.partition, "start_offset": self.start_offset, "end_offset": self.end_offset,
                **self.result.to_json()}


@dataclass(frozen=True)
class AuditVerification:
    """One verification of a whole audit topic, as printed by the CLI and saved for the metrics."""

    topic: str
    ok: bool
    verified_at_ms: int
    duration_s: float
    keyed: bool
    partitions: list[PartitionReport] = field(default_factory=list)
    anchors: dict[int, Anchor] = field(default_factory=dict)  # per partition: the head known to be intact

    @property
    def records(self) -> int:
        return sum(p.result.count for p in self.partitions)

    @property
    def first_break(self) -> tuple[int, Break] | None:
        """(partition, break) of the lowest-numbered broken partition."""
        for p in self.partitions:
            if p.result.first_break is not None:
                return p.partition, p.result.first_break
        return None

    def to_json(self) -> dict[str, Any]:
        first = self.first_break
        return {
            "topic": self.topic, "ok": self.ok, "verified_at_ms": self.verified_at_ms,
            "duration_s": round(self.duration_s, 3), "keyed": self.keyed, "records": self.records,
            "first_break": {"partition": first[0], **first[1].to_json()} if first else None,
            "partitions": [p.to_json() for p in self.partitions],
            "anchors": {str(p): {"seq": a.seq, "hash": a.hash} for p, a in sorted(self.anchors.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditVerification:
        partitions = []
        for p in data.get("partitions", []):
            brk = p.get("first_break")
            result = VerifyResult(
                ok=p["ok"], count=p["count"], first_break=Break(**brk) if brk else None, first_seq=p.get("first_seq"),
                head_seq=p.get("head_seq"), head_hash=p.get("head_hash"), head_offset=p.get("head_offset"),
                checkpoints=p.get("checkpoints", 0),
            )
            partitions.append(PartitionReport(p["partition"], p["start_offset"], p["end_offset"], result))
        anchors = {int(p): Anchor(a["seq"], a["hash"]) for p, a in data.get("anchors", {}).items()}
        return cls(data["topic"], data["ok"], data["verified_at_ms"], data.get("duration_s", 0.0),
                   data.get("keyed", False), partitions, anchors)


Progress = Callable[[int], None]


async def verify_topic(
    settings: Settings, bootstrap: str, topic: str = AUDIT_TOPIC, *, registry_url: str | None = None,
    key: bytes | None = None, anchors: Mapping[int, Anchor] | None = None,
    require_start: bool = False, on_total: Progress | None = None, on_progress: Progress | None = None,
    stall_timeout: float = 60.0,
) -> AuditVerification:
    """Verify every partition of ``topic`` up to the end offsets it has now.

    A partition whose first offset is above 0 (retention removed its start) is checked from its first
    record on, unless ``require_start``: for an audit topic kept forever, a missing start is a removal.

    ``on_total(n)`` is called once with the number of offsets to read, ``on_progress(n)`` with each
    advance. Raises AuditTopicMissing, VerificationStalled, or the Kafka/registry client's errors.
    """
    started = time.monotonic()
    verified_at_ms = int(time.time() * 1000)
    anchors = dict(anchors or {})
    consumer = make_consumer(
        settings, bootstrap, isolation_level="read_committed", max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    registry = RegistryClient(registry_url or settings.effective_registry_url)
    try:
        partitions = await _partitions(settings, bootstrap, topic)
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        verifiers = {
            tp: ChainVerifier(key=key, genesis=require_start or starts[tp] == 0, partition=tp.partition,
                              anchor=anchors.get(tp.partition))
            for tp in tps
        }
        if on_total is not None:
            on_total(sum(ends[tp] - starts[tp] for tp in tps))
        position = dict(starts)
        active = {tp for tp in tps if starts[tp] < ends[tp]}
        for tp in active:
            consumer.seek(tp, starts[tp])
        last_progress = time.monotonic()
        while active:
            batch = await consumer.getmany(*active, timeout_ms=500, max_records=10_000)
            for tp, messages in batch.items():
                if tp not in active:
                    continue
                verifier = verifiers[tp]
                for msg in messages:
                    if msg.offset >= ends[tp]:
                        break
                    await _feed(verifier, msg.offset, msg.value, registry)
                    if verifier.done:
                        break
            for tp in list(active):
                now_at = ends[tp] if verifiers[tp].done else min(await consumer.position(tp), ends[tp])
                if on_progress is not None and now_at > position[tp]:
                    on_progress(now_at - position[tp])
                if now_at > position[tp]:
                    position[tp] = now_at
                    last_progress = time.monotonic()
                if now_at >= ends[tp]:
                    active.discard(tp)
                    consumer.pause(tp)
            if active and time.monotonic() - last_progress > stall_timeout:
                stuck = ", ".join(f"{tp.partition} at {position[tp]} of {ends[tp]}" for tp in sorted(active))
                raise VerificationStalled(f"no records from {topic} for {stall_timeout:.0f} s (partitions {stuck})")
        reports = [PartitionReport(tp.partition, starts[tp], ends[tp], verifiers[tp].result()) for tp in tps]
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await registry.aclose()
    for report in reports:  # a partition that verified moves its anchor on; a broken one keeps the old one
        r = report.result
        if r.ok and r.head_seq is not None and r.head_hash is not None:
            anchors[report.partition] = Anchor(r.head_seq, r.head_hash)
    return AuditVerification(
        topic=topic, ok=all(r.result.ok for r in reports), verified_at_ms=verified_at_ms,
        duration_s=time.monotonic() - started, keyed=key is not None, partitions=reports, anchors=anchors,
    )


async def _partitions(settings: Settings, bootstrap: str, topic: str) -> list[int]:
    """The topic's partition numbers (from the cluster's metadata, without creating the topic)."""
    error, partitions = await describe_partitions(settings, bootstrap, topic)
    if error == _UNKNOWN_TOPIC or not partitions:
        raise AuditTopicMissing(f"topic {topic} does not exist on {bootstrap}")
    if error:
        raise AuditTopicMissing(f"topic {topic} cannot be described (Kafka error {error})")
    return partitions


async def _feed(verifier: ChainVerifier, offset: int, value: bytes | None, registry: RegistryClient) -> None:
    """Decode one audit record with its writer schema and hand it to the verifier."""
    try:
        schema_id, body = framing.split(value)
    except FramingError as exc:
        verifier.feed_undecodable(offset, f"{exc.rule}: {exc}")
        return
    schema = registry.cached(schema_id)
    if schema is None:
        try:
            schema = await registry.schema_by_id(schema_id)
        except SchemaNotFound:
            verifier.feed_undecodable(offset, f"schema id {schema_id} is not in the registry")
            return
    try:
        record = framing.decode_body(body, schema.parsed)
    except FramingError as exc:
        verifier.feed_undecodable(offset, f"{exc.rule}: {exc}")
        return
    verifier.feed(offset, record)


# ------------------------------------------------------------------------------ saved results


def result_path(settings: Settings, topic: str = AUDIT_TOPIC) -> Path:
    return settings.state_dir / "audit" / f"verify-{topic}.json"


def save_verification(settings: Settings, verification: AuditVerification) -> Path:
    """Write the result where ``latest_verification`` finds it (atomically: a reader never sees half)."""
    path = result_path(settings, verification.topic)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(verification.to_json(), indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path


def latest_verification(settings: Settings, topic: str = AUDIT_TOPIC) -> AuditVerification | None:
    """The last saved verification of ``topic``, or None if there is none (or it cannot be read).

    For ``hub_audit_chain_ok``: ``metrics.audit_chain_ok.set(1 if v.ok else 0)`` when it is not None
    (cheap: one small file; call it on each scrape or on a timer).
    """
    path = result_path(settings, topic)
    try:
        return AuditVerification.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
