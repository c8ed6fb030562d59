"""Realistic fake records for any catalogued Avro schema (demo and benchmarks).

Fields are filled by name where the name says what they hold (resident IDs with valid check characters,
USCCs, district codes, phones, Chinese names), otherwise by Avro type. Records also satisfy the quality rules
(``hub.quality``) of the catalogue entry: enum values, numeric ranges, regex patterns and field order are drawn
from the rules, by default those the seed catalogue declares for a resource with this schema (its record name).
``spoil`` breaks a good record on purpose, so the demo can show records the rules reject.
"""

from __future__ import annotations

import functools
import random
import re
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from hub.identifiers import DISTRICT_CODES, make_chinese_name, make_phone, make_resident_id, make_uscc

if TYPE_CHECKING:
    from hub.catalogue.model import QualityRule

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


def record_generator(
    schema: dict[str, Any], rules: Sequence[QualityRule] | None = None,
) -> Callable[[random.Random], dict[str, Any]]:
    """A function making one valid record of ``schema`` (a record schema as a dict) per call.

    ``rules``: the quality rules records must pass (default: the seed catalogue's for this schema).
    """
    if rules is None:
        rules = seed_rules().get(schema.get("name", ""), ())
    fields = schema["fields"]
    # district first, so resident IDs and USCCs can agree with it
    ordered = sorted(fields, key=lambda f: 0 if f["name"] == "district" else 1)
    makers: list[tuple[str, Generator]] = []
    for f in ordered:
        typ = f["type"]
        base = [t for t in typ if t != "null"][0] if isinstance(typ, list) and len(typ) > 1 else typ
        named = _by_name(f["name"]) if base == "string" or base == ["string"] else None
        ruled = _by_rules([r for r in rules if r.field == f["name"]], base)
        makers.append((f["name"], ruled or named or _by_type(typ, f["name"])))
    ordered_after = [(r.field, r.args["field"], r.args.get("or_equal", True)) for r in rules if r.rule == "after"]

    def make(rng: random.Random, _rec: dict[str, Any] | None = None) -> dict[str, Any]:
        rec: dict[str, Any] = {}
        for name, maker in makers:
            rec[name] = maker(rng, rec)
        for later, earlier, or_equal in ordered_after:  # an end no earlier than its start
            a, b = rec.get(later), rec.get(earlier)
            if a is not None and b is not None and (a < b or (a == b and not or_equal)):
                rec[later] = b if or_equal else b + 1
        return rec

    return make


@functools.cache
def seed_rules() -> dict[str, tuple[QualityRule, ...]]:
    """Quality rules of the seed catalogue by the record name of each resource's schema."""
    import json

    from hub.catalogue.model import load_exchange_config
    from hub.settings import REPO_ROOT

    out: dict[str, tuple[QualityRule, ...]] = {}
    for resource in load_exchange_config(REPO_ROOT / "config" / "seed.yaml").resources:
        path = resource.schema_path()
        if path is not None and path.is_file():
            name = json.loads(path.read_text(encoding="utf-8")).get("name", "")
            out[name] = out.get(name, ()) + tuple(resource.quality_rules)
    return out


def _by_rules(rules: Sequence[QualityRule], base: Any) -> Generator | None:
    """A value generator satisfying the field's enum, range or regex rule, if it has one."""
    for rule in rules:
        if rule.rule == "enum":
            values = list(rule.args["values"])
            return lambda rng, rec: rng.choice(values)
        if rule.rule == "range":
            low, high = rule.args.get("min", 0), rule.args.get("max", max(rule.args.get("min", 0), 0) + 1000)
            if base in ("int", "long"):
                lo, hi = int(low) + (low % 1 > 0), int(high)
                return lambda rng, rec: rng.randint(lo, hi)
            if isinstance(base, dict) and base.get("logicalType") == "decimal":
                from decimal import Decimal

                scale = base.get("scale", 0)
                lo, hi = int(low * 10**scale), int(high * 10**scale)
                return lambda rng, rec: Decimal(rng.randint(lo, hi)).scaleb(-scale)
            if base not in ("float", "double"):
                continue
            return lambda rng, rec: round(rng.uniform(low, high), 4)
        if rule.rule == "regex":
            made = regex_generator(rule.args["pattern"])
            if made is not None:
                return lambda rng, rec: made(rng)
    return None


