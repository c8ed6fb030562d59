"""Grading and masking: field plans, partial masks, tokens, and consumer-side schemas that round-trip."""

from __future__ import annotations

import io
import itertools
import json
import random
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml

from hub.catalogue.model import Level, Node, Resource
from hub.demo.data import record_generator
from hub.policy.masking import (
    MASKING_ATTR,
    Action,
    Kind,
    apply_mask,
    derived_schema,
    field_kind,
    field_plan,
    is_passthrough,
    mask_generic,
    plan_for,
    plan_key,
)
from hub.policy.model import Grant

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILES = sorted((ROOT / "schemas").rglob("*.avsc"))
CLEARANCES: tuple[Level, ...] = ("L1", "L2", "L3", "L4")
LEVELS: tuple[Level, ...] = ("L1", "L2", "L3", "L4")
KEY = b"k" * 32


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def catalogue() -> dict[str, Resource]:
    """Seed catalogue entries by schema file."""
    raw = yaml.safe_load((ROOT / "config" / "catalog.seed.yaml").read_text(encoding="utf-8"))["resources"]
    return {r["schema_file"]: Resource.model_validate(r) for r in raw}


CATALOGUE = catalogue()


def resource_for(path: Path) -> Resource:
    """The catalogue entry of a schema, or (hub envelopes) one grading its fields L1, L2, L3, L4 in turn."""
    rel = str(path.relative_to(ROOT))
    if rel in CATALOGUE:
        return CATALOGUE[rel]
    fields = [f["name"] for f in load(path)["fields"]]
    return Resource(
        id=f"hub.{path.stem}", provider="hub", tier="hub", subject=f"hub.{path.stem}-value",
        field_levels={name: LEVELS[i % 4] for i, name in enumerate(fields)}, primary_key=fields[:1],
    )


def vaccination() -> Resource:
    return CATALOGUE["schemas/health/vaccination_record.avsc"]


def natural_person() -> Resource:
    return CATALOGUE["schemas/population/natural_person.avsc"]


