"""The audit hash chain without Kafka: sealing, checkpoints, resuming, and catching every kind of tampering."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import enum
import functools
import hashlib
import io
import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import fastavro
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.audit import chain as chain_module
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


# ------------------------------------------------------------- orjson: the same bytes as the json module


def reference_bytes(record: dict[str, Any]) -> bytes:
    """canonical_bytes as every chain so far was sealed: the json module's encoder (before orjson)."""
    content = {k: v for k, v in record.items() if v is not None and k != "hash"}
    deliveries = content.get("deliveries")
    if deliveries is not None:
        if deliveries:
            content["deliveries"] = [{k: v for k, v in d.items() if v not in (None, [], ())} for d in deliveries]
        else:
            del content["deliveries"]
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=chain_module._json_default).encode()


def outcome(encode: Callable[[dict[str, Any]], bytes], record: dict[str, Any]) -> bytes | tuple[type, str]:
    try:
        return encode(record)
    except Exception as exc:  # the same error (type and message) as before counts as the same outcome
        return type(exc), str(exc)


@contextlib.contextmanager
def json_encoder_forbidden() -> Iterator[None]:
    """Inside: canonical_bytes must not fall back to the json encoder (the bytes are orjson's)."""
    def refuse(value: Any) -> str:
        raise AssertionError("canonical_bytes fell back to the json encoder")

    with mock.patch.object(chain_module, "_ENCODE", refuse):
        yield


TRICKY = "".join(map(chr, range(0x20))) + '"\\/\x7f\x80\xa0\xad\u2028\u2029\ufeff\uffff\U0001f600\U0010ffff'
texts = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY)), max_size=12)  # no surrogates
keys = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY)), max_size=6)
any_texts = st.text(st.one_of(st.characters(), st.sampled_from(TRICKY)), max_size=12)  # lone surrogates too
in_64_bits = st.integers(min_value=-(2**63), max_value=2**64 - 1)
edges = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 2**100, -(2**100)])
datetimes = st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=8))]))
plain_leaves = st.one_of(texts, in_64_bits, st.booleans(), st.none(), datetimes)
plain_values = st.recursive(
    plain_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
any_leaves = st.one_of(
    any_texts, st.integers(), edges, st.booleans(), st.none(), datetimes, st.floats(),
    st.binary(max_size=4), st.uuids(), st.dates(),
)
any_values = st.recursive(
    any_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(keys, inner, max_size=4) | st.dictionaries(st.integers(0, 9), inner, max_size=2),
    max_leaves=12,
)


def audit_records(leaves: st.SearchStrategy[Any], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """AuditRecord-shaped dicts (every field of the schema, deliveries included) with ``leaves`` as field
    values, and a few extra fields holding ``values``."""
    optional = st.one_of(st.none(), leaves)
    entry = st.fixed_dictionaries({
        "counterparty": leaves, "scenario": optional, "grant": optional, "to_tier": optional,
        "direction": optional, "decision": leaves, "reason": leaves,
        "masked_fields": st.one_of(st.lists(leaves, max_size=3), st.just([])),
    })
    fields = {
        "event_id": leaves, "audit_id": leaves, "ts": st.one_of(leaves, in_64_bits, datetimes), "action": leaves,
        "actor": leaves, "decision": leaves, "reason": leaves, "masked_fields": st.lists(leaves, max_size=3),
        **{name: optional for name in ("counterparty", "resource", "scenario", "grant", "from_tier", "to_tier",
                                       "direction", "key_hash", "prev_hash", "hash", "source")},
        "seq": st.one_of(st.none(), leaves, in_64_bits), "deliveries": st.lists(entry, max_size=3),
    }
    return st.builds(lambda record, extra: {**extra, **record},
                     st.fixed_dictionaries(fields), st.dictionaries(keys, values, max_size=3))


@settings(max_examples=400, deadline=None, database=None)
@given(audit_records(st.one_of(texts, in_64_bits, st.booleans(), datetimes), plain_values))
def test_orjson_gives_the_json_modules_bytes_for_every_plain_audit_record(record: dict[str, Any]) -> None:
    """Strings (controls, quotes, backslashes, non-BMP), 64-bit ints, booleans, datetimes, nested lists, tuples
    and dicts: orjson's bytes, the same as the json module's."""
    with json_encoder_forbidden():
        assert canonical_bytes(record) == reference_bytes(record)
        assert record_hash(record) == hashlib.sha256(reference_bytes(record)).hexdigest()


@settings(max_examples=400, deadline=None, database=None)
@given(audit_records(any_leaves, any_values))
def test_canonical_bytes_are_the_json_modules_for_any_audit_record(record: dict[str, Any]) -> None:
    """Anything else too (big ints, floats, NaN, lone surrogates, bytes, UUIDs, dates, int keys): the same bytes
    or the same error as before orjson."""
    assert outcome(canonical_bytes, record) == outcome(reference_bytes, record)


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    ONE = 1


class Tier(enum.StrEnum):
    DISTRICT = "district"


class Name(str):
    pass


@dataclasses.dataclass
class Point:
    x: int = 1


@pytest.mark.parametrize("value", [
    "".join(map(chr, range(0x20))),  # \b \f \n \r \t short, the others \u00XX in lowercase hex
    "\x7f DEL \u2028 \u2029 \ufeff raw", "\U0001f600 \U0010ffff non-BMP raw", 'quote " back\\slash /',
    "张三", 2**63 - 1, 2**64 - 1, -(2**63), 0, -1, True, False,
    datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 8, 0, 0, 999), datetime(1969, 12, 31, 23, 59, 59, 1500),
    datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=8))),
    [None, True, 1, "x", ["y"], {"b": 1, "a": 2}], ("tuple", 1), {"é": 1, "e": 2, "\U0001f600": 3, "\uffff": 4},
])
def test_orjson_encodes_plain_values_as_the_json_module(value: Any) -> None:
    for record in ({"reason": value, "seq": 3}, {"masked_fields": [value], "ts": value},
                   {"deliveries": [{"counterparty": "n", "reason": value, "masked_fields": [value]}]}):
        with json_encoder_forbidden():
            assert canonical_bytes(record) == reference_bytes(record)


