"""The schema registry's state and operations. Pure: no I/O.

State changes only by folding ``_schemas`` records in with :meth:`RegistryState.apply`, in Confluent's own
record format, so the topic reads like a Confluent Schema Registry's and any instance that replays it
ends in the same state. Operations (register, delete, config) validate against the current state and
return their result together with the records to append; the caller appends them and applies them as
they are read back (:meth:`RegistryState.commit` applies them directly, for tests and single writers).

``apply`` is deterministic and first-writer-wins where two instances might race: a SCHEMA record
claiming an id already bound to another schema, or a version slot already holding another id, is
ignored, and the writer that lost sees that when it reads its record back and retries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from hub.registry import compatibility
from hub.registry.compatibility import InvalidSchemaError, ParsedSchema

Key = dict[str, Any]
Value = dict[str, Any] | None
Record = tuple[Key, Value]
VersionSpec = int | Literal["latest"]

AVRO = "AVRO"
SUPPORTED_TYPES = (AVRO,)
KNOWN_TYPES = ("AVRO", "JSON", "PROTOBUF")
MAX_VERSION = 2**31 - 1
MAX_SUBJECT_LENGTH = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Confluent error codes (io.confluent.kafka.schemaregistry.rest.exceptions.Errors)
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
SUBJECT_SOFT_DELETED = 40404
SUBJECT_NOT_SOFT_DELETED = 40405
VERSION_SOFT_DELETED = 40406
VERSION_NOT_SOFT_DELETED = 40407
SUBJECT_CONFIG_NOT_FOUND = 40408
INCOMPATIBLE_SCHEMA = 409
INVALID_SCHEMA = 42201
INVALID_VERSION = 42202
INVALID_COMPATIBILITY_LEVEL = 42203
INVALID_MODE = 42204
OPERATION_NOT_PERMITTED = 42205
REFERENCE_EXISTS = 42206
INVALID_SUBJECT = 42208


class RegistryHTTPError(Exception):
    """An error the registry answers with Confluent's body ``{"error_code": ..., "message": ...}``."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error_code": self.error_code, "message": self.message}

    def __repr__(self) -> str:
        return f"RegistryHTTPError({self.status}, {self.error_code}, {self.message!r})"


def subject_not_found(subject: str) -> RegistryHTTPError:
    return RegistryHTTPError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")


def version_not_found(version: VersionSpec) -> RegistryHTTPError:
    return RegistryHTTPError(404, VERSION_NOT_FOUND, f"Version {version} not found.")


def schema_not_found(schema_id: int | str | None = None) -> RegistryHTTPError:
    """Confluent's 40403: ``Schema not found``, or ``Schema <id or guid> not found``."""
    message = "Schema not found" if schema_id is None else f"Schema {schema_id} not found"
    return RegistryHTTPError(404, SCHEMA_NOT_FOUND, message)


def invalid_schema(detail: str) -> RegistryHTTPError:
    return RegistryHTTPError(422, INVALID_SCHEMA, f"Invalid schema: {detail}")


INVALID_LEVEL_MESSAGE = (
    "Invalid compatibility level. Valid values are none, backward, forward, full, "
    "backward_transitive, forward_transitive, and full_transitive"
)
EMPTY_SCHEMA_MESSAGE = "Empty schema"


def invalid_level() -> RegistryHTTPError:
    """Confluent's 42203, which does not repeat the value it was given."""
    return RegistryHTTPError(422, INVALID_COMPATIBILITY_LEVEL, INVALID_LEVEL_MESSAGE)


def invalid_subject(subject: str) -> RegistryHTTPError:
    return RegistryHTTPError(422, INVALID_SUBJECT, f"The specified subject '{subject}' is not a valid.")


def reference_exists(subject: str, version: int) -> RegistryHTTPError:
    """Confluent's 42206 (its ``ReferenceExistsException`` names the ``_schemas`` key of the version)."""
    return RegistryHTTPError(
        422, REFERENCE_EXISTS,
        f"One or more references exist to the schema {{magic=1,keytype=SCHEMA,subject={subject},version={version}}}.",
    )


def missing_reference(subject: str, version: int) -> RegistryHTTPError:
    """42201 with the detail Confluent's schema provider gives for a reference that does not resolve."""
    return invalid_schema(f'No schema reference found for subject "{subject}" and version {version}')


