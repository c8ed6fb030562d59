"""Control-plane operations as pure functions: request + current state + actor -> the new entry to write.

Nothing here does I/O or keeps state: the caller (``hub.control.service``) runs an operation against a state
caught up with the topics, writes what it returns, and reads it back. Every refusal is a
:class:`hub.control.errors.ControlError` whose message says what is wrong and how to fix it.

Rules (docs/contract.md; docs/domain.md: Nodes and tiers, Sharing types):

* Only the hub operator registers, changes and removes nodes and scenarios.
* A node acts only as itself: a provider catalogues, updates and retires only its own entries (the operator
  may act for any provider).
* A catalogue entry's schema subject must exist in the registry, and every field it names (security
  grading, primary key, ``locality_field``, quality rules) must be a field of the subject's latest schema.
* Sharing type ``none`` needs a legal basis.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hub.catalogue.model import Level, QualityRule, Resource, Sharing, Subscription, Tier, tier_of, validate_node_id
from hub.contract import OPERATOR
from hub.control.errors import Conflict, ControlError, Forbidden, Invalid, NotFound
from hub.control.state import CatalogEntry, ControlState, NodeEntry, ScenarioEntry, same_resource
from hub.control.tokens import IssuedToken
from hub.identifiers import DISTRICTS
from hub.policy.model import Grant, Scenario, check_scenario_id
from hub.quality import fields_read, rule_problems

Frequency = Literal["realtime", "hourly", "daily", "weekly", "monthly", "on_change"]
RESOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
RESERVED_SUBJECT_PREFIXES = ("hub.", "_")
MAX_TEXT = 10_000


def validation_message(exc: ValidationError) -> str:
    """One readable line per pydantic error: ``field.path: what is wrong``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "extra_forbidden":
            message = "unknown field (not part of this request)"
        elif error.get("type") == "missing":
            message = "required field is missing"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


# ---------------------------------------------------------------- request shapes

class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSpec(_Request):
    """Registering a node: its id (which fixes its tier), its title and its clearance."""

    id: str = Field(description="national, municipal.<dept>, district.<GB/T 2260 code> or region.<peer>")
    title: str = Field("", max_length=500, description="Name of the organisation")
    clearance: Level = Field("L2", description="Highest security level it may receive unmasked")


class NodePatch(_Request):
    """Changing a node's title or clearance (operator only)."""

    title: str | None = Field(None, max_length=500)
    clearance: Level | None = None


class ScenarioSpec(_Request):
    """Registering a scenario: a named purpose with its legal basis."""

    id: str = Field(description="Lowercase slug, e.g. vaccination-follow-up")
    title: str = Field("", max_length=500)
    legal_basis: str = Field(min_length=1, max_length=MAX_TEXT, description="Law or decision allowing sharing")
    description: str = Field("", max_length=MAX_TEXT)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return check_scenario_id(value)

    @field_validator("legal_basis")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("legal_basis must not be blank")
        return value


class ScenarioPatch(_Request):
    """Changing a scenario's title, legal basis or description (operator only)."""

    title: str | None = Field(None, max_length=500)
    legal_basis: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    description: str | None = Field(None, max_length=MAX_TEXT)


class ResourceSpec(_Request):
    """A catalogue entry as a provider submits it (create, full update, import)."""

    id: str = Field(min_length=3, max_length=200, description="<provider>.<name>, e.g. municipal.health.vaccination")
    title: str = Field("", max_length=500)
    provider: str = Field(description="Node id of the provider; must be the caller unless the caller is the operator")
    tier: Tier | None = Field(None, description="Tier of the provider (derived from it when omitted)")
    subject: str | None = Field(None, max_length=255, description="Registry subject of the records; <id>-value")
    sharing: Sharing = Field("unconditional", description="unconditional, authorised, or none (with legal_basis)")
    legal_basis: str | None = Field(None, max_length=MAX_TEXT)
    field_levels: dict[str, Level] = Field(default_factory=dict, description="Security level L1-L4 per field")
    primary_key: list[str] = Field(default_factory=list)
    locality_field: str | None = None
    locality_from_resident_id: bool = False
    return_to_locality: bool = False
    report_up: bool = False
    quality_rules: list[QualityRule] = Field(default_factory=list)
    update_frequency: Frequency = "realtime"
    description: str = Field("", max_length=MAX_TEXT)


