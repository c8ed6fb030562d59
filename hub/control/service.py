"""``ControlService``: the control plane's writer (the API's): a :class:`ControlView` that can also change it.

Every change is a pure operation (:mod:`hub.control.operations`) run against the state caught up with the
control topics, written with ``acks=all`` and returned only once read back and applied, so the next
request sees it. Writes in this process are serialised; if another API instance changed the same key at
the same time, the loser gets a 409 and can retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from hub.broker.topics import ensure_topics
from hub.broker.topicstore import StoreUnavailable
from hub.contract import (
    CATALOG_TOPIC,
    GRANTS_TOPIC,
    NODES_TOPIC,
    OBJECTIONS_TOPIC,
    SCENARIOS_TOPIC,
    STATE_TOPICS,
    node_topics,
)
from hub.control import grants as grant_ops
from hub.control import operations as ops
from hub.control.codec import ControlEncoder, Entity, key_of, schema_text, subject_of
from hub.control.errors import Conflict, Invalid
from hub.control.state import CatalogEntry, ControlState, NodeEntry, ScenarioEntry, parse_version_key
from hub.control.tokens import IssuedToken, issue
from hub.control.view import ControlView
from hub.objections import machine as objection_machine
from hub.objections.model import Objection
from hub.objections.recipients import scan_recipients
from hub.policy.model import Grant

log = logging.getLogger("hub.control")

T = TypeVar("T")
Change = tuple[str, Entity]
Operation = Callable[[ControlState], tuple[T, Sequence[Change]]]
RecipientsOf = Callable[[str, str], Awaitable[set[str]]]  # (resource, record key) -> who received the record
# (topic, the version before or None, the version written): told after every successful write (the audit log)
Written = tuple[str, Any, Entity]
ChangeListener = Callable[[Sequence[Written]], Awaitable[None]]


def now_ms() -> int:
    return int(time.time() * 1000)


def _stored(state: ControlState, topic: str, key: str) -> Any:
    if topic == NODES_TOPIC:
        return state.nodes.get(key)
    if topic == SCENARIOS_TOPIC:
        return state.scenarios.get(key)
    if topic == CATALOG_TOPIC:
        parsed = parse_version_key(key)
        return state.catalog.get(parsed[0], {}).get(parsed[1]) if parsed else None
    if topic == OBJECTIONS_TOPIC:
        return state.objections.get(key)
    return state.grants.get(key)


class ControlService(ControlView):
    """Reads and writes the control topics; the operations below are what ``/v1`` calls.

    ``change_listener`` (optional) is awaited after every successful write with what changed (topic, the
    previous version, the new one): the API's control-plane audit log (``hub.audit.control_log``) hangs here,
    so every node, scenario, catalogue and grant change is audited whichever path made it.
    """

    read_only = False
    change_listener: ChangeListener | None = None
    recipients_of: RecipientsOf | None = None  # who received a record: hub.recipients unless replaced (tests)

    async def start(self) -> None:
        """Register the control topics' value schemas, then load the topics (see ControlView.start)."""
        ids = {topic: await self.schemas.register(subject_of(topic), schema_text(topic)) for topic in STATE_TOPICS}
        self.encoder = ControlEncoder(ids)
        await super().start()

    # ------------------------------------------------------------ the write path

    async def run(self, operation: Operation[T]) -> T:
        """Run a pure operation on the caught-up state, write its changes, return once they are applied."""
        written: list[Change] = []
        before: list[Any] = []

        def attempt() -> tuple[T, list[Any]]:
            result, changes = operation(self.state)
            written[:] = list(changes)
            before[:] = [_stored(self.state, topic, key_of(topic, entity)) for topic, entity in changes]
            return result, [self.encoder.record(topic, entity) for topic, entity in changes]

        def verify(_: T) -> None:
            for topic, entity in written:
                if _stored(self.state, topic, key_of(topic, entity)) != entity:
                    raise Conflict(
                        "concurrent_change",
                        f"{topic} {key_of(topic, entity)} was changed by another writer at the same time; retry",
                    )
            return None

        result = await self.store.write(attempt, verify)
        await self._tell([(topic, old, new) for (topic, new), old in zip(written, before, strict=True)])
        return result

    async def _tell(self, changes: Sequence[Written]) -> None:
        """Hand what was written to the change listener; its failure never undoes or fails the write."""
        if not changes or self.change_listener is None:
            return
        try:
            await self.change_listener(changes)
        except Exception:
            log.exception("the control change listener failed on %d change(s)", len(changes))

    async def describe_subjects(self, subjects: Iterable[str | None]) -> ops.SchemaLookup:
        """A synchronous subject lookup for the operation, filled before it runs (describe may do I/O)."""
        known: dict[str, ops.SchemaInfo | None] = {}
        for subject in subjects:
            if subject and subject not in known:
                known[subject] = await self.schemas.describe(subject)
        return lambda subject: known.get(subject)

    # ------------------------------------------------------------ nodes

    async def register_node(self, spec: ops.NodeSpec, actor: str) -> tuple[NodeEntry, IssuedToken]:
        """Register a node; the token is returned here only (its hash is stored). Creates the node's topics."""
        token = issue()
        entry = await self.run(lambda s: _one(NODES_TOPIC, ops.register_node(s, spec, actor, now_ms(), token)))
        await self.create_node_topics(entry.id)
        return entry, token

    async def create_node_topics(self, node_id: str) -> None:
        """Create the node-facing topics of a new node (ingress, feed, call, quarantine, objection)."""
        try:
            await ensure_topics(self.settings, self.store.bootstrap, node_topics(node_id))
        except Exception as exc:  # the node exists; `hub up` / the worker create missing topics too
            log.warning("could not create the topics of %s yet: %s", node_id, exc)

    async def rotate_token(self, node_id: str, actor: str) -> tuple[NodeEntry, IssuedToken]:
        token = issue()
        entry = await self.run(lambda s: _one(NODES_TOPIC, ops.rotate_token(s, node_id, actor, now_ms(), token)))
        return entry, token

    async def update_node(self, node_id: str, patch: ops.NodePatch, actor: str) -> NodeEntry:
        return await self.run(
            lambda s: _maybe(NODES_TOPIC, ops.update_node(s, node_id, patch, actor, now_ms()), s.nodes.get(node_id))
        )

    async def remove_node(self, node_id: str, actor: str) -> NodeEntry:
        """Remove a node in one write: its open grants end (``node removed``), its catalogue entries retire, and
        its entry is flagged removed with its token cleared (hub.control.grants.node_removal). Nothing is
        deleted, so its history on the control topics and in the audit trail stays."""

        def operation(state: ControlState) -> tuple[NodeEntry, list[Change]]:
            removal = grant_ops.node_removal(state, node_id, actor, now_ms())
            changes: list[Change] = [(GRANTS_TOPIC, g) for g in removal.grants]
            changes += [(CATALOG_TOPIC, e) for e in removal.retired]
            changes.append((NODES_TOPIC, removal.node))
            return removal.node, changes

        return await self.run(operation)

    # ------------------------------------------------------------ scenarios

    async def create_scenario(self, spec: ops.ScenarioSpec, actor: str) -> ScenarioEntry:
        return await self.run(lambda s: _one(SCENARIOS_TOPIC, ops.create_scenario(s, spec, actor, now_ms())))

    async def update_scenario(self, scenario_id: str, patch: ops.ScenarioPatch, actor: str) -> ScenarioEntry:
        return await self.run(lambda s: _maybe(
            SCENARIOS_TOPIC, ops.update_scenario(s, scenario_id, patch, actor, now_ms()), s.scenarios.get(scenario_id)
        ))

    # ------------------------------------------------------------ catalogue

    async def create_resource(self, spec: ops.ResourceSpec, actor: str) -> CatalogEntry:
        lookup = await self.describe_subjects([spec.subject or f"{spec.id}-value"])
        return await self.run(lambda s: _one(CATALOG_TOPIC, ops.create_resource(s, spec, actor, now_ms(), lookup)))

    async def update_resource(self, resource_id: str, spec: ops.ResourceSpec, actor: str) -> tuple[CatalogEntry, bool]:
        """(the current version, whether it is new): an equal spec changes nothing."""
        lookup = await self.describe_subjects([spec.subject or f"{spec.id}-value"])
        return await self.run(lambda s: _changed(
            CATALOG_TOPIC, ops.update_resource(s, resource_id, spec, actor, now_ms(), lookup), s.entry(resource_id)
        ))

    async def patch_resource(
        self, resource_id: str, patch: ops.ResourcePatch, actor: str
    ) -> tuple[CatalogEntry, bool]:
        current = self.state.entry(resource_id)
        lookup = await self.describe_subjects([patch.subject, current.resource.subject if current else None])
        return await self.run(lambda s: _changed(
            CATALOG_TOPIC, ops.patch_resource(s, resource_id, patch, actor, now_ms(), lookup), s.entry(resource_id)
        ))

    async def retire_resource(self, resource_id: str, actor: str) -> CatalogEntry:
        return await self.run(lambda s: _one(CATALOG_TOPIC, ops.retire_resource(s, resource_id, actor, now_ms())))

    async def import_resources(self, items: Sequence[Any], actor: str) -> list[ops.ImportOutcome]:
        """Create / update / leave each entry; one write for the whole batch. See ops.import_resources."""
        subjects: list[str | None] = []
        for item in items:
            if isinstance(item, Mapping):
                subject, rid = item.get("subject"), item.get("id")
                if isinstance(subject, str):
                    subjects.append(subject)
                elif isinstance(rid, str):
                    subjects.append(f"{rid}-value")
        lookup = await self.describe_subjects(subjects)

        def operation(state: ControlState) -> tuple[list[ops.ImportOutcome], list[Change]]:
            outcomes, entries = ops.import_resources(state, items, actor, now_ms(), lookup)
            return outcomes, [(CATALOG_TOPIC, e) for e in entries]

        return await self.run(operation)

    # ------------------------------------------------------------ grants

    async def put_grants(self, grants: Sequence[Grant]) -> list[Grant]:
        """Write grant versions as they are (the grant lifecycle in hub.policy.grants decides them)."""
        return await self.run(lambda s: (list(grants), [(GRANTS_TOPIC, g) for g in grants]))

    async def request_grant(self, spec: grant_ops.GrantRequest, actor: str) -> Grant:
        """A new grant (hub.control.grants.request_grant): active, requested or denied, as the sharing type says."""
        return await self.run(lambda s: _one(GRANTS_TOPIC, grant_ops.request_grant(s, spec, actor, now_ms())))

    async def decide_grant(self, grant_id: str, verb: grant_ops.Verb, actor: str, reason: str | None = None) -> Grant:
        """Approve, deny or revoke a grant (hub.control.grants.decide_grant)."""
        return await self.run(
            lambda s: _one(GRANTS_TOPIC, grant_ops.decide_grant(s, grant_id, verb, actor, now_ms(), reason))
        )

    async def expire_due_grants(self) -> list[Grant]:
        """Write down every time-based expiry that is due (the worker already treats those grants as expired)."""
        return await self.run(lambda s: _many(GRANTS_TOPIC, grant_ops.expire_due(s, now_ms())))

    async def expire_grants_periodically(self, interval: float = 30.0) -> None:
        """Run ``expire_due_grants`` every ``interval`` seconds until cancelled (the API's background task)."""
        while True:
            try:
                expired = await self.expire_due_grants()
                if expired:
                    log.info("grants expired: %s", ", ".join(g.id for g in expired))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a concurrent change or the broker away: try again next time
                log.warning("could not write grant expiries yet: %s", exc)
            await asyncio.sleep(interval)

    # ------------------------------------------------------------ objections

    def objection_limits(self) -> objection_machine.Limits:
        return objection_machine.Limits.from_settings(self.settings)

    async def _recipients(self, resource: str, record_key: str) -> set[str]:
        if self.recipients_of is not None:
            return await self.recipients_of(resource, record_key)
        return await scan_recipients(self.settings, self.store.bootstrap, resource, record_key)

    async def file_objection(self, request: objection_machine.FilingRequest, actor: str) -> Objection:
        """A new objection (hub.objections.machine.file): the filer must have received the record."""
        entry = ops.current_entry(self.state, request.resource)  # 404 before reading hub.recipients
        if not entry.resource.primary_key:
            raise Invalid("no_primary_key", f"{request.resource} has no primary key: its records cannot be named, "
                          "so they cannot be objected to one by one")
        recipients = await self._recipients(request.resource, request.record_key)
        objection_id = f"obj-{uuid.uuid4().hex[:16]}"

        def operation(state: ControlState) -> tuple[Objection, list[Change]]:
            provider = ops.current_entry(state, request.resource).resource.provider
            return _one(OBJECTIONS_TOPIC, objection_machine.file(
                request, objection_id=objection_id, filer=actor, provider=provider, recipients=recipients,
                now=now_ms(), limits=self.objection_limits()))

        return await self.run(operation)

    async def move_objection(
        self, objection_id: str, action: objection_machine.Action, actor: str, step: objection_machine.StepRequest,
    ) -> Objection:
        """The next step of an objection (hub.objections.machine.transition); flagging re-reads the recipients."""
        current = objection_machine.find(self.state.objections, objection_id, actor)
        recipients = None
        if action == "flag" and current.state == "accepted":
            recipients = await self._recipients(current.resource, current.record_key)
        limits = self.objection_limits()
        return await self.run(lambda s: _one(OBJECTIONS_TOPIC, objection_machine.transition(
            objection_machine.find(s.objections, objection_id, actor), action, actor, now_ms(), limits,
            note=step.note, corrected_event_id=step.corrected_event_id, recipients=recipients)))

    async def escalate_due_objections(self) -> list[Objection]:
        """Escalate every objection past the time limit of its step (once per step)."""
        return await self.run(lambda s: _many(
            OBJECTIONS_TOPIC, objection_machine.due_escalations(s.objections.values(), now_ms())))

    async def escalate_objections_periodically(self, interval: float = 30.0) -> None:
        """Run ``escalate_due_objections`` every ``interval`` seconds until cancelled (the API's background task)."""
        while True:
            try:
                escalated = await self.escalate_due_objections()
                if escalated:
                    log.warning("objections past their time limit, escalated to the operator: %s",
                                ", ".join(o.objection_id for o in escalated))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a concurrent change or the broker away: try again next time
                log.warning("could not escalate overdue objections yet: %s", exc)
            await asyncio.sleep(interval)


def _one(topic: str, entity: Entity) -> tuple[Any, list[Change]]:
    return entity, [(topic, entity)]


def _many(topic: str, entities: Sequence[Entity]) -> tuple[Any, list[Change]]:
    return list(entities), [(topic, e) for e in entities]


def _maybe(topic: str, entity: Entity | None, current: Any) -> tuple[Any, list[Change]]:
    """The new entity and its write, or the current one and nothing to write."""
    if entity is None:
        return current, []
    return entity, [(topic, entity)]


def _changed(topic: str, entity: CatalogEntry | None, current: CatalogEntry | None) -> tuple[Any, list[Change]]:
    if entity is None:
        return (current, False), []
    return (entity, True), [(topic, entity)]


__all__ = ["ControlService", "StoreUnavailable", "now_ms"]
