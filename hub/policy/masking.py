"""Grading and masking: which fields of a record a consumer receives, and in what form.

Each catalogued field has a level L1-L4 (docs/domain.md, Security grading). For a consumer with clearance C
under a grant with allowed fields A (None = all), ``field_plan`` gives every graded field one action:

* not in A (and not part of the primary key)  -> ``drop``
* level <= C                                   -> ``keep``
* L2 or L3 above C                             -> ``mask``: a partial mask chosen by the field's name
  (resident ID ``310115********1234``, phone ``139****5678``, name ``张**``, other strings keep their
  first/last characters); non-string values become None
* L4 above C                                   -> ``drop``, or ``tokenise`` (keyed HMAC-SHA256, a stable
  pseudonym the consumer can join on but not reverse) when the plan is asked for tokens

Fields the catalogue does not grade are never delivered ("nothing is exchanged that is not catalogued").
``derived_schema`` gives the consumer-side Avro schema of masked records (dropped fields removed,
masked/tokenised fields ``["null","string"]`` with default null) so consumers decode with ordinary Avro
tools; ``plan_key`` is the stable hash the hot path caches that schema under.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from hub.catalogue.model import Level, Node, Resource
from hub.identifiers import MASK, mask_name, mask_phone, mask_resident_id
from hub.policy.model import Grant

__all__ = [
    "Action",
    "FieldRule",
    "Kind",
    "MaskPlan",
    "apply_mask",
    "derived_schema",
    "field_kind",
    "field_plan",
    "is_passthrough",
    "level_rank",
    "mask_generic",
    "plan_for",
    "plan_key",
]

MIN_TOKEN_KEY_BYTES = 16
TOKEN_HEX_CHARS = 32  # 128 bits of HMAC-SHA256
MASKING_ATTR = "hub.masking"  # extra field attribute in derived schemas: "partial" or "token"

_RANK: Mapping[str, int] = {"L1": 1, "L2": 2, "L3": 3, "L4": 4}


def level_rank(level: str) -> int:
    """1-4 for L1-L4; raises KeyError for anything else."""
    return _RANK[level]


class Action(StrEnum):
    """What happens to one field on its way to one consumer."""

    KEEP = "keep"
    MASK = "mask"
    DROP = "drop"
    TOKENISE = "tokenise"


class Kind(StrEnum):
    """Which partial mask a field gets, detected from its name."""

    RESIDENT_ID = "resident_id"
    PHONE = "phone"
    NAME = "name"
    GENERIC = "generic"


_PERSON_HINTS = (
    "person", "rep", "holder", "contact", "applicant", "resident", "patient", "reporter", "guardian",
)


def field_kind(name: str) -> Kind:
    """The mask kind a field name implies (``legal_rep_resident_id``: resident ID)."""
    n = name.lower()
    if n.endswith("resident_id") or n in ("id_number", "ric", "id_card", "id_card_number"):
        return Kind.RESIDENT_ID
    if "phone" in n or "mobile" in n:
        return Kind.PHONE
    if n in ("name", "full_name") or (n.endswith("_name") and any(h in n for h in _PERSON_HINTS)):
        return Kind.NAME
    return Kind.GENERIC


def mask_generic(s: str) -> str:
    """Keep the first and last quarter (at most 4 characters each) of a string, hide the rest; same length."""
    n = len(s)
    keep = min(4, n // 4)
    if keep == 0:
        return MASK * n
    return s[:keep] + MASK * (n - 2 * keep) + s[n - keep :]


def _fast_phone(s: str) -> str:
    """``mask_phone`` with a fast path for the common case, a bare 11-digit mobile number (same output)."""
    if len(s) == 11 and s.isascii() and s.isdigit():
        return s[:3] + "****" + s[7:]
    return mask_phone(s)


@lru_cache(maxsize=4096)
def _keeps_two(head: str) -> bool:
    """Whether ``mask_name`` keeps a name's first two characters (a compound surname such as 欧阳)."""
    return mask_name(head + "某")[:2] == head


def _fast_name(s: str) -> str:
    """``mask_name`` with a fast path for two- and three-character names without separators (same output)."""
    n = len(s)
    if n == 2 and s.isalpha():
        return s[0] + MASK
    if n == 3 and s.isalpha():
        return s[:2] + MASK if _keeps_two(s[:2]) else s[0] + MASK + MASK
    return mask_name(s)


