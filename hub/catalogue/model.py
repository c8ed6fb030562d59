"""Nodes, catalogue entries (resources) and subscriptions as plain validated data.

The seed configuration file (``config/seed.yaml``) is read into an ``ExchangeConfig``. The live nodes,
catalogue and grants are kept by the control plane in compacted topics (``hub.control``), which gives the
worker the same shapes (``hub.control.state.snapshot``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.settings import REPO_ROOT

Tier = Literal["national", "municipal", "district", "region", "hub"]
Sharing = Literal["unconditional", "authorised", "none"]
Level = Literal["L1", "L2", "L3", "L4"]

NODE_ID = re.compile(r"^(hub|national|municipal\.[a-z][a-z0-9-]*|district\.\d{6}|region\.[a-z][a-z0-9-]*)$")


def tier_of(node_id: str) -> Tier:
    """The tier a node belongs to, read from its id (``district.310115`` -> ``district``)."""
    head = node_id.split(".", 1)[0]
    if head in ("national", "municipal", "district", "region", "hub"):
        return head  # type: ignore[return-value]
    raise ValueError(f"node id {node_id!r} does not start with a tier (national, municipal, district, region)")


def validate_node_id(value: str) -> str:
    if not NODE_ID.match(value):
        raise ValueError(
            f"invalid node id {value!r}: expected national, municipal.<dept>, district.<6-digit code>, "
            "region.<peer> or hub (lowercase letters, digits and dashes)"
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Node(_Model):
    id: str
    title: str = ""
    clearance: Level = "L2"

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return validate_node_id(value)

    @property
    def tier(self) -> Tier:
        return tier_of(self.id)


class QualityRule(_Model):
    field: str
    rule: str
    args: dict[str, Any] = Field(default_factory=dict)


class Resource(_Model):
    """A catalogue entry: one shareable data resource of one provider node."""

    id: str
    title: str = ""
    provider: str
    tier: Tier
    subject: str
    schema_file: str | None = None
    sharing: Sharing = "unconditional"
    legal_basis: str | None = None
    field_levels: dict[str, Level] = Field(default_factory=dict)
    primary_key: list[str] = Field(default_factory=list)
    locality_field: str | None = None
    locality_from_resident_id: bool = False
    return_to_locality: bool = False
    report_up: bool = False
    quality_rules: list[QualityRule] = Field(default_factory=list)
    update_frequency: str = "realtime"
    description: str = ""

    @field_validator("provider")
    @classmethod
    def _check_provider(cls, value: str) -> str:
        return validate_node_id(value)

    @model_validator(mode="after")
    def _check(self) -> Resource:
        if self.sharing == "none" and not self.legal_basis:
            raise ValueError(f"resource {self.id}: sharing 'none' needs a legal_basis")
        if tier_of(self.provider) != self.tier:
            raise ValueError(f"resource {self.id}: tier {self.tier} differs from its provider's tier")
        return self

    def schema_path(self) -> Path | None:
        return REPO_ROOT / self.schema_file if self.schema_file else None


class Subscription(_Model):
    """A standing delivery of a resource to a consumer for a scenario (the seed's stand-in for grants)."""

    id: str
    consumer: str
    resource: str
    scenario: str
    row_scope: Literal["all", "own_district"] = "all"

    @field_validator("consumer")
    @classmethod
    def _check_consumer(cls, value: str) -> str:
        return validate_node_id(value)


class ExchangeConfig(_Model):
    nodes: list[Node]
    resources: list[Resource]
    subscriptions: list[Subscription] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_refs(self) -> ExchangeConfig:
        node_ids = {n.id for n in self.nodes}
        resource_ids = {r.id for r in self.resources}
        for res in self.resources:
            if res.provider not in node_ids:
                raise ValueError(f"resource {res.id}: provider {res.provider} is not a registered node")
        for sub in self.subscriptions:
            if sub.consumer not in node_ids:
                raise ValueError(f"subscription {sub.id}: consumer {sub.consumer} is not a registered node")
            if sub.resource not in resource_ids:
                raise ValueError(f"subscription {sub.id}: resource {sub.resource} is not catalogued")
        return self

    def node(self, node_id: str) -> Node | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def resource(self, resource_id: str) -> Resource | None:
        return next((r for r in self.resources if r.id == resource_id), None)

    @property
    def providers(self) -> list[str]:
        return sorted({r.provider for r in self.resources})


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc


def load_exchange_config(path: Path) -> ExchangeConfig:
    """Read and validate the seed file (and the catalogue files it names); errors say which file and what."""
    raw = _read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"seed configuration {path} must be a mapping with nodes, resources, subscriptions")
    raw.pop("scenarios", None)  # the control plane's seed (hub.control.seed), not part of routing
    resources = list(raw.get("resources") or [])
    for name in raw.pop("catalog_files", None) or []:
        catalogue = _read_yaml(path.parent / name) or {}
        resources += catalogue.get("resources") or []
    raw["resources"] = resources
    try:
        config = ExchangeConfig.model_validate(raw)
    except ValueError as exc:
        raise ValueError(f"seed configuration {path} is invalid: {exc}") from exc
    from hub.quality import rule_problems  # the hot path's compile step refuses bad declarations here too

    resources = {r.id: r for r in config.resources}
    problems = [f"resource {r.id}: {p}" for r in config.resources for p in rule_problems(r.quality_rules,
                                                                                          resources=resources)]
    if problems:
        raise ValueError(f"seed configuration {path} is invalid: {' | '.join(problems)}")
    return config
