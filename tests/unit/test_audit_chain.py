"""The audit hash chain without Kafka: sealing, checkpoints, resuming, and catching every kind of tampering."""

from __future__ import annotations

import copy
import io
import itertools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from hub.audit.chain import (
    CHECKPOINT,
    KEYED_PREFIX,
    Anchor,
    ChainState,
    ChainVerifier,
    ChainWriter,
    canonical_bytes,
    parse_checkpoint_reason,
    record_hash,
    resume_state,
    seal,
    verify,
)
from hub.audit.records import delivery_entry, publish_record
from hub.registry import framing
from hub.settings import REPO_ROOT

AUDIT_JSON = (REPO_ROOT / "schemas/hub/audit_record.avsc").read_text()
AUDIT = fastavro.parse_schema(json.loads(AUDIT_JSON))
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
KEY = b"operator-secret-key-0123456789abcdef"

Records = list[dict[str, Any]]


def audit(i: int) -> dict[str, Any]:
    """An unsealed AuditRecord as the pipeline builds it: one publish, its deliveries and refusals listed."""
    event = f"00000000-0000-4000-8000-{i:012d}"
    return publish_record(NOW + i, event, "municipal.health", "municipal.health.vaccination", "municipal",
                          f"{i:064x}", f"ingress.municipal.health/0/{i}", [
                              delivery_entry("district.310115", "vaccination-follow-up", "g-1", "district", "down",
                                             "allow", "subscription", ["name", "phone"]),
                              delivery_entry("national", None, None, "national", "up", "allow", "report-up"),
                              delivery_entry("municipal.civil-affairs", "vaccination-follow-up", "g-2", "municipal",
                                             "lateral", "deny", "grant_revoked"),
                          ])


def legacy_audit(i: int, action: str = "deliver") -> dict[str, Any]:
    """An unsealed AuditRecord as the pipeline built it before ``deliveries`` (one per delivery)."""
    event = f"00000000-0000-4000-8000-{i:012d}"
    return {
        "event_id": event, "audit_id": f"{event}/{action}/district.310115", "ts": NOW + i, "action": action,
        "actor": "municipal.health", "counterparty": "district.310115", "resource": "municipal.health.vaccination",
        "scenario": "vaccination-follow-up", "grant": "g-1", "from_tier": "municipal", "to_tier": "district",
        "direction": "down", "decision": "allow", "reason": "subscription", "key_hash": f"{i:064x}",
        "masked_fields": ["name", "phone"], "prev_hash": None, "hash": None,
        "source": f"ingress.municipal.health/0/{i}",
    }


def chain(n: int = 40, *, key: bytes | None = None, every: int = 1000) -> Records:
    """n sealed records (plus checkpoints if ``every`` is small) of partition 0."""
    return ChainWriter(0, key=key, checkpoint_every=every).seal_batch([audit(i) for i in range(n)], NOW)


def check(records: Records, **kwargs: Any) -> Any:
    return verify(enumerate(records), **kwargs)


def forged(i: int = 999) -> dict[str, Any]:
    record = audit(i)
    record["counterparty"] = "district.310101"
    return record


# ----------------------------------------------------------------------------------------- canonical form


def test_canonical_bytes_are_sorted_compact_utf8_json_without_hash_and_nulls() -> None:
    record = {"b": 1, "a": "张三", "hash": "x", "n": None, "masked_fields": ["x"]}
    assert canonical_bytes(record) == '{"a":"张三","b":1,"masked_fields":["x"]}'.encode()
    reordered = dict(reversed(list(record.items())))
    assert canonical_bytes(reordered) == canonical_bytes(record)
    assert canonical_bytes({k: v for k, v in record.items() if v is not None}) == canonical_bytes(record)


@pytest.mark.parametrize("text", ["plain", "张三 \u2028", "quote \" back\\slash", "ctl \n\t\x01\x7f", "\U0001f600"])
def test_canonical_strings_are_json_escaped_as_rfc_8785_does(text: str) -> None:
    record = {"reason": text, "seq": 3, "masked_fields": [text]}
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_bytes(record) == expected.encode()
    assert json.loads(canonical_bytes(record)) == record


def test_hash_does_not_depend_on_how_the_timestamp_was_decoded() -> None:
    record = audit(1)
    as_datetime = dict(record, ts=datetime.fromtimestamp(record["ts"] / 1000, tz=UTC))
    assert record_hash(as_datetime) == record_hash(record)