# ---------------------------------------------------------------- references

@dataclass(frozen=True, order=True)
class Reference:
    """A Confluent schema reference: the named type ``name`` is defined by ``subject`` version ``version``."""

    name: str
    subject: str
    version: int

    def body(self) -> dict[str, Any]:
        return {"name": self.name, "subject": self.subject, "version": self.version}


References = tuple[Reference, ...]

LATEST_REFERENCE = -1  # Confluent: a reference to version -1 means the subject's latest live version, pinned on use


def parse_references(raw: object) -> References:
    """References from a request or a record (a list of ``{name, subject, version}``); 42201 if malformed."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise invalid_schema("'references' must be a list of {name, subject, version} objects")
    found: list[Reference] = []
    for item in raw:
        if not isinstance(item, dict):
            raise invalid_schema("each of 'references' must be an object {name, subject, version}")
        name, subject, version = item.get("name"), item.get("subject"), item.get("version")
        if not isinstance(name, str) or not name or not isinstance(subject, str) or not subject:
            raise invalid_schema("each of 'references' needs a non-empty 'name' and 'subject'")
        if version != LATEST_REFERENCE and not _is_version_number(version):
            raise invalid_schema(
                f"references: the version of reference '{name}' must be -1 (the latest) or an integer between "
                "1 and 2^31-1"
            )
        found.append(Reference(name, subject, version))
    return tuple(found)


def _identity(canonical: str, references: References) -> str:
    """What decides a schema's id: its canonical form and, when it has any, its references (as Confluent)."""
    if not references:
        return canonical
    refs = json.dumps([r.body() for r in references], separators=(",", ":"), ensure_ascii=False)
    return f"{canonical}\x00references={refs}"


# ---------------------------------------------------------------- records (Confluent's _schemas format)