class ResourcePatch(_Request):
    """Changing some fields of a catalogue entry; the rest stay as they are (id and provider cannot change)."""

    title: str | None = Field(None, max_length=500)
    subject: str | None = Field(None, max_length=255)
    sharing: Sharing | None = None
    legal_basis: str | None = Field(None, max_length=MAX_TEXT)
    field_levels: dict[str, Level] | None = None
    primary_key: list[str] | None = None
    locality_field: str | None = None
    locality_from_resident_id: bool | None = None
    return_to_locality: bool | None = None
    report_up: bool | None = None
    quality_rules: list[QualityRule] | None = None
    update_frequency: Frequency | None = None
    description: str | None = Field(None, max_length=MAX_TEXT)


@dataclass(frozen=True)
class SchemaInfo:
    """What validation needs to know of a registry subject: its latest version and top-level field names."""

    subject: str
    version: int
    schema_id: int
    fields: frozenset[str]
    recursive: bool = False  # a record that contains itself: masking (hub.policy.masking) cannot derive it


SchemaLookup = Callable[[str], SchemaInfo | None]


# ---------------------------------------------------------------- nodes

def _require_operator(actor: str, what: str) -> None:
    if actor != OPERATOR:
        raise Forbidden("operator_only", f"only the hub operator can {what}; {actor} cannot")


def check_node_id(node_id: str) -> str:
    """A well-formed node id, with a live district code for districts; Invalid otherwise."""
    try:
        validate_node_id(node_id)
    except ValueError as exc:
        raise Invalid("invalid_node_id", str(exc)) from exc
    if node_id.startswith("district.") and node_id[9:] not in DISTRICTS:
        raise Invalid(
            "invalid_node_id",
            f"{node_id}: {node_id[9:]} is not one of Shanghai's 16 district codes (GB/T 2260), e.g. 310115 Pudong",
        )
    return node_id


def register_node(state: ControlState, spec: NodeSpec, actor: str, now: int, token: IssuedToken) -> NodeEntry:
    """A new node with a new token (operator only); re-registering a removed node revives it."""
    _require_operator(actor, "register nodes")
    check_node_id(spec.id)
    if spec.id == OPERATOR:
        raise Conflict("node_exists", "hub is the operator node; it authenticates with the operator token file")
    existing = state.nodes.get(spec.id)
    if existing is not None and not existing.removed:
        raise Conflict(
            "node_exists", f"node {spec.id} is already registered; POST /v1/nodes/{spec.id}/token issues a new token"
        )
    return NodeEntry(
        id=spec.id, title=spec.title, clearance=spec.clearance, token_id=token.token_id,
        token_hash=token.token_hash, created_at=existing.created_at if existing else now, updated_at=now,
        updated_by=actor,
    )


def live_node(state: ControlState, node_id: str) -> NodeEntry:
    entry = state.node(node_id)
    if entry is None:
        raise NotFound("unknown_node", f"no registered node {node_id!r} (GET /v1/nodes lists them)")
    return entry


def update_node(state: ControlState, node_id: str, patch: NodePatch, actor: str, now: int) -> NodeEntry | None:
    """The node with a new title or clearance (operator only); None when nothing changes."""
    _require_operator(actor, "change nodes")
    entry = live_node(state, node_id)
    changes = patch.model_dump(exclude_none=True)
    if all(getattr(entry, k) == v for k, v in changes.items()):
        return None
    return entry.model_copy(update={**changes, "updated_at": now, "updated_by": actor})


def rotate_token(state: ControlState, node_id: str, actor: str, now: int, token: IssuedToken) -> NodeEntry:
    """A new token for a node, by the operator or the node itself; the old one stops working."""
    if actor not in (OPERATOR, node_id):
        raise Forbidden("not_authorised", f"{actor} cannot issue a token for {node_id}: a node acts only as itself")
    if node_id == OPERATOR:
        raise Invalid(
            "operator_token",
            "the operator token is the operator_token_file of `hub status`; replace that file and restart the hub",
        )
    entry = live_node(state, node_id)
    return entry.model_copy(
        update={"token_id": token.token_id, "token_hash": token.token_hash, "updated_at": now, "updated_by": actor}
    )


