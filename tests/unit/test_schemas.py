"""Every Avro schema under schemas/ and every entry of config/catalog.seed.yaml is well formed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"
CATALOG = ROOT / "config" / "catalog.seed.yaml"

SCHEMA_FILES = sorted(SCHEMA_DIR.rglob("*.avsc"))
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
NODE_ID = re.compile(r"^(national|municipal\.[a-z][a-z0-9-]*|district\.\d{6}|region\.[a-z][a-z0-9-]*)$")
LEVELS = {"L1", "L2", "L3", "L4"}
RULES = {"required", "resident_id", "uscc", "district_code", "range", "regex", "enum", "date_range", "not_future",
         "district_matches_resident_id", "after", "reference"}
ENTRY_KEYS = {
    "id", "title", "provider", "tier", "schema_file", "subject", "sharing", "legal_basis", "field_levels",
    "primary_key", "locality_field", "locality_from_resident_id", "return_to_locality", "report_up",
    "quality_rules", "update_frequency", "description",
}  # fmt: skip
FREQUENCIES = {"realtime", "hourly", "daily", "weekly", "monthly", "on_change"}


def load_schema(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def field_names(path: Path) -> list[str]:
    return [f["name"] for f in load_schema(path)["fields"]]


def nested_records(schema: Any) -> list[dict[str, Any]]:
    """Every record schema inside ``schema`` (itself included), however deeply nested."""
    found: list[dict[str, Any]] = []
    if isinstance(schema, list):
        for branch in schema:
            found += nested_records(branch)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            found.append(schema)
            for f in schema["fields"]:
                found += nested_records(f["type"])
        elif schema.get("type") == "array":
            found += nested_records(schema["items"])
        elif schema.get("type") == "map":
            found += nested_records(schema["values"])
    return found


def catalog() -> list[dict[str, Any]]:
    return yaml.safe_load(CATALOG.read_text(encoding="utf-8"))["resources"]


ENTRIES = catalog()
ENTRY_IDS = [e["id"] for e in ENTRIES]


# --- schemas ------------------------------------------------------------------------------------------


def test_schema_inventory() -> None:
    rel = {p.relative_to(SCHEMA_DIR).as_posix() for p in SCHEMA_FILES}
    expected = {
        "health/vaccination_record.avsc",
        "hub/audit_record.avsc",
        "hub/quarantine_record.avsc",
        "hub/call_request.avsc",
        "hub/call_reply.avsc",
        "hub/objection.avsc",
        "hub/catalog_event.avsc",
        "hub/grant_event.avsc",
        "population/natural_person.avsc",
        "market/legal_person.avsc",
        "market/business_licence.avsc",
        "spatial/address.avsc",
        "spatial/building.avsc",
        "hrss/social_security_contribution.avsc",
    }
    assert expected <= rel
    assert len([p for p in rel if p.startswith("national/")]) >= 2
    assert any(p.startswith("civil/") for p in rel)


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.relative_to(SCHEMA_DIR).as_posix())
def test_schema_parses_and_documents_every_field(path: Path) -> None:
    raw = load_schema(path)
    fastavro.parse_schema(raw)
    assert raw["type"] == "record"
    assert raw["namespace"].startswith("cn.gov.sh."), raw["namespace"]
    records = nested_records(raw)
    for record in records:
        assert record.get("doc", "").strip(), f"record {record['name']} has no doc"
        names = [f["name"] for f in record["fields"]]
        assert len(names) == len(set(names)), f"duplicate fields in {record['name']}"
        for f in record["fields"]:
            assert SNAKE.match(f["name"]), f"{record['name']}.{f['name']} is not snake_case"
            assert f.get("doc", "").strip(), f"{record['name']}.{f['name']} has no doc"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.relative_to(SCHEMA_DIR).as_posix())
def test_union_defaults_match_first_branch(path: Path) -> None:
    """Avro requires a union field's default to be of the union's first type (null first for optional)."""
    for record in nested_records(load_schema(path)):
        for f in record["fields"]:
            if isinstance(f["type"], list) and "default" in f:
                first = f["type"][0]
                if f["default"] is None:
                    assert first == "null", f"{record['name']}.{f['name']}: null default but {first} first"
                else:
                    assert first != "null", f"{record['name']}.{f['name']}: non-null default, null first"


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.relative_to(SCHEMA_DIR).as_posix())
def test_district_fields_are_strings(path: Path) -> None:
    for f in load_schema(path)["fields"]:
        if f["name"] == "district":
            assert f["type"] == "string", f"{path.name}: district must be a required string code"


def test_envelope_contracts() -> None:
    hub = SCHEMA_DIR / "hub"
    assert {
        "request_id", "caller", "resource", "scenario", "key", "lookup_field", "lookup_value", "requested_at",
    } <= set(field_names(hub / "call_request.avsc"))  # fmt: skip
    reply = load_schema(hub / "call_reply.avsc")
    assert {"request_id", "status", "message", "resource", "record", "schema_id", "masked_fields"} <= {
        f["name"] for f in reply["fields"]
    }
    status_doc = next(f["doc"] for f in reply["fields"] if f["name"] == "status")
    statuses = "ok not_found unknown_resource no_grant missing_scenario denied quota_exceeded error".split()
    for status in statuses:
        assert status in status_doc
    record_field = next(f for f in reply["fields"] if f["name"] == "record")
    assert record_field["type"] == ["null", "bytes"]

    objection = load_schema(hub / "objection.avsc")
    assert {
        "objection_id", "resource", "record_key", "filer", "provider", "state", "reason", "resolution",
        "filed_at", "updated_at", "deadline",
    } <= {f["name"] for f in objection["fields"]}  # fmt: skip
    state_doc = next(f["doc"] for f in objection["fields"] if f["name"] == "state")
    for state in ("filed", "accepted", "flagged", "verified", "unflagged", "archived"):
        assert state in state_doc

    entry_fields = set(field_names(hub / "catalog_event.avsc"))
    assert ENTRY_KEYS - {"schema_file"} <= entry_fields
    assert {"version", "retired"} <= entry_fields

    grant = load_schema(hub / "grant_event.avsc")
    assert {
        "id", "consumer", "resource", "scenario", "mode", "allowed_fields", "row_scope", "valid_from",
        "valid_to", "daily_quota", "state", "decided_by", "reason", "updated_at",
    } <= {f["name"] for f in grant["fields"]}  # fmt: skip
    state_doc = next(f["doc"] for f in grant["fields"] if f["name"] == "state")
    for state in ("requested", "active", "revoked", "expired", "denied"):
        assert state in state_doc


def test_envelopes_round_trip() -> None:
    """The envelopes serialise with only their required fields set (defaults fill the rest)."""
    import io

    samples = {
        "call_request.avsc": {
            "request_id": "r1",
            "caller": "district.310115",
            "resource": "municipal.health.vaccination",
            "requested_at": 1_700_000_000_000,
        },
        "call_reply.avsc": {
            "request_id": "r1",
            "status": "ok",
            "message": "",
            "record": b"\x00\x00\x00\x00\x01\x02",
            "schema_id": 1,
            "replied_at": 1_700_000_000_001,
        },
        "objection.avsc": {
            "objection_id": "o1",
            "resource": "municipal.health.vaccination",
            "record_key": "V1",
            "filer": "district.310115",
            "provider": "municipal.health",
            "state": "filed",
            "reason": "wrong dose number",
            "filed_at": 1,
            "updated_at": 1,
            "history": [{"state": "filed", "at": 1, "actor": "district.310115"}],
        },
        "grant_event.avsc": {
            "id": "g1",
            "consumer": "district.310115",
            "resource": "municipal.health.vaccination",
            "scenario": "vaccination-follow-up",
            "mode": "subscribe",
            "valid_from": 1,
            "state": "active",
            "updated_at": 1,
        },
    }
    for name, record in samples.items():
        schema = fastavro.parse_schema(load_schema(SCHEMA_DIR / "hub" / name))
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, record)
        buf.seek(0)
        back = fastavro.schemaless_reader(buf, schema)
        for key, value in record.items():
            if isinstance(value, str | bytes):
                assert back[key] == value
        if "history" in record:
            assert back["history"][0]["actor"] == "district.310115"
            assert back["history"][0]["note"] is None


# --- catalogue ----------------------------------------------------------------------------------------


def test_catalog_shape() -> None:
    assert len(ENTRIES) >= 9
    assert len(set(ENTRY_IDS)) == len(ENTRY_IDS), "duplicate resource ids"
    tiers = {e["tier"] for e in ENTRIES}
    assert {"national", "municipal", "district"} <= tiers
    assert {"unconditional", "authorised", "none"} == {e["sharing"] for e in ENTRIES}
    referenced = {(ROOT / e["schema_file"]).resolve() for e in ENTRIES}
    for path in SCHEMA_FILES:
        if path.parent.name != "hub":
            assert path.resolve() in referenced, f"{path} is not catalogued"


def test_vaccination_entry() -> None:
    entry = next(e for e in ENTRIES if e["id"] == "municipal.health.vaccination")
    assert entry["provider"] == "municipal.health"
    assert entry["sharing"] == "authorised"
    assert entry["locality_field"] == "district"
    assert entry["return_to_locality"] is True
    assert entry["schema_file"] == "schemas/health/vaccination_record.avsc"


@pytest.mark.parametrize("entry", ENTRIES, ids=ENTRY_IDS)
def test_catalog_entry(entry: dict[str, Any]) -> None:
    assert set(entry) <= ENTRY_KEYS, f"unknown keys {set(entry) - ENTRY_KEYS}"
    rid = entry["id"]
    assert NODE_ID.match(entry["provider"]), entry["provider"]
    assert rid.startswith(entry["provider"] + "."), "id must be <provider>.<name>"
    assert entry["tier"] == entry["provider"].split(".", 1)[0]
    assert entry["subject"] == f"{rid}-value"
    assert entry["title"].strip() and entry["description"].strip()
    assert entry["update_frequency"] in FREQUENCIES
    assert entry["sharing"] in {"unconditional", "authorised", "none"}
    if entry["sharing"] == "none":
        assert str(entry.get("legal_basis") or "").strip(), f"{rid}: sharing none needs a legal_basis"

    schema_path = ROOT / entry["schema_file"]
    assert schema_path.is_file(), f"{rid}: {entry['schema_file']} does not exist"
    fields = load_schema(schema_path)["fields"]
    names = [f["name"] for f in fields]
    types = {f["name"]: f["type"] for f in fields}

    levels = entry["field_levels"]
    assert set(levels) == set(names), (
        f"{rid}: field_levels missing {set(names) - set(levels)}, extra {set(levels) - set(names)}"
    )
    assert set(levels.values()) <= LEVELS

    assert entry["primary_key"], f"{rid}: no primary key"
    for key in entry["primary_key"]:
        assert key in names, f"{rid}: primary key {key} is not a field"
        assert not isinstance(types[key], list), f"{rid}: primary key {key} must not be nullable"

    locality = entry.get("locality_field")
    from_rid = entry.get("locality_from_resident_id", False)
    assert not (locality and from_rid), (
        f"{rid}: locality_field and locality_from_resident_id exclude each other"
    )
    if locality:
        assert locality in names, f"{rid}: locality_field {locality} is not a field"
        assert types[locality] == "string"
    if entry.get("return_to_locality"):
        assert locality or from_rid, f"{rid}: return_to_locality needs a locality"

    rules = entry.get("quality_rules", [])
    for rule in rules:
        assert set(rule) <= {"field", "rule", "args"}
        assert rule["field"] in names, f"{rid}: quality rule on unknown field {rule['field']}"
        assert rule["rule"] in RULES, f"{rid}: unknown rule {rule['rule']}"
        args = rule.get("args") or {}
        if rule["rule"] == "range":
            assert set(args) <= {"min", "max"} and args, f"{rid}: range needs min and/or max"
            if "min" in args and "max" in args:
                assert args["min"] <= args["max"]
        elif rule["rule"] == "regex":
            re.compile(args["pattern"])
        elif rule["rule"] == "enum":
            assert args["values"] and all(isinstance(v, str) for v in args["values"])
    if from_rid:
        assert any(r["rule"] == "resident_id" for r in rules), f"{rid}: no resident_id field to derive from"
    if locality:
        assert {"field": locality, "rule": "district_code", "args": {}} in rules, (
            f"{rid}: the locality field must be checked as a district code"
        )


@pytest.mark.parametrize("entry", ENTRIES, ids=ENTRY_IDS)
def test_personal_data_is_graded(entry: dict[str, Any]) -> None:
    """Resident IDs, phones and people's names are personal data (>= L3); with health or social data, L4."""
    levels = entry["field_levels"]
    person_record = any(
        r["rule"] == "resident_id" and r["field"] == "resident_id" for r in entry["quality_rules"]
    )
    for rule in entry.get("quality_rules", []):
        if rule["rule"] == "resident_id":
            assert levels[rule["field"]] in {"L3", "L4"}, f"{entry['id']}.{rule['field']}"
            sensitive = any(dept in entry["provider"] for dept in ("health", "hrss", "civil-affairs"))
            if sensitive:
                assert levels[rule["field"]] == "L4", f"{entry['id']}.{rule['field']} must be L4"
    for name, level in levels.items():
        personal = {"legal_rep_name", "legal_rep_resident_id"} | (
            {"name", "birth_date"} if person_record else set()
        )
        if "phone" in name or name in personal:
            assert level in {"L3", "L4"}, f"{entry['id']}.{name} is personal data"


@pytest.mark.parametrize("entry", ENTRIES, ids=ENTRY_IDS)
def test_catalog_entry_fits_hub_model(entry: dict[str, Any]) -> None:
    model = pytest.importorskip("hub.catalogue.model")
    resource = model.Resource.model_validate(entry)
    assert resource.schema_path() is not None and resource.schema_path().is_file()


def test_enum_rules_agree_with_schema_docs() -> None:
    """Every value an enum rule allows is named in the field's doc, so the two cannot drift apart."""
    for entry in ENTRIES:
        docs = {f["name"]: f["doc"] for f in load_schema(ROOT / entry["schema_file"])["fields"]}
        for rule in entry.get("quality_rules", []):
            if rule["rule"] == "enum":
                for value in rule["args"]["values"]:
                    assert value in docs[rule["field"]], (
                        f"{entry['id']}.{rule['field']}: {value} undocumented"
                    )
