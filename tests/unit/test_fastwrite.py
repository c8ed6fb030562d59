"""The compiled Avro writers produce exactly fastavro's bytes, for every schema the hub ships."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.demo.data import record_generator
from hub.registry import framing
from hub.registry.fastwrite import UnsupportedSchema, compile_encoder, compile_writer
from hub.settings import REPO_ROOT

SCHEMA_FILES = sorted((REPO_ROOT / "schemas").rglob("*.avsc"))


def fastavro_bytes(schema: dict, record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_same_bytes_as_fastavro(path: Path) -> None:
    schema = json.loads(path.read_text())
    make = record_generator(schema)
    rng = random.Random(path.name)
    encode = framing.make_encoder(7, schema)
    for _ in range(50):
        record = make(rng)
        assert encode(record) == framing.HEADER.pack(0, 7) + fastavro_bytes(schema, record)


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ("long", -1), ("long", 2**62), ("int", -(2**31)), ("double", 1.5), ("float", 0.25), ("boolean", True),
        ("string", "张三丰"), ("bytes", b"\x00\xff"), (["null", "string"], None), (["string", "null"], "x"),
        (["null", "long", "string"], "s"), (["null", "long", "string"], 5), ({"type": "array", "items": "int"}, []),
        ({"type": "map", "values": "bytes"}, {"a": b"1", "b": b""}),
        ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, "B"),
    ],
)
def test_primitives_and_unions(schema: object, value: object) -> None:
    wrapped = {"type": "record", "name": "R", "fields": [{"name": "f", "type": schema}]}
    out = bytearray()
    compile_writer(wrapped)(out, {"f": value})
    assert bytes(out) == fastavro_bytes(wrapped, {"f": value})


def written(schema: Any, value: Any) -> bytes:
    out = bytearray()
    compile_writer(schema)(out, value)
    return bytes(out)


def test_missing_field_without_default_is_an_error() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": "string"}]}
    with pytest.raises(ValueError, match="'f' is missing"):
        compile_writer(schema)(bytearray(), {})
    with pytest.raises(ValueError, match="'f' is missing"):  # any mapping, not only a dict
        compile_writer(schema)(bytearray(), MappingProxyType({}))
    with pytest.raises(ValueError, match="'f' is missing"):
        compile_encoder(schema)({"g": "x"})


def test_missing_field_of_a_nested_record_names_the_field() -> None:
    audit = json.loads((REPO_ROOT / "schemas/hub/audit_record.avsc").read_text())
    record = {"event_id": "e", "audit_id": "a", "ts": 1, "action": "publish", "actor": "n", "decision": "allow",
              "reason": "r", "deliveries": [{"counterparty": "c", "decision": "allow"}]}
    with pytest.raises(ValueError, match="'reason' is missing"):
        framing.make_encoder(1, audit)(record)
    record["deliveries"][0]["reason"] = "subscription"
    assert written(audit, record) == fastavro_bytes(audit, record)


def test_mappings_other_than_dicts_and_defaults() -> None:
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "long"}, {"name": "b", "type": "string", "default": "dflt"},
        {"name": "c", "type": ["null", "string"], "default": None},
        {"name": "d", "type": {"type": "array", "items": "int"}, "default": [1, 2]}]}
    for value in ({"a": 5}, MappingProxyType({"a": -5, "c": "x", "d": []}), {"a": 0, "b": "", "c": None}):
        assert written(schema, value) == fastavro_bytes(schema, dict(value))


def test_recursive_schemas_late_binding() -> None:
    linked = {"type": "record", "name": "Node", "namespace": "t", "fields": [
        {"name": "value", "type": "long"}, {"name": "next", "type": ["null", "Node"], "default": None}]}
    head: dict[str, Any] | None = None
    for i in range(300):
        head = {"value": i - 150, "next": head}
    assert written(linked, head) == fastavro_bytes(linked, head)

    tree = {"type": "record", "name": "Tree", "fields": [
        {"name": "label", "type": "string"},
        {"name": "children", "type": {"type": "array", "items": "Tree"}},
        {"name": "tags", "type": {"type": "map", "values": ["null", "Tree"]}}]}
    leaf = {"label": "leaf", "children": [], "tags": {}}
    value = {"label": "root", "children": [leaf, {"label": "mid", "children": [leaf], "tags": {"x": None}}],
             "tags": {"y": leaf, "z": None}}
    assert written(tree, value) == fastavro_bytes(tree, value)


def test_deep_nesting_compiles_within_the_interpreter_limits() -> None:
    schema: Any = "string"
    value: Any = "deep"
    for i in range(60):
        kind = i % 4
        if kind == 0:
            schema, value = {"type": "array", "items": schema}, [value, value] if i < 8 else [value]
        elif kind == 1:
            schema, value = ["null", schema], value
        elif kind == 2:
            schema, value = {"type": "record", "name": f"R{i}", "fields": [{"name": "f", "type": schema}]}, {"f": value}
        else:
            schema, value = {"type": "map", "values": schema}, {"k": value}
    wrapped = {"type": "record", "name": "Top", "fields": [{"name": "f", "type": schema}]}
    assert written(wrapped, {"f": value}) == fastavro_bytes(wrapped, {"f": value})


def test_field_names_never_become_code() -> None:
    hostile = "x'] + __import__('os').getpid() + r['\n\"\u2028"
    schema = {"type": "record", "name": "R", "fields": [{"name": hostile, "type": "string"},
                                                         {"name": "ok", "type": ["null", "long"], "default": None}]}
    assert written(schema, {hostile: "v"}) == fastavro_bytes(schema, {hostile: "v"})
    with pytest.raises(ValueError, match="is missing"):
        written(schema, {})
    with pytest.raises(UnsupportedSchema):
        compile_writer({"type": "record", "name": "R", "fields": [{"name": 1, "type": "string"}]})


def test_unsupported_constructs_fall_back_to_fastavro() -> None:
    decimal = {"type": "record", "name": "R", "fields": [
        {"name": "f", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}]}]}
    with pytest.raises(UnsupportedSchema):
        compile_writer(decimal)
    assert framing.make_encoder(3, decimal)({"f": None}) == framing.HEADER.pack(0, 3) + b"\x00"


# -- property: generated records of the hot path's schemas encode exactly as fastavro encodes them ----------

TEXT = st.one_of(
    st.text(max_size=12),
    st.text(min_size=60, max_size=700),  # lengths around and past the one-byte varint (64)
    st.text(alphabet="张三丰é😀\x00a", min_size=20, max_size=400),  # multi-byte UTF-8
)
LONGS = st.one_of(st.integers(-64, 64), st.integers(-(2**63), 2**63 - 1),
                  st.sampled_from([2**63 - 1, -(2**63), 63, 64, -65, 8191, 8192]))


def values(schema: Any) -> st.SearchStrategy[Any]:
    """Values of ``schema`` (the kinds the hub's schemas use), None for optional fields included."""
    if isinstance(schema, list):
        return st.one_of(*[values(branch) for branch in schema])
    if isinstance(schema, str):
        schema = {"type": schema}
    kind = schema["type"]
    if kind == "null":
        return st.none()
    if kind == "string":
        return TEXT
    if kind == "int":
        return st.integers(-(2**31), 2**31 - 1)
    if kind == "long" and schema.get("logicalType") == "timestamp-millis":
        return st.one_of(LONGS.filter(lambda n: abs(n) < 2**62),
                         st.datetimes(timezones=st.just(UTC), min_value=datetime(1970, 1, 2)))
    if kind == "long":
        return LONGS
    if kind == "array":
        return st.lists(values(schema["items"]), max_size=4)
    if kind == "record":
        required = {f["name"]: values(f["type"]) for f in schema["fields"] if "default" not in f}
        optional = {f["name"]: values(f["type"]) for f in schema["fields"] if "default" in f}
        return st.fixed_dictionaries(required, optional=optional)
    raise AssertionError(f"no strategy for {kind}")


AUDIT = json.loads((REPO_ROOT / "schemas/hub/audit_record.avsc").read_text())
VACCINATION = json.loads((REPO_ROOT / "schemas/health/vaccination_record.avsc").read_text())
MASKED_VACCINATION = {**VACCINATION, "name": "VaccinationRecord_masked", "fields": [
    f if f["name"] not in ("name", "resident_id") else {"name": f["name"], "type": ["null", "string"], "default": None}
    for f in VACCINATION["fields"] if f["name"] != "site_uscc"]}


@pytest.mark.parametrize("schema", [AUDIT, VACCINATION, MASKED_VACCINATION], ids=lambda s: s["name"])
def test_generated_records_same_bytes_as_fastavro(schema: dict[str, Any]) -> None:
    encode = framing.make_encoder(9, schema)
    write = compile_writer(schema)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(values(schema))
    def check(record: dict[str, Any]) -> None:
        expected = fastavro_bytes(schema, record)
        out = bytearray(b"prefix")
        write(out, record)
        assert bytes(out) == b"prefix" + expected
        assert encode(record) == framing.HEADER.pack(0, 9) + expected

    check()
