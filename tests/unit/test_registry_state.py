"""The registry's pure state: ids, versions, soft delete, config, compatibility, and replay of its records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from hub.registry.state import (
    Record,
    RegisterResult,
    RegistryHTTPError,
    RegistryState,
    decode_record,
    encode_record,
    parse_version,
)


def record(*fields: dict[str, Any], name: str = "User") -> str:
    return json.dumps({"type": "record", "name": name, "namespace": "hub.test", "fields": list(fields)})


ID = {"name": "id", "type": "long"}
V1 = record(ID)
V2 = record(ID, {"name": "email", "type": ["null", "string"], "default": None})
V2_REQUIRED = record(ID, {"name": "email", "type": "string"})
V_DEFAULTED = record(ID, {"name": "email", "type": "string", "default": ""})
OTHER = record({"name": "code", "type": "string"}, name="Other")


class Journal:
    """A state plus every record it committed, so tests can replay them into a fresh state."""

    def __init__(self) -> None:
        self.state = RegistryState()
        self.records: list[Record] = []

    def commit(self, records: list[Record]) -> None:
        self.records += records
        self.state.commit(records)

    def register(self, subject: str, schema: str, **kwargs: Any) -> RegisterResult:
        result, records = self.state.register(subject, schema, **kwargs)
        self.commit(records)
        return result

    def set_config(self, subject: str | None, level: str) -> str:
        level_set, records = self.state.set_config(subject, level)
        self.commit(records)
        return level_set

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        versions, records = self.state.delete_subject(subject, permanent=permanent)
        self.commit(records)
        return versions

    def delete_version(self, subject: str, version: int | str, permanent: bool = False) -> int:
        number, records = self.state.delete_version(subject, parse_version(version), permanent=permanent)
        self.commit(records)
        return number


@contextmanager
def raises(status: int, code: int) -> Iterator[None]:
    """Assert the block raises a RegistryHTTPError with this status, Confluent code and a message."""
    with pytest.raises(RegistryHTTPError) as err:
        yield
    assert (err.value.status, err.value.error_code) == (status, code), repr(err.value)
    assert err.value.message


# ---------------------------------------------------------------- ids and versions

def test_register_assigns_global_stable_ids() -> None:
    j = Journal()
    first = j.register("a-value", V1)
    assert first == RegisterResult(1, 1, created=True)
    again, records = j.state.register("a-value", json.dumps(json.loads(V1), indent=2))
    assert again == RegisterResult(1, 1, created=False) and records == []
    assert j.register("b-value", V1) == RegisterResult(1, 1, created=True)  # same schema, same id
    assert j.register("a-value", V2) == RegisterResult(2, 2, created=True)
    assert j.register("c-value", OTHER).id == 3
    assert j.state.id_subjects(1) == ["a-value", "b-value"]
    assert [(e.subject, e.version) for e in j.state.id_versions(2)] == [("a-value", 2)]
    assert j.state.schema_by_id(1).schema == json.dumps(json.loads(V1), separators=(",", ":"))


def test_register_records_use_confluent_format() -> None:
    state = RegistryState()
    _, records = state.register("orders-value", V1)
    (key, value), = records
    assert key == {"keytype": "SCHEMA", "subject": "orders-value", "version": 1, "magic": 1}
    assert value is not None and value["id"] == 1 and value["deleted"] is False
    key_bytes, value_bytes = encode_record(key, value)
    assert key_bytes == b'{"keytype":"SCHEMA","subject":"orders-value","version":1,"magic":1}'
    assert decode_record(key_bytes, value_bytes) == (key, value)
    _, config = state.set_config(None, "full")
    assert config == [({"keytype": "CONFIG", "subject": None, "magic": 0}, {"compatibilityLevel": "FULL"})]


def test_normalize_stores_the_canonical_text() -> None:
    state = RegistryState()
    _, records = state.register("n-value", json.dumps(json.loads(V1), indent=3), normalize=True)
    state.commit(records)
    assert json.loads(state.schema_by_id(1).schema) == json.loads(state.schemas[1].canonical)


def test_reads_answer_confluent_errors() -> None:
    j = Journal()
    j.register("s", V1)
    with raises(404, 40401):
        j.state.versions("nope")
    with raises(404, 40401):
        j.state.get_version("nope", 1)
    with raises(404, 40402):
        j.state.get_version("s", 7)
    with raises(404, 40403):
        j.state.schema_by_id(99)
    with raises(404, 40403):
        j.state.id_versions(99)
    assert j.state.get_version("s", "latest").version == 1
    assert j.state.versions("s") == [1]
    assert j.state.subject_names() == ["s"] and j.state.subject_names(prefix="x") == []


def test_lookup() -> None:
    j = Journal()
    j.register("s", V1)
    j.register("s", V2)
    assert j.state.lookup("s", V1).version == 1
    assert j.state.lookup("s", json.dumps(json.loads(V2))).version == 2
    with raises(404, 40401):
        j.state.lookup("unknown", V1)
    with raises(404, 40403):
        j.state.lookup("s", OTHER)
    with raises(422, 42201):
        j.state.lookup("s", "{not json")


@pytest.mark.parametrize(
    ("schema", "kwargs", "status", "code"),
    [
        ("{", {}, 422, 42201),
        ('{"type": "record", "name": "X"}', {}, 422, 42201),
        ("", {}, 422, 42201),
        (V1, {"schema_type": "JSON"}, 422, 42201),
        (V1, {"schema_type": "XML"}, 422, 42201),
        (V1, {"schema_id": 42}, 422, 42205),
    ],
)
def test_register_rejects_bad_input(schema: str, kwargs: dict[str, Any], status: int, code: int) -> None:
    with raises(status, code):
        RegistryState().register("s", schema, **kwargs)


@pytest.mark.parametrize("subject", ["", "   ", "a\nb", "x" * 300])
def test_register_rejects_bad_subjects(subject: str) -> None:
    with raises(422, 42208):
        RegistryState().register(subject, V1)


@pytest.mark.parametrize("spec", ["0", "-2", "abc", "1.5", str(2**31), "", "+-1", "\u0663"])
def test_invalid_versions(spec: str) -> None:
    with raises(422, 42202):
        parse_version(spec)


def test_valid_versions() -> None:
    assert parse_version("latest") == "latest" and parse_version("LATEST") == "latest"
    assert parse_version("-1") == "latest" and parse_version("7") == 7 and parse_version(3) == 3


# ---------------------------------------------------------------- compatibility through the state

def test_default_backward_rejects_required_field_with_409() -> None:
    j = Journal()
    j.register("s", V1)
    with raises(409, 409):
        j.register("s", V2_REQUIRED)
    try:
        j.state.register("s", V2_REQUIRED)
    except RegistryHTTPError as exc:
        assert "email" in exc.message and "BACKWARD" in exc.message and '"s"' in exc.message
    assert j.register("s", V2).version == 2


def test_subject_level_overrides_global() -> None:
    j = Journal()
    j.register("s", V1)
    j.register("t", V1)
    assert j.state.effective_level("s") == "BACKWARD"
    j.set_config(None, "FORWARD")
    j.set_config("s", "none")
    assert j.state.effective_level("s") == "NONE" and j.state.effective_level("t") == "FORWARD"
    assert j.register("s", V2_REQUIRED).version == 2          # NONE: anything goes
    with raises(409, 409):
        j.register("t", record({"name": "other", "type": "int"}))  # FORWARD: old reader needs id
    with raises(422, 42203):
        j.state.set_config("s", "SIDEWAYS")
    with raises(422, 42203):
        j.state.set_config(None, 5)


def test_transitive_levels_check_every_live_version() -> None:
    j = Journal()
    j.register("plain", V1)
    j.register("plain", V_DEFAULTED)
    assert j.register("plain", V2_REQUIRED).version == 3      # BACKWARD: only against v2
    j.set_config("trans", "BACKWARD_TRANSITIVE")
    j.register("trans", V1)
    j.register("trans", V_DEFAULTED)
    with raises(409, 409):
        j.register("trans", V2_REQUIRED)                      # v1 lacks email, no default
    j.delete_version("trans", 1)                              # soft-deleted versions are not checked
    assert j.register("trans", V2_REQUIRED).version == 3


def test_check_compatibility_endpoint_semantics() -> None:
    j = Journal()
    assert j.state.check_compatibility("fresh", V1, "latest").compatible
    with raises(404, 40402):  # Confluent: a missing version, even of a missing subject, is 40402
        j.state.check_compatibility("fresh", V1, 1)
    j.register("s", V1)
    assert j.state.check_compatibility("s", V2, "latest").compatible
    result = j.state.check_compatibility("s", V2_REQUIRED, 1)
    assert not result.compatible and "version 1" in result.messages[0]
    with raises(404, 40402):
        j.state.check_compatibility("s", V2, 9)
    with raises(422, 42201):
        j.state.check_compatibility("s", "[", "latest")


# ---------------------------------------------------------------- config

def test_config_reads_and_deletes() -> None:
    j = Journal()
    assert j.state.effective_level(None) == "BACKWARD"
    with raises(404, 40408):
        j.state.subject_level("s")
    assert j.state.subject_level("s", default_to_global=True) == "BACKWARD"
    j.set_config("s", "FULL")                                 # allowed before the subject exists
    assert j.state.subject_level("s") == "FULL"
    old, records = j.state.delete_config("s")
    j.commit(records)
    assert old == "FULL" and "s" not in j.state.subject_levels
    with raises(404, 40401):
        j.state.delete_config("s")
    j.register("s", V1)
    with raises(404, 40408):
        j.state.delete_config("s")
    j.set_config(None, "FULL_TRANSITIVE")
    old, records = j.state.delete_config(None)
    j.commit(records)
    assert old == "FULL_TRANSITIVE" and j.state.effective_level(None) == "BACKWARD"


# ---------------------------------------------------------------- deletes

def test_soft_then_permanent_subject_delete() -> None:
    j = Journal()
    j.register("s", V1)
    j.register("s", V2)
    j.set_config("s", "FULL")
    with raises(404, 40405):
        j.delete_subject("s", permanent=True)
    assert j.delete_subject("s") == [1, 2]
    assert "s" not in j.state.subject_levels                  # the subject's config goes with it
    assert j.state.subject_names() == [] and j.state.subject_names(deleted=True) == ["s"]
    assert j.state.subject_names(deleted_only=True) == ["s"]
    with raises(404, 40401):
        j.state.versions("s")
    assert j.state.versions("s", deleted=True) == [1, 2]
    with raises(404, 40401):
        j.state.get_version("s", 1)
    assert j.state.get_version("s", 1, deleted=True).deleted
    assert j.state.lookup("s", V1, deleted=True).version == 1
    with raises(404, 40404):
        j.delete_subject("s")
    assert j.state.schema_by_id(1).id == 1                    # ids stay valid
    assert j.delete_subject("s", permanent=True) == [1, 2]
    assert "s" not in j.state.subjects
    assert j.state.subject_names(deleted=True) == []
    assert j.state.schema_by_id(2).id == 2
    assert j.register("s", V2) == RegisterResult(2, 1, created=True)  # same id; versions restart


def test_reregister_after_soft_delete_continues_versions() -> None:
    j = Journal()
    j.register("s", V1)
    j.delete_subject("s")
    assert j.register("s", V1) == RegisterResult(1, 2, created=True)
    assert j.state.versions("s") == [2] and j.state.versions("s", deleted=True) == [1, 2]


def test_version_deletes() -> None:
    j = Journal()
    j.register("s", V1)
    j.register("s", V2)
    with raises(404, 40407):
        j.delete_version("s", 2, permanent=True)
    assert j.delete_version("s", "latest") == 2
    assert j.state.get_version("s", "latest").version == 1
    with raises(404, 40406):
        j.delete_version("s", 2)
    with raises(404, 40402):
        j.delete_version("s", 5)
    with raises(404, 40401):
        j.delete_version("nope", 1)
    assert j.delete_version("s", 2, permanent=True) == 2
    assert j.state.versions("s", deleted=True) == [1]


def test_delete_unknown_subject() -> None:
    with raises(404, 40401):
        RegistryState().delete_subject("ghost")


# ---------------------------------------------------------------- replay and races

def test_replay_of_the_records_gives_an_identical_state() -> None:
    j = Journal()
    j.register("a", V1)
    j.register("a", V2)
    j.register("b", V1)
    j.register("c", OTHER)
    j.set_config(None, "FULL")
    j.set_config("c", "NONE")
    j.register("c", record({"name": "x", "type": "int"}, name="Other"))
    j.delete_version("a", 1)
    j.delete_subject("b")
    j.delete_subject("b", permanent=True)
    j.delete_subject("c")
    j.register("c", OTHER)
    replayed = RegistryState.replay(j.records)
    assert replayed == j.state
    encoded = [encode_record(k, v) for k, v in j.records]
    decoded = [decode_record(k, v) for k, v in encoded]
    assert RegistryState.replay([d for d in decoded if d is not None]) == j.state


def test_apply_ignores_foreign_and_corrupt_records() -> None:
    state = RegistryState()
    assert not state.apply({"keytype": "MODE", "subject": None, "magic": 0}, {"mode": "READWRITE"})
    assert state.apply({"keytype": "NOOP", "magic": 0}, None)
    assert not state.apply({"keytype": "SCHEMA", "subject": "s", "version": 0, "magic": 1}, {"id": 1})
    assert not state.apply(
        {"keytype": "SCHEMA", "subject": "s", "version": 1, "magic": 1},
        {"subject": "s", "version": 1, "id": 1, "schema": "{broken", "deleted": False},
    )
    assert not state.apply({"keytype": "CONFIG", "subject": None, "magic": 0}, {"compatibilityLevel": "BAD"})
    assert decode_record(b"not json", b"{}") is None and decode_record(None, b"{}") is None
    assert decode_record(b"[1]", None) is None
    assert state == RegistryState(ignored=4)


def compacted(log: list[Record]) -> list[Record]:
    """What Kafka log compaction leaves: the last record of each key, in log order."""
    last = {encode_record(k, None)[0]: i for i, (k, _) in enumerate(log)}
    return [rec for i, rec in enumerate(log) if last[encode_record(rec[0], None)[0]] == i]


def test_first_writer_wins_an_id_race_and_the_loser_retries() -> None:
    a, b = RegistryState(), RegistryState()
    (rec_a,) = a.register("x", V1)[1]
    result_b, (rec_b,) = b.register("y", OTHER)[0], b.register("y", OTHER)[1]
    assert rec_a[1] is not None and rec_b[1] is not None and rec_a[1]["id"] == rec_b[1]["id"] == 1
    log = [rec_a, rec_b]                                     # both instances read the same log
    a.commit(log)
    b.commit(log)
    assert a == b and "y" not in b.subjects                  # the second claim on id 1 was ignored
    assert b.verify_registration("y", result_b) == []        # ... so its writer retries
    retry, records = b.register("y", OTHER)
    assert (retry.id, retry.version) == (2, 1)
    log += records
    a.commit(records)
    b.commit(records)
    assert a == b == RegistryState.replay(log)
    assert RegistryState.replay(compacted(log)).subjects == a.subjects


def test_first_writer_wins_a_version_slot_and_the_loser_repairs_compaction() -> None:
    j = Journal()
    j.register("s", V1)
    j.register("t", V2)
    j.register("u", record(ID, {"name": "n", "type": "int", "default": 0}))
    result_a, (rec_a,) = j.state.register("s", V2)           # instance A: version 2 = id 2
    result_b, (rec_b,) = j.state.register("s", j.state.schemas[3].schema)  # instance B: version 2 = id 3
    assert (result_a.version, result_b.version) == (2, 2) and (result_a.id, result_b.id) == (2, 3)
    log = j.records + [rec_a, rec_b]
    state = RegistryState.replay(log)
    assert state.subjects["s"][2].id == 2                    # first record wins the slot
    assert state.verify_registration("s", result_a) is None
    repair = state.verify_registration("s", result_b)
    assert repair == [rec_a]                                 # B re-appends the winner ...
    log += repair
    state.commit(repair)
    assert RegistryState.replay(compacted(log)).subjects == state.subjects  # ... so compaction agrees


def test_verify_registration_accepts_existing_and_won_writes() -> None:
    j = Journal()
    created = j.register("s", V1)
    assert j.state.verify_registration("s", created) is None
    assert j.state.verify_registration("s", RegisterResult(1, 1, created=False)) is None
