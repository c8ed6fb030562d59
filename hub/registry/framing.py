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
    """Decode one Avro body; the whole body must be consumed, else the writer schema is wrong.

    Bodies of a schema fastavro cannot decode safely (see :func:`needs_scan`) are scanned first, so a hostile
    body is rejected before fastavro recurses or allocates.
    """
    if needs_scan(parsed_schema):
        scan_body(body, parsed_schema)
    stream = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(stream, parsed_schema, None)
    except (EOFError, struct.error, IndexError) as exc:
        raise FramingError("truncated", f"Avro body ends early for its schema: {exc or type(exc).__name__}") from exc
    except Exception as exc:  # untrusted bytes: any other decoder error (logical types included) is a bad body
        raise FramingError("invalid_avro", f"Avro body does not decode with its schema: {exc!r}") from exc
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
    from hub.registry.fastwrite import UnsupportedSchema, compile_encoder

    if isinstance(schema, str):
        schema = json.loads(schema)
    try:
        return compile_encoder(schema, HEADER.pack(MAGIC, schema_id))
    except UnsupportedSchema:
        parsed = parse_schema(schema)
        return lambda record: encode(schema_id, parsed, record)


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


# ---------------------------------------------------------------- hostile bodies
# fastavro's compiled reader trusts the body: it recurses once per nesting level (a recursive schema and a
# body of 5,000 nested union branches overflow the C stack: a segfault, the worker dies) and it loops over an
# array's claimed item count (2^31 items of a zero-byte type such as ``null`` cost no input bytes: minutes of
# CPU and 16 GiB of list). Byte strings, and items of one byte or more, are safe: fastavro stops at the end of
# the body. So only schemas with recursion or zero-byte array items are scanned first, in pure Python,
# against explicit limits; every other schema keeps the fast path.
MAX_DEPTH = 200  # nesting levels (records, unions, arrays, maps) a scanned body may use; fastavro survives ~1,000
MAX_ZERO_WIDTH_ITEMS = 65_536  # array items of a zero-byte type a scanned body may claim in all
_PRIMITIVE_WIDTH = {"null": 0, "boolean": 1, "int": 1, "long": 1, "float": 4, "double": 8, "bytes": 1, "string": 1}
_SCAN_CACHE: dict[int, tuple[Any, bool]] = {}  # id(parsed schema) -> (the schema, kept so its id stays its own; ...)
_SCAN_CACHE_MAX = 4096


def _named(parsed: Any) -> dict[str, Any]:
    return parsed.get("__named_schemas", {}) if isinstance(parsed, dict) else {}


def _resolve(node: Any, named: dict[str, Any]) -> Any:
    """A schema node with a named reference replaced by its definition."""
    if isinstance(node, str) and node not in _PRIMITIVE_WIDTH:
        return named.get(node, node)
    return node


