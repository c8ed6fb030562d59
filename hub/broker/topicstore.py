"""A state kept in step with one or more compacted Kafka topics: load to the end, tail, write-then-read-back.

The schema registry (``_schemas``) and the control plane (``hub.nodes``, ``hub.scenarios``, ``hub.catalog``,
``hub.grants``) are both pure states rebuilt from compacted topics. This module is the machinery they
share, and nothing else: it knows bytes, offsets and partitions, never what a record means.

* ``start()`` creates each topic if missing (compacted, one partition), reads every topic to its end and
  keeps tailing them in the background, handing each record to the topic's ``Applier``.
* ``sync()`` waits until every record written so far has been applied (read-your-writes).
* ``write(operation, verify)`` serialises writes in this process: the operation runs against a caught-up
  state and returns ``(result, records)``; the records are appended with ``acks=all`` and the call returns
  only once they have been read back and applied, so the state answers for them. ``verify`` can detect a
  race lost to another process and ask for a retry.

Errors are :class:`StoreUnavailable` (503: the broker is unreachable or the store not started) and
:class:`StoreTimeout` (504: a write or read-back did not finish in time); callers map them to their own
error bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import NamedTuple, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from hub.broker.clients import make_consumer, make_producer
from hub.broker.topics import CONTROL_STATE, ensure_topics
from hub.settings import Settings

log = logging.getLogger("hub.topicstore")

_MAX_ATTEMPTS = 5

T = TypeVar("T")

Applier = Callable[[bytes | None, bytes | None], None]
"""Applies one record (key, value; value None is a tombstone) of one topic to a pure state. Must not raise
for bad records (log and skip them); an exception is logged and the tail carries on."""


class StoreRecord(NamedTuple):
    """One record to append: its topic, key and value (None: a tombstone)."""

    topic: str
    key: bytes
    value: bytes | None


class Fetched(NamedTuple):
    """One record read from a topic, as handed to the ``prepare`` hook."""

    topic: str
    offset: int
    key: bytes | None
    value: bytes | None


Prepare = Callable[[Sequence[Fetched]], Awaitable[None]]
"""Awaited with each fetched batch before it is applied (e.g. to fetch the schemas it needs). If it raises,
the batch is read again after a pause, so no record is skipped."""


class StoreError(Exception):
    """The store could not serve a request; ``status`` is the HTTP status a caller should answer with."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StoreUnavailable(StoreError):
    """The broker is unreachable, or the store is not started (503)."""


class StoreTimeout(StoreError):
    """A read-back did not complete in time (504)."""

    status = 504


