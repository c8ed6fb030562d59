"""Confluent wire format: byte 0 = magic 0, bytes 1-4 = big-endian schema id, then Avro binary.

Pure functions, no I/O: the hot path calls these a batch at a time.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any

import fastavro

MAGIC = 0
HEADER = struct.Struct(">bI")
HEADER_SIZE = HEADER.size  # 5


class FramingError(ValueError):
    """A value is not a well-formed Confluent-framed Avro record. ``rule`` names why, for quarantine."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def frame(schema_id: int, avro_body: bytes) -> bytes:
    return HEADER.pack(MAGIC, schema_id) + avro_body


def split(value: bytes | None) -> tuple[int, memoryview]:
    """Return (schema id, Avro body) or raise FramingError(missing_value | bad_magic | truncated)."""
    if not value:
        raise FramingError("missing_value", "the record has no value")
    if len(value) < HEADER_SIZE:
        raise FramingError("truncated", f"value is {len(value)} bytes, shorter than the 5-byte Confluent header")
    if value[0] != MAGIC:
        raise FramingError("bad_magic", f"first byte is {value[0]:#04x}, not the Confluent magic byte 0x00")
    return HEADER.unpack_from(value)[1], memoryview(value)[HEADER_SIZE:]


def decode_body(body: memoryview | bytes, parsed_schema: Any) -> dict[str, Any]:
    """Decode one Avro body; the whole body must be consumed, else the writer schema is wrong."""
    stream = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(stream, parsed_schema, None)
    except (EOFError, struct.error, IndexError) as exc:
        raise FramingError("truncated", f"Avro body ends early for its schema: {exc or type(exc).__name__}") from exc
    except (ValueError, UnicodeDecodeError, TypeError, OverflowError, MemoryError) as exc:
        raise FramingError("invalid_avro", f"Avro body does not decode with its schema: {exc}") from exc
    if stream.tell() != len(body):
        raise FramingError(
            "trailing_bytes", f"{len(body) - stream.tell()} bytes left after decoding: wrong schema id for this body"
        )
    if not isinstance(record, dict):
        raise FramingError("invalid_avro", "the schema's top level is not a record")
    return record


def encode(schema_id: int, parsed_schema: Any, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(out, parsed_schema, record)
    return out.getvalue()


def parse_schema(schema: str | dict[str, Any], named_schemas: dict[str, Any] | None = None) -> Any:
    """fastavro-parse a schema given as JSON text or dict (raises ValueError-like errors on bad schemas).

    ``named_schemas`` are named types it may use without defining them (those of its Confluent references,
    as :func:`named_types` builds them); they are copied, not changed.
    """
    if isinstance(schema, str):
        schema = json.loads(schema)
    if named_schemas:
        return fastavro.parse_schema(schema, named_schemas=dict(named_schemas))
    return fastavro.parse_schema(schema)


def named_types(dependencies: list[str | dict[str, Any]]) -> dict[str, Any]:
    """fastavro's named types of referenced schemas, each given after the ones it references itself."""
    named: dict[str, Any] = {}
    for dependency in dependencies:
        document = json.loads(dependency) if isinstance(dependency, str) else dependency
        fastavro.parse_schema(document, named_schemas=named)
    return named


def make_encoder(schema_id: int, schema: str | dict[str, Any]) -> Callable[[dict[str, Any]], bytes]:
    """A fast ``record -> Confluent-framed bytes`` function for one schema (compiled once; fastavro fallback)."""
    from hub.registry.fastwrite import UnsupportedSchema, compile_writer

    if isinstance(schema, str):
        schema = json.loads(schema)
    prefix = HEADER.pack(MAGIC, schema_id)
    try:
        write = compile_writer(schema)
    except UnsupportedSchema:
        parsed = parse_schema(schema)
        return lambda record: encode(schema_id, parsed, record)

    def encode_fast(record: dict[str, Any]) -> bytes:
        out = bytearray(prefix)
        write(out, record)
        return bytes(out)

    return encode_fast