def test_seal_sets_prev_hash_seq_and_a_hash_that_covers_them() -> None:
    record = seal(audit(1), "ab" * 32, 7)
    assert (record["prev_hash"], record["seq"]) == ("ab" * 32, 7)
    assert len(record["hash"]) == 64 and record["hash"] == record_hash(record)
    assert record_hash(dict(record, seq=8)) != record["hash"]
    assert record_hash(dict(record, prev_hash="cd" * 32)) != record["hash"]


def test_a_chain_verifies_after_an_avro_round_trip_through_the_audit_schema() -> None:
    records = chain(30, every=7)
    encode = framing.make_encoder(42, AUDIT_JSON)
    decoded = []
    for offset, record in enumerate(records):
        schema_id, body = framing.split(encode(record))
        assert schema_id == 42
        decoded.append((offset, framing.decode_body(body, AUDIT)))
    assert isinstance(decoded[0][1]["ts"], datetime)  # fastavro gives datetimes back
    result = verify(decoded)
    assert result.ok and result.count == len(records) and result.first_break is None
    assert (result.first_seq, result.head_seq, result.head_offset) == (0, len(records) - 1, len(records) - 1)
    assert result.head_hash == records[-1]["hash"] and result.checkpoints == 4


def test_deliveries_hash_the_same_before_encoding_and_after_an_avro_round_trip() -> None:
    """fastavro gives every field of a delivery back, its nulls as None; the hash must not see a difference."""
    record = audit(1)
    assert record["deliveries"][1]["scenario"] is None and record["deliveries"][2]["masked_fields"] == []
    sealed = seal(record, "ab" * 32, 5)
    for encode in (framing.make_encoder(42, AUDIT_JSON), lambda r: framing.encode(42, AUDIT, r)):
        decoded = framing.decode_body(framing.split(encode(sealed))[1], AUDIT)
        assert decoded["deliveries"][1]["grant"] is None and isinstance(decoded["ts"], datetime)
        assert canonical_bytes(decoded) == canonical_bytes(sealed)
        assert record_hash(decoded) == sealed["hash"] and record_hash(decoded, KEY) == record_hash(sealed, KEY)
    # an entry built without its optional fields hashes as it decodes (every field, nulls and [] filled in)
    sparse = dict(sealed, deliveries=[{k: v for k, v in d.items() if v not in (None, [])}
                                      for d in sealed["deliveries"]])
    decoded = framing.decode_body(framing.split(framing.encode(42, AUDIT, sparse))[1], AUDIT)
    assert decoded["deliveries"] == sealed["deliveries"] and record_hash(sparse) == sealed["hash"]
    # a changed delivery changes the hash
    assert record_hash(dict(sealed, deliveries=sealed["deliveries"][:2])) != sealed["hash"]
    flipped = copy.deepcopy(sealed)
    flipped["deliveries"][2]["decision"] = "allow"
    assert record_hash(flipped) != sealed["hash"]


def test_records_without_deliveries_hash_as_before_it_existed() -> None:
    """Records written before ``deliveries`` (and checkpoints, calls, control records that never set it) keep
    their hash, whether it is absent, empty, or filled in as [] by decoding with the new schema."""
    old = legacy_audit(3)
    assert "deliveries" not in old
    assert record_hash(old) == "74649e8ec0d8e8b0707a6839d7d8c52146afe1588d54f032bdf90d6d1a8f41eb"  # as hashed before
    assert record_hash(dict(old, deliveries=[])) == record_hash(old)
    [sealed, checkpoint] = ChainWriter(0, checkpoint_every=1).seal_batch([legacy_audit(1)], NOW)
    assert sealed["hash"] == "01c0a912aa5401024f1c700338c8acc8dd752fae0a6fdafe83e3a8741267e6f4"
    assert checkpoint["hash"] == "ff9730303642e390f58ca8a6380f05088f9f295019d44af5fbc3bbd6cd89ba2d"
    decoded = [framing.decode_body(framing.split(framing.encode(1, AUDIT, r))[1], AUDIT) for r in (sealed, checkpoint)]
    assert all(d["deliveries"] == [] for d in decoded)
    assert verify(enumerate(decoded)).ok


def test_an_empty_log_verifies() -> None:
    assert check([]).ok and check([]).count == 0


# ----------------------------------------------------------------------------------------- the four tamperings

N = 40
POSITIONS = [0, 1, 17, N - 5]  # the last records: see the anchor tests for a truncated tail


def changed_field(records: Records, i: int) -> None:
    records[i]["counterparty"] = "district.310101"


def changed_masked_fields(records: Records, i: int) -> None:
    records[i]["deliveries"][0]["masked_fields"] = []  # a delivery made to look unmasked


def dropped_denial(records: Records, i: int) -> None:
    records[i]["deliveries"].pop()