def schema_key(subject: str, version: int) -> Key:
    return {"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1}


def config_key(subject: str | None) -> Key:
    return {"keytype": "CONFIG", "subject": subject, "magic": 0}


def delete_subject_key(subject: str) -> Key:
    return {"keytype": "DELETE_SUBJECT", "subject": subject, "magic": 0}


def encode_record(key: Key, value: Value) -> tuple[bytes, bytes | None]:
    """Bytes for the topic: compact JSON, fixed key order (compaction compares key bytes)."""
    key_bytes = json.dumps(key, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if value is None:
        return key_bytes, None
    return key_bytes, json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_record(key: bytes | None, value: bytes | None) -> Record | None:
    """Parse a topic record; None for anything that is not a JSON-object key (foreign or corrupt records)."""
    if not key:
        return None
    try:
        parsed_key = json.loads(key)
        parsed_value = json.loads(value) if value is not None else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed_key, dict) or not (parsed_value is None or isinstance(parsed_value, dict)):
        return None
    return parsed_key, parsed_value


# ---------------------------------------------------------------- state

@dataclass(frozen=True)
class SchemaVersion:
    """One version of one subject: which global schema id it holds, and whether it is soft-deleted."""

    subject: str
    version: int
    id: int
    schema: str
    deleted: bool = False
    schema_type: str = AVRO
    references: References = ()

    def response(self) -> dict[str, Any]:
        """The Confluent JSON of this version (``schemaType`` only when not AVRO, ``references`` only when
        there are any, as Confluent does)."""
        body: dict[str, Any] = {
            "subject": self.subject, "version": self.version, "id": self.id, "schema": self.schema,
        }
        if self.schema_type != AVRO:
            body["schemaType"] = self.schema_type
        if self.references:
            body["references"] = [r.body() for r in self.references]
        return body

    def record(self) -> Record:
        value: dict[str, Any] = {
            "subject": self.subject, "version": self.version, "id": self.id, "schema": self.schema,
            "deleted": self.deleted,
        }
        if self.schema_type != AVRO:
            value["schemaType"] = self.schema_type
        if self.references:
            value["references"] = [r.body() for r in self.references]
        return schema_key(self.subject, self.version), value


@dataclass(frozen=True)
class StoredSchema:
    """A schema text under its global id, with its canonical form (the identity that decides the id)."""

    id: int
    schema: str
    canonical: str
    schema_type: str = AVRO
    references: References = ()

    @property
    def identity(self) -> str:
        return _identity(self.canonical, self.references)


@dataclass(frozen=True)
class RegisterResult:
    """What a registration answered: the global id, the subject version, and whether it is new."""

    id: int
    version: int
    created: bool


@dataclass
class RegistryState:
    """Everything the registry knows; equal states answer every request identically."""

    subjects: dict[str, dict[int, SchemaVersion]] = field(default_factory=dict)
    schemas: dict[int, StoredSchema] = field(default_factory=dict)
    ids_by_canonical: dict[str, int] = field(default_factory=dict)
    global_level: str | None = None
    subject_levels: dict[str, str] = field(default_factory=dict)
    max_id: int = 0
    ignored: int = 0  # records skipped by apply (foreign, corrupt or losing a race), for diagnostics

    # ------------------------------------------------------------ folding records in

    @classmethod
    def replay(cls, records: Iterable[Record]) -> RegistryState:
        """A state built from scratch by applying records in order (what a restarted instance does)."""
        state = cls()
        state.commit(records)
        return state

    def commit(self, records: Iterable[Record]) -> None:
        """Apply records as if they had been appended and read back."""
        for key, value in records:
            self.apply(key, value)

    def apply(self, key: Key, value: Value) -> bool:
        """Fold one ``_schemas`` record into the state; returns False when the record was ignored."""
        keytype = key.get("keytype")
        if keytype == "SCHEMA":
            applied = self._apply_schema(key, value)
        elif keytype == "CONFIG":
            applied = self._apply_config(key, value)
        elif keytype == "DELETE_SUBJECT":
            applied = self._apply_delete_subject(key, value)
        else:  # NOOP, MODE, CONTEXT... carry nothing this registry keeps
            applied = keytype == "NOOP"
        if not applied:
            self.ignored += 1
        return applied

    def _apply_schema(self, key: Key, value: Value) -> bool:
        subject, version = key.get("subject"), key.get("version")
        if not isinstance(subject, str) or not _is_version_number(version):
            return False
        versions = self.subjects.get(subject)
        if value is None:  # permanent delete of one version; the id keeps naming its schema
            if versions is None or versions.pop(version, None) is None:
                return False
            if not versions:
                del self.subjects[subject]
            return True
        schema_id, text = value.get("id"), value.get("schema")
        schema_type = value.get("schemaType") or AVRO
        deleted = bool(value.get("deleted", False))
        if not _is_version_number(schema_id) or not isinstance(text, str):
            return False
        if schema_type not in SUPPORTED_TYPES:
            return False
        if value.get("subject", subject) != subject or value.get("version", version) != version:
            return False
        try:
            references = parse_references(value.get("references"))
        except RegistryHTTPError:
            return False
        try:
            parsed = self._parse_resolved(text, references)
            canonical = parsed.canonical
        except RegistryHTTPError:  # references that do not resolve (here): keep the text as it is
            if not references:
                return False
            try:
                canonical = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
            except (ValueError, RecursionError):
                return False
            parsed = None
        self.max_id = max(self.max_id, schema_id)
        stored = self.schemas.get(schema_id)
        identity = _identity(canonical, references)
        if stored is not None and stored.identity != identity:
            return False  # the id is already another schema's: a racing writer lost
        current = (versions or {}).get(version)
        if current is not None and current.id != schema_id:
            return False  # the slot is already another schema's: a racing writer lost
        if stored is None:
            stored_text = parsed.text if parsed is not None else canonical
            stored = StoredSchema(schema_id, stored_text, canonical, schema_type, references)
            self.schemas[schema_id] = stored
        self.ids_by_canonical.setdefault(identity, schema_id)
        entry = SchemaVersion(subject, version, schema_id, stored.schema, deleted, schema_type, references)
        self.subjects.setdefault(subject, {})[version] = entry
        return True

    def _apply_config(self, key: Key, value: Value) -> bool:
        subject = key.get("subject")
        if subject is not None and not isinstance(subject, str):
            return False
        if value is None:
            if subject is None:
                self.global_level = None
            else:
                self.subject_levels.pop(subject, None)
            return True
        level = compatibility.normalize_level(value.get("compatibilityLevel", value.get("compatibility")))
        if level is None:
            return False
        if subject is None:
            self.global_level = level
        else:
            self.subject_levels[subject] = level
        return True

    def _apply_delete_subject(self, key: Key, value: Value) -> bool:
        subject = key.get("subject")
        if not isinstance(subject, str):
            return False
        if value is None:  # the subject was permanently deleted: nothing left to mark
            return True
        watermark = value.get("version")
        if not _is_version_number(watermark):
            return False
        versions = self.subjects.get(subject, {})
        for number, entry in versions.items():
            if number <= watermark and not entry.deleted:
                versions[number] = replace(entry, deleted=True)
        return True

    # ------------------------------------------------------------ reads

    def subject_names(
        self, *, deleted: bool = False, deleted_only: bool = False, prefix: str = ""
    ) -> list[str]:
        """Subjects with a live version (``deleted``: also soft-deleted ones; ``deleted_only``: only them)."""
        names = []
        for name, versions in self.subjects.items():
            if not name.startswith(prefix):
                continue
            live = any(not v.deleted for v in versions.values())
            if (deleted_only and not live) or (not deleted_only and (live or deleted)):
                names.append(name)
        return sorted(names)

    def versions(self, subject: str, *, deleted: bool = False, deleted_only: bool = False) -> list[int]:
        """A subject's versions (live; ``deleted``: all; ``deleted_only``: soft-deleted ones); else 40401."""
        entries = self.subjects.get(subject)
        if not entries:
            raise subject_not_found(subject)
        if deleted_only:
            return sorted(n for n, e in entries.items() if e.deleted)
        found = sorted(n for n, e in entries.items() if deleted or not e.deleted)
        if not found:
            raise subject_not_found(subject)
        return found

    def live_versions(self, subject: str) -> list[SchemaVersion]:
        """The subject's versions that are not soft-deleted, oldest first."""
        return [e for _, e in sorted(self.subjects.get(subject, {}).items()) if not e.deleted]

    def get_version(self, subject: str, spec: VersionSpec, *, deleted: bool = False) -> SchemaVersion:
        """One version (``latest``: the newest live one, or newest of all with ``deleted``); 40401/40402."""
        entries = self.subjects.get(subject)
        if not entries or (not deleted and all(e.deleted for e in entries.values())):
            raise subject_not_found(subject)
        if spec == "latest":
            candidates = [e for e in entries.values() if deleted or not e.deleted]
            return max(candidates, key=lambda e: e.version)
        entry = entries.get(spec)
        if entry is None or (entry.deleted and not deleted):
            raise version_not_found(spec)
        return entry

    def schema_by_id(self, schema_id: int) -> StoredSchema:
        stored = self.schemas.get(schema_id)
        if stored is None:
            raise schema_not_found(schema_id)
        return stored

    def id_versions(self, schema_id: int, *, deleted: bool = False) -> list[SchemaVersion]:
        """Every subject version holding the id (40403 if the id is unknown)."""
        self.schema_by_id(schema_id)
        return [
            e for name in sorted(self.subjects) for _, e in sorted(self.subjects[name].items())
            if e.id == schema_id and (deleted or not e.deleted)
        ]

    def id_subjects(self, schema_id: int, *, deleted: bool = False) -> list[str]:
        return sorted({e.subject for e in self.id_versions(schema_id, deleted=deleted)})

    def effective_level(self, subject: str | None) -> str:
        """The subject's level, else the global one, else Confluent's default BACKWARD."""
        if subject is not None and subject in self.subject_levels:
            return self.subject_levels[subject]
        return self.global_level or compatibility.DEFAULT_LEVEL

    def subject_level(self, subject: str, *, default_to_global: bool = False) -> str:
        """A subject's own level; 40408 when it has none, unless ``default_to_global``."""
        if subject in self.subject_levels:
            return self.subject_levels[subject]
        if default_to_global:
            return self.effective_level(None)
        raise RegistryHTTPError(
            404, SUBJECT_CONFIG_NOT_FOUND,
            f"Subject '{subject}' does not have subject-level compatibility configured",
        )

    def lookup(
        self, subject: str, schema_text: str, *, schema_type: str = AVRO, deleted: bool = False,
        references: References = (),
    ) -> SchemaVersion:
        """The subject's version holding this schema (same canonical form and references): 40401 / 40403."""
        references = self.pin_latest(references)
        parsed = self._parse_resolved(schema_text, references, schema_type)
        identity = _identity(parsed.canonical, references)
        entries = self.subjects.get(subject)
        if not entries or (not deleted and all(e.deleted for e in entries.values())):
            raise subject_not_found(subject)
        matches = [
            e for _, e in sorted(entries.items())
            if (deleted or not e.deleted) and self.schemas[e.id].identity == identity
        ]
        if not matches:
            raise schema_not_found()
        live = [e for e in matches if not e.deleted]
        return (live or matches)[-1]

    def check_compatibility(
        self, subject: str, schema_text: str, spec: VersionSpec | None = None, *, schema_type: str = AVRO,
        references: References = (),
    ) -> compatibility.CompatibilityResult:
        """Test a schema against one version, or (``latest``/None) against the subject as its level says."""
        _check_subject(subject)
        references = self.pin_latest(references)
        parsed = self._parse_resolved(schema_text, references, schema_type)
        level = self.effective_level(subject)
        if spec is None or spec == "latest":
            previous = self.live_versions(subject)
        else:  # Confluent: 40402 when the version is missing or deleted, even when the subject is missing
            entry = self.subjects.get(subject, {}).get(spec)
            if entry is None or entry.deleted:
                raise version_not_found(spec)
            previous = [entry]
        return self._compatible(parsed, previous, level)

    def pin_latest(self, references: References) -> References:
        """References with version -1 replaced by the referenced subject's latest live version (as Confluent
        stores them); 42201 when that subject has no live version."""
        if all(r.version != LATEST_REFERENCE for r in references):
            return references
        pinned: list[Reference] = []
        for ref in references:
            if ref.version == LATEST_REFERENCE:
                live = [n for n, e in (self.subjects.get(ref.subject) or {}).items() if not e.deleted]
                if not live:
                    raise missing_reference(ref.subject, ref.version)
                ref = Reference(ref.name, ref.subject, max(live))
            pinned.append(ref)
        return tuple(pinned)

    def resolve(self, references: References) -> list[str]:
        """The texts of every schema the references need, recursively, each after its own dependencies.

        42201 when a referenced subject or version does not exist (soft-deleted versions still resolve, so
        schemas referencing them keep working) or when the references form a cycle.
        """
        ordered: list[str] = []
        done: set[tuple[str, int]] = set()

        def visit(refs: References, path: tuple[tuple[str, int], ...]) -> None:
            for ref in refs:
                key = (ref.subject, ref.version)
                if key in path:
                    cycle = " -> ".join(f"{s} version {v}" for s, v in (*path[path.index(key):], key))
                    raise invalid_schema(f"references form a cycle: {cycle}")
                if key in done:
                    continue
                entry = (self.subjects.get(ref.subject) or {}).get(ref.version)
                if entry is None:
                    raise missing_reference(ref.subject, ref.version)
                visit(entry.references, (*path, key))
                done.add(key)
                ordered.append(entry.schema)

        visit(references, ())
        return ordered

    def _parse_resolved(
        self, schema_text: object, references: References, schema_type: str = AVRO,
    ) -> ParsedSchema:
        """Validate a schema with its references' named types known (42201 if invalid or unresolvable)."""
        return _validate(schema_text, schema_type, self.resolve(references) if references else ())

    def referenced_by(self, subject: str, version: int) -> list[int]:
        """Ids of the live schema versions referencing this version.

        As Confluent: soft-deleting the referrer frees the referenced version (its id leaves
        ``referencedby``), so the referrer can be deleted first and the referenced one after it.
        """
        return sorted({
            e.id for versions in self.subjects.values() for e in versions.values()
            if not e.deleted and any(r.subject == subject and r.version == version for r in e.references)
        })

    def _compatible(
        self, parsed: ParsedSchema, previous: list[SchemaVersion], level: str
    ) -> compatibility.CompatibilityResult:
        labels = [f"version {e.version}" for e in previous]
        return compatibility.is_compatible(parsed, [self._parsed(e) for e in previous], level, labels=labels)

    def _parsed(self, entry: SchemaVersion) -> ParsedSchema:
        return self._parse_resolved(entry.schema, entry.references, entry.schema_type)

    # ------------------------------------------------------------ operations (results + records)

    def register(
        self, subject: str, schema_text: str, *, schema_type: str = AVRO, normalize: bool = False,
        schema_id: int | None = None, references: References = (),
    ) -> tuple[RegisterResult, list[Record]]:
        """Register a schema under a subject: the existing version if it is already there, else a new one.

        The id is the one this canonical schema already has anywhere, else the next free id; the new
        version must pass the subject's compatibility level (409 with the reasons otherwise).
        """
        _check_subject(subject)
        references = self.pin_latest(references)
        parsed = self._parse_resolved(schema_text, references, schema_type)
        identity = _identity(parsed.canonical, references)
        entries = self.subjects.get(subject, {})
        for _, entry in sorted(entries.items(), reverse=True):
            if not entry.deleted and self.schemas[entry.id].identity == identity:
                _check_requested_id(subject, schema_id, entry.id)
                return RegisterResult(entry.id, entry.version, created=False), []
        level = self.effective_level(subject)
        previous = self.live_versions(subject)
        result = self._compatible(parsed, previous, level)
        if not result.compatible:
            raise RegistryHTTPError(
                409, INCOMPATIBLE_SCHEMA,
                f"Schema being registered is incompatible with an earlier schema for subject \"{subject}\", "
                f"details: [{', '.join(result.messages)}]",
            )
        new_id = self.ids_by_canonical.get(identity)
        if new_id is None:
            new_id = self.max_id + 1
        _check_requested_id(subject, schema_id, new_id)
        version = max(entries, default=0) + 1
        if version > MAX_VERSION:
            raise RegistryHTTPError(422, INVALID_VERSION, f"Subject '{subject}' has no version numbers left")
        stored = self.schemas.get(new_id)
        text = stored.schema if stored is not None else (parsed.canonical if normalize else parsed.text)
        entry = SchemaVersion(subject, version, new_id, text, False, schema_type, references)
        return RegisterResult(new_id, version, created=True), [entry.record()]

    def verify_registration(self, subject: str, result: RegisterResult) -> list[Record] | None:
        """After a registration's record was read back: None if it took effect, else what to do about it.

        An empty list means the record lost its id to another instance's schema (retry with a fresh id); a
        record means the version slot went to another instance, and re-appending the winner's record keeps
        compaction (last record wins) in step with ``apply`` (first record wins).
        """
        if not result.created:
            return None
        entry = self.subjects.get(subject, {}).get(result.version)
        if entry is not None and entry.id == result.id:
            return None
        return [entry.record()] if entry is not None else []

    def delete_subject(self, subject: str, *, permanent: bool = False) -> tuple[list[int], list[Record]]:
        """Soft delete (versions become deleted, the subject's config goes), or purge a soft-deleted one."""
        entries = self.subjects.get(subject)
        if not entries:
            raise subject_not_found(subject)
        live = sorted(n for n, e in entries.items() if not e.deleted)
        if permanent:
            if live:
                raise RegistryHTTPError(
                    404, SUBJECT_NOT_SOFT_DELETED,
                    f"Subject '{subject}' was not deleted first before being permanently deleted",
                )
            numbers = sorted(entries)
            records: list[Record] = [(schema_key(subject, n), None) for n in numbers]
            records.append((delete_subject_key(subject), None))
            if subject in self.subject_levels:
                records.append((config_key(subject), None))
            self._check_unreferenced(subject, numbers)
            return numbers, records
        if not live:
            raise RegistryHTTPError(
                404, SUBJECT_SOFT_DELETED,
                f"Subject '{subject}' was soft deleted.Set permanent=true to delete permanently",
            )
        self._check_unreferenced(subject, live)
        records = [(delete_subject_key(subject), {"subject": subject, "version": max(entries)})]
        if subject in self.subject_levels:
            records.append((config_key(subject), None))
        return live, records

    def delete_version(
        self, subject: str, spec: VersionSpec, *, permanent: bool = False,
    ) -> tuple[int, list[Record]]:
        """Soft delete one version, or purge one that is already soft-deleted (``permanent``)."""
        entries = self.subjects.get(subject)
        if not entries:
            raise subject_not_found(subject)
        if spec == "latest":
            entry = self.get_version(subject, "latest", deleted=permanent)
        else:
            found = entries.get(spec)
            if found is None:
                raise version_not_found(spec)
            entry = found
        self._check_unreferenced(subject, [entry.version])
        if permanent:
            if not entry.deleted:
                raise RegistryHTTPError(
                    404, VERSION_NOT_SOFT_DELETED,
                    f"Subject '{subject}' Version {entry.version} was not deleted first before being "
                    "permanently deleted",
                )
            return entry.version, [(schema_key(subject, entry.version), None)]
        if entry.deleted:
            raise RegistryHTTPError(
                404, VERSION_SOFT_DELETED,
                f"Subject '{subject}' Version {entry.version} was soft deleted.Set permanent=true to delete "
                "permanently",
            )
        return entry.version, [replace(entry, deleted=True).record()]

    def _check_unreferenced(self, subject: str, versions: Iterable[int]) -> None:
        """42206 when another schema still references one of these versions (as Confluent refuses)."""
        for version in versions:
            if self.referenced_by(subject, version):
                raise reference_exists(subject, version)

    def set_config(self, subject: str | None, level: object) -> tuple[str, list[Record]]:
        """Set the global (``subject`` None) or a subject's compatibility level (42203 if not a level)."""
        if subject is not None:
            _check_subject(subject)
        name = compatibility.normalize_level(level)
        if name is None:
            raise invalid_level()
        return name, [(config_key(subject), {"compatibilityLevel": name})]

    def delete_config(self, subject: str | None) -> tuple[str, list[Record]]:
        """Drop a subject's level (back to global) or the global one (back to BACKWARD); returns the old."""
        if subject is None:
            return self.effective_level(None), [(config_key(None), None)]
        if subject in self.subject_levels:
            return self.subject_levels[subject], [(config_key(subject), None)]
        if subject not in self.subjects:
            raise subject_not_found(subject)
        raise RegistryHTTPError(
            404, SUBJECT_CONFIG_NOT_FOUND,
            f"Subject '{subject}' does not have subject-level compatibility configured",
        )


# ---------------------------------------------------------------- input checks

def _is_version_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_VERSION


def parse_version(spec: str | int) -> VersionSpec:
    """A path's version: ``latest`` or -1, or 1..2^31-1; anything else is 42202."""
    text = str(spec).strip()
    if text.lower() == "latest" or text == "-1":
        return "latest"
    try:
        number = int(text)
    except ValueError:
        number = 0
    digits = text.lstrip("+")
    if not (digits.isascii() and digits.isdigit()) or not 1 <= number <= MAX_VERSION:
        raise RegistryHTTPError(
            422, INVALID_VERSION,
            f"The specified version '{text[:50]}' is not a valid version id. Allowed values are between "
            f"[1, 2^31-1] and the string \"latest\"",
        )
    return number


def _check_subject(subject: str) -> None:
    if not subject or not subject.strip() or len(subject) > MAX_SUBJECT_LENGTH or _CONTROL.search(subject):
        raise invalid_subject(subject)


def _check_requested_id(subject: str, requested: int | None, actual: int) -> None:
    """A chosen id other than the schema's own needs IMPORT mode, which this registry never is in."""
    if requested is not None and requested != actual:
        raise RegistryHTTPError(422, OPERATION_NOT_PERMITTED, f"Subject {subject} is not in import mode")


def _validate(schema_text: object, schema_type: str, dependencies: Sequence[str] = ()) -> ParsedSchema:
    if schema_type not in SUPPORTED_TYPES:
        if schema_type in KNOWN_TYPES:
            raise invalid_schema(f"schema type {schema_type} is not supported by this registry, only AVRO")
        shown = json.dumps(schema_type)[:60]
        raise invalid_schema(f"unknown schema type {shown}; this registry supports AVRO")
    if not isinstance(schema_text, str) or not schema_text.strip():
        raise RegistryHTTPError(422, INVALID_SCHEMA, EMPTY_SCHEMA_MESSAGE)
    try:
        return compatibility.parse_with_references(schema_text, dependencies)
    except InvalidSchemaError as exc:
        raise invalid_schema(str(exc)) from exc