def roundtrip(schema: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    parsed = fastavro.parse_schema(schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, parsed)


# ------------------------------------------------------------------------------------- docs/domain.md examples


def test_domain_examples_by_field_kind() -> None:
    res = natural_person()  # resident_id, name and phone are L3 there: partial masks for an L2 consumer
    plan = field_plan(res, "L2", None)
    record = {
        "resident_id": "310115198807061234", "phone": "13912345678", "name": "张三丰", "district": "310115",
    }
    out = apply_mask(record, plan)
    assert out["resident_id"] == "310115********1234"
    assert out["phone"] == "139****5678"
    assert out["name"] == "张**"
    assert out["district"] == "310115"


def test_l2_district_gets_l3_masked_and_l4_absent() -> None:
    plan = field_plan(vaccination(), "L2", None)
    record = {
        "record_id": "r-1", "resident_id": "310115198807061234", "name": "张三丰", "phone": "13912345678",
        "district": "310115", "vaccine_code": "V01", "dose_number": 2, "vaccinated_at": 1_700_000_000_000,
        "site_uscc": "91110000600037341L", "site_name": "浦东新区疾控中心",
    }
    out = apply_mask(record, plan)
    assert "resident_id" not in out
    assert (out["name"], out["phone"]) == ("张**", "139****5678")
    assert out["vaccinated_at"] == 1_700_000_000_000  # L2: within clearance
    assert {k: out[k] for k in ("record_id", "district", "dose_number")} == {
        "record_id": "r-1", "district": "310115", "dose_number": 2,
    }
    assert plan.masked_fields == ("resident_id", "name", "phone")


def test_l1_consumer_gets_l2_masked_and_non_strings_hidden() -> None:
    out = apply_mask({"record_id": "r-1", "vaccinated_at": 1_700_000_000_000, "name": "李四"},
                     field_plan(vaccination(), "L1", None))
    assert out == {"record_id": "r-1", "vaccinated_at": None, "name": "李*", "phone": None}


def test_l3_and_l4_clearances() -> None:
    res = vaccination()
    assert field_plan(res, "L3", None).fields_with(Action.DROP) == ("resident_id",)
    assert field_plan(res, "L3", None).fields_with(Action.MASK) == ()
    l4 = field_plan(res, "L4", None)
    assert l4.fields_with(Action.KEEP) == tuple(res.field_levels)
    assert l4.masked_fields == ()


# ------------------------------------------------------------------------------------------ plan rules


def test_field_kinds_from_names() -> None:
    assert field_kind("resident_id") is Kind.RESIDENT_ID
    assert field_kind("legal_rep_resident_id") is Kind.RESIDENT_ID
    assert field_kind("reporter_phone") is Kind.PHONE
    assert field_kind("mobile") is Kind.PHONE
    assert field_kind("name") is Kind.NAME
    assert field_kind("legal_rep_name") is Kind.NAME
    assert field_kind("site_name") is Kind.GENERIC
    assert field_kind("registered_address") is Kind.GENERIC


@pytest.mark.parametrize(
    ("value", "masked"),
    [("", ""), ("ab", "**"), ("abc", "***"), ("abcd", "a**d"),
     ("上海市浦东新区世纪大道100号", "上海市*********00号"), ("x" * 40, "xxxx" + "*" * 32 + "xxxx")],
)
def test_generic_mask_keeps_first_and_last_quarter(value: str, masked: str) -> None:
    assert mask_generic(value) == masked
    assert len(mask_generic(value)) == len(value)


def test_allowed_fields_drop_the_rest_but_keep_the_primary_key() -> None:
    plan = field_plan(vaccination(), "L2", ["district", "name"])
    out = apply_mask({"record_id": "r-1", "district": "310101", "name": "王五", "vaccine_code": "V"}, plan)
    assert out == {"record_id": "r-1", "district": "310101", "name": "王*"}
    assert plan.action("vaccine_code") is Action.DROP


def test_primary_key_above_clearance_is_masked_not_kept() -> None:
    plan = field_plan(natural_person(), "L2", ["district"])  # pk resident_id is L3
    out = apply_mask({"resident_id": "310115198807061234", "district": "310115", "name": "张三"}, plan)
    assert out == {"resident_id": "310115********1234", "district": "310115"}


def test_ungraded_fields_never_leave() -> None:
    out = apply_mask({"record_id": "r", "secret_extra": "x"}, field_plan(vaccination(), "L4", None))
    assert out == {"record_id": "r"}


def test_fast_copy_path_and_pick_path_agree() -> None:
    plan = field_plan(vaccination(), "L2", ["district", "name"], tokenise=True, token_key=KEY)
    full = record_generator(load(ROOT / "schemas/health/vaccination_record.avsc"))(random.Random(7))
    assert full.keys() == plan.graded  # the copy-and-delete path
    extra = {**full, "ungraded": "secret"}  # the pick path
    assert apply_mask(full, plan) == apply_mask(extra, plan)
    assert set(apply_mask(full, plan)) == {"record_id", "district", "name"}
    assert full["resident_id"] and "resident_id" in full  # the input is not modified


def test_null_values_stay_null() -> None:
    out = apply_mask({"record_id": "r", "phone": None, "name": "张三"}, field_plan(vaccination(), "L2", None))
    assert out["phone"] is None


def test_missing_kept_field_is_left_out_rather_than_invented() -> None:
    out = apply_mask({"district": "310115"}, field_plan(vaccination(), "L4", None))
    assert out == {"district": "310115"}


def test_tokenisation_is_keyed_stable_and_not_reversible() -> None:
    res = vaccination()
    plan = field_plan(res, "L2", None, tokenise=True, token_key=KEY)
    other = field_plan(res, "L2", None, tokenise=True, token_key=b"o" * 32)
    rid = "310115198807061234"
    token = apply_mask({"resident_id": rid}, plan)["resident_id"]
    assert token == apply_mask({"resident_id": rid}, plan)["resident_id"]
    assert token != apply_mask({"resident_id": rid}, other)["resident_id"]
    assert token != apply_mask({"resident_id": "11010519491231002X"}, plan)["resident_id"]
    assert len(token) == 32 and all(c in "0123456789abcdef" for c in token) and rid not in token
    assert plan.action("resident_id") is Action.TOKENISE
    assert plan_key(plan) == plan_key(other)  # same shape; the key is a secret and not part of it
    assert plan != other and plan == field_plan(res, "L2", None, tokenise=True, token_key=KEY)


def test_tokenising_non_strings_gives_a_string_token() -> None:
    res = CATALOGUE["schemas/health/severe_mental_disorder_case.avsc"]
    plan = field_plan(res, "L2", None, tokenise=True, token_key=KEY)
    out = apply_mask({"risk_level": 3, "diagnosed_on": 19000}, plan)
    assert isinstance(out["risk_level"], str) and isinstance(out["diagnosed_on"], str)


def test_tokenisation_needs_a_real_key() -> None:
    with pytest.raises(ValueError, match="token_key"):
        field_plan(vaccination(), "L2", None, tokenise=True)
    with pytest.raises(ValueError, match="token_key"):
        field_plan(vaccination(), "L2", None, tokenise=True, token_key=b"short")


def test_plan_key_is_stable_and_follows_the_shape() -> None:
    res = vaccination()
    a, b = field_plan(res, "L2", None), field_plan(res, "L2", None)
    assert plan_key(a) == plan_key(b) and a == b and hash(a) == hash(b)
    assert plan_key(a) != plan_key(field_plan(res, "L3", None))
    assert plan_key(a) != plan_key(field_plan(res, "L2", ["district"]))
    assert len(plan_key(a)) == 16
    # L3 and L4 clearances differ only in resident_id (L4): dropped vs kept
    assert plan_key(field_plan(res, "L3", None)) != plan_key(field_plan(res, "L4", None))


def test_plan_for_uses_the_grants_allowed_fields_and_the_nodes_clearance() -> None:
    node = Node(id="district.310115", clearance="L2")
    grant = Grant(
        id="g", consumer=node.id, resource="municipal.health.vaccination", scenario="follow-up",
        mode="subscribe", allowed_fields=["district"], valid_from=0, state="active", updated_at=0,
    )
    assert plan_for(vaccination(), node, grant) == field_plan(vaccination(), "L2", ["district"])
    assert plan_for(vaccination(), node, None) == field_plan(vaccination(), "L2", None)


# ------------------------------------------------------------------------------------------ derived schemas


def test_derived_schema_shape() -> None:
    schema = load(ROOT / "schemas/health/vaccination_record.avsc")
    plan = field_plan(vaccination(), "L2", None)
    derived = derived_schema(schema, plan)
    assert derived["name"] == f"VaccinationRecord_masked_{plan_key(plan)[:8]}"
    assert derived["namespace"] == "cn.gov.sh.health"
    assert derived["doc"] == schema["doc"]
    fields = {f["name"]: f for f in derived["fields"]}
    assert "resident_id" not in fields
    assert fields["name"]["type"] == ["null", "string"] and fields["name"]["default"] is None
    assert fields["name"][MASKING_ATTR] == "partial"
    assert fields["name"]["doc"] == next(f["doc"] for f in schema["fields"] if f["name"] == "name")
    assert fields["vaccinated_at"] == next(f for f in schema["fields"] if f["name"] == "vaccinated_at")
    expected = [f["name"] for f in schema["fields"] if f["name"] != "resident_id"]
    assert [f["name"] for f in derived["fields"]] == expected
    assert schema["name"] == "VaccinationRecord"  # the input is not modified


def test_tokenised_field_is_marked_as_token() -> None:
    schema = load(ROOT / "schemas/health/vaccination_record.avsc")
    derived = derived_schema(schema, field_plan(vaccination(), "L2", None, tokenise=True, token_key=KEY))
    rid = next(f for f in derived["fields"] if f["name"] == "resident_id")
    assert rid["type"] == ["null", "string"] and rid[MASKING_ATTR] == "token"


def test_passthrough_only_when_every_schema_field_is_kept() -> None:
    schema = load(ROOT / "schemas/health/vaccination_record.avsc")
    assert is_passthrough(schema, field_plan(vaccination(), "L4", None))
    assert not is_passthrough(schema, field_plan(vaccination(), "L3", None))
    assert not is_passthrough({"fields": [*schema["fields"], {"name": "x", "type": "int"}]},
                              field_plan(vaccination(), "L4", None))


CASES = list(itertools.product(SCHEMA_FILES, CLEARANCES, (False, True)))


@pytest.mark.parametrize(
    ("path", "clearance", "tokenise"), CASES,
    ids=[f"{p.stem}-{c}-{'token' if t else 'drop'}" for p, c, t in CASES],
)
def test_every_schema_masked_record_round_trips_through_its_derived_schema(
    path: Path, clearance: Level, tokenise: bool
) -> None:
    schema = load(path)
    resource = resource_for(path)
    plan = field_plan(resource, clearance, None, tokenise=tokenise, token_key=KEY)
    derived = derived_schema(schema, plan)
    make = record_generator(schema)
    rng = random.Random(f"{path.stem}{clearance}{tokenise}")
    for _ in range(20):
        record = make(rng)
        original = roundtrip(schema, record)
        masked = apply_mask(record, plan)
        decoded = roundtrip(derived, masked)
        assert set(decoded) == {f["name"] for f in derived["fields"]}
        for name, value in decoded.items():
            action = plan.action(name)
            if action is Action.KEEP:
                assert value == original[name], name
            else:
                assert action in (Action.MASK, Action.TOKENISE)
                assert value == masked[name] and (value is None or isinstance(value, str))
                if isinstance(record[name], str) and record[name]:
                    assert value != record[name] or set(record[name]) <= {"*"}, name


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=[p.stem for p in SCHEMA_FILES])
def test_allowed_field_subsets_round_trip(path: Path) -> None:
    schema = load(path)
    resource = resource_for(path)
    names = list(resource.field_levels)
    rng = random.Random(path.stem)
    make = record_generator(schema)
    for _ in range(5):
        allowed = rng.sample(names, rng.randint(1, len(names)))
        plan = field_plan(resource, rng.choice(CLEARANCES), allowed)
        decoded = roundtrip(derived_schema(schema, plan), apply_mask(make(rng), plan))
        assert set(decoded) <= set(allowed) | set(resource.primary_key)


