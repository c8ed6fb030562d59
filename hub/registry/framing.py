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


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})


def _fullname(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _name_of(node: dict[str, Any], enclosing: str | None) -> str:
    """A named type's full name (its own namespace, else the enclosing one; a dotted name is already full)."""
    name = node["name"]
    if "." in name:
        return name
    namespace = node.get("namespace")
    return _fullname(name, enclosing if namespace is None else namespace or None)


def inline_references(schema: str | dict[str, Any] | list[Any], dependencies: list[str]) -> Any:
    """A self-contained copy of a schema whose named types come from Confluent references.

    ``dependencies`` are the referenced schemas' texts (each after its own dependencies, as the registry
    client resolves them); each referenced type is written in full where first used, under its full name,
    and by name after that, so the result parses on its own (e.g. to derive a masked schema from it).
    """
    definitions: dict[str, Any] = {}

    def collect(node: Any, namespace: str | None) -> None:
        if isinstance(node, list):
            for branch in node:
                collect(branch, namespace)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in _NAMED and isinstance(node.get("name"), str):
                full = _name_of(node, namespace)
                definitions.setdefault(full, (node, full))
                inner = full.rpartition(".")[0] or None
                for fld in node.get("fields", []) if kind in ("record", "error") else []:
                    if isinstance(fld, dict):
                        collect(fld.get("type"), inner)
            elif kind in ("array", "map"):
                collect(node.get("items" if kind == "array" else "values"), namespace)
            elif isinstance(kind, (dict, list)):
                collect(kind, namespace)

    for dependency in dependencies:
        collect(json.loads(dependency), None)
    defined: set[str] = set()

    def walk(node: Any, namespace: str | None) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            full = _fullname(node, namespace)
            if full in defined or full not in definitions:
                return node
            definition, _ = definitions[full]
            copy = {k: v for k, v in definition.items() if k != "namespace"}
            copy["name"] = full
            return walk(copy, None)
        if isinstance(node, list):
            return [walk(branch, namespace) for branch in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        out = dict(node)
        if kind in _NAMED and isinstance(node.get("name"), str):
            full = _name_of(node, namespace)
            defined.add(full)
            inner = full.rpartition(".")[0] or None
            if kind in ("record", "error"):
                out["fields"] = [
                    dict(fld, type=walk(fld.get("type"), inner)) if isinstance(fld, dict) else fld
                    for fld in node.get("fields", [])
                ]
        elif kind in ("array", "map"):
            key = "items" if kind == "array" else "values"
            out[key] = walk(node.get(key), namespace)
        elif isinstance(kind, (str, dict, list)):
            out["type"] = walk(kind, namespace)
        return out

    document = json.loads(schema) if isinstance(schema, str) else schema
    return walk(document, None)
