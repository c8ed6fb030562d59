"""One audit record per event: the builders (``hub.audit.records``) and the counters a record expands into."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from hub.audit import records
from hub.audit.chain import ChainWriter, verify
from hub.audit.reconcile import Recount
from hub.registry import framing
from hub.settings import REPO_ROOT
from hub.stats import counts
from hub.stats.counts import CountTable, count_key, count_keys, day_of
from hub.stats.figures import breakdowns, figure_values

AUDIT_JSON = json.loads((REPO_ROOT / "schemas/hub/audit_record.avsc").read_text())
QUAR_JSON = json.loads((REPO_ROOT / "schemas/hub/quarantine_record.avsc").read_text())
AUDIT, QUAR = framing.parse_schema(AUDIT_JSON), framing.parse_schema(QUAR_JSON)
NOW = 1_767_225_600_000  # 2026-01-01 08:00 China time
VAX = "municipal.health.vaccination"
SOURCE = "ingress.municipal.health/0/7"


def publish_with_deliveries(event_id: str = "e-1", ts: int = NOW) -> dict:
    """One event delivered to two consumers and refused to a third, as the pipeline now audits it."""
    return records.publish_record(ts, event_id, "municipal.health", VAX, "municipal", "ab" * 32, SOURCE, [
        records.delivery_entry("district.310115", "vaccination-follow-up", "seed-pudong-vaccination", "district",
                               "down", "allow", "locality-return", ("resident_id", "name")),
        records.delivery_entry("national", None, None, "national", "up", "allow", "report-up"),
        records.delivery_entry("municipal.civil-affairs", "vaccination-follow-up", "seed-civil-vaccination",
                               "municipal", "lateral", "deny", "grant_revoked"),
    ])


def legacy(event_id: str, action: str, counterparty: str | None, to_tier: str, direction: str | None,
           decision: str, reason: str, ts: int = NOW, scenario: str | None = None, grant: str | None = None) -> dict:
    """A record as the pipeline wrote it before ``deliveries``: one per publish, delivery and refusal."""
    return {
        "event_id": event_id, "audit_id": f"{event_id}/{action}/{counterparty or '-'}", "ts": ts, "action": action,
        "actor": "municipal.health", "counterparty": counterparty, "resource": VAX, "scenario": scenario,
        "grant": grant, "from_tier": "municipal", "to_tier": to_tier, "direction": direction, "decision": decision,
        "reason": reason, "key_hash": "ab" * 32, "masked_fields": [], "prev_hash": None, "hash": None,
        "source": SOURCE,
    }


def legacy_event(event_id: str = "e-1", ts: int = NOW) -> list[dict]:
    """The same event as ``publish_with_deliveries``, in the old format: four records."""
    return [
        legacy(event_id, "publish", None, "municipal", None, "allow", "accepted", ts),
        legacy(event_id, "deliver", "district.310115", "district", "down", "allow", "locality-return", ts,
               "vaccination-follow-up", "seed-pudong-vaccination"),
        legacy(event_id, "deliver", "national", "national", "up", "allow", "report-up", ts),
        legacy(event_id, "deny", "municipal.civil-affairs", "municipal", "lateral", "deny", "grant_revoked", ts,
               "vaccination-follow-up", "seed-civil-vaccination"),
    ]


# ------------------------------------------------------------------------------------------------ builders


def test_an_audit_record_has_every_field_of_the_schema_and_encodes() -> None:
    record = publish_with_deliveries()
    assert set(record) == {f["name"] for f in AUDIT_JSON["fields"]}
    assert (record["audit_id"], record["action"], record["decision"], record["reason"]) == (
        "e-1/publish/-", "publish", "allow", "accepted")
    assert (record["from_tier"], record["to_tier"], record["counterparty"], record["direction"]) == (
        "municipal", "municipal", None, None)
    entry_fields = {f["name"] for f in AUDIT_JSON["fields"][-1]["type"]["items"]["fields"]}
    assert all(set(d) == entry_fields for d in record["deliveries"])
    assert record["deliveries"][0]["masked_fields"] == ["resident_id", "name"]
    decoded = framing.decode_body(framing.split(framing.encode(1, AUDIT, record))[1], AUDIT)
    assert decoded["deliveries"] == record["deliveries"]
    compiled = framing.make_encoder(1, AUDIT_JSON)  # the worker's writer: byte-identical to fastavro's
    assert compiled(record) == framing.encode(1, AUDIT, record)


@dataclass
class _Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def test_a_quarantined_ingress_record_and_a_quarantined_call_request() -> None:
    rec = _Rec("ingress.municipal.health", 2, 40, b"k", b"\x01junk", [("hub-resource", b"x")])
    value = records.quarantine_value(rec, "e-9", NOW, "municipal.health", "bad_magic", "first byte is 0x01", "x")
    assert framing.decode_body(framing.split(framing.encode(2, QUAR, value))[1], QUAR)["original_headers"] == {
        "hub-resource": b"x"}
    audit = records.quarantine_audit(NOW, "e-9", "municipal.health", "municipal", "bad_magic", "x",
                                     records.key_hash(b"k"), records.source_of(rec.topic, rec.partition, rec.offset))
    assert (audit["audit_id"], audit["action"], audit["decision"], audit["reason"], audit["deliveries"]) == (
        "e-9/quarantine/ingress.municipal.health/2/40", "quarantine", "deny", "bad_magic", [])
    assert audit["source"] == "ingress.municipal.health/2/40" and audit["key_hash"] == records.key_hash(b"k")
    assert records.quarantine_headers("e-9", "bad_magic") == [("hub-event-id", b"e-9"),
                                                              ("hub-quarantine-rule", b"bad_magic")]

    call = _Rec("call.district.310115.request", 0, 3, None, b"", [])  # what CallAgents quarantines
    position = records.source_of(call.topic, call.partition, call.offset)
    value = records.quarantine_value(call, position, NOW, "district.310115", "bad_call_request", "not Avro", None)
    assert framing.decode_body(framing.split(framing.encode(2, QUAR, value))[1], QUAR)["resource"] is None
    audit = records.quarantine_audit(NOW, position, "district.310115", "district", "bad_call_request", None, None,
                                     position)
    assert audit["event_id"] == audit["source"] == "call.district.310115.request/0/3"
    assert audit["audit_id"] == "call.district.310115.request/0/3/quarantine/-"
    assert count_keys(audit) == [(day_of(NOW), "quarantine", "district", "district", "", "", "deny",
                                  "bad_call_request")]


# ------------------------------------------------------------------------------------------------ counting


def test_one_event_with_two_deliveries_and_a_denial_counts_as_its_four_old_records() -> None:
    new = CountTable()
    new.add([publish_with_deliveries()])
    old = CountTable()
    old.add(legacy_event())
    assert new == old
    day = "2026-01-01"
    assert sorted(new.counts.items()) == sorted({
        (day, "publish", "municipal", "municipal", "", VAX, "allow", "accepted"): 1,
        (day, "deliver", "municipal", "district", "down", VAX, "allow", "locality-return"): 1,
        (day, "deliver", "municipal", "national", "up", VAX, "allow", "report-up"): 1,
        (day, "deny", "municipal", "municipal", "lateral", VAX, "deny", "grant_revoked"): 1,
    }.items())
    assert count_keys(publish_with_deliveries()) == [k for r in legacy_event() for k in [count_key(r)]]
    assert breakdowns(new) == breakdowns(old) and figure_values(new) == figure_values(old)


def test_count_keys_of_records_without_deliveries_is_their_count_key() -> None:
    for record in legacy_event():
        assert count_keys(record) == [count_key(record)]
    decoded = framing.decode_body(framing.split(framing.encode(1, AUDIT, legacy_event()[1]))[1], AUDIT)
    assert decoded["deliveries"] == [] and count_keys(decoded) == [count_key(legacy_event()[1])]
    assert count_keys({"action": "checkpoint", "ts": NOW}) == []
    assert count_keys({"action": "grant", "ts": NOW, "deliveries": []}) == []


def test_counts_are_the_same_after_an_avro_round_trip() -> None:
    """The worker counts the records it built; reconcile and restore count them decoded (ts a datetime)."""
    record = publish_with_deliveries(ts=NOW + 16 * 3_600_000 - 1)  # the last millisecond of a China day
    decoded = framing.decode_body(framing.split(framing.encode(1, AUDIT, record))[1], AUDIT)
    assert isinstance(decoded["ts"], datetime)
    assert count_keys(decoded) == count_keys(record) and count_keys(record)[0][0] == "2026-01-01"


@pytest.mark.parametrize("ts", [NOW, NOW + 16 * 3_600_000 - 1, NOW + 16 * 3_600_000, 0, -1, 1_700_000_000_123])
def test_day_of_caches_the_day_and_moves_across_midnight(ts: int) -> None:
    reference = datetime.fromtimestamp(ts / 1000, UTC).astimezone(counts.CHINA_STANDARD_TIME).date().isoformat()
    assert day_of(ts) == reference
    start, end, day = counts._day_bounds
    assert start <= ts < end and end - start == 86_400_000 and day == reference
    assert day_of(start) == day and day_of(end - 1) == day and day_of(end) != day and day_of(start - 1) != day
    assert day_of(datetime.fromtimestamp(ts / 1000, UTC)) == reference
    assert day_of(ts) == reference  # back after the neighbours moved the cache


def test_reconcile_of_a_new_format_log_and_of_the_same_traffic_in_the_old_format() -> None:
    new_log = [publish_with_deliveries(f"e-{i}", NOW + i * 3_600_000) for i in range(30)]  # across two days
    old_log = [r for i in range(30) for r in legacy_event(f"e-{i}", NOW + i * 3_600_000)]
    recount_new, recount_old = Recount(), Recount()
    for offset, record in enumerate(new_log):
        recount_new.add(0, offset, record)
    for offset, record in enumerate(old_log):
        recount_old.add(0, offset, record)
    worker = CountTable()
    worker.add(new_log)
    assert recount_new.tables[0] == worker == recount_old.tables[0]
    assert sum(worker.counts.values()) == 120 and recount_new.duplicate_count == recount_old.duplicate_count == 0
    assert len({k[0] for k in worker.counts}) == 2


def test_a_new_format_chain_verifies_after_an_avro_round_trip() -> None:
    sealed = ChainWriter(0, checkpoint_every=7).seal_batch(
        [publish_with_deliveries(f"e-{i}", NOW + i) for i in range(20)], NOW)
    encode = framing.make_encoder(1, AUDIT_JSON)
    decoded = [framing.decode_body(framing.split(encode(r))[1], AUDIT) for r in sealed]
    result = verify(enumerate(decoded))
    assert result.ok and result.count == len(sealed) and result.checkpoints == 2