def test_named_types_of_removed_fields_are_inlined_where_still_used() -> None:
    schema = {
        "type": "record", "name": "Parcel", "namespace": "t.ns", "fields": [
            {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["RED", "BLUE"]}},
            {"name": "size", "type": {
                "type": "record", "name": "Size", "fields": [{"name": "cm", "type": "int"}],
            }},
            {"name": "trim", "type": ["null", "Colour"], "default": None},
            {"name": "boxes", "type": {"type": "array", "items": "t.ns.Size"}},
        ],
    }
    resource = Resource(
        id="hub.parcel", provider="hub", tier="hub", subject="hub.parcel-value",
        field_levels={"colour": "L3", "size": "L4", "trim": "L1", "boxes": "L1"},
    )
    plan = field_plan(resource, "L1", None)
    derived = derived_schema(schema, plan)
    record = {"colour": "RED", "size": {"cm": 3}, "trim": "BLUE", "boxes": [{"cm": 1}]}
    masked = apply_mask(record, plan)
    assert masked["colour"] == "***" and "size" not in masked
    decoded = roundtrip(derived, masked)
    assert decoded["trim"] == "BLUE" and decoded["boxes"] == [{"cm": 1}]
    assert decoded["colour"] == "***"
    inlined = {"type": "enum", "name": "t.ns.Colour", "symbols": ["RED", "BLUE"]}
    assert derived["fields"][1]["type"] == ["null", inlined]


def test_recursive_schemas_are_refused_rather_than_leaking_nested_values() -> None:
    schema = {"type": "record", "name": "Node", "namespace": "t", "fields": [
        {"name": "label", "type": "string"}, {"name": "next", "type": ["null", "Node"], "default": None},
    ]}
    resource = Resource(id="hub.node", provider="hub", tier="hub", subject="hub.node-value",
                        field_levels={"label": "L3", "next": "L1"})
    with pytest.raises(ValueError, match="recursive"):
        derived_schema(schema, field_plan(resource, "L1", None))
