"""The compiled Avro writers produce exactly fastavro's bytes, for every schema the hub ships."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import fastavro
import pytest

from hub.demo.data import record_generator
from hub.registry import framing
from hub.registry.fastwrite import compile_writer
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


def test_missing_field_without_default_is_an_error() -> None:
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": "string"}]}
    with pytest.raises(ValueError, match="'f' is missing"):
        compile_writer(schema)(bytearray(), {})