def changed_and_resealed(records: Records, i: int) -> None:
    records[i]["decision"] = "deny"
    seal(records[i], records[i]["prev_hash"], records[i]["seq"])


def removed(records: Records, i: int) -> None:
    del records[i]


def removed_three(records: Records, i: int) -> None:
    del records[i : i + 3]


def swapped(records: Records, i: int) -> None:
    records[i], records[i + 1] = records[i + 1], records[i]


def moved_later(records: Records, i: int) -> None:
    records.insert(min(i + 5, len(records)), records.pop(i))


def moved_earlier(records: Records, i: int) -> None:
    records.insert(i, records.pop(min(i + 5, len(records) - 1)))


def inserted_unsealed(records: Records, i: int) -> None:
    records.insert(i, forged())


def inserted_sealed_in_place(records: Records, i: int) -> None:
    """The careful forger: the right seq and prev_hash, a valid hash (possible without a key)."""
    before = records[i - 1] if i > 0 else None
    records.insert(i, seal(forged(), before["hash"] if before else None, before["seq"] + 1 if before else 0))


def inserted_with_a_later_seq(records: Records, i: int) -> None:
    records.insert(i, seal(forged(), records[i]["hash"], records[i]["seq"] + 3))


def inserted_copy_of_an_earlier_record(records: Records, i: int) -> None:
    records.insert(i, copy.deepcopy(records[max(i - 3, 0)]) if i > 0 else copy.deepcopy(records[2]))


def inserted_copy_of_a_later_record(records: Records, i: int) -> None:
    records.insert(i, copy.deepcopy(records[i + 2]))


TAMPERINGS: list[tuple[Callable[[Records, int], None], str]] = [
    (changed_field, "changed"),
    (changed_masked_fields, "changed"),
    (dropped_denial, "changed"),
    (changed_and_resealed, "changed"),
    (removed, "removed"),
    (removed_three, "removed"),
    (swapped, "reordered"),
    (moved_later, "reordered"),
    (moved_earlier, "reordered"),
    (inserted_unsealed, "inserted"),
    (inserted_sealed_in_place, "inserted"),
    (inserted_with_a_later_seq, "inserted"),
    (inserted_copy_of_an_earlier_record, "inserted"),
    (inserted_copy_of_a_later_record, "inserted"),
]


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize(("tamper", "kind"), TAMPERINGS, ids=[t.__name__ for t, _ in TAMPERINGS])
def test_each_tampering_is_caught_at_its_offset_with_its_kind(
    tamper: Callable[[Records, int], None], kind: str, position: int
) -> None:
    records = chain(N)
    assert check(records).ok
    tampered = copy.deepcopy(records)
    tamper(tampered, position)
    result = check(tampered)
    assert not result.ok
    assert result.first_break is not None
    assert (result.first_break.offset, result.first_break.kind) == (position, kind), result.first_break.message
    assert result.first_break.message


def test_a_changed_last_record_is_caught() -> None:
    records = chain(10)
    records[-1]["actor"] = "municipal.police"
    assert check(records).first_break.to_json()["offset"] == 9  # type: ignore[union-attr]


def test_the_first_break_is_reported_even_when_the_log_is_tampered_twice() -> None:
    records = chain(N)
    changed_field(records, 30)
    removed(records, 12)
    brk = check(records).first_break
    assert brk is not None and (brk.offset, brk.kind) == (12, "removed")


def test_an_undecodable_record_is_a_change_unless_the_chain_skips_it() -> None:
    records = chain(10)
    verifier = ChainVerifier()
    for offset, record in enumerate(records[:5]):
        verifier.feed(offset, record)
    verifier.feed_undecodable(5, "bad_magic")
    verifier.feed(6, records[6])
    brk = verifier.result().first_break
    assert brk is not None and (brk.offset, brk.kind) == (5, "changed") and "bad_magic" in brk.message
    verifier = ChainVerifier()
    for offset, record in enumerate(records[:5]):
        verifier.feed(offset, record)
    verifier.feed_undecodable(5, "bad_magic")
    verifier.feed(6, records[5])
    brk = verifier.result().first_break
    assert brk is not None and (brk.offset, brk.kind) == (5, "inserted")


def test_verification_streams_and_stops_reading_once_the_break_is_known() -> None:
    records = chain(10)
    changed_field(records, 3)
    pulled = []

    def endless() -> Iterator[tuple[int, dict[str, Any]]]:
        for offset in itertools.count():
            pulled.append(offset)
            yield offset, records[offset] if offset < len(records) else seal(audit(offset), None, offset)

    result = verify(endless())
    assert result.first_break is not None and result.first_break.offset == 3
    assert pulled == [0, 1, 2, 3, 4]  # one record of look-ahead, then done


