"""Realistic fake records for any catalogued Avro schema (demo and benchmarks).

Fields are filled by name where the name says what they hold (resident IDs with valid check characters,
USCCs, district codes, phones, Chinese names), otherwise by Avro type.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from hub.identifiers import DISTRICT_CODES, make_chinese_name, make_phone, make_resident_id, make_uscc

Generator = Callable[[random.Random, dict[str, Any]], Any]


def _by_name(name: str) -> Generator | None:
    n = name.lower()
    if n == "district" or n.endswith("_district"):
        return lambda rng, rec: rng.choice(DISTRICT_CODES)
    if n.endswith("resident_id") or n in ("id_number", "ric"):
        return lambda rng, rec: make_resident_id(rng, rec.get("district") or rng.choice(DISTRICT_CODES))
    if n.endswith("uscc"):
        return lambda rng, rec: make_uscc(rng, rec.get("district") or "310000")
    if "phone" in n or "mobile" in n:
        return lambda rng, rec: make_phone(rng)
    if n == "name" or n.endswith("_name") and ("person" in n or "representative" in n or "holder" in n):
        return lambda rng, rec: make_chinese_name(rng)
    return None


def _by_type(schema: Any, name: str) -> Generator:
    if isinstance(schema, list):  # union: prefer the first non-null branch
        branches = [s for s in schema if s != "null"]
        inner = _by_type(branches[0], name) if branches else (lambda rng, rec: None)
        return inner
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        kind = schema.get("type")
        if logical in ("timestamp-millis", "local-timestamp-millis"):
            return lambda rng, rec: int(time.time() * 1000) - rng.randint(0, 86_400_000)
        if logical in ("timestamp-micros",):
            return lambda rng, rec: int(time.time() * 1_000_000)
        if logical == "date":
            return lambda rng, rec: rng.randint(0, 20_000)
        if logical == "decimal":
            from decimal import Decimal

            scale = schema.get("scale", 0)
            return lambda rng, rec: Decimal(rng.randint(0, 10**6)).scaleb(-scale)
        if kind == "enum":
            symbols = schema["symbols"]
            return lambda rng, rec: rng.choice(symbols)
        if kind == "array":
            item = _by_type(schema["items"], name)
            return lambda rng, rec: [item(rng, rec) for _ in range(rng.randint(0, 3))]
        if kind == "map":
            item = _by_type(schema["values"], name)
            return lambda rng, rec: {f"k{i}": item(rng, rec) for i in range(rng.randint(0, 2))}
        if kind == "record":
            return record_generator(schema)
        if kind == "fixed":
            size = schema["size"]
            return lambda rng, rec: rng.randbytes(size)
        return _by_type(kind, name)
    simple: dict[str, Generator] = {
        "null": lambda rng, rec: None,
        "boolean": lambda rng, rec: rng.random() < 0.5,
        "int": lambda rng, rec: rng.randint(1, 5),
        "long": lambda rng, rec: rng.randint(1, 1_000_000),
        "float": lambda rng, rec: round(rng.uniform(0, 1000), 2),
        "double": lambda rng, rec: round(rng.uniform(0, 1000), 4),
        "bytes": lambda rng, rec: rng.randbytes(8),
        "string": lambda rng, rec: f"{name}-{rng.randint(100000, 999999)}",
    }
    return simple.get(str(schema), lambda rng, rec: None)


def record_generator(schema: dict[str, Any]) -> Callable[[random.Random], dict[str, Any]]:
    """A function making one valid record of ``schema`` (a record schema as a dict) per call."""
    fields = schema["fields"]
    # district first, so resident IDs and USCCs can agree with it
    ordered = sorted(fields, key=lambda f: 0 if f["name"] == "district" else 1)
    makers: list[tuple[str, Generator]] = []
    for f in ordered:
        typ = f["type"]
        base = [t for t in typ if t != "null"][0] if isinstance(typ, list) and len(typ) > 1 else typ
        named = _by_name(f["name"]) if base == "string" or base == ["string"] else None
        makers.append((f["name"], named or _by_type(typ, f["name"])))

    def make(rng: random.Random, _rec: dict[str, Any] | None = None) -> dict[str, Any]:
        rec: dict[str, Any] = {}
        for name, maker in makers:
            rec[name] = maker(rng, rec)
        return rec

    return make