class CompactedTopicStore:
    """Keeps appliers in step with compacted topics (partition 0 of each) and appends records to them."""

    def __init__(
        self, settings: Settings, appliers: Mapping[str, Applier], *, bootstrap: str | None = None,
        name: str = "store", write_timeout: float = 15.0, start_timeout: float = 60.0,
        prepare: Prepare | None = None, read_only: bool = False,
    ) -> None:
        if not appliers:
            raise ValueError("a store needs at least one topic")
        self.settings = settings
        self.name = name
        self.topics = tuple(appliers)
        self.bootstrap = bootstrap or settings.bootstrap or f"127.0.0.1:{settings.broker_port}"
        self.write_timeout = write_timeout
        self.start_timeout = start_timeout
        self.read_only = read_only
        self._appliers = dict(appliers)
        self._prepare = prepare
        self._tps = [TopicPartition(topic, 0) for topic in self.topics]
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._tail_task: asyncio.Task[None] | None = None
        self._positions: dict[TopicPartition, int] = {tp: 0 for tp in self._tps}
        self._applied = 0
        self._advanced = asyncio.Condition()
        self._write_lock = asyncio.Lock()
        self._ready = False

    # ------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """True once every topic has been read to its end at start."""
        return self._ready

    @property
    def applied(self) -> int:
        """How many records have been applied since start: grows by one per record, never goes back."""
        return self._applied

    async def start(self) -> None:
        """Create missing topics, load them to the end, then keep tailing them in the background."""
        try:
            await ensure_topics(self.settings, self.bootstrap, self.topics, spec=CONTROL_STATE)
        except Exception as exc:  # a reader may lack the right to create topics: the writer creates them
            if not self.read_only:
                raise
            log.info("%s: could not check or create %s (%s); reading them anyway", self.name, self.topics, exc)
        if not self.read_only:
            self._producer = make_producer(self.settings, self.bootstrap, enable_idempotence=True)
        self._consumer = make_consumer(
            self.settings, self.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=200,
        )
        # Kafka answers requests on one connection in order, so an end-offset query sent on the tailing
        # consumer's connection would wait behind its long-polling fetch: offsets get a client of their own.
        self._offsets = make_consumer(self.settings, self.bootstrap)
        try:
            if self._producer is not None:
                await self._producer.start()
            await self._consumer.start()
            await self._offsets.start()
            self._consumer.assign(self._tps)
            await self._consumer.seek_to_beginning(*self._tps)
            self._tail_task = asyncio.ensure_future(self._tail())
            await self._load()
        except BaseException:
            await self.stop()
            raise
        self._ready = True

    async def _load(self) -> None:
        """Read the topics to their end, retrying while a just-created topic's metadata propagates."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while True:
            try:
                await self.sync(timeout=max(1.0, deadline - loop.time()))
                return
            except StoreError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        """Stop tailing and close the Kafka clients (idempotent)."""
        self._ready = False
        if self._tail_task is not None:
            self._tail_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._tail_task
            self._tail_task = None
        for client in (self._consumer, self._offsets, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._consumer = self._offsets = self._producer = None

    # ------------------------------------------------------------ reading the topics

    async def _tail(self) -> None:
        """Apply every record of the topics in order, forever; wake those waiting for offsets."""
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batches = await consumer.getmany(*self._tps, timeout_ms=500)
                if self._prepare is not None and batches:
                    fetched = [
                        Fetched(tp.topic, m.offset, m.key, m.value) for tp, ms in batches.items() for m in ms
                    ]
                    try:
                        await self._prepare(fetched)
                    except Exception as exc:
                        for tp, messages in batches.items():  # read the batch again rather than skip it
                            if messages:
                                consumer.seek(tp, messages[0].offset)
                        log.warning("%s: preparing %d records failed (%s); retrying", self.name, len(fetched), exc)
                        await asyncio.sleep(0.5)
                        continue
                applied = 0
                for tp, messages in batches.items():
                    apply = self._appliers[tp.topic]
                    for message in messages:
                        try:
                            apply(message.key, message.value)
                        except Exception:  # a bug must not stop the tail: log it and carry on
                            log.exception("%s: could not apply a record of %s at offset %d",
                                          self.name, tp.topic, message.offset)
                        applied += 1
                positions = {tp: await consumer.position(tp) for tp in self._tps}
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker away: keep the state, retry
                log.warning("%s: reading %s failed (%s); retrying", self.name, ", ".join(self.topics), exc)
                await asyncio.sleep(0.5)
                continue
            if applied or positions != self._positions:
                async with self._advanced:
                    self._applied += applied
                    self._positions = positions
                    self._advanced.notify_all()

    async def _wait_positions(self, targets: Mapping[TopicPartition, int], timeout: float) -> None:
        def reached() -> bool:
            return all(self._positions.get(tp, 0) >= offset for tp, offset in targets.items())

        async with self._advanced:
            try:
                await asyncio.wait_for(self._advanced.wait_for(reached), timeout)
            except TimeoutError as exc:
                wanted = ", ".join(f"{tp.topic} up to offset {offset}" for tp, offset in targets.items())
                raise StoreTimeout(f"Timed out after {timeout:.0f}s reading {wanted}") from exc

    async def wait_applied(self, count: int, timeout: float | None = None) -> None:
        """Wait until at least ``count`` records have been applied since start (``applied >= count``)."""
        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(lambda: self._applied >= count), timeout)

    async def sync(self, timeout: float | None = None) -> None:
        """Wait until every record written to the topics so far has been applied (read-your-writes)."""
        offsets = self._offsets
        if offsets is None:
            raise StoreUnavailable(f"The {self.name} is not running")
        wait = self.write_timeout if timeout is None else timeout
        try:
            ends = await asyncio.wait_for(offsets.end_offsets(self._tps), wait)
        except (KafkaError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise StoreUnavailable(
                f"The {self.name} topic(s) {', '.join(self.topics)} are unreachable: {reason}"
            ) from exc
        await self._wait_positions(ends, wait)

    # ------------------------------------------------------------ writing

    async def _append(self, records: Sequence[StoreRecord]) -> dict[TopicPartition, int]:
        """Append records in order; returns, per partition written, the offset just past the last one."""
        producer = self._producer
        if producer is None:
            raise StoreUnavailable(f"The {self.name} is not running" + (" (read-only)" if self.read_only else ""))
        try:
            futures = []
            for record in records:
                if record.topic not in self._appliers:
                    raise ValueError(f"{self.name} does not keep topic {record.topic}")
                futures.append(
                    await producer.send(record.topic, value=record.value, key=record.key, partition=0)
                )
            metadata = await asyncio.wait_for(asyncio.gather(*futures), self.write_timeout)
        except (KafkaError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise StoreUnavailable(f"Could not write to {', '.join(self.topics)}: {reason}") from exc
        ends: dict[TopicPartition, int] = {}
        for m in metadata:
            tp = TopicPartition(m.topic, 0)
            ends[tp] = max(ends.get(tp, 0), m.offset + 1)
        return ends

    async def append(self, records: Sequence[StoreRecord]) -> None:
        """Append records and return once they have been read back and applied (no serialisation, no verify)."""
        if records:
            await self._wait_positions(await self._append(records), self.write_timeout)

    async def write(
        self, operation: Callable[[], tuple[T, Sequence[StoreRecord]]],
        verify: Callable[[T], Sequence[StoreRecord] | None] | None = None,
    ) -> T:
        """Run an operation against the caught-up state, append its records, return once they are applied.

        ``operation`` reads the state (through the caller's closure) and returns ``(result, records)``; no
        records means nothing to write. ``verify(result)`` inspects the state after read-back: None means the
        write took effect; a sequence means another process won a race (its records are re-appended first,
        e.g. so compaction keeps the winner) and the operation is retried against the new state. Exceptions
        from either propagate.
        """
        if not self._ready:
            raise StoreUnavailable(f"The {self.name} is starting; retry shortly")
        async with self._write_lock:
            for _ in range(_MAX_ATTEMPTS):
                await self.sync()
                result, records = operation()
                if not records:
                    return result
                await self.append(records)
                repair = verify(result) if verify is not None else None
                if repair is None:
                    return result
                log.info("%s: lost a write race on %s; retrying", self.name, ", ".join(self.topics))
                if repair:
                    await self.append(repair)
        raise StoreUnavailable(f"Other writers kept changing {', '.join(self.topics)}; retry")