# ----------------------------------------------------------------------------------------- checkpoints


def test_checkpoints_every_n_records_carry_count_range_and_head() -> None:
    records = chain(25, every=10)
    checkpoints = [r for r in records if r["action"] == CHECKPOINT]
    assert [r["seq"] for r in checkpoints] == [10, 21]
    assert [r["seq"] for r in records] == list(range(len(records)))
    for cp in checkpoints:
        count, from_seq, head = parse_checkpoint_reason(cp["reason"])
        assert count == 10 and from_seq == cp["seq"] - 10 and head == cp["prev_hash"]
        assert cp["event_id"] == cp["audit_id"] == f"checkpoint:0:{cp['seq']}"
        assert cp["actor"] == "hub" and cp["decision"] == "allow" and cp["key_hash"] is None
    result = check(records)
    assert result.ok and result.checkpoints == 2


def test_checkpoints_after_t_seconds_only_when_records_are_waiting() -> None:
    writer = ChainWriter(3, checkpoint_every=1000, checkpoint_seconds=5)
    first = writer.seal_batch([audit(0), audit(1)], NOW)
    assert [r["action"] for r in first] == ["publish", "publish"]
    assert writer.tick(NOW + 4_999) == []
    (cp,) = writer.tick(NOW + 5_000)
    assert cp["action"] == CHECKPOINT and parse_checkpoint_reason(cp["reason"])[:2] == (2, 0)
    assert writer.tick(NOW + 20_000) == []  # nothing new since: no empty checkpoint
    later = writer.seal_batch([audit(2)], NOW + 30_000)  # the window is older than 5 s: closed right away
    assert [r["action"] for r in later] == ["publish", CHECKPOINT]
    assert check(first + [cp] + later, partition=3).ok


def test_a_checkpoint_that_lies_about_its_window_is_caught() -> None:
    records = chain(15, every=10)
    records[10]["reason"] = "count=12;from_seq=0;head=" + records[9]["hash"]
    seal(records[10], records[10]["prev_hash"], 10)
    records[11]["prev_hash"] = records[10]["hash"]
    for i in range(11, len(records)):  # even with everything after it re-sealed
        seal(records[i], records[i - 1]["hash"], i)
    brk = check(records).first_break
    assert brk is not None and (brk.offset, brk.kind) == (10, "changed") and "checkpoint" in brk.message


def test_a_checkpoint_moved_to_another_partition_is_caught() -> None:
    records = chain(15, every=10)
    assert check(records, partition=0).ok
    brk = check(records, partition=1).first_break
    assert brk is not None and brk.offset == 10 and "partition" in brk.message


# ----------------------------------------------------------------------------------------- resuming


def test_a_new_owner_resumes_the_chain_from_the_last_record_of_the_partition() -> None:
    first = ChainWriter(0, checkpoint_every=10).seal_batch([audit(i) for i in range(14)], NOW)
    state = resume_state(first[-1])
    assert state == ChainState(next_seq=15, head=first[-1]["hash"], window_start=15)
    second = ChainWriter(0, state, checkpoint_every=10).seal_batch([audit(i) for i in range(14, 40)], NOW)
    assert second[0]["prev_hash"] == first[-1]["hash"] and second[0]["seq"] == 15
    checkpoints = [parse_checkpoint_reason(r["reason"]) for r in second if r["action"] == CHECKPOINT]
    assert [c[:2] for c in checkpoints] == [(10, 15), (10, 26)]
    assert check(first + second).ok


def test_resume_from_an_empty_partition_starts_the_chain() -> None:
    assert resume_state(None) == ChainState()
    writer = ChainWriter(0, resume_state(None))
    (record,) = writer.seal_batch([audit(0)], NOW)
    assert record["seq"] == 0 and record["prev_hash"] is None


def test_resume_refuses_an_unsealed_record() -> None:
    with pytest.raises(ValueError, match="not sealed"):
        resume_state(audit(0))


def test_a_writer_that_did_not_resume_forks_the_chain_and_verify_says_where() -> None:
    first = chain(10)
    restarted = ChainWriter(0).seal_batch([audit(i) for i in range(10, 15)], NOW)  # starts again at seq 0
    brk = check(first + restarted).first_break
    assert brk is not None and (brk.offset, brk.kind) == (10, "inserted")


# ----------------------------------------------------------------------------------------- keyed chains


