"""Avro validation, canonical form and every Confluent compatibility level (pure, no broker)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.registry import compatibility as compat
from hub.registry.compatibility import InvalidSchemaError, is_compatible


def record(*fields: dict[str, Any], name: str = "User") -> str:
    """An Avro record schema text with the given fields."""
    return json.dumps({"type": "record", "name": name, "namespace": "hub.test", "fields": list(fields)})


ID = {"name": "id", "type": "long"}
EMAIL_OPTIONAL = {"name": "email", "type": ["null", "string"], "default": None}
EMAIL_REQUIRED = {"name": "email", "type": "string"}
EMAIL_DEFAULTED = {"name": "email", "type": "string", "default": ""}

V_ID = record(ID)
V_ID_EMAIL_OPT = record(ID, EMAIL_OPTIONAL)
V_ID_EMAIL_REQ = record(ID, EMAIL_REQUIRED)
V_ID_EMAIL_DEF = record(ID, EMAIL_DEFAULTED)
V_ID_AS_STRING = record({"name": "id", "type": "string"})
V_ID_AS_INT = record({"name": "id", "type": "int"})


# ---------------------------------------------------------------- validation and canonical form

@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("123", "is not an Avro schema"),
        ("null", "is not an Avro schema"),
        ('"nosuchtype"', "invalid Avro schema"),
        ('{"type": "record", "name": "X"}', "invalid Avro schema"),
        ('{"type": "record", "name": "1bad", "fields": []}', "invalid Avro schema"),
        ('{"type": "enum", "name": "E", "symbols": ["A", "A"]}', "invalid Avro schema"),
        ('{"type": "fixed", "name": "F"}', "invalid Avro schema"),
        ('["int", "int"]', "invalid Avro schema"),
        (record({"name": "n", "type": "int", "default": "seven"}), "default"),
        (record({"name": "n", "type": "int", "default": 2**40}), "default"),
        (record({"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A"]}, "default": "B"}),
         "default"),
        ("[" * 50_000, "nested too deeply"),
        ('{"type": "record", "name": "X", "doc": "\\ud800", "fields": []}', "unpaired surrogate"),
    ],
)
def test_invalid_schemas_are_rejected_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSchemaError) as err:
        compat.parse(text)
    assert fragment.lower() in str(err.value).lower()


def test_non_string_schema_is_rejected() -> None:
    with pytest.raises(InvalidSchemaError, match="must be a string"):
        compat.parse({"type": "string"})  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ['"string"', '["null", "long"]', V_ID, V_ID_EMAIL_OPT,
                                  record({"name": "u", "type": ["null", "int"], "default": None})])
def test_valid_schemas_parse(text: str) -> None:
    parsed = compat.parse(text)
    assert json.loads(parsed.text) == json.loads(text)
    assert len(parsed.fingerprint) == 64


def test_canonical_form_ignores_layout_key_order_and_reference_spelling() -> None:
    a = {"type": "record", "name": "Outer", "namespace": "n", "fields": [
        {"name": "inner",
         "type": {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}},
        {"name": "again", "type": "Inner"},
    ]}
    b = {"fields": [
        {"type": {"fields": [{"type": "int", "name": "x"}], "name": "Inner", "type": "record"},
         "name": "inner"},
        {"type": "n.Inner", "name": "again"},
    ], "namespace": "n", "name": "Outer", "type": "record"}
    assert compat.canonical_form(json.dumps(a)) == compat.canonical_form(json.dumps(b, indent=4))
    assert compat.fingerprint(json.dumps(a)) == compat.fingerprint(json.dumps(b))


def test_canonical_form_keeps_what_changes_meaning() -> None:
    with_default = record({"name": "n", "type": "int", "default": 1})
    other_default = record({"name": "n", "type": "int", "default": 2})
    no_default = record({"name": "n", "type": "int"})
    forms = {compat.canonical_form(t) for t in (with_default, other_default, no_default)}
    assert len(forms) == 3


def test_levels_are_normalised_case_insensitively() -> None:
    assert compat.normalize_level("backward_transitive") == "BACKWARD_TRANSITIVE"
    assert compat.normalize_level(" Full ") == "FULL"
    assert compat.normalize_level("SIDEWAYS") is None
    assert compat.normalize_level(3) is None
    with pytest.raises(ValueError, match="unknown compatibility level"):
        is_compatible(V_ID, [V_ID], "SIDEWAYS")


# ---------------------------------------------------------------- one previous version, every level

CASES = [
    # (description, previous, new, {level: compatible})
    ("add optional field", V_ID, V_ID_EMAIL_OPT,
     {"NONE": True, "BACKWARD": True, "FORWARD": True, "FULL": True}),
    ("add required field", V_ID, V_ID_EMAIL_REQ,
     {"NONE": True, "BACKWARD": False, "FORWARD": True, "FULL": False}),
    ("remove field without default", V_ID_EMAIL_REQ, V_ID,
     {"NONE": True, "BACKWARD": True, "FORWARD": False, "FULL": False}),
    ("remove field with default", V_ID_EMAIL_DEF, V_ID,
     {"NONE": True, "BACKWARD": True, "FORWARD": True, "FULL": True}),
    ("remove default", V_ID_EMAIL_DEF, V_ID_EMAIL_REQ,
     {"NONE": True, "BACKWARD": True, "FORWARD": True, "FULL": True}),
    ("type change long->string", V_ID, V_ID_AS_STRING,
     {"NONE": True, "BACKWARD": False, "FORWARD": False, "FULL": False}),
    ("promotion int->long", V_ID_AS_INT, V_ID,
     {"NONE": True, "BACKWARD": True, "FORWARD": False, "FULL": False}),
]


@pytest.mark.parametrize(("what", "previous", "new", "expected"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("transitive", [False, True])
def test_single_previous_version(what: str, previous: str, new: str, expected: dict[str, bool],
                                 transitive: bool) -> None:
    for level, ok in expected.items():
        name = f"{level}_TRANSITIVE" if transitive and level != "NONE" else level
        result = is_compatible(new, [previous], name, labels=["version 1"])
        assert result.compatible is ok, (what, name, result.messages)
        assert bool(result.messages) is (not ok)


def test_removing_a_default_fails_when_an_old_version_lacks_the_field() -> None:
    """Removing the default of a field older data never had breaks BACKWARD: the reader cannot fill it."""
    result = is_compatible(V_ID_EMAIL_REQ, [V_ID, V_ID_EMAIL_DEF], "BACKWARD_TRANSITIVE",
                           labels=["version 1", "version 2"])
    assert not result.compatible
    assert any("email" in m and "version 1" in m for m in result.messages)
    assert is_compatible(V_ID_EMAIL_REQ, [V_ID, V_ID_EMAIL_DEF], "BACKWARD").compatible


def test_messages_say_what_and_where() -> None:
    result = is_compatible(V_ID_EMAIL_REQ, [V_ID], "BACKWARD", labels=["version 4"])
    (message,) = result.messages
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in message
    assert "'email'" in message and "/fields/1" in message and "version 4" in message
    full = is_compatible(V_ID_AS_STRING, [V_ID], "FULL")
    assert len(full.messages) == 2 and all("TYPE_MISMATCH" in m for m in full.messages)


def test_enum_symbol_removal_and_union_narrowing() -> None:
    colors = {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}
    fewer = {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}
    old, new = record({"name": "c", "type": colors}), record({"name": "c", "type": fewer})
    assert not is_compatible(new, [old], "BACKWARD").compatible
    assert is_compatible(new, [old], "FORWARD").compatible
    wide = record({"name": "u", "type": ["null", "string", "long"]})
    narrow = record({"name": "u", "type": ["null", "string"]})
    assert not is_compatible(narrow, [wide], "BACKWARD").compatible
    assert is_compatible(wide, [narrow], "BACKWARD").compatible


# ---------------------------------------------------------------- transitive levels check every version

def test_backward_transitive_checks_every_version() -> None:
    history = [V_ID, V_ID_EMAIL_DEF]          # v1 has no email; v2 adds it with a default
    labels = ["version 1", "version 2"]
    assert is_compatible(V_ID_EMAIL_REQ, history, "BACKWARD", labels=labels).compatible
    result = is_compatible(V_ID_EMAIL_REQ, history, "BACKWARD_TRANSITIVE", labels=labels)
    assert not result.compatible and all("version 1" in m for m in result.messages)


def test_forward_transitive_checks_every_version() -> None:
    history = [V_ID_EMAIL_REQ, V_ID_EMAIL_DEF]  # v1 requires email; v2 gives it a default
    assert is_compatible(V_ID, history, "FORWARD").compatible
    assert not is_compatible(V_ID, history, "FORWARD_TRANSITIVE").compatible


def test_full_transitive_checks_every_version_both_ways() -> None:
    history = [V_ID, V_ID_EMAIL_DEF]
    assert is_compatible(V_ID_EMAIL_REQ, history, "FULL").compatible
    assert not is_compatible(V_ID_EMAIL_REQ, history, "FULL_TRANSITIVE").compatible
    assert is_compatible(V_ID_EMAIL_OPT, [V_ID, V_ID], "FULL_TRANSITIVE").compatible


def test_no_previous_versions_is_always_compatible() -> None:
    for level in compat.LEVELS:
        assert is_compatible(V_ID, [], level).compatible
