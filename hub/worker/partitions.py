"""The partition indices a worker owns and their state, restored on assignment (one restore path).

Partition index p (of every ``ingress.*``, ``call.*.request`` and ``hub.calls`` topic, see ``assignor``) has one
owner, which alone writes partition p of ``hub.audit`` and ``hub.counts``. Taking p over means rebuilding its
dedupe window, counts and hash chain head from ``hub.counts`` p and the tail of ``hub.audit`` p
(``hub.pipeline.partition_state.restore_partition``). ``ensure`` restores an index once, one restore at a
time, and whoever asks while it runs waits for the same restore.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from hub.audit.chain import ChainState, ChainWriter
from hub.broker.clients import make_consumer
from hub.pipeline.dedupe import DedupeWindow
from hub.pipeline.partition_state import PartitionState, restore_partition
from hub.registry.client import RegistryClient
from hub.settings import Settings

log = logging.getLogger("hub.worker")


class PartitionStates:
    """``hub.ports.PartitionOwner``: the owned indices' states, restored on first use after assignment."""

    def __init__(self, settings: Settings, bootstrap: str, registry: RegistryClient) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.registry = registry
        self.states: dict[int, PartitionState] = {}
        self._restoring: dict[int, asyncio.Task[PartitionState]] = {}
        self._assigned: set[int] = set()
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Nothing to connect yet: each restore reads with a consumer of its own (see ``_restore``)."""

    async def stop(self) -> None:
        for task in self._restoring.values():
            task.cancel()

    def owned(self) -> set[int]:
        return set(self._assigned)

    def assign(self, partitions: Iterable[int]) -> None:
        """The indices owned from now on: states of indices no longer owned are dropped, new ones restored lazily."""
        self._assigned = set(partitions)
        for p in list(self.states):
            if p not in self._assigned:
                del self.states[p]
                self._restoring.pop(p, None)
        for p, task in list(self._restoring.items()):
            if p not in self._assigned:
                task.cancel()
                del self._restoring[p]

    def restore_in_background(self) -> None:
        """Start restoring every assigned index now, rather than at its first record."""
        for p in self._assigned:
            self._task(p)

    async def ensure(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            if p not in self.states:
                await asyncio.shield(self._task(p))

    def dedupe(self, partition: int) -> DedupeWindow:
        return self.states[partition].dedupe

    def state(self, partition: int) -> PartitionState:
        return self.states[partition]

    def _task(self, partition: int) -> asyncio.Task[PartitionState]:
        task = self._restoring.get(partition)
        if task is None or (task.done() and partition not in self.states):  # never run, failed, or dropped since
            task = self._restoring[partition] = asyncio.ensure_future(self._restore(partition))
            task.add_done_callback(_report)
        return task

    async def _restore(self, partition: int) -> PartitionState:
        async with self._lock:
            existing = self.states.get(partition)
            if existing is not None:
                return existing
            settings = self.settings

            def new_chain(state: ChainState) -> ChainWriter:
                return ChainWriter(partition, state, key=settings.audit_key,
                                   checkpoint_every=settings.audit_checkpoint_every,
                                   checkpoint_seconds=settings.audit_checkpoint_seconds)

            # A reader of its own per restore: an aiokafka consumer re-assigned from one partition's topics to
            # another's was seen waiting forever for metadata (and a restore is rare: once per partition taken).
            reader = make_consumer(settings, self.bootstrap)
            await reader.start()
            try:
                state = await restore_partition(reader, partition, self.registry, new_chain)
            finally:
                await reader.stop()
            if partition in self._assigned or not self._assigned:
                self.states[partition] = state
            return state


def _report(task: asyncio.Task[PartitionState]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("restoring a partition's state failed (retried at its next record): %r", task.exception(),
                  exc_info=task.exception())
