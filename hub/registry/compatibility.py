"""Avro schema validation, canonical form and Confluent compatibility levels. Pure: no I/O.

Validation parses with both the ``avro`` package (whose ``ReaderWriterCompatibilityChecker`` decides
compatibility) and ``fastavro`` (which the hub's hot path decodes with), and checks field defaults
against their types the way Java Avro does, so a schema the registry accepts is usable everywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import avro.name
import avro.schema
import fastavro
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
)

NONE = "NONE"
BACKWARD = "BACKWARD"
BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
FORWARD = "FORWARD"
FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
FULL = "FULL"
FULL_TRANSITIVE = "FULL_TRANSITIVE"

LEVELS: tuple[str, ...] = (
    NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE,
)
DEFAULT_LEVEL = BACKWARD
"""Confluent's default global compatibility level."""

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


class InvalidSchemaError(ValueError):
    """The text is not a usable Avro schema; the message says why (the registry answers 422/42201)."""


@dataclass(frozen=True)
class ParsedSchema:
    """A validated schema: its compact text, its canonical form and the parsed ``avro`` object."""

    text: str
    canonical: str
    avro_schema: avro.schema.Schema = field(compare=False, repr=False)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical form: equal for schemas that differ only in layout or key order."""
        return hashlib.sha256(self.canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CompatibilityResult:
    """Outcome of a compatibility check: ``compatible`` and, if not, one readable message per problem."""

    compatible: bool
    messages: tuple[str, ...] = ()


def normalize_level(level: object) -> str | None:
    """The upper-case level name if ``level`` names a Confluent compatibility level, else None."""
    if not isinstance(level, str):
        return None
    name = level.strip().upper()
    return name if name in LEVELS else None


def parse(schema_text: str) -> ParsedSchema:
    """Validate an Avro schema given as JSON text; raise InvalidSchemaError explaining what is wrong."""
    if not isinstance(schema_text, str):
        kind = type(schema_text).__name__
        raise InvalidSchemaError(f"the schema must be a string holding Avro JSON, not {kind}")
    return _parse_cached(schema_text)


def parse_with_references(schema_text: str, dependencies: Sequence[str] = ()) -> ParsedSchema:
    """Validate a schema whose named types may come from referenced schemas (Confluent references).

    ``dependencies`` are the referenced schemas' texts, each after the ones it references itself; their
    named types are known while parsing ``schema_text``. The canonical form inlines them (a referenced type
    is written in full where first used), so it is the resolved schema.
    """
    if not dependencies:
        return parse(schema_text)
    if not isinstance(schema_text, str):
        kind = type(schema_text).__name__
        raise InvalidSchemaError(f"the schema must be a string holding Avro JSON, not {kind}")
    try:
        return _parse_with_references_cached(schema_text, tuple(dependencies))
    except RecursionError as exc:
        raise InvalidSchemaError("the schema is nested too deeply") from exc


@lru_cache(maxsize=1024)
def _parse_with_references_cached(schema_text: str, dependencies: tuple[str, ...]) -> ParsedSchema:
    names = avro.name.Names()
    fast_named: dict[str, Any] = {}
    for dependency in dependencies:
        try:
            document = json.loads(dependency)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                avro.schema.make_avsc_object(document, names)
            fastavro.parse_schema(document, named_schemas=fast_named)
        except RecursionError:
            raise
        except Exception as exc:
            raise InvalidSchemaError(f"a referenced schema does not parse: {_describe(exc)}") from exc
    return _parse(schema_text, names=names, fast_named=fast_named)


def canonical_form(schema_text: str) -> str:
    """Canonical text of a schema: avro's normalised JSON (full names, resolved references), keys sorted.

    Unlike Avro's Parsing Canonical Form it keeps defaults, docs, aliases and custom properties, since
    those change what a schema means to readers; two texts with the same canonical form get one id.
    """
    return parse(schema_text).canonical


def fingerprint(schema_text: str) -> str:
    """SHA-256 hex digest of :func:`canonical_form`."""
    return parse(schema_text).fingerprint


@lru_cache(maxsize=2048)
def _parse_cached(schema_text: str) -> ParsedSchema:
    try:
        return _parse(schema_text)
    except RecursionError as exc:
        raise InvalidSchemaError("the schema is nested too deeply") from exc


def _parse(
    schema_text: str, *, names: avro.name.Names | None = None, fast_named: dict[str, Any] | None = None,
) -> ParsedSchema:
    try:
        document = json.loads(schema_text)
    except RecursionError as exc:
        raise InvalidSchemaError("the schema JSON is nested too deeply") from exc
    except ValueError as exc:
        raise InvalidSchemaError(f"the schema is not valid JSON: {exc}") from exc
    if document is None or isinstance(document, (bool, int, float)):
        raise InvalidSchemaError(f"{schema_text.strip()[:80]!r} is not an Avro schema (expected a type name, "
                                 "an object such as a record, or a union list)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid logical types are ignored, as in Java Avro
            parsed = avro.schema.make_avsc_object(document, names if names is not None else avro.name.Names())
    except RecursionError as exc:
        raise InvalidSchemaError("the schema is nested too deeply") from exc
    except Exception as exc:  # avro raises many types (SchemaParseException, AvroException, TypeError...)
        raise InvalidSchemaError(f"invalid Avro schema: {_describe(exc)}") from exc
    try:
        fastavro.parse_schema(document, named_schemas=dict(fast_named or {}))
    except RecursionError as exc:
        raise InvalidSchemaError("the schema is nested too deeply") from exc
    except Exception as exc:
        raise InvalidSchemaError(f"invalid Avro schema: {_describe(exc)}") from exc
    _check_defaults(parsed, set())
    try:
        canonical = json.dumps(parsed.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except Exception as exc:  # pragma: no cover - to_json of a parsed schema should not fail
        raise InvalidSchemaError(f"invalid Avro schema: {_describe(exc)}") from exc
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidSchemaError("the schema contains invalid Unicode (an unpaired surrogate)") from exc
    return ParsedSchema(text=text, canonical=canonical, avro_schema=parsed)


def _describe(exc: BaseException) -> str:
    message = str(exc).strip() or type(exc).__name__
    return message if len(message) <= 500 else message[:500] + "..."


def _check_defaults(schema: avro.schema.Schema, seen: set[str]) -> None:
    """Walk every record field; reject a default that does not match the field's type (as Java Avro does)."""
    kind = schema.type
    if kind == "record" or kind == "error":
        name = getattr(schema, "fullname", None) or ""
        if name in seen:
            return
        seen.add(name)
        for fld in schema.fields:  # type: ignore[attr-defined]
            if fld.has_default and not _valid_default(fld.type, fld.default):
                raise InvalidSchemaError(
                    f"invalid default for field {fld.name!r} of {name}: {json.dumps(fld.default)[:120]} "
                    f"is not a {_type_label(fld.type)}"
                )
            _check_defaults(fld.type, seen)
    elif kind == "array":
        _check_defaults(schema.items, seen)  # type: ignore[attr-defined]
    elif kind == "map":
        _check_defaults(schema.values, seen)  # type: ignore[attr-defined]
    elif kind == "union":
        for branch in schema.schemas:  # type: ignore[attr-defined]
            _check_defaults(branch, seen)


