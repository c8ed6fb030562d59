"""``ControlView``: the control plane's state, read-only, in any process (the API, a ``hub worker``).

It tails the compacted control topics (``hub.nodes``, ``hub.scenarios``, ``hub.catalog``, ``hub.grants``),
decodes their Confluent-framed Avro values with the registry (cached; one fetch per new schema id) and
applies them to a :class:`hub.control.state.ControlState`::

    view = ControlView(settings, RegistryClient(settings.effective_registry_url))
    await view.start()                  # returns once every control topic has been read to its end
    snap = view.snapshot()              # ControlSnapshot: .config (ExchangeConfig), .grants, .scenarios
    version = await view.wait_for(snap.version + 1)   # the next change (any control record)
    await view.stop()

``state`` is live (it changes between awaits); ``snapshot()`` is immutable and cached per ``version``.
Registry reads are open, so the registry client needs no token. ``start()`` waits (up to ``start_timeout``)
for the registry to answer when there are records to decode, e.g. while ``hub up`` is still starting its API.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from hub.broker.topicstore import Applier, CompactedTopicStore, Fetched
from hub.contract import STATE_TOPICS
from hub.control.codec import DecodeError, decode
from hub.control.schemas import ClientSchemas, SchemaSource
from hub.control.state import ControlSnapshot, ControlState, snapshot
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import Settings

log = logging.getLogger("hub.control")


class ControlView:
    """The control state kept in step with the control topics; read-only."""

    read_only = True

    def __init__(
        self, settings: Settings, registry: RegistryClient | SchemaSource, *, bootstrap: str | None = None,
        start_timeout: float = 60.0, write_timeout: float = 15.0,
    ) -> None:
        self.settings = settings
        self.schemas: SchemaSource = ClientSchemas(registry) if isinstance(registry, RegistryClient) else registry
        self.state = ControlState()
        self.store = CompactedTopicStore(
            settings, {topic: self._applier(topic) for topic in STATE_TOPICS}, bootstrap=bootstrap,
            name="control plane", start_timeout=start_timeout, write_timeout=write_timeout,
            prepare=self._prepare, read_only=self.read_only,
        )
        self._snapshot: ControlSnapshot | None = None

    # ------------------------------------------------------------ public API

    @property
    def ready(self) -> bool:
        """True once every control topic has been read to its end."""
        return self.store.ready

    @property
    def version(self) -> int:
        """Grows by one with every control record applied (from 0 at start); never goes back."""
        return self.store.applied

    async def start(self) -> None:
        """Create missing control topics, read them all to the end, keep tailing them."""
        await self.store.start()
        log.info("control plane loaded: %d nodes, %d scenarios, %d catalogue entries, %d grants, %d objections",
                 len(self.state.nodes), len(self.state.scenarios), len(self.state.catalog), len(self.state.grants),
                 len(self.state.objections))

    async def stop(self) -> None:
        """Stop tailing (idempotent)."""
        await self.store.stop()

    async def wait_for(self, version: int, timeout: float | None = None) -> int:
        """Wait until ``self.version >= version``; returns the version reached (TimeoutError after ``timeout``)."""
        await self.store.wait_applied(version, timeout)
        return self.version

    async def sync(self, timeout: float | None = None) -> int:
        """Wait until every control record written so far has been applied; returns the version."""
        await self.store.sync(timeout)
        return self.version

    def snapshot(self) -> ControlSnapshot:
        """The immutable worker view of the current state (``hub.control.state.snapshot``), cached per version."""
        version = self.version
        if self._snapshot is None or self._snapshot.version != version:
            self._snapshot = snapshot(self.state, version)
        return self._snapshot

    # ------------------------------------------------------------ reading

    async def _prepare(self, batch: Sequence[Fetched]) -> None:
        """Fetch the schemas a batch needs, so applying it needs no I/O."""
        ids = set()
        for record in batch:
            value = record.value
            if value is not None and len(value) >= framing.HEADER_SIZE and value[0] == framing.MAGIC:
                schema_id = framing.HEADER.unpack_from(value)[1]
                if self.schemas.parsed(schema_id) is None:
                    ids.add(schema_id)
        if ids:
            await self.schemas.load(ids)

    def _applier(self, topic: str) -> Applier:
        def apply(key: bytes | None, value: bytes | None) -> None:
            try:
                text_key, entity = decode(topic, key, value, self.schemas.parsed)
            except DecodeError as exc:
                log.warning("control plane: skipping a record: %s", exc)
                return
            self.state.apply(topic, text_key, entity)

        return apply
