"""The control plane's state: nodes, scenarios, the resource catalogue and grants, rebuilt from compacted topics.

Pure: no I/O. :class:`ControlState` is what replaying ``hub.nodes``, ``hub.scenarios``, ``hub.catalog`` and
``hub.grants`` gives; ``apply`` takes one decoded record at a time (the latest record of a key wins, as
compaction keeps it). :func:`snapshot` turns it into the immutable view the exchange worker routes by.

Keys on the topics are utf-8 entity ids, except on ``hub.catalog``: one key per version (``<id>@<version>``),
so compaction keeps every version and the history survives.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict

from hub.catalogue.model import ExchangeConfig, Level, Node, Resource, Subscription, Tier, tier_of
from hub.contract import CATALOG_TOPIC, GRANTS_TOPIC, NODES_TOPIC, OBJECTIONS_TOPIC, SCENARIOS_TOPIC
from hub.objections.model import Objection
from hub.policy.model import Grant, Scenario, to_epoch_ms


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeEntry(_Entry):
    """One version of a registered node: who it is, its clearance and the hash of its current token."""

    id: str
    title: str = ""
    clearance: Level = "L2"
    token_id: str | None = None
    token_hash: str | None = None
    created_at: int
    updated_at: int
    updated_by: str | None = None
    removed: bool = False

    @property
    def tier(self) -> Tier:
        return tier_of(self.id)

    def node(self) -> Node:
        """The routing view of this node (hub.catalogue.model.Node)."""
        return Node(id=self.id, title=self.title, clearance=self.clearance)

    def to_avro(self) -> dict[str, Any]:
        return {**self.model_dump(), "tier": self.tier}

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> NodeEntry:
        data = {k: v for k, v in record.items() if k != "tier"}
        for name in ("created_at", "updated_at"):
            data[name] = to_epoch_ms(data[name])
        entry = cls.model_validate(data)
        Node(id=entry.id, title=entry.title, clearance=entry.clearance)  # the id rules of a Node
        return entry


class ScenarioEntry(_Entry):
    """One version of an application scenario."""

    scenario: Scenario
    version: int
    updated_by: str | None = None
    updated_at: int

    @property
    def id(self) -> str:
        return self.scenario.id

    def to_avro(self) -> dict[str, Any]:
        return {
            **self.scenario.model_dump(), "version": self.version, "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> ScenarioEntry:
        data = dict(record)
        meta = {name: data.pop(name, None) for name in ("version", "updated_by", "updated_at")}
        return cls(
            scenario=Scenario.model_validate(data), version=meta["version"], updated_by=meta["updated_by"],
            updated_at=to_epoch_ms(meta["updated_at"]),
        )


# Fields of hub.catalogue.model.Resource that are not on the topic (server-side file paths).
_LOCAL_ONLY = frozenset({"schema_file"})


class CatalogEntry(_Entry):
    """One version of one catalogue entry: the resource as catalogued, and who changed it when."""

    resource: Resource
    version: int
    retired: bool = False
    updated_by: str | None = None
    updated_at: int | None = None

    @property
    def id(self) -> str:
        return self.resource.id

    @property
    def key(self) -> str:
        return version_key(self.resource.id, self.version)

    def to_avro(self) -> dict[str, Any]:
        data = self.resource.model_dump(exclude=set(_LOCAL_ONLY))
        data["quality_rules"] = json_rules(self.resource)
        return {**data, "version": self.version, "retired": self.retired, "updated_by": self.updated_by,
                "updated_at": self.updated_at}

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> CatalogEntry:
        data = dict(record)
        meta = {name: data.pop(name, None) for name in ("version", "retired", "updated_by", "updated_at")}
        data["quality_rules"] = json.loads(data.get("quality_rules") or "[]")
        return cls(
            resource=Resource.model_validate(data), version=meta["version"], retired=bool(meta["retired"]),
            updated_by=meta["updated_by"],
            updated_at=None if meta["updated_at"] is None else to_epoch_ms(meta["updated_at"]),
        )


def json_rules(resource: Resource) -> str:
    return json.dumps([r.model_dump() for r in resource.quality_rules], ensure_ascii=False, separators=(",", ":"))


def version_key(resource_id: str, version: int) -> str:
    """The ``hub.catalog`` key of one version of one entry."""
    return f"{resource_id}@{version}"


def parse_version_key(key: str) -> tuple[str, int] | None:
    """(resource id, version) from a ``hub.catalog`` key, or None if it is not one."""
    rid, sep, version = key.rpartition("@")
    if not sep or not rid or not version.isdigit():
        return None
    return rid, int(version)


@dataclass
class ControlState:
    """Everything the control topics say, latest record per key. Changed only through ``apply_*``."""

    nodes: dict[str, NodeEntry] = field(default_factory=dict)
    scenarios: dict[str, ScenarioEntry] = field(default_factory=dict)
    catalog: dict[str, dict[int, CatalogEntry]] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    objections: dict[str, Objection] = field(default_factory=dict)
    # subject -> provider -> how many catalogue versions bind it (kept by apply_catalog; O(1) ownership checks)
    bindings: dict[str, Counter[str]] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ applying records

    def apply_node(self, key: str, entry: NodeEntry | None) -> None:
        """A ``hub.nodes`` record: the node's latest version, or a tombstone (value None) forgetting it."""
        if entry is None:
            self.nodes.pop(key, None)
        elif entry.id == key:
            self.nodes[key] = entry

    def apply_scenario(self, key: str, entry: ScenarioEntry | None) -> None:
        """A ``hub.scenarios`` record."""
        if entry is None:
            self.scenarios.pop(key, None)
        elif entry.id == key:
            self.scenarios[key] = entry

    def apply_catalog(self, key: str, entry: CatalogEntry | None) -> None:
        """A ``hub.catalog`` record: one version of one entry (key ``<id>@<version>``), or its tombstone."""
        parsed = parse_version_key(key)
        if parsed is None:
            return
        rid, version = parsed
        if entry is not None and (entry.id != rid or entry.version != version):
            return
        versions = self.catalog.get(rid)
        previous = versions.pop(version, None) if versions is not None else None
        if previous is not None:
            self._bind(previous, -1)
        if entry is not None:
            self.catalog.setdefault(rid, {})[version] = entry
            self._bind(entry, 1)
        elif versions is not None and not versions:
            del self.catalog[rid]

    def _bind(self, entry: CatalogEntry, delta: int) -> None:
        subject, provider = entry.resource.subject, entry.resource.provider
        owners = self.bindings.setdefault(subject, Counter())
        owners[provider] += delta
        if owners[provider] <= 0:
            del owners[provider]
        if not owners:
            del self.bindings[subject]

    def apply_grant(self, key: str, grant: Grant | None) -> None:
        """A ``hub.grants`` record: the grant's latest version, or a tombstone."""
        if grant is None:
            self.grants.pop(key, None)
        elif grant.id == key:
            self.grants[key] = grant

    def apply_objection(self, key: str, objection: Objection | None) -> None:
        """A ``hub.objections`` record: the objection's latest version, or a tombstone."""
        if objection is None:
            self.objections.pop(key, None)
        elif objection.objection_id == key:
            self.objections[key] = objection

    def apply(self, topic: str, key: str, entry: Any) -> None:
        """Apply one decoded record of any control topic."""
        if topic == NODES_TOPIC:
            self.apply_node(key, entry)
        elif topic == SCENARIOS_TOPIC:
            self.apply_scenario(key, entry)
        elif topic == CATALOG_TOPIC:
            self.apply_catalog(key, entry)
        elif topic == GRANTS_TOPIC:
            self.apply_grant(key, entry)
        elif topic == OBJECTIONS_TOPIC:
            self.apply_objection(key, entry)
        else:
            raise ValueError(f"{topic} is not a control topic")

    # ------------------------------------------------------------ queries

    def node(self, node_id: str) -> NodeEntry | None:
        """A live (not removed) node, or None."""
        entry = self.nodes.get(node_id)
        return entry if entry is not None and not entry.removed else None

    def live_nodes(self) -> list[NodeEntry]:
        return [n for n in self.nodes.values() if not n.removed]

    def node_by_token_id(self, token_id: str) -> NodeEntry | None:
        return next((n for n in self.nodes.values() if n.token_id == token_id and not n.removed), None)

    def entry(self, resource_id: str) -> CatalogEntry | None:
        """The latest version of a catalogue entry (retired or not), or None."""
        versions = self.catalog.get(resource_id)
        return versions[max(versions)] if versions else None

    def history(self, resource_id: str) -> list[CatalogEntry]:
        """Every version of an entry, oldest first."""
        versions = self.catalog.get(resource_id) or {}
        return [versions[v] for v in sorted(versions)]

    def entries(self, *, retired: bool = False) -> list[CatalogEntry]:
        """The latest version of every entry, sorted by id; retired ones only when asked."""
        found = (self.entry(rid) for rid in sorted(self.catalog))
        return [e for e in found if e is not None and (retired or not e.retired)]

    def subject_owners(self, subject: str) -> set[str]:
        """Providers of the catalogue entries (any version, retired too) bound to a registry subject."""
        return set(self.bindings.get(subject, ()))

    def catalogue_counts(self) -> CatalogueCounts:
        """Current (not retired) entries by tier, provider and sharing type."""
        live = self.entries()
        return CatalogueCounts(
            total=len(live),
            retired=sum(1 for versions in self.catalog.values() if versions[max(versions)].retired),
            by_tier=dict(sorted(Counter(e.resource.tier for e in live).items())),
            by_provider=dict(sorted(Counter(e.resource.provider for e in live).items())),
            by_sharing=dict(sorted(Counter(e.resource.sharing for e in live).items())),
        )