_STRING_MASKS: Mapping[Kind, Callable[[str], str]] = {
    Kind.RESIDENT_ID: mask_resident_id,
    Kind.PHONE: _fast_phone,
    Kind.NAME: _fast_name,
    Kind.GENERIC: mask_generic,
}


def _masker(kind: Kind) -> Callable[[Any], str | None]:
    """A partial mask for one kind: strings masked, any other value (number, date, bytes) hidden as None."""
    fn = _STRING_MASKS[kind]

    def mask(value: Any) -> str | None:
        """Mask one non-null value."""
        return fn(value) if type(value) is str else None

    return mask


def _canonical_bytes(value: Any) -> bytes:
    """Deterministic bytes of any Avro value, so equal values always get the same token."""
    if type(value) is str:
        return value.encode()
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False).encode()


def _tokeniser(key: bytes) -> Callable[[Any], str]:
    """Keyed HMAC-SHA256 of the value's canonical bytes, as 32 hex characters."""
    digest = hmac.digest

    def tokenise(value: Any) -> str:
        """Token of one non-null value."""
        return digest(key, _canonical_bytes(value), "sha256").hex()[:TOKEN_HEX_CHARS]

    return tokenise


@dataclass(frozen=True, slots=True)
class FieldRule:
    """The action (and, for ``mask``, the mask kind) for one graded field."""

    name: str
    level: Level
    action: Action
    kind: Kind = Kind.GENERIC


