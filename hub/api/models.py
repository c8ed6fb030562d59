"""Response bodies of the ``/v1`` control plane (requests are the shapes in ``hub.control.operations``).

Times are epoch milliseconds, UTC, as everywhere in the hub's control data.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from hub.catalogue.model import Level, QualityRule, Sharing, Tier
from hub.control.operations import ImportOutcome
from hub.control.state import CatalogEntry, CatalogueCounts, NodeEntry, ScenarioEntry


class NodeOut(BaseModel):
    """A registered node, without any secret."""

    id: str
    title: str
    tier: Tier
    clearance: Level
    has_token: bool = Field(description="Whether a token has been issued (POST /v1/nodes/{id}/token issues one)")
    token_id: str | None = Field(description="Public id of the current token (the part before the dot)")
    created_at: int
    updated_at: int
    updated_by: str | None
    removed: bool

    @classmethod
    def of(cls, entry: NodeEntry) -> NodeOut:
        return cls(
            id=entry.id, title=entry.title, tier=entry.tier, clearance=entry.clearance,
            has_token=entry.token_hash is not None, token_id=entry.token_id, created_at=entry.created_at,
            updated_at=entry.updated_at, updated_by=entry.updated_by, removed=entry.removed,
        )


class NodeWithToken(NodeOut):
    """A node with its new token: shown this once, only its hash is stored."""

    token: str = Field(description="Bearer token (or HTTP Basic password with the node id as user); shown once")


class ScenarioOut(BaseModel):
    """A registered scenario."""

    id: str
    title: str
    legal_basis: str
    description: str
    version: int
    updated_by: str | None
    updated_at: int

    @classmethod
    def of(cls, entry: ScenarioEntry) -> ScenarioOut:
        s = entry.scenario
        return cls(id=s.id, title=s.title, legal_basis=s.legal_basis, description=s.description,
                   version=entry.version, updated_by=entry.updated_by, updated_at=entry.updated_at)


class ResourceOut(BaseModel):
    """One version of a catalogue entry."""

    id: str
    title: str
    provider: str
    tier: Tier
    subject: str
    sharing: Sharing
    legal_basis: str | None
    field_levels: dict[str, Level]
    primary_key: list[str]
    locality_field: str | None
    locality_from_resident_id: bool
    return_to_locality: bool
    report_up: bool
    quality_rules: list[QualityRule]
    update_frequency: str
    description: str
    version: int
    retired: bool
    updated_by: str | None
    updated_at: int | None
    visibility: Literal["full"] = Field("full", description="full: every field of the entry is shown")

    @classmethod
    def of(cls, entry: CatalogEntry) -> ResourceOut:
        data: dict[str, Any] = entry.resource.model_dump(exclude={"schema_file"})
        return cls(**data, version=entry.version, retired=entry.retired, updated_by=entry.updated_by,
                   updated_at=entry.updated_at)


class ResourceExistsOnly(BaseModel):
    """A ``none`` (非共享) entry as nodes other than its provider see it: it exists, it is not shared, and why."""

    id: str
    title: str
    provider: str
    tier: Tier
    sharing: Sharing
    legal_basis: str | None = Field(description="Why it is not shared")
    shared: bool = Field(description="Always false: no grant can be obtained on it")
    version: int
    retired: bool
    visibility: Literal["exists_only"] = Field(
        "exists_only", description="exists_only: fields, schema and description are not shown"
    )


class ResourceChange(ResourceOut):
    """The entry after an update, and whether the update made a new version (false: it was already so)."""

    changed: bool


class ImportEntryOut(BaseModel):
    """What importing one entry did."""

    index: int = Field(description="Position of the entry in the submitted list, from 0")
    id: str | None
    status: str = Field(description="created, updated, unchanged or rejected")
    message: str = Field(description="The new version, or why the entry was rejected")
    version: int | None
    status_code: int | None = Field(description="For a rejected entry, the status a single request would get")

    @classmethod
    def of(cls, outcome: ImportOutcome) -> ImportEntryOut:
        return cls(**outcome.to_dict())


class ImportReport(BaseModel):
    """Counts per outcome and one line per submitted entry."""

    created: int
    updated: int
    unchanged: int
    rejected: int
    entries: list[ImportEntryOut]

    @classmethod
    def of(cls, outcomes: list[ImportOutcome]) -> ImportReport:
        count = {s: sum(1 for o in outcomes if o.status == s) for s in ("created", "updated", "unchanged", "rejected")}
        return cls(**count, entries=[ImportEntryOut.of(o) for o in outcomes])


class ImportRequest(BaseModel):
    """Many catalogue entries at once (the shape of ``ResourceSpec`` each); judged one by one."""

    resources: list[Any] = Field(max_length=10_000, description="Catalogue entries (objects shaped as ResourceSpec)")


class CatalogueStats(BaseModel):
    """Current (not retired) catalogue entries, by tier, provider and sharing type."""

    resources: int
    retired: int
    by_tier: dict[str, int]
    by_provider: dict[str, int]
    by_sharing: dict[str, int]

    @classmethod
    def of(cls, counts: CatalogueCounts) -> CatalogueStats:
        return cls(resources=counts.total, retired=counts.retired, by_tier=counts.by_tier,
                   by_provider=counts.by_provider, by_sharing=counts.by_sharing)


class StatsOut(BaseModel):
    """The hub's figures: the catalogue now; the exchange figures (calls, records by direction) join under
    ``exchange`` when the statistics issue lands."""

    catalogue: CatalogueStats
    exchange: dict[str, Any] | None = Field(
        None, description="Exchange figures (calls, records by direction, ...); null until they are counted"
    )