@dataclass(frozen=True)
class CatalogueCounts:
    """Catalogue statistics: how many current entries, by tier, provider and sharing type."""

    total: int
    retired: int
    by_tier: dict[str, int]
    by_provider: dict[str, int]
    by_sharing: dict[str, int]


@dataclass(frozen=True)
class ControlSnapshot:
    """An immutable view of the control state for the exchange worker.

    ``config`` is an :class:`ExchangeConfig` of the live nodes, the current (not retired) resources whose
    provider is live, and, as ``subscriptions``, the active ``subscribe`` grants between those (what
    ``hub.routing`` routes by today). ``grants`` holds the latest version of every grant in any state (build
    ``hub.policy.grants.GrantIndex(snapshot.grants)`` from it); ``scenarios`` the registered scenarios;
    ``version`` the :attr:`ControlView.version` it was taken at.
    """

    config: ExchangeConfig
    grants: tuple[Grant, ...]
    scenarios: Mapping[str, Scenario]
    version: int = 0
    # resource -> record key -> objection id, for every record currently flagged (only resources with a flag)
    flags: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    # objection id -> the objection, for those whose provider may publish a correction now (flagged)
    corrections: Mapping[str, Objection] = field(default_factory=lambda: MappingProxyType({}))


def snapshot(state: ControlState, version: int = 0) -> ControlSnapshot:
    """The worker's view of ``state`` (see :class:`ControlSnapshot`); pure, and cheap enough per change."""
    nodes = [n.node() for n in sorted(state.live_nodes(), key=lambda n: n.id)]
    live = {n.id for n in nodes}
    resources = [e.resource for e in state.entries() if e.resource.provider in live]
    current = {r.id for r in resources}
    grants = tuple(sorted(state.grants.values(), key=lambda g: g.id))
    subscriptions = [
        Subscription(id=g.id, consumer=g.consumer, resource=g.resource, scenario=g.scenario, row_scope=g.row_scope)
        for g in grants
        if g.state == "active" and g.mode == "subscribe" and g.consumer in live and g.resource in current
    ]
    # every reference was checked above: skip ExchangeConfig's O(n*m) re-validation
    config = ExchangeConfig.model_construct(nodes=nodes, resources=resources, subscriptions=subscriptions)
    scenarios = MappingProxyType({s.id: s.scenario for s in state.scenarios.values()})
    flagged = [o for o in state.objections.values() if o.is_flagged]
    flags: dict[str, dict[str, str]] = {}
    for o in sorted(flagged, key=lambda o: o.filed_at):  # two objections on one record: the later one shows
        flags.setdefault(o.resource, {})[o.record_key] = o.objection_id
    corrections = {o.objection_id: o for o in flagged}
    return ControlSnapshot(config=config, grants=grants, scenarios=scenarios, version=version,
                           flags=MappingProxyType(flags), corrections=MappingProxyType(corrections))


def without_local_fields(resource: Resource) -> Resource:
    """The resource as it is stored on ``hub.catalog`` (no server-side file path)."""
    if resource.schema_file is None:
        return resource
    return resource.model_copy(update={"schema_file": None})


def same_resource(a: Resource, b: Resource) -> bool:
    """Equal as catalogued (ignoring server-side file paths): re-importing an equal entry changes nothing."""
    return without_local_fields(a) == without_local_fields(b)