def remove_node(state: ControlState, node_id: str, actor: str, now: int) -> NodeEntry:
    """Mark a node removed (operator only): its token stops working and routing leaves it out."""
    _require_operator(actor, "remove nodes")
    if node_id == OPERATOR:
        raise Invalid("operator_node", "the operator node hub cannot be removed")
    entry = live_node(state, node_id)
    return entry.model_copy(update={"removed": True, "token_id": None, "token_hash": None, "updated_at": now,
                                    "updated_by": actor})


def seed_node(state: ControlState, node_id: str, title: str, clearance: Level, now: int) -> NodeEntry | None:
    """A seed node without a token (issue one with POST /v1/nodes/{id}/token), or None if it exists."""
    if node_id in state.nodes:
        return None
    return NodeEntry(id=node_id, title=title, clearance=clearance, created_at=now, updated_at=now, updated_by=OPERATOR)


# ---------------------------------------------------------------- scenarios

def create_scenario(state: ControlState, spec: ScenarioSpec, actor: str, now: int) -> ScenarioEntry:
    """A new scenario (operator only)."""
    _require_operator(actor, "register scenarios")
    if spec.id in state.scenarios:
        raise Conflict("scenario_exists", f"scenario {spec.id} is already registered; PUT /v1/scenarios/{spec.id}")
    scenario = Scenario(id=spec.id, title=spec.title, legal_basis=spec.legal_basis, description=spec.description)
    return ScenarioEntry(scenario=scenario, version=1, updated_by=actor, updated_at=now)


def update_scenario(
    state: ControlState, scenario_id: str, patch: ScenarioPatch, actor: str, now: int
) -> ScenarioEntry | None:
    """A new version of a scenario (operator only); None when nothing changes."""
    _require_operator(actor, "change scenarios")
    entry = state.scenarios.get(scenario_id)
    if entry is None:
        raise NotFound("unknown_scenario", f"no scenario {scenario_id!r} (GET /v1/scenarios lists them)")
    changes = patch.model_dump(exclude_none=True)
    if changes.get("legal_basis") is not None and not changes["legal_basis"].strip():
        raise Invalid("legal_basis_required", "legal_basis must not be blank")
    scenario = entry.scenario.model_copy(update=changes)
    if scenario == entry.scenario:
        return None
    return ScenarioEntry(scenario=scenario, version=entry.version + 1, updated_by=actor, updated_at=now)


# ---------------------------------------------------------------- catalogue

def _check_actor(spec_provider: str, actor: str, verb: str) -> None:
    if actor not in (OPERATOR, spec_provider):
        raise Forbidden(
            "not_authorised",
            f"{actor} cannot {verb} resources of {spec_provider}: a node acts only as itself "
            f"(authenticate as {spec_provider}, or as the operator)",
        )


class _Catalogued:
    """The live (not retired) catalogue as the ``resources`` mapping ``compile_checker`` reads references from."""

    def __init__(self, state: ControlState) -> None:
        self.state = state

    def get(self, resource_id: str) -> Resource | None:
        entry = self.state.entry(resource_id)
        return entry.resource if entry is not None and not entry.retired else None


def _rule_problems(rules: list[QualityRule], state: ControlState) -> list[str]:
    """What is wrong with quality rule declarations: the very compile step the hot path uses (hub.quality)."""
    return rule_problems(rules, resources=_Catalogued(state))  # type: ignore[arg-type]