@dataclass(frozen=True, slots=True, eq=False)
class MaskPlan:
    """Per-field actions for one resource, clearance, field list and token choice, with precomputed callables.

    Build with ``field_plan``. ``key`` is ``plan_key(plan)``; two plans with the same key produce the same
    record shape (same derived schema), whatever the clearance or token key that led to them. Plans are
    equal when they also tokenise with the same key, i.e. when they turn every record into the same output.
    """

    resource: str
    clearance: Level
    rules: tuple[FieldRule, ...]
    tokenised: bool = False
    token_key: bytes | None = field(default=None, repr=False)
    key: str = field(init=False)
    graded: frozenset[str] = field(init=False, repr=False)
    keep: tuple[str, ...] = field(init=False, repr=False)
    drop: tuple[str, ...] = field(init=False, repr=False)
    transforms: tuple[tuple[str, Callable[[Any], Any]], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Precompute the hash and the per-field callables ``apply_mask`` runs."""
        if self.tokenised and (self.token_key is None or len(self.token_key) < MIN_TOKEN_KEY_BYTES):
            raise ValueError(f"tokenisation needs a secret token_key of at least {MIN_TOKEN_KEY_BYTES} bytes")
        shape = [[r.name, str(r.action), str(r.kind)] for r in self.rules]
        canonical = json.dumps(shape, separators=(",", ":"))
        object.__setattr__(self, "key", hashlib.sha256(canonical.encode()).hexdigest()[:16])
        object.__setattr__(self, "graded", frozenset(r.name for r in self.rules))
        object.__setattr__(self, "keep", tuple(r.name for r in self.rules if r.action is Action.KEEP))
        object.__setattr__(self, "drop", tuple(r.name for r in self.rules if r.action is Action.DROP))
        transforms: list[tuple[str, Callable[[Any], Any]]] = []
        token = _tokeniser(self.token_key) if self.tokenised and self.token_key else None
        for r in self.rules:
            if r.action is Action.MASK:
                transforms.append((r.name, _masker(r.kind)))
            elif r.action is Action.TOKENISE and token is not None:
                transforms.append((r.name, token))
        object.__setattr__(self, "transforms", tuple(transforms))

    def __eq__(self, other: object) -> bool:
        """Same resource, same per-field actions and (when tokenising) the same token key."""
        if not isinstance(other, MaskPlan):
            return NotImplemented
        mine = (self.resource, self.key, self.token_key if self.tokenised else None)
        return mine == (other.resource, other.key, other.token_key if other.tokenised else None)

    def __hash__(self) -> int:
        """Hash consistent with ``__eq__`` (the secret key is not part of it)."""
        return hash((self.resource, self.key))

    def action(self, name: str) -> Action:
        """The action for a field; ungraded fields are dropped."""
        return next((r.action for r in self.rules if r.name == name), Action.DROP)

    def fields_with(self, action: Action) -> tuple[str, ...]:
        """Names of the graded fields with ``action``, in catalogue order."""
        return tuple(r.name for r in self.rules if r.action is action)

    @property
    def masked_fields(self) -> tuple[str, ...]:
        """Graded fields not delivered as they are (masked, tokenised, dropped), for the audit."""
        return tuple(r.name for r in self.rules if r.action is not Action.KEEP)


def field_plan(
    resource: Resource,
    clearance: Level,
    allowed_fields: Collection[str] | None,
    *,
    tokenise: bool = False,
    token_key: bytes | None = None,
) -> MaskPlan:
    """The plan for a consumer with ``clearance`` under a grant allowing ``allowed_fields`` (None = all).

    Primary-key fields are kept even when ``allowed_fields`` omits them (a consumer must be able to tell
    rows apart) but still obey the clearance. With ``tokenise`` L4 fields above the clearance become
    keyed HMAC tokens (``token_key``, secret, >= 16 bytes) instead of being dropped.
    """
    clr = _RANK[clearance]
    allowed = None if allowed_fields is None else frozenset(allowed_fields)
    pk = frozenset(resource.primary_key)
    rules: list[FieldRule] = []
    for name, level in resource.field_levels.items():
        lvl = _RANK[level]
        if allowed is not None and name not in allowed and name not in pk:
            rules.append(FieldRule(name, level, Action.DROP))
        elif lvl <= clr:
            rules.append(FieldRule(name, level, Action.KEEP))
        elif lvl == 4:
            rules.append(FieldRule(name, level, Action.TOKENISE if tokenise else Action.DROP))
        else:
            rules.append(FieldRule(name, level, Action.MASK, field_kind(name)))
    return MaskPlan(resource.id, clearance, tuple(rules), tokenised=tokenise, token_key=token_key)


def plan_for(
    resource: Resource,
    consumer: Node,
    grant: Grant | None,
    *,
    tokenise: bool = False,
    token_key: bytes | None = None,
) -> MaskPlan:
    """``field_plan`` for a consumer node under a grant (no grant, as in a locality return: all fields)."""
    allowed = grant.allowed_fields if grant is not None else None
    return field_plan(resource, consumer.clearance, allowed, tokenise=tokenise, token_key=token_key)


def plan_key(plan: MaskPlan) -> str:
    """Stable 16-hex-character hash of the plan's per-field actions (cache key of its derived schema)."""
    return plan.key


def apply_mask(record: Mapping[str, Any], plan: MaskPlan) -> dict[str, Any]:
    """The record as the plan's consumer receives it: kept fields as is, masked/tokenised ones replaced.

    Runs once per delivered record. When the record has exactly the graded fields (any record decoded
    with a fully graded schema) it is copied and the dropped fields deleted, both in C; otherwise only
    the kept fields present are picked. One precomputed callable per masked or tokenised field. Ungraded
    and dropped fields are absent; a None or missing masked field is None.
    """
    if record.keys() == plan.graded:
        out = dict(record)
        for name in plan.drop:
            del out[name]
    else:
        out = {k: record[k] for k in plan.keep if k in record}
    for name, fn in plan.transforms:
        value = record.get(name)
        out[name] = None if value is None else fn(value)
    return out


def is_passthrough(schema: Mapping[str, Any], plan: MaskPlan) -> bool:
    """True when every field of ``schema`` is graded and kept: the original bytes may be forwarded as is."""
    return all(plan.action(f["name"]) is Action.KEEP for f in schema["fields"])


# ---------------------------------------------------------------------------------------------------------
# Derived (consumer-side) schema
# ---------------------------------------------------------------------------------------------------------

_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))
_NAMED = ("record", "error", "enum", "fixed")


def _fullname(name: str, namespace: str | None) -> str:
    """Avro full name of ``name`` in ``namespace`` (a dotted name is already full)."""
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _space_of(fullname: str) -> str | None:
    """The namespace part of a full name, which nested short names resolve against."""
    return fullname.rsplit(".", 1)[0] if "." in fullname else None