def _type_label(schema: avro.schema.Schema) -> str:
    if schema.type == "union":
        return "value of any branch of " + json.dumps([b.type for b in schema.schemas])  # type: ignore[attr-defined]
    return f'"{schema.type}"'


def _valid_default(schema: avro.schema.Schema, value: Any) -> bool:
    """Whether a JSON default suits a schema (a union default may match any branch, as in Avro 1.12)."""
    kind = schema.type
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("int", "long"):
        low, high = _INT_RANGE if kind == "int" else _LONG_RANGE
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    if kind in ("float", "double"):
        if isinstance(value, str):
            return value in ("NaN", "Infinity", "-Infinity")
        return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if kind in ("string", "bytes"):
        return isinstance(value, str)
    if kind == "fixed":
        return isinstance(value, str) and len(value) == schema.size  # type: ignore[attr-defined]
    if kind == "enum":
        return isinstance(value, str) and value in schema.symbols  # type: ignore[attr-defined]
    if kind == "array":
        return isinstance(value, list) and all(_valid_default(schema.items, v) for v in value)  # type: ignore[attr-defined]
    if kind == "map":
        return isinstance(value, dict) and all(
            _valid_default(schema.values, v) for v in value.values()  # type: ignore[attr-defined]
        )
    if kind in ("record", "error"):
        if not isinstance(value, dict):
            return False
        for fld in schema.fields:  # type: ignore[attr-defined]
            if fld.name in value:
                if not _valid_default(fld.type, value[fld.name]):
                    return False
            elif not fld.has_default:
                return False
        return True
    if kind == "union":
        return any(_valid_default(branch, value) for branch in schema.schemas)  # type: ignore[attr-defined]
    return True


# ---------------------------------------------------------------- compatibility

