"""Hostile Avro bodies: length claims and nesting that fastavro alone would crash, hang or allocate on."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from bench.hostile import zigzag  # Avro's zig-zag long encoding, as the hostile run builds bodies
from hub.registry import framing
from hub.registry.framing import MAX_DEPTH, MAX_ZERO_WIDTH_ITEMS, FramingError
from hub.settings import REPO_ROOT


def record_of(field_type: object) -> object:
    return framing.parse_schema({"type": "record", "name": "R", "fields": [{"name": "f", "type": field_type}]})


LINKED = framing.parse_schema(
    {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]})
NULLS = record_of({"type": "array", "items": "null"})


def rule_of(body: bytes, parsed: object) -> str:
    with pytest.raises(FramingError) as err:
        framing.decode_body(body, parsed)
    return err.value.rule


def test_deep_recursive_nesting_is_rejected_not_a_segfault() -> None:
    # 200,000 levels: fastavro's compiled reader overflows the C stack beyond ~1,000 (the process dies)
    assert rule_of(b"\x02" * 200_000 + b"\x00", LINKED) == "nesting_too_deep"


def test_recursive_schema_still_decodes_reasonable_bodies() -> None:
    record = framing.decode_body(b"\x02" * 10 + b"\x00", LINKED)
    depth = 0
    while record["next"] is not None:
        record, depth = record["next"], depth + 1
    assert depth == 10
    assert rule_of(b"\x02" * MAX_DEPTH, LINKED) in ("nesting_too_deep", "truncated")


def test_zero_byte_items_claimed_by_the_billion_are_rejected_at_once() -> None:
    started = time.monotonic()
    assert rule_of(zigzag(2**31) + b"\x00", NULLS) == "length_exceeds_body"
    assert rule_of(zigzag(-(2**40)) + zigzag(0) + b"\x00", NULLS) == "length_exceeds_body"
    assert time.monotonic() - started < 1.0
    assert framing.decode_body(zigzag(3) + b"\x00", NULLS) == {"f": [None, None, None]}
    assert rule_of(zigzag(MAX_ZERO_WIDTH_ITEMS + 1) + b"\x00", NULLS) == "length_exceeds_body"


def test_a_record_of_nothing_but_itself_cannot_recurse_forever() -> None:
    parsed = framing.parse_schema({"type": "record", "name": "Loop", "fields": [
        {"name": "more", "type": {"type": "array", "items": "Loop"}}]})
    assert framing.needs_scan(parsed)
    assert framing.decode_body(zigzag(2) + b"\x00\x00\x00", parsed) == {"more": [{"more": []}, {"more": []}]}
    assert rule_of(b"\x02" * 5_000, parsed) == "nesting_too_deep"


@pytest.mark.parametrize("field_type, body", [
    ("string", zigzag(2**31) + b"ab"),
    ("bytes", zigzag(2**62) + b"ab"),
    ("bytes", zigzag(-5) + b"ab"),
    ({"type": "array", "items": "int"}, zigzag(2**31) + b"\x02" * 10),
    ({"type": "array", "items": "int"}, zigzag(-(2**31)) + zigzag(2**40) + b"\x02" * 4),
    ({"type": "map", "values": "string"}, zigzag(2**31) + b"\x02a\x02b"),
    ({"type": "fixed", "name": "F", "size": 4}, b"ab"),
])
def test_huge_claims_on_fast_path_schemas_fail_without_allocating(field_type: object, body: bytes) -> None:
    parsed = record_of(field_type)
    assert not framing.needs_scan(parsed)  # fastavro stops at the end of the body for these
    tracemalloc.start()
    try:
        assert rule_of(body, parsed) in ("truncated", "invalid_avro")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_the_scanner_rejects_length_claims_beyond_the_body() -> None:
    parsed = framing.parse_schema({"type": "record", "name": "T", "fields": [
        {"name": "s", "type": "string"}, {"name": "kids", "type": {"type": "array", "items": "T"}}]})
    assert rule_of(zigzag(2**31) + b"ab", parsed) == "length_exceeds_body"
    assert rule_of(zigzag(0) + zigzag(2**31) + b"\x00" * 8, parsed) == "length_exceeds_body"
    assert rule_of(zigzag(0) + zigzag(-3) + zigzag(2**40), parsed) == "length_exceeds_body"
    assert rule_of(zigzag(0) + b"\xff" * 11, parsed) == "invalid_avro"
    assert framing.decode_body(zigzag(1) + b"a" + zigzag(1) + zigzag(0) + zigzag(0) + zigzag(0), parsed) == {
        "s": "a", "kids": [{"s": "", "kids": []}]}


def test_invalid_utf8_and_out_of_range_logical_values_are_invalid_avro() -> None:
    assert rule_of(zigzag(2) + b"\xff\xfe", record_of("string")) == "invalid_avro"
    ts = record_of({"type": "long", "logicalType": "timestamp-millis"})
    assert rule_of(zigzag(2**62), ts) == "invalid_avro"
    date = record_of({"type": "int", "logicalType": "date"})
    assert rule_of(zigzag(2**31 - 1), date) == "invalid_avro"


def test_catalogue_schemas_keep_the_fast_path() -> None:
    for path in sorted((REPO_ROOT / "schemas").rglob("*.avsc")):
        try:
            parsed = framing.parse_schema(path.read_text())
        except Exception:
            continue  # a schema that needs its references to parse
        assert not framing.needs_scan(parsed), path