def build_resource(spec: ResourceSpec, state: ControlState, schema_of: SchemaLookup) -> Resource:
    """Validate a submitted entry against the nodes, the catalogue and the registry; the Resource to store."""
    prefix = f"{spec.provider}."
    try:
        validate_node_id(spec.provider)
    except ValueError as exc:
        raise Invalid("invalid_provider", str(exc)) from exc
    if not spec.id.startswith(prefix) or not RESOURCE_NAME.match(spec.id[len(prefix):]):
        raise Invalid(
            "invalid_resource_id",
            f"resource id {spec.id!r} must be <provider>.<name>, i.e. {prefix}<name> with <name> made of lowercase "
            "letters, digits, '-' and '_'",
        )
    if state.node(spec.provider) is None:
        raise Invalid(
            "unknown_provider", f"provider {spec.provider} is not a registered node (the operator registers nodes)"
        )
    tier = tier_of(spec.provider)
    if spec.tier is not None and spec.tier != tier:
        raise Invalid("tier_mismatch", f"tier {spec.tier} differs from the tier of provider {spec.provider} ({tier})")
    if spec.sharing == "none" and not (spec.legal_basis or "").strip():
        raise Invalid(
            "legal_basis_required",
            "sharing 'none' (非共享) needs a legal_basis: the law or regulation that justifies not sharing",
        )
    subject = spec.subject or f"{spec.id}-value"
    if subject.startswith(RESERVED_SUBJECT_PREFIXES):
        raise Invalid("reserved_subject", f"subject {subject} is reserved for the hub's own schemas")
    others = state.subject_owners(subject) - {spec.provider}
    if others:
        raise Conflict(
            "subject_bound", f"subject {subject} is bound to catalogue entries of {', '.join(sorted(others))}"
        )
    schema = schema_of(subject)
    if schema is None:
        raise Invalid(
            "unknown_subject",
            f"schema subject {subject} has no live version in the registry: register the schema first "
            f"(POST /subjects/{subject}/versions)",
        )
    problems = []
    missing = [f"field_levels: {', '.join(sorted(set(spec.field_levels) - schema.fields))}"]
    missing += [f"primary_key: {', '.join(f for f in spec.primary_key if f not in schema.fields)}"]
    if spec.locality_field is not None and spec.locality_field not in schema.fields:
        missing.append(f"locality_field: {spec.locality_field}")
    bad_rules = sorted({f for r in spec.quality_rules for f in fields_read(r) if f not in schema.fields})
    missing.append(f"quality_rules: {', '.join(bad_rules)}")
    missing = [m for m in missing if not m.endswith(": ")]
    if missing:
        problems.append(
            f"field(s) not in the schema of {subject} (version {schema.version}): {'; '.join(missing)}. "
            f"Its fields are: {', '.join(sorted(schema.fields))}"
        )
    if len(set(spec.primary_key)) != len(spec.primary_key):
        problems.append(f"primary_key repeats a field: {spec.primary_key}")
    if spec.locality_from_resident_id and not spec.locality_field and "resident_id" not in schema.fields:
        problems.append("locality_from_resident_id needs a resident ID field: a resident_id field, or locality_field")
    if spec.return_to_locality and not (spec.locality_field or spec.locality_from_resident_id):
        problems.append("return_to_locality needs a locality: locality_field or locality_from_resident_id")
    if schema.recursive and spec.sharing != "none":  # a "none" entry is never delivered, so never masked
        problems.append(
            f"the schema of {subject} is recursive (a record contains itself): the hub masks the records it "
            "delivers per consumer and supports only non-recursive record schemas (or catalogue it with sharing none)"
        )
    problems += _rule_problems(spec.quality_rules, state)
    if problems:
        raise Invalid("invalid_entry", f"catalogue entry {spec.id}: " + " | ".join(problems))
    data = spec.model_dump()
    data.update(tier=tier, subject=subject, legal_basis=spec.legal_basis or None)
    try:
        return Resource.model_validate(data)
    except ValidationError as exc:
        raise Invalid("invalid_entry", f"catalogue entry {spec.id}: {validation_message(exc)}") from exc


def create_resource(
    state: ControlState, spec: ResourceSpec, actor: str, now: int, schema_of: SchemaLookup
) -> CatalogEntry:
    """Catalogue a new resource (version 1), or re-catalogue a retired one (its next version)."""
    _check_actor(spec.provider, actor, "catalogue")
    existing = state.entry(spec.id)
    if existing is not None and not existing.retired:
        raise Conflict(
            "resource_exists",
            f"resource {spec.id} is already catalogued (version {existing.version}); "
            f"update it with PUT or PATCH /v1/resources/{spec.id}",
        )
    resource = build_resource(spec, state, schema_of)
    version = existing.version + 1 if existing is not None else 1
    return CatalogEntry(resource=resource, version=version, updated_by=actor, updated_at=now)


def current_entry(state: ControlState, resource_id: str) -> CatalogEntry:
    entry = state.entry(resource_id)
    if entry is None:
        raise NotFound("unknown_resource", f"resource {resource_id!r} is not catalogued (GET /v1/resources lists them)")
    return entry


def _live_entry(state: ControlState, resource_id: str, actor: str, verb: str) -> CatalogEntry:
    entry = current_entry(state, resource_id)
    _check_actor(entry.resource.provider, actor, verb)
    if entry.retired:
        raise Conflict(
            "resource_retired",
            f"resource {resource_id} was retired in version {entry.version}; "
            "POST /v1/resources with the full entry catalogues it again",
        )
    return entry


