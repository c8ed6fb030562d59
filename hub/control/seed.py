"""Seeding the control topics from ``config/seed.yaml`` (+ the catalogue files it names), idempotently.

On every start the API registers the seed catalogue's schema files under their subjects, then writes the
seed nodes (without tokens: ``POST /v1/nodes/{id}/token`` issues one), scenarios, catalogue entries and,
for each seed subscription, an active ``subscribe`` grant. Anything that already exists on the topics is
left as it is, so changes made through ``/v1`` survive restarts and re-running the seed changes nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from hub.catalogue.model import ExchangeConfig, load_exchange_config
from hub.contract import (
    AUDIT_SUBJECT,
    CATALOG_TOPIC,
    GRANTS_TOPIC,
    NODES_TOPIC,
    OPERATOR,
    QUARANTINE_SUBJECT,
    SCENARIOS_TOPIC,
)
from hub.control import operations as ops
from hub.control.codec import Entity
from hub.control.errors import Conflict, ControlError
from hub.control.schemas import SchemaSource
from hub.control.service import ControlService, now_ms
from hub.control.state import CatalogEntry, ControlState, ScenarioEntry
from hub.policy.model import Scenario
from hub.registry.files import AUDIT_SCHEMA_FILE, QUARANTINE_SCHEMA_FILE, schema_text

log = logging.getLogger("hub.control")

# The hub's own value schemas the worker registers (hub.worker.service): registered here at start as
# well, so a worker finds them already there (a registration that changes nothing needs no token).
HUB_SCHEMAS = {
    AUDIT_SUBJECT: AUDIT_SCHEMA_FILE,
    QUARANTINE_SUBJECT: QUARANTINE_SCHEMA_FILE,
}


@dataclass(frozen=True)
class Seed:
    """The seed file's content: routing config (nodes, resources, subscriptions) and scenarios."""

    config: ExchangeConfig
    scenarios: tuple[Scenario, ...] = ()


@dataclass
class SeedReport:
    """What seeding wrote (counts per kind) and what it had to skip, with why."""

    written: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def load_seed(path: Path) -> Seed:
    """Read the seed file; ValueError saying which file and what is wrong."""
    config = load_exchange_config(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        scenarios = tuple(Scenario.model_validate(s) for s in raw.get("scenarios") or [])
    except ValidationError as exc:
        raise ValueError(f"seed configuration {path}: invalid scenario: {ops.validation_message(exc)}") from exc
    return Seed(config, scenarios)


def seed_changes(
    state: ControlState, seed: Seed, now: int, schema_of: ops.SchemaLookup
) -> tuple[list[tuple[str, Entity]], list[str]]:
    """The entities the seed adds to ``state`` (only ids not there yet) and what it skips, with why. Pure."""
    changes: list[tuple[str, Entity]] = []
    skipped: list[str] = []
    nodes = dict(state.nodes)
    for node in seed.config.nodes:
        entry = ops.seed_node(state, node.id, node.title, node.clearance, now)
        if entry is not None:
            changes.append((NODES_TOPIC, entry))
            nodes[node.id] = entry
    scenarios = set(state.scenarios)
    for scenario in seed.scenarios:
        if scenario.id not in scenarios:
            changes.append((SCENARIOS_TOPIC, ScenarioEntry(scenario=scenario, version=1, updated_by=OPERATOR,
                                                           updated_at=now)))
            scenarios.add(scenario.id)
    view = ControlState(nodes=nodes, scenarios=state.scenarios, catalog=state.catalog, grants=state.grants,
                        bindings=state.bindings)
    resources = set(state.catalog)
    for resource in seed.config.resources:
        if resource.id in resources:
            continue
        try:
            spec = ops.ResourceSpec.model_validate(resource.model_dump(exclude={"schema_file"}))
            built = ops.build_resource(spec, view, schema_of)
        except (ControlError, ValidationError) as exc:
            skipped.append(f"resource {resource.id}: {getattr(exc, 'message', exc)}")
            continue
        changes.append((CATALOG_TOPIC, CatalogEntry(resource=built, version=1, updated_by=OPERATOR, updated_at=now)))
        resources.add(resource.id)
    for sub in seed.config.subscriptions:
        if sub.id in state.grants:
            continue
        if sub.scenario not in scenarios:
            skipped.append(f"subscription {sub.id}: scenario {sub.scenario} is not in the seed's scenarios")
            continue
        if sub.resource not in resources:
            skipped.append(f"subscription {sub.id}: resource {sub.resource} is not catalogued")
            continue
        changes.append((GRANTS_TOPIC, ops.seed_grant(sub, now)))
    return changes, skipped


async def apply_seed(service: ControlService, seed: Seed) -> SeedReport:
    """Register the seed schemas, then write what the control topics lack (one batch)."""
    report = SeedReport()
    for resource in seed.config.resources:
        path = resource.schema_path()
        if path is None:
            continue
        try:
            text = json.dumps(json.loads(path.read_text(encoding="utf-8")))
            await service.schemas.register(resource.subject, text)
        except Exception as exc:  # an incompatible or unreadable file must not stop the hub
            report.skipped.append(f"schema {path} for {resource.subject}: {exc}")
    subjects = {r.subject for r in seed.config.resources}
    lookup = await service.describe_subjects(subjects)
    skipped: list[str] = []

    def operation(state: ControlState) -> tuple[list[tuple[str, Entity]], list[tuple[str, Entity]]]:
        changes, reasons = seed_changes(state, seed, now_ms(), lookup)
        skipped[:] = reasons  # the latest attempt's (a write may be retried)
        return changes, changes

    for attempt in range(3):
        try:
            written = await service.run(operation)
            break
        except Conflict:  # another instance seeded at the same time: what it wrote is there now
            if attempt == 2:
                raise
    report.skipped += skipped
    for topic, _ in written:
        report.written[topic] = report.written.get(topic, 0) + 1
    for reason in report.skipped:
        log.warning("seed: skipped %s", reason)
    if written:
        log.info("seed: wrote %s", ", ".join(f"{n} to {t}" for t, n in sorted(report.written.items())))
    return report


async def register_hub_schemas(schemas: SchemaSource) -> None:
    """Register :data:`HUB_SCHEMAS` (a failure is logged: the worker reports it again when it registers)."""
    for subject, relative in HUB_SCHEMAS.items():
        try:
            text = schema_text(relative)
            await schemas.register(subject, text)
        except Exception as exc:
            log.warning("could not register %s from %s: %s", subject, relative, exc)
