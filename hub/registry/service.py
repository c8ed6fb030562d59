"""The registry service: the pure :class:`RegistryState` kept in step with the compacted ``_schemas`` topic.

On start it creates the topic if missing, reads it to the end and keeps tailing it, so a restarted hub or
a second hub instance serves the same ids, versions and configs. Writes are serialised in this instance,
computed against a state caught up with the topic's end, appended with ``acks=all`` and answered only
once read back and applied; if another instance won a race for the same id or version slot (the state's
``apply`` is first-writer-wins), the write is retried against the new state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from hub.broker.kafka_config import kafka_client_kwargs
from hub.registry.state import (
    AVRO,
    Record,
    RegisterResult,
    RegistryHTTPError,
    RegistryState,
    VersionSpec,
    decode_record,
    encode_record,
)
from hub.settings import Settings

log = logging.getLogger("hub.registry")

DEFAULT_TOPIC = "_schemas"
STORE_UNAVAILABLE = 50301
STORE_TIMEOUT = 50401
_TOPIC_ALREADY_EXISTS = 36
_MAX_ATTEMPTS = 5

T = TypeVar("T")
Operation = Callable[[RegistryState], tuple[T, list[Record]]]


class RegistryService:
    """Serves a :class:`RegistryState` backed by one compacted Kafka topic (``_schemas`` by default)."""

    def __init__(
        self, settings: Settings, *, topic: str = DEFAULT_TOPIC, bootstrap: str | None = None,
        write_timeout: float = 15.0, start_timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.bootstrap = bootstrap or settings.bootstrap or f"127.0.0.1:{settings.broker_port}"
        self.write_timeout = write_timeout
        self.start_timeout = start_timeout
        self._state = RegistryState()
        self._tp = TopicPartition(topic, 0)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets: AIOKafkaConsumer | None = None
        self._tail_task: asyncio.Task[None] | None = None
        self._position = 0
        self._advanced = asyncio.Condition()
        self._write_lock = asyncio.Lock()
        self._ready = False

    # ------------------------------------------------------------ lifecycle

    @property
    def state(self) -> RegistryState:
        """The current state; read-only for callers (it changes only through the topic)."""
        return self._state

    @property
    def ready(self) -> bool:
        """True once the topic has been read to its end at start."""
        return self._ready

    async def start(self) -> None:
        """Create the topic if missing, load it to the end, then keep tailing it in the background."""
        kwargs = kafka_client_kwargs(self.settings)
        await self._ensure_topic()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=0, **kwargs
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=200, **kwargs,
        )
        # Kafka answers requests on one connection in order, so an end-offset query sent on the tailing
        # consumer's connection would wait behind its long-polling fetch: offsets get a client of their own.
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, **kwargs
        )
        try:
            await self._producer.start()
            await self._consumer.start()
            await self._offsets.start()
            self._consumer.assign([self._tp])
            await self._consumer.seek_to_beginning(self._tp)
            self._tail_task = asyncio.ensure_future(self._tail())
            await self._load()
        except BaseException:
            await self.stop()
            raise
        self._ready = True
        log.info("schema registry loaded %s: %d subjects, %d schemas", self.topic,
                 len(self._state.subjects), len(self._state.schemas))

    async def _load(self) -> None:
        """Read the topic to its end, retrying while a just-created topic's metadata propagates."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while True:
            try:
                await self.sync(timeout=max(1.0, deadline - loop.time()))
                return
            except RegistryHTTPError:
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

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **kafka_client_kwargs(self.settings))
        await admin.start()
        try:
            if self.topic in set(await admin.list_topics()):
                return
            response = await admin.create_topics([NewTopic(
                name=self.topic, num_partitions=1, replication_factor=self.settings.topic_replication,
                topic_configs={"cleanup.policy": "compact"},
            )])
            for error in getattr(response, "topic_errors", []):
                code = error[1]
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    message = error[2] if len(error) > 2 else ""
                    raise RuntimeError(f"cannot create registry topic {self.topic}: error {code} {message}")
            log.info("created the compacted registry topic %s", self.topic)
        finally:
            await admin.close()

    # ------------------------------------------------------------ reading the topic

    async def _tail(self) -> None:
        """Apply every record of the topic in order, forever; wake writers waiting for their offsets."""
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batches = await consumer.getmany(self._tp, timeout_ms=500)
                for messages in batches.values():
                    for message in messages:
                        self._apply(message.key, message.value)
                position = await consumer.position(self._tp)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker away: keep the state, retry
                log.warning("registry: reading %s failed (%s); retrying", self.topic, exc)
                await asyncio.sleep(0.5)
                continue
            if position != self._position:
                async with self._advanced:
                    self._position = position
                    self._advanced.notify_all()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        record = decode_record(key, value)
        if record is None:
            log.warning("registry: skipping a %s record that is not Confluent JSON", self.topic)
            return
        try:
            self._state.apply(*record)
        except Exception:  # a bug must not stop the tail: log it and carry on
            log.exception("registry: could not apply %r", record[0])

    async def _wait_position(self, target: int, timeout: float) -> None:
        async with self._advanced:
            try:
                await asyncio.wait_for(self._advanced.wait_for(lambda: self._position >= target), timeout)
            except TimeoutError as exc:
                raise RegistryHTTPError(
                    504, STORE_TIMEOUT,
                    f"Timed out after {timeout:.0f}s reading {self.topic} up to offset {target}",
                ) from exc

    async def sync(self, timeout: float | None = None) -> None:
        """Wait until every record written to the topic so far has been applied (read-your-writes)."""
        offsets = self._offsets
        if offsets is None:
            raise RegistryHTTPError(503, STORE_UNAVAILABLE, "The schema registry is not running")
        wait = self.write_timeout if timeout is None else timeout
        try:
            ends = await asyncio.wait_for(offsets.end_offsets([self._tp]), wait)
        except (KafkaError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise RegistryHTTPError(
                503, STORE_UNAVAILABLE, f"The registry topic {self.topic} is unreachable: {reason}"
            ) from exc
        await self._wait_position(ends[self._tp], wait)

    # ------------------------------------------------------------ writing

    async def _append(self, records: list[Record]) -> int:
        producer = self._producer
        if producer is None:
            raise RegistryHTTPError(503, STORE_UNAVAILABLE, "The schema registry is not running")
        try:
            futures = []
            for key, value in records:
                key_bytes, value_bytes = encode_record(key, value)
                futures.append(await producer.send(self.topic, value=value_bytes, key=key_bytes, partition=0))
            metadata = await asyncio.wait_for(asyncio.gather(*futures), self.write_timeout)
        except (KafkaError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise RegistryHTTPError(
                503, STORE_UNAVAILABLE, f"Could not write to the registry topic {self.topic}: {reason}"
            ) from exc
        return max(m.offset for m in metadata)

    async def _write(
        self, operation: Operation[T], verify: Callable[[RegistryState, T], list[Record] | None] | None = None
    ) -> T:
        """Run an operation against a caught-up state, append its records, and return once they are applied.

        ``verify`` inspects the state after read-back: None means the write took effect; a list means another
        instance won a race (the list holds records to re-append so compaction keeps the winner) and the
        operation is retried against the new state.
        """
        if not self._ready:
            raise RegistryHTTPError(503, STORE_UNAVAILABLE, "The schema registry is starting; retry shortly")
        async with self._write_lock:
            for _ in range(_MAX_ATTEMPTS):
                await self.sync()
                result, records = operation(self._state)
                if not records:
                    return result
                last = await self._append(records)
                await self._wait_position(last + 1, self.write_timeout)
                repair = verify(self._state, result) if verify is not None else None
                if repair is None:
                    return result
                log.info("registry: lost a write race on %s; retrying", self.topic)
                if repair:
                    last = await self._append(repair)
                    await self._wait_position(last + 1, self.write_timeout)
        raise RegistryHTTPError(
            503, STORE_UNAVAILABLE, "Other registry instances kept writing conflicting records; retry"
        )

    async def register(
        self, subject: str, schema: str, *, schema_type: str = AVRO, normalize: bool = False,
        schema_id: int | None = None,
    ) -> RegisterResult:
        """Register (or find) a schema under a subject; see :meth:`RegistryState.register`."""
        return await self._write(
            lambda s: s.register(
                subject, schema, schema_type=schema_type, normalize=normalize, schema_id=schema_id
            ),
            lambda s, result: s.verify_registration(subject, result),
        )

    async def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """Soft-delete a subject, or permanently delete a soft-deleted one; returns the versions deleted."""
        return await self._write(lambda s: s.delete_subject(subject, permanent=permanent))

    async def delete_version(self, subject: str, version: VersionSpec, *, permanent: bool = False) -> int:
        """Soft-delete one version, or permanently delete a soft-deleted one; returns its number."""
        return await self._write(lambda s: s.delete_version(subject, version, permanent=permanent))

    async def set_config(self, subject: str | None, level: object) -> str:
        """Set the global (``subject`` None) or a subject's compatibility level; returns the level set."""
        return await self._write(lambda s: s.set_config(subject, level))

    async def delete_config(self, subject: str | None) -> str:
        """Remove the global or a subject's level; returns the level it had."""
        return await self._write(lambda s: s.delete_config(subject))