def regex_generator(pattern: str) -> Callable[[random.Random], str] | None:
    """Strings matching ``pattern`` (literals, classes, ranges, repeats, groups, alternatives), or None if it uses
    anything else. Every string made is checked against the pattern."""
    import re._parser as sre  # type: ignore[import-not-found]  # the stdlib's own parse of the pattern

    try:
        parsed = sre.parse(pattern)
    except re.error:
        return None
    compiled = re.compile(pattern)

    def chars_of(items: Any) -> list[str]:
        chars: list[str] = []
        for op, av in items:
            if op is sre.LITERAL:
                chars.append(chr(av))
            elif op is sre.RANGE:
                chars.extend(chr(c) for c in range(av[0], av[1] + 1))
            elif op is sre.CATEGORY and av is sre.CATEGORY_DIGIT:
                chars.extend("0123456789")
            else:
                raise ValueError(op)
        return chars

    def gen(items: Any, rng: random.Random, out: list[str]) -> None:
        for op, av in items:
            if op is sre.LITERAL:
                out.append(chr(av))
            elif op is sre.IN:
                out.append(rng.choice(chars_of(av)))
            elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
                low, high, sub = av
                for _ in range(rng.randint(low, min(high, low + 3))):
                    gen(sub, rng, out)
            elif op is sre.SUBPATTERN:
                gen(av[-1], rng, out)
            elif op is sre.BRANCH:
                gen(rng.choice(av[1]), rng, out)
            elif op is sre.AT:
                pass
            elif op is sre.CATEGORY and av is sre.CATEGORY_DIGIT:
                out.append(rng.choice("0123456789"))
            else:
                raise ValueError(op)

    def make(rng: random.Random) -> str:
        out: list[str] = []
        gen(parsed, rng, out)
        text = "".join(out)
        if not compiled.search(text):
            raise ValueError(f"generated {text!r} does not match {pattern}")
        return text

    try:
        make(random.Random(0))
    except ValueError:
        return None
    return make


# Ways to break a good record, each violating one kind of rule (the demo sends a few: quarantined, never delivered).
SPOILERS: dict[str, Callable[[dict[str, Any], QualityRule], Any]] = {
    "required": lambda rec, rule: "",
    "resident_id": lambda rec, rule: rec[rule.field][:17] + ("0" if rec[rule.field][17] != "0" else "1"),
    "uscc": lambda rec, rule: rec[rule.field][:17] + ("0" if rec[rule.field][17] != "0" else "1"),
    "district_code": lambda rec, rule: "310103",  # Luwan: retired in 2011
    "enum": lambda rec, rule: "unknown",
    "range": lambda rec, rule: _same_type(rec[rule.field], rule.args["max"] + 1 if "max" in rule.args
                                          else rule.args["min"] - 1),
    "regex": lambda rec, rule: "??",
    "not_future": lambda rec, rule: _tomorrow_like(rec[rule.field]),
}


def _same_type(like: Any, number: float) -> Any:
    """``number`` as the field holds numbers (an Avro decimal field needs a Decimal, an int field an int)."""
    from decimal import Decimal

    if isinstance(like, Decimal):
        return Decimal(str(number)).quantize(like)
    return type(like)(number) if isinstance(like, int | float) and not isinstance(like, bool) else number


def _tomorrow_like(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(year=value.year + 5)
    if isinstance(value, date):
        return value.replace(year=value.year + 50)
    if isinstance(value, int) and value < 10**9:  # an Avro date as generated: days since 1970
        return int(time.time() // 86_400) + 5 * 365
    if isinstance(value, int):  # timestamp-millis
        return int(time.time() * 1000) + 5 * 365 * 86_400_000
    return value


def spoil(record: dict[str, Any], rules: Sequence[QualityRule], rng: random.Random, faults: int = 1) -> tuple[
    dict[str, Any], list[tuple[str, str]]
]:
    """A copy of a good record breaking ``faults`` of its rules (chosen by ``rng``); the (rule, field) broken."""
    candidates = [r for r in rules if r.rule in SPOILERS and record.get(r.field) is not None]
    broken = rng.sample(candidates, min(faults, len(candidates)))
    bad = dict(record)
    for rule in broken:
        bad[rule.field] = SPOILERS[rule.rule](bad, rule)
    return bad, [(r.rule, r.field) for r in broken]