def update_resource(
    state: ControlState, resource_id: str, spec: ResourceSpec, actor: str, now: int, schema_of: SchemaLookup
) -> CatalogEntry | None:
    """A new version of an entry from a full spec; None when it equals the current version."""
    entry = _live_entry(state, resource_id, actor, "update")
    if spec.id != resource_id:
        raise Invalid("id_mismatch", f"the body's id {spec.id} differs from the path's {resource_id}")
    if spec.provider != entry.resource.provider:
        raise Invalid(
            "provider_change", f"the provider of {resource_id} is {entry.resource.provider} and cannot change"
        )
    resource = build_resource(spec, state, schema_of)
    if same_resource(resource, entry.resource):
        return None
    return CatalogEntry(resource=resource, version=entry.version + 1, updated_by=actor, updated_at=now)


def spec_of(resource: Resource) -> ResourceSpec:
    """The submitted form of a stored resource (for partial updates and re-import comparisons)."""
    return ResourceSpec.model_validate(resource.model_dump(exclude={"schema_file"}))


def patch_resource(
    state: ControlState, resource_id: str, patch: ResourcePatch, actor: str, now: int, schema_of: SchemaLookup
) -> CatalogEntry | None:
    """A new version with some fields changed; None when nothing changes."""
    entry = _live_entry(state, resource_id, actor, "update")
    changes = patch.model_dump(exclude_unset=True)
    nullable = {"legal_basis", "locality_field"}
    changes = {k: v for k, v in changes.items() if v is not None or k in nullable}
    merged = {**spec_of(entry.resource).model_dump(), **changes}
    try:
        spec = ResourceSpec.model_validate(merged)
    except ValidationError as exc:
        raise Invalid("invalid_entry", f"catalogue entry {resource_id}: {validation_message(exc)}") from exc
    return update_resource(state, resource_id, spec, actor, now, schema_of)


def retire_resource(state: ControlState, resource_id: str, actor: str, now: int) -> CatalogEntry:
    """A new version marked retired: no new grants, no deliveries; the history stays."""
    entry = _live_entry(state, resource_id, actor, "retire")
    return entry.model_copy(update={"version": entry.version + 1, "retired": True, "updated_by": actor,
                                    "updated_at": now})


# ---------------------------------------------------------------- import

ImportStatus = Literal["created", "updated", "unchanged", "rejected"]


@dataclass(frozen=True)
class ImportOutcome:
    """What importing one entry did: ``created``, ``updated``, ``unchanged`` or ``rejected`` (with why)."""

    index: int
    id: str | None
    status: ImportStatus
    message: str
    version: int | None = None
    status_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "status": self.status, "message": self.message,
                "version": self.version, "status_code": self.status_code}


def import_resources(
    state: ControlState, items: Sequence[Any], actor: str, now: int, schema_of: SchemaLookup
) -> tuple[list[ImportOutcome], list[CatalogEntry]]:
    """Create, update or leave each submitted entry; (outcome per item, entries to write).

    Each item is judged on its own (a rejected one does not stop the others) against the state plus the
    entries accepted earlier in the same batch. Re-importing the same items changes nothing.
    """
    outcomes: list[ImportOutcome] = []
    overlay = _Overlay(state)
    versions: list[CatalogEntry] = []  # every version to write, in order (an id may change twice in a batch)
    for index, item in enumerate(items):
        rid = item.get("id") if isinstance(item, Mapping) and isinstance(item.get("id"), str) else None
        try:
            if not isinstance(item, Mapping):
                raise Invalid("invalid_entry", f"entry {index} is a JSON {type(item).__name__}, not an object")
            spec = ResourceSpec.model_validate(dict(item))
            current = overlay.entry(spec.id)
            if current is None or current.retired:
                entry = create_resource(overlay, spec, actor, now, schema_of)
                outcome = ImportOutcome(index, spec.id, "created", f"catalogued as version {entry.version}",
                                        entry.version)
            else:
                changed = update_resource(overlay, spec.id, spec, actor, now, schema_of)
                if changed is None:
                    outcomes.append(ImportOutcome(index, spec.id, "unchanged", "equal to the current version",
                                                  current.version))
                    continue
                entry = changed
                outcome = ImportOutcome(index, spec.id, "updated",
                                        f"version {current.version} -> {entry.version}", entry.version)
            overlay.add(entry)
            versions.append(entry)
            outcomes.append(outcome)
        except ValidationError as exc:
            outcomes.append(ImportOutcome(index, rid, "rejected", validation_message(exc), status_code=422))
        except ControlError as exc:
            outcomes.append(ImportOutcome(index, rid, "rejected", exc.message, status_code=exc.status))
    return outcomes, versions