def _collect_named(t: Any, ns: str | None, found: dict[str, Any]) -> None:
    """Every named type defined inside ``t``, by full name."""
    if isinstance(t, list):
        for branch in t:
            _collect_named(branch, ns, found)
    elif isinstance(t, dict):
        kind = t.get("type")
        if kind in _NAMED:
            full = _fullname(t["name"], t.get("namespace", ns))
            found[full] = t
            inner = _space_of(full)
            for f in t.get("fields", ()) if kind in ("record", "error") else ():
                _collect_named(f["type"], inner, found)
        elif kind == "array":
            _collect_named(t["items"], ns, found)
        elif kind == "map":
            _collect_named(t["values"], ns, found)
        elif isinstance(kind, dict | list):
            _collect_named(kind, ns, found)


def _repair(t: Any, ns: str | None, orphans: dict[str, Any], top: str) -> Any:
    """``t`` with references to definitions of removed fields inlined at their first use.

    A reference to the top-level record itself (a recursive schema) is refused: ``apply_mask`` does not
    descend into nested values, so a nested copy of the record would travel unmasked.
    """
    if isinstance(t, str):
        if t in _PRIMITIVES:
            return t
        full = _fullname(t, ns)
        if full == top:
            raise ValueError(f"{top} is recursive: masking supports only non-recursive record schemas")
        if full in orphans:
            definition = copy.deepcopy(orphans.pop(full))
            definition["name"] = full
            definition.pop("namespace", None)
            return _repair(definition, ns, orphans, top)
        return t
    if isinstance(t, list):
        return [_repair(branch, ns, orphans, top) for branch in t]
    if isinstance(t, dict):
        kind = t.get("type")
        out = dict(t)
        if kind in ("record", "error"):
            inner = _space_of(_fullname(t["name"], t.get("namespace", ns)))
            out["fields"] = [{**f, "type": _repair(f["type"], inner, orphans, top)} for f in t["fields"]]
        elif kind == "array":
            out["items"] = _repair(t["items"], ns, orphans, top)
        elif kind == "map":
            out["values"] = _repair(t["values"], ns, orphans, top)
        elif isinstance(kind, dict | list | str) and kind not in _NAMED and kind not in _PRIMITIVES:
            out["type"] = _repair(kind, ns, orphans, top)
        return out
    return t


def derived_schema(schema: Mapping[str, Any], plan: MaskPlan) -> dict[str, Any]:
    """The consumer-side Avro schema of records masked with ``plan`` (a record schema as a dict).

    Dropped and ungraded fields are removed; masked and tokenised fields become ``["null", "string"]``
    with default null and a ``hub.masking`` attribute (``partial`` / ``token``); kept fields are copied
    unchanged, docs included. The record is renamed ``<Name>_masked_<first 8 of plan_key>`` in the same
    namespace. Named types defined by a removed field and used by a kept one are inlined at first use.
    Raises ``ValueError`` for a recursive record schema (see ``_repair``).
    """
    namespace = schema.get("namespace")
    original = _fullname(schema["name"], namespace)
    namespace = _space_of(original)
    short = original.rsplit(".", 1)[-1]
    new_name = f"{short}_masked_{plan.key[:8]}"
    rules = {r.name: r for r in plan.rules}

    kept: list[dict[str, Any]] = []
    orphans: dict[str, Any] = {}
    for f in schema["fields"]:
        rule = rules.get(f["name"])
        action = rule.action if rule is not None else Action.DROP
        if action is Action.KEEP:
            kept.append(copy.deepcopy(f))
            continue
        _collect_named(f["type"], namespace, orphans)
        if action is Action.DROP:
            continue
        replaced: dict[str, Any] = {"name": f["name"], "type": ["null", "string"], "default": None}
        for attr in ("doc", "aliases"):
            if attr in f:
                replaced[attr] = f[attr]
        replaced[MASKING_ATTR] = "partial" if action is Action.MASK else "token"
        kept.append(replaced)

    # Definitions still present in kept fields are not orphans.
    still_defined: dict[str, Any] = {}
    for f in kept:
        _collect_named(f["type"], namespace, still_defined)
    for name in still_defined:
        orphans.pop(name, None)
    fields = [{**f, "type": _repair(f["type"], namespace, orphans, original)} for f in kept]

    derived: dict[str, Any] = {k: copy.deepcopy(v) for k, v in schema.items() if k not in ("fields", "name")}
    derived["type"] = "record"
    derived["name"] = new_name
    if namespace:
        derived["namespace"] = namespace
    derived["fields"] = fields
    return derived