def _kind(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    kind = node.get("type")
    return kind if isinstance(kind, str) else "wrapped"


def min_width(node: Any, named: dict[str, Any], visiting: frozenset[str] = frozenset()) -> int:
    """The fewest bytes a value of ``node`` can take (a type already being measured counts 0)."""
    if isinstance(node, str) and node in visiting:
        return 0
    if isinstance(node, str) and node not in _PRIMITIVE_WIDTH:
        visiting = visiting | {node}
    node = _resolve(node, named)
    kind = _kind(node)
    if kind in _PRIMITIVE_WIDTH:
        return _PRIMITIVE_WIDTH[kind]
    if kind in ("union", "enum", "array", "map"):
        return 1  # a branch index, a symbol index, a block count
    if kind == "fixed":
        return int(node.get("size", 0))
    if kind in ("record", "error"):
        if node.get("name") is not None:
            visiting = visiting | {node["name"]}
        return sum(min_width(f["type"], named, visiting) for f in node.get("fields", []))
    if kind == "wrapped":
        return min_width(node["type"], named, visiting)
    return 1


def _is_unsafe(parsed: Any) -> bool:
    """True if the schema is recursive or has an array whose items may take zero bytes."""
    named = _named(parsed)
    unsafe = False

    def walk(node: Any, path: frozenset[str]) -> None:
        nonlocal unsafe
        if unsafe:
            return
        if isinstance(node, str) and node not in _PRIMITIVE_WIDTH:
            if node in path:
                unsafe = True  # recursion: nesting depth is bounded only by the body
                return
            path = path | {node}
        node = _resolve(node, named)
        kind = _kind(node)
        if kind == "union":
            for branch in node:
                walk(branch, path)
        elif kind in ("record", "error"):
            name = node.get("name")
            if name is not None and name in path and not isinstance(node, str):
                unsafe = True
                return
            inner = path | {name} if name is not None else path
            for fld in node.get("fields", []):
                walk(fld["type"], inner)
        elif kind == "array":
            if min_width(node["items"], named) == 0:
                unsafe = True
                return
            walk(node["items"], path)
        elif kind == "map":
            walk(node["values"], path)
        elif kind == "wrapped":
            walk(node["type"], path)

    walk(parsed, frozenset())
    return unsafe


def needs_scan(parsed: Any) -> bool:
    """Whether bodies of this parsed schema must pass :func:`scan_body` before fastavro decodes them (cached)."""
    found = _SCAN_CACHE.get(id(parsed))
    if found is not None and found[0] is parsed:
        return found[1]
    if len(_SCAN_CACHE) >= _SCAN_CACHE_MAX:  # schemas come from the registry: rarely this many, never unbounded
        _SCAN_CACHE.clear()
    unsafe = _is_unsafe(parsed)
    _SCAN_CACHE[id(parsed)] = (parsed, unsafe)
    return unsafe


class _Reader:
    """Walks an Avro body against its schema without building values, checking every claim it makes."""

    def __init__(self, body: memoryview | bytes, named: dict[str, Any]) -> None:
        self.body = bytes(body)
        self.pos = 0
        self.named = named
        self.zero_width_items = 0

    def remaining(self) -> int:
        return len(self.body) - self.pos

    def skip(self, n: int, what: str) -> None:
        if n < 0 or n > self.remaining():
            raise FramingError("length_exceeds_body",
                               f"{what} claims {n} bytes at byte {self.pos}; {self.remaining()} remain")
        self.pos += n

    def long(self) -> int:
        body, pos, shift, acc = self.body, self.pos, 0, 0
        while True:
            if pos >= len(body):
                raise FramingError("truncated", "Avro body ends inside a number")
            byte = body[pos]
            pos += 1
            acc |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise FramingError("invalid_avro", f"a number at byte {self.pos} is longer than 10 bytes")
        self.pos = pos
        return (acc >> 1) ^ -(acc & 1)

    def value(self, node: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise FramingError("nesting_too_deep", f"Avro body nests deeper than {MAX_DEPTH} levels")
        node = _resolve(node, self.named)
        kind = _kind(node)
        if kind == "null":
            return
        if kind == "boolean":
            self.skip(1, "a boolean")
        elif kind in ("int", "long", "enum"):
            self.long()
        elif kind in ("float", "double"):
            self.skip(_PRIMITIVE_WIDTH[kind], f"a {kind}")
        elif kind in ("bytes", "string"):
            self.skip(self.long(), f"a {kind}")
        elif kind == "fixed":
            self.skip(int(node["size"]), "a fixed")
        elif kind == "union":
            index = self.long()
            if not 0 <= index < len(node):
                raise FramingError("invalid_avro", f"union branch {index} does not exist (the union has {len(node)})")
            self.value(node[index], depth + 1)
        elif kind in ("record", "error"):
            for fld in node.get("fields", []):
                self.value(fld["type"], depth + 1)
        elif kind in ("array", "map"):
            self.blocks(node, kind, depth)
        elif kind == "wrapped":
            self.value(node["type"], depth)
        else:
            raise FramingError("invalid_avro", f"unknown Avro type {kind!r} in the schema")

    def blocks(self, node: Any, kind: str, depth: int) -> None:
        items = node["items"] if kind == "array" else node["values"]
        width = min_width(items, self.named) + (1 if kind == "map" else 0)  # a map key is a string
        while True:
            count = self.long()
            if count == 0:
                return
            if count < 0:  # a negative count is followed by the block's size in bytes
                count = -count
                size = self.long()
                if size < 0 or size > self.remaining():
                    raise FramingError("length_exceeds_body",
                                       f"an {kind} block claims {size} bytes; {self.remaining()} remain")
            if width == 0:
                self.zero_width_items += count
                if self.zero_width_items > MAX_ZERO_WIDTH_ITEMS:
                    raise FramingError("length_exceeds_body", f"an {kind} claims {count} items of a zero-byte type;"
                                       f" at most {MAX_ZERO_WIDTH_ITEMS} are accepted per body")
            elif count * width > self.remaining():
                raise FramingError("length_exceeds_body", f"an {kind} claims {count} items of at least {width} "
                                   f"bytes; {self.remaining()} bytes remain")
            for _ in range(count):
                if kind == "map":
                    self.skip(self.long(), "a map key")
                self.value(items, depth + 1)


def scan_body(body: memoryview | bytes, parsed_schema: Any) -> None:
    """Check an Avro body's length claims and nesting against its schema before anything is allocated.

    Raises FramingError(length_exceeds_body | nesting_too_deep | truncated | invalid_avro); trailing bytes
    are left to :func:`decode_body`.
    """
    _Reader(body, _named(parsed_schema)).value(parsed_schema, 0)