class _Overlay(ControlState):
    """A state seen through entries accepted earlier in the same import (not yet on the topic)."""

    def __init__(self, base: ControlState) -> None:
        super().__init__(nodes=base.nodes, scenarios=base.scenarios, catalog=base.catalog, grants=base.grants,
                         bindings=base.bindings)
        self._written: dict[str, CatalogEntry] = {}
        self._subjects: dict[str, set[str]] = {}

    def add(self, entry: CatalogEntry) -> None:
        self._written[entry.id] = entry
        self._subjects.setdefault(entry.resource.subject, set()).add(entry.resource.provider)

    def entry(self, resource_id: str) -> CatalogEntry | None:
        return self._written.get(resource_id) or super().entry(resource_id)

    def subject_owners(self, subject: str) -> set[str]:
        return super().subject_owners(subject) | self._subjects.get(subject, set())


# ---------------------------------------------------------------- grants from seed subscriptions

def seed_grant(subscription: Subscription, now: int) -> Grant:
    """The active ``subscribe`` grant a seed subscription stands for (id = the subscription's id)."""
    return Grant(
        id=subscription.id, consumer=subscription.consumer, resource=subscription.resource,
        scenario=subscription.scenario, mode="subscribe", row_scope=subscription.row_scope, valid_from=0,
        state="active", requested_by=OPERATOR, decided_by=OPERATOR, reason="seed subscription (config/seed.yaml)",
        requested_at=now, updated_at=now,
    )


def filter_entries(
    entries: Iterable[CatalogEntry], *, tier: str | None = None, provider: str | None = None,
    sharing: str | None = None, text: str | None = None,
) -> list[CatalogEntry]:
    """Catalogue entries matching every filter given (``text``: case-insensitive in id, title, description)."""
    needle = text.strip().lower() if text else None
    found = []
    for e in entries:
        r = e.resource
        if tier is not None and r.tier != tier:
            continue
        if provider is not None and r.provider != provider:
            continue
        if sharing is not None and r.sharing != sharing:
            continue
        if needle and needle not in f"{r.id}\n{r.title}\n{r.description}".lower():
            continue
        found.append(e)
    return found


def is_recursive(schema: Any) -> bool:
    """True if a record of the (JSON) Avro schema refers to itself or to an enclosing record by name.

    Names are compared both short and namespace-qualified, so a different type sharing an enclosing record's
    short name also counts (a false alarm costs a rename; a missed recursion would stop the worker's masking).
    """
    def walk(node: Any, enclosing: frozenset[str], namespace: str) -> bool:
        if isinstance(node, str):
            return node in enclosing
        if isinstance(node, list):
            return any(walk(branch, enclosing, namespace) for branch in node)
        if not isinstance(node, Mapping):
            return False
        kind = node.get("type")
        if kind == "record" or kind == "error":
            name = str(node.get("name", ""))
            space = str(node.get("namespace", namespace) or "")
            full = name if "." in name or not space else f"{space}.{name}"
            inner = enclosing | {name, full, full.rsplit(".", 1)[-1]}
            fields = node.get("fields") if isinstance(node.get("fields"), list) else []
            return any(walk(f.get("type"), inner, full.rsplit(".", 1)[0] if "." in full else space)
                       for f in fields if isinstance(f, Mapping))
        if kind == "array":
            return walk(node.get("items"), enclosing, namespace)
        if kind == "map":
            return walk(node.get("values"), enclosing, namespace)
        return walk(kind, enclosing, namespace) if isinstance(kind, (list, Mapping)) else False

    return walk(schema, frozenset(), "")


def schema_fields(schema: Mapping[str, Any]) -> frozenset[str]:
    """Top-level field names of an Avro record schema (empty for anything else)."""
    if schema.get("type") != "record" or not isinstance(schema.get("fields"), list):
        return frozenset()
    return frozenset(f["name"] for f in schema["fields"] if isinstance(f, Mapping) and isinstance(f.get("name"), str))