def is_compatible(
    new: str | ParsedSchema,
    existing: Sequence[str | ParsedSchema],
    level: str,
    *,
    labels: Sequence[str] | None = None,
) -> CompatibilityResult:
    """Check ``new`` against ``existing`` (oldest first) under a Confluent level.

    BACKWARD: the new schema reads data written with the previous one; FORWARD: the previous one reads
    data written with the new; FULL: both. Plain levels compare with the latest only, ``_TRANSITIVE``
    ones with every version. ``labels`` names the existing schemas in messages (e.g. "version 3").
    """
    name = normalize_level(level)
    if name is None:
        raise ValueError(f"unknown compatibility level {level!r}")
    if name == NONE or not existing:
        return CompatibilityResult(True)
    candidate = new if isinstance(new, ParsedSchema) else parse(new)
    olds = [s if isinstance(s, ParsedSchema) else parse(s) for s in existing]
    names = list(labels) if labels is not None else [f"schema #{i + 1}" for i in range(len(olds))]
    if len(names) != len(olds):
        raise ValueError("labels and existing schemas differ in length")
    pairs = list(zip(names, olds, strict=True))
    if not name.endswith("_TRANSITIVE"):
        pairs = pairs[-1:]
    base = name.removesuffix("_TRANSITIVE")
    messages: list[str] = []
    for label, old in reversed(pairs):  # newest first: the most relevant problem leads
        if base in (BACKWARD, FULL):
            messages += _check(candidate, old, reader_is_new=True, label=label, level=name)
        if base in (FORWARD, FULL):
            messages += _check(old, candidate, reader_is_new=False, label=label, level=name)
    return CompatibilityResult(not messages, tuple(messages))


def _check(
    reader: ParsedSchema, writer: ParsedSchema, *, reader_is_new: bool, label: str, level: str
) -> list[str]:
    """Run avro's checker for one reader/writer pair and turn its result into readable messages."""
    try:
        result = ReaderWriterCompatibilityChecker().get_compatibility(reader.avro_schema, writer.avro_schema)
    except RecursionError:
        return [f"{label}: the schemas are nested too deeply to compare ({level})"]
    except Exception as exc:
        return [f"{label}: the schemas could not be compared ({level}): {_describe(exc)}"]
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return []
    direction = (
        f"the new schema cannot read data written with {label}" if reader_is_new
        else f"{label} cannot read data written with the new schema"
    )
    return [f"{{errorType:'{kind}', description:'{text}', compatibility:'{level}', direction:'{direction}'}}"
            for kind, text in _explain(result, reader_is_new)]


_ROLE = {True: ("new", "old"), False: ("old", "new")}


def _explain(result: SchemaCompatibilityResult, reader_is_new: bool) -> list[tuple[str, str]]:
    """(ERROR_TYPE, description) pairs; avro merges messages and locations into sets: pair them when one."""
    reader_role, writer_role = _ROLE[reader_is_new]
    kinds = list(dict.fromkeys(result.incompatibilities))
    messages = sorted(result.messages)
    locations = sorted(result.locations)
    if len(kinds) == 1 and len(messages) == 1 and len(locations) == 1:
        sentence = _sentence(kinds[0], messages[0], locations[0], reader_role, writer_role)
        return [(kinds[0].name.upper(), sentence)]
    names = ", ".join(k.name.upper() for k in kinds) or "INCOMPATIBLE"
    text = f"the {reader_role} schema cannot read the {writer_role} one: {'; '.join(messages)} " \
           f"(at {', '.join(locations)})"
    return [(names, text)]


def _sentence(kind: SchemaIncompatibilityType, message: str, location: str, reader: str, writer: str) -> str:
    if kind is SchemaIncompatibilityType.reader_field_missing_default_value:
        return (f"The field '{message}' at path '{location}' in the {reader} schema has no default value "
                f"and is missing in the {writer} schema")
    if kind is SchemaIncompatibilityType.type_mismatch:
        return (f"The type at path '{location}' in the {reader} schema does not match "
                f"the {writer} schema: {message}")
    if kind is SchemaIncompatibilityType.name_mismatch:
        return (f"The name at path '{location}' in the {reader} schema does not match "
                f"the {writer} schema: {message}")
    if kind is SchemaIncompatibilityType.missing_enum_symbols:
        return (f"The {reader} schema is missing enum symbols {message} at path '{location}' "
                f"that the {writer} schema has")
    if kind is SchemaIncompatibilityType.missing_union_branch:
        return (f"The {reader} schema is missing a type inside a union at path '{location}' "
                f"that the {writer} schema has: {message}")
    if kind is SchemaIncompatibilityType.fixed_size_mismatch:
        return f"The size of the fixed type at path '{location}' differs between the schemas: {message}"
    return f"{message} at path '{location}'"
