"""Small interfaces the agents depend on, so no package imports the worker that wires it (Faust's ``types/``).

The worker (``hub.worker``) implements them; the exchange agent (``hub.pipeline.agent``) and the call agent
(``hub.calls.agent``) take them in their constructors and never reach into the worker itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import mode

from hub.broker.records import OutRecord
from hub.broker.sender import BatchSender
from hub.control.view import ControlView
from hub.metrics.bundle import HubMetrics
from hub.registry.client import RegistryClient

Audit = tuple[int, dict[str, Any]]  # (partition index whose chain records it, unsealed AuditRecord)


class Dedupe(Protocol):
    """A partition's window of recently seen (node or topic, event id) keys (``hub.pipeline.dedupe``)."""

    def __contains__(self, key: tuple[str, str]) -> bool: ...

    def add(self, key: tuple[str, str]) -> None: ...


class PartitionOwner(Protocol):
    """The partition indices this worker owns, with their restored state (dedupe window, chain, counts)."""

    def owned(self) -> set[int]: ...

    async def ensure(self, partitions: Iterable[int]) -> None:
        """Restore (once) the state of each index before it is used."""

    def dedupe(self, partition: int) -> Dedupe: ...


class AuditSink(Protocol):
    """Writes audit records after the records they describe are acknowledged, in submission order."""

    def submit(self, sent: Sequence[asyncio.Future[Any]], audits: Sequence[Audit],
               on_written: Callable[[], None] | None = None) -> asyncio.Future[None]:
        """Returns a future done once ``sent`` and then the sealed audit records are acknowledged."""
        ...



class RowSink(Protocol):
    """The call tables: rows the exchange writes to ``hub.records`` are applied where this worker owns them."""

    def materialise(self, rows: Sequence[tuple[OutRecord, Mapping[str, Any]]]) -> list[OutRecord]:
        """Apply rows about to be written (marking them as this worker's); returns index records to write too."""
        ...

    def key_exists(self, resource_id: str, key: str) -> bool | None:
        """A current row of ``resource_id`` with this primary key? None if its partition is not held here."""
        ...


class Agent(mode.Service):
    """Base of the worker's child agents: what the worker lends each of them, by interface."""

    def __init__(self, registry: RegistryClient, control: ControlView, sender: BatchSender,
                 partitions: PartitionOwner, audit: AuditSink, metrics: HubMetrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry = registry
        self.control = control
        self.sender = sender
        self.partitions = partitions
        self.audit = audit
        self.metrics = metrics