@pytest.mark.parametrize("value", [
    2**64, -(2**63) - 1, 2**200,  # orjson refuses ints beyond 64 bits
    0.1, 1.0, -0.0, 1e-05, 1e16, 1e22, 5e-324, 1.7976931348623157e308,  # floats: 1e-05 is 0.00001 for orjson
    {1: "int key"}, {True: "bool key"}, {Name("b"): 1, "a": 2},  # keys orjson refuses
    b"\x00\xff", bytearray(b"ab"), memoryview(b"ab"),  # _json_default's hex
    Level.ONE, Tier.DISTRICT, Name("str subclass"),  # subclasses: the json module's own way
    functools.reduce(lambda inner, _: [inner], range(300), ["deep"]),  # deeper than orjson goes
])
def test_values_orjson_would_encode_otherwise_fall_back_to_the_json_encoder(value: Any) -> None:
    for record in ({"reason": value, "seq": 3}, {"masked_fields": [value], "ts": 1},
                   {"deliveries": [{"counterparty": "n", "reason": value}]}):
        assert canonical_bytes(record) == reference_bytes(record)


@pytest.mark.parametrize(("value", "error"), [
    (float("nan"), ValueError), (float("inf"), ValueError), (-float("inf"), ValueError),  # orjson: null
    ("lone \ud800 surrogate", UnicodeEncodeError), ("\udfff", UnicodeEncodeError),
    (date(2026, 1, 1), TypeError), (uuid.UUID(int=1), TypeError), (Colour.RED, TypeError),  # orjson: encoded
    (Point(), TypeError), ({1, 2}, TypeError), (orjson.Fragment(b"1"), TypeError), (object(), TypeError),
    ({1: "a", "b": 2}, TypeError),  # keys that do not sort
])
def test_values_the_json_encoder_refused_are_still_refused_with_the_same_error(value: Any, error: type) -> None:
    for record in ({"reason": value, "seq": 3}, {"masked_fields": [value], "ts": 1},
                   {"deliveries": [{"counterparty": "n", "reason": value}]}):
        with pytest.raises(error) as raised:
            canonical_bytes(record)
        assert outcome(canonical_bytes, record) == outcome(reference_bytes, record) == (type(raised.value),
                                                                                        str(raised.value))


@pytest.mark.parametrize("record", [{1: "int key", "a": "x"}, {Name("b"): 1, "a": ["x"]}, {True: 1, "seq": 2}])
def test_record_keys_orjson_refuses_fall_back_to_the_json_encoder(record: dict[Any, Any]) -> None:
    assert outcome(canonical_bytes, record) == outcome(reference_bytes, record)


def test_the_records_the_hub_writes_and_reads_take_orjson() -> None:
    """The hot path (built records, shared delivery entries) and verification (Avro-decoded records,
    datetimes) never fall back; and a chain sealed with orjson verifies as the json module sees it."""
    records = [audit(i) for i in range(5)] + [legacy_audit(i) for i in range(5)]
    with json_encoder_forbidden():
        sealed = ChainWriter(0, checkpoint_every=3).seal_batch(records, NOW)
        decoded = [framing.decode_body(framing.split(framing.encode(1, AUDIT, r))[1], AUDIT) for r in sealed]
        assert verify(enumerate(decoded)).ok
        for record in sealed + decoded:
            assert canonical_bytes(record) == reference_bytes(record)
    for record in sealed + decoded:
        assert record["hash"] == hashlib.sha256(reference_bytes(record)).hexdigest()


def test_a_shared_delivery_entry_that_is_not_plain_falls_back_each_time() -> None:
    """A cleaned entry is cached; one holding a float is marked so that every record with it falls back."""
    entry = {"counterparty": "n", "decision": "allow", "reason": "r", "masked_fields": ["a", 1e-05]}
    for i in range(3):
        record = {"event_id": f"e{i}", "deliveries": [entry, {"counterparty": "m", "reason": 1e-05}]}
        assert canonical_bytes(record) == reference_bytes(record)
        assert b"1e-05" in canonical_bytes(record)