def test_a_keyed_chain_verifies_only_with_its_key() -> None:
    records = chain(20, key=KEY, every=8)
    assert all(r["hash"].startswith(KEYED_PREFIX) for r in records)
    assert check(records, key=KEY).ok
    no_key = check(records).first_break
    assert no_key is not None and (no_key.offset, no_key.kind) == (0, "unverifiable")
    wrong = check(records, key=b"another key").first_break
    assert wrong is not None and (wrong.offset, wrong.kind) == (0, "changed")


def test_a_forger_without_the_key_cannot_reseal_a_change() -> None:
    records = chain(20, key=KEY)
    records[6]["counterparty"] = "district.310101"
    seal(records[6], records[6]["prev_hash"], 6)  # a plain hash
    assert (check(records, key=KEY).first_break.offset, check(records, key=KEY).first_break.kind) == (6, "changed")  # type: ignore[union-attr]
    seal(records[6], records[6]["prev_hash"], 6, key=b"guessed key")  # or a keyed hash with the wrong key
    brk = check(records, key=KEY).first_break
    assert brk is not None and (brk.offset, brk.kind) == (6, "changed")


def test_a_forger_without_the_key_cannot_insert() -> None:
    records = chain(20, key=KEY)
    records.insert(9, seal(forged(), records[8]["hash"], 9))  # valid sha256, right seq and link
    brk = check(records, key=KEY).first_break
    assert brk is not None and (brk.offset, brk.kind) == (9, "inserted")


def test_a_forger_without_the_key_cannot_rewrite_the_tail() -> None:
    """Unkeyed, rewriting every record from a point on goes unseen; keyed, the first rewritten one is caught."""
    for key in (None, KEY):
        records = chain(20, key=key)
        records[12]["counterparty"] = "district.310101"
        for i in range(12, 20):
            seal(records[i], records[i - 1]["hash"], i, key=b"forger's own key" if key else None)
        result = check(records, key=key)
        if key is None:
            assert result.ok
        else:
            assert result.first_break is not None and result.first_break.offset == 12


# ----------------------------------------------------------------------------------------- anchors, retention


def test_an_anchor_from_an_earlier_verification_catches_a_truncated_or_rewritten_tail() -> None:
    records = chain(20)
    earlier = check(records)
    anchor = Anchor(earlier.head_seq, earlier.head_hash)  # type: ignore[arg-type]
    more = ChainWriter(0, resume_state(records[-1])).seal_batch([audit(i) for i in range(20, 25)], NOW)
    assert check(records + more, anchor=anchor).ok
    truncated = check(records[:15], anchor=anchor).first_break
    assert truncated is not None and (truncated.offset, truncated.kind) == (15, "removed")
    rewritten = copy.deepcopy(records)
    for i in range(15, 20):
        rewritten[i]["reason"] = "locality-return"
        seal(rewritten[i], rewritten[i - 1]["hash"], i)
    brk = check(rewritten, anchor=anchor).first_break
    assert brk is not None and (brk.offset, brk.kind) == (19, "changed")
    emptied = check([], anchor=anchor).first_break
    assert emptied is not None and emptied.kind == "removed"


def test_a_log_whose_start_expired_verifies_from_its_first_record() -> None:
    records = chain(20)
    pairs = list(enumerate(records))[8:]
    assert not verify(pairs).ok  # from offset 8 it must be checked as the rest of a chain
    result = verify(pairs, genesis=False)
    assert result.ok and result.first_seq == 8 and result.count == 12


def test_seal_batch_costs_little_next_to_avro() -> None:
    """Not a timing test: seal touches each record once and keeps no per-record state."""
    writer = ChainWriter(0)
    records = writer.seal_batch([audit(i) for i in range(100)], NOW)
    assert writer.state.next_seq == 100 and len(records) == 100
    assert writer.state.head == records[-1]["hash"]
    out = io.BytesIO()
    fastavro.schemaless_writer(out, AUDIT, records[-1])  # every sealed record is a valid AuditRecord


def test_a_shared_delivery_entry_hashes_like_a_fresh_copy() -> None:
    """The hot path shares one entry dict between events of a route; the cached cleaning changes nothing."""
    from hub.audit.chain import canonical_bytes

    entry = {"counterparty": "district.310115", "scenario": None, "grant": "g1", "to_tier": "district",
             "direction": "down", "decision": "allow", "reason": "locality-return", "masked_fields": []}
    first = {"event_id": "e1", "action": "publish", "deliveries": [entry]}
    second = {"event_id": "e2", "action": "publish", "deliveries": [entry]}
    assert canonical_bytes(first) == canonical_bytes({**first, "deliveries": [dict(entry)]})
    assert canonical_bytes(second) == canonical_bytes({**second, "deliveries": [dict(entry)]})
