"""``AclFollower``: the broker's node users and ACLs follow node registrations and removals while the API runs.

When the API process runs against a secure broker as the hub's privileged principal (``admin_settings`` finds
its credentials), every node registered through ``POST /v1/nodes`` gets its node-facing topics, its SCRAM user
and exactly its ACLs, and every node removed through ``DELETE /v1/nodes/{id}`` loses its user and ACLs,
without a manual ``hub acl sync``. Against a broker without credentials or without an authorizer the follower
does nothing (plain local development).

It is a control change listener (``hub.control.service.ChangeListener``): ``on_change`` only notes which nodes
changed and returns at once, so a control write (and its HTTP request) never waits for, nor fails because of,
the broker. A background task then syncs those nodes only (``sync(..., scope=changed)``: a node registration
touches no other node's rights), off the event loop (the Kafka admin calls block). It creates missing users
only and never re-stores an existing user's password (``keep_existing_users``): a new node's password is
generated into ``<state_dir>/kafka-users/<node>.password`` of the API's state dir, to hand to the node.
A failure is logged as an error saying what failed and that it is retried, and retried with backoff until it
succeeds or the follower stops; a newer change of the same node supersedes the retry. ``start(control)`` also
queues one full sync from the control plane's live nodes, which catches up on what a stopped API missed (never
from an empty state).

Wiring (in ``hub.runtime.ApiService.on_start``, after the control audit log; the listeners run in order)::

    self._acl_follower = AclFollower(self.settings, self.bootstrap)
    await self._acl_follower.start(self._control)
    self._control.change_listener = chain_listeners(
        self._control_audit.control_changes, self._acl_follower.on_change)

(before ``apply_seed``, so the seed's nodes are followed too), and ``await self._acl_follower.stop()`` in
``on_stop`` before the control plane stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from hub.acl.plan import nodes_from_control
from hub.acl.sync import AclSyncError, SyncReport, admin_settings, sync
from hub.contract import NODES_TOPIC, OPERATOR, node_topics
from hub.settings import Settings

log = logging.getLogger("hub.acl")

Written = tuple[str, Any, Any]  # (topic, the version before or None, the version written): as ControlService tells
ChangeListener = Callable[[Sequence[Written]], Awaitable[None]]
Syncer = Callable[..., SyncReport]
TopicCreator = Callable[[Settings, str, list[str]], Awaitable[Any]]

FULL = "*"  # the pending key of a full sync from the control plane's live nodes


class HasNodes(Protocol):
    """The control plane as the follower reads it (``ControlService`` / ``ControlView``)."""

    @property
    def state(self) -> Any: ...


def chain_listeners(*listeners: ChangeListener | None) -> ChangeListener:
    """One change listener calling each given one in order; one failing does not keep the next from running."""
    chosen = [listener for listener in listeners if listener is not None]

    async def told(changes: Sequence[Written]) -> None:
        for listener in chosen:
            try:
                await listener(changes)
            except Exception:
                log.exception("a control change listener failed on %d change(s)", len(changes))

    return told


def node_changes(changes: Iterable[Written]) -> dict[str, bool]:
    """The nodes whose broker rights a control write changes -> whether they are live now: a node registered
    (or registered again after its removal) or removed. Token rotations, title and clearance changes give no
    Kafka right and are left out, as is the operator."""
    out: dict[str, bool] = {}
    for topic, before, after in changes:
        if topic != NODES_TOPIC or after is None or after.id == OPERATOR:
            continue
        if before is None or bool(before.removed) != bool(after.removed):
            out[after.id] = not after.removed
    return out


async def _ensure_node_topics(settings: Settings, bootstrap: str, names: list[str]) -> Any:
    from hub.broker.topics import ensure_topics

    return await ensure_topics(settings, bootstrap, names)


class AclFollower:
    """Keeps the broker's node users and ACLs in step with node registrations and removals (see the module doc)."""

    def __init__(
        self, settings: Settings, bootstrap: str, *, retry_delay: float = 2.0, max_retry_delay: float = 60.0,
        timeout: float = 30.0, syncer: Syncer = sync, topic_creator: TopicCreator = _ensure_node_topics,
    ) -> None:
        self.settings = settings.model_copy(update={"bootstrap": bootstrap})
        self.bootstrap = bootstrap
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.timeout = timeout
        self._syncer = syncer
        self._topic_creator = topic_creator
        self._control: HasNodes | None = None
        self._pending: dict[str, bool] = {}  # node -> live now (FULL -> True: a full sync)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.enabled = False
        self.reason = "not started"
        self.last_error: str | None = None
        self.failures = 0  # consecutive failed attempts
        self.synced = 0  # successful syncs

    # ------------------------------------------------------------ lifecycle

    async def start(self, control: HasNodes | None = None) -> None:
        """Decide whether there is anything to follow (credentials of the privileged principal for this broker)
        and start the background task; with ``control``, queue a full sync from its live nodes. Never raises
        for the broker: problems show up as logged, retried sync failures."""
        self._control = control
        try:
            admin_s, _ = admin_settings(self.settings)
        except AclSyncError as exc:
            self.enabled, self.reason = False, str(exc)
            log.info("Kafka users and ACLs are not followed (no privileged credentials for %s): %s",
                     self.bootstrap, exc)
            return
        self.enabled, self.reason = True, f"as User:{admin_s.kafka_username} on {self.bootstrap}"
        log.info("Kafka users and ACLs follow node registrations and removals (%s)", self.reason)
        if control is not None:
            self._queue({FULL: True})
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop the background task (idempotent); what is still pending is left to the next start or to
        ``hub acl sync``."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pending:
            log.warning("stopped with Kafka users/ACLs still to sync for %s: run `hub acl sync`",
                        ", ".join(sorted(self._pending)))

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until nothing is pending (every change noted so far is applied); for tests and shutdown."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    # ------------------------------------------------------------ the change listener

    async def on_change(self, changes: Sequence[Written]) -> None:
        """The control change listener: note the nodes registered or removed; the sync runs in the background."""
        if not self.enabled:
            return
        changed = node_changes(changes)
        if changed:
            log.info("Kafka users/ACLs to sync for %s", ", ".join(
                f"{node} ({'registered' if live else 'removed'})" for node, live in sorted(changed.items())))
            self._queue(changed)

    def _queue(self, changed: dict[str, bool]) -> None:
        self._pending.update(changed)
        self._idle.clear()
        self._wake.set()

    # ------------------------------------------------------------ the background sync

    async def _run(self) -> None:
        delay = self.retry_delay
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = dict(self._pending)
            self._pending.clear()
            try:
                await self._apply(batch)
            except asyncio.CancelledError:
                self._pending = {**batch, **self._pending}
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = _describe(exc)
                for node, live in batch.items():  # a newer change noted meanwhile wins
                    self._pending.setdefault(node, live)
                disabled = isinstance(exc, AclSyncError) and "no authorizer" in str(exc)
                if disabled:
                    self.enabled, self.reason = False, str(exc)
                    log.error("Kafka users and ACLs are not followed: %s", exc)
                    self._pending.clear()
                    self._idle.set()
                    return
                log.error("could not sync the Kafka users and ACLs of %s (attempt %d): %s; retrying in %.0fs "
                          "(or run `hub acl sync`)", _names(batch), self.failures, self.last_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
                continue
            delay = self.retry_delay
            if self.failures:
                log.info("Kafka users and ACLs synced again after %d failed attempt(s)", self.failures)
            self.failures, self.last_error = 0, None
            self.synced += 1

    async def _apply(self, batch: dict[str, bool]) -> None:
        """Create the topics of the live nodes, then sync their users and ACLs (and remove the removed ones')."""
        admin_s, _ = admin_settings(self.settings)
        entries = list(self._control.state.nodes.values()) if FULL in batch and self._control is not None else []
        live: list[str]
        scope: list[str] | None
        if entries:
            live, scope = nodes_from_control(entries), None
        else:
            if FULL in batch:  # never seeded yet: nothing to catch up on (the seed's nodes come as changes)
                log.info("no full Kafka users/ACLs sync: the control plane has no nodes yet")
                batch = {node: is_live for node, is_live in batch.items() if node != FULL}
                if not batch:
                    return
            live = sorted(node for node, is_live in batch.items() if is_live)
            scope = sorted(batch)
        if live:
            await asyncio.wait_for(
                self._topic_creator(admin_s, self.bootstrap, [t for node in live for t in node_topics(node)]),
                self.timeout)
        report = await asyncio.to_thread(self._syncer, self.settings, live, scope=scope, keep_existing_users=True,
                                         timeout=self.timeout)
        log.info(
            "Kafka users and ACLs synced for %s: users created %s, deleted %s; ACLs created %d, deleted %d",
            "every node" if scope is None else ", ".join(scope), report.users_created or "-",
            report.users_deleted or "-", len(report.acls_created), len(report.acls_deleted),
        )


def _names(batch: dict[str, bool]) -> str:
    return "every node" if FULL in batch else ", ".join(sorted(batch))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
