"""The demo's records pass the seed catalogue's quality rules, and spoil() breaks exactly the rules it says."""

from __future__ import annotations

import io
import json
import random

import fastavro
import pytest

from hub.catalogue.model import load_exchange_config
from hub.demo.data import record_generator, regex_generator, spoil
from hub.quality import compile_rules
from hub.settings import REPO_ROOT

SEED = load_exchange_config(REPO_ROOT / "config" / "seed.yaml")
RULED = [r for r in SEED.resources if r.quality_rules and r.schema_path() is not None]


def round_trip(parsed: object, record: dict) -> dict:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, parsed)


@pytest.mark.parametrize("resource", RULED, ids=[r.id for r in RULED])
def test_generated_records_pass_and_spoiled_ones_fail_as_said(resource) -> None:  # type: ignore[no-untyped-def]
    schema = json.loads(resource.schema_path().read_text(encoding="utf-8"))
    parsed = fastavro.parse_schema(schema)
    make, check, rng = record_generator(schema), compile_rules(resource), random.Random(7)
    for _ in range(100):
        record = make(rng)
        assert check(round_trip(parsed, record)) == []
        bad, broken = spoil(record, resource.quality_rules, rng, faults=2)
        failed = {(v.rule, v.field) for v in check(round_trip(parsed, bad))}
        assert broken and set(broken) <= failed


def test_regex_generator() -> None:
    rng = random.Random(1)
    make = regex_generator(r"^F(2[0-9]|3[01])(\.[0-9])?$")
    assert make is not None and all(make(rng)[0] == "F" for _ in range(20))
    assert regex_generator(r"^(?=x)y$") is None  # lookahead: not generated
