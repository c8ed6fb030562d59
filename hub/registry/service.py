"""The registry service: the pure :class:`RegistryState` kept in step with the compacted ``_schemas`` topic.

On start it creates the topic if missing, reads it to the end and keeps tailing it, so a restarted hub or
a second hub instance serves the same ids, versions and configs. Writes are serialised in this instance,
computed against a state caught up with the topic's end, appended with ``acks=all`` and answered only
once read back and applied; if another instance won a race for the same id or version slot (the state's
``apply`` is first-writer-wins), the write is retried against the new state. The topic machinery is
:class:`hub.broker.topicstore.CompactedTopicStore`, shared with the control plane; this module maps its
errors to Confluent's (50301 unavailable, 50401 timeout).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from hub.broker.topicstore import CompactedTopicStore, StoreError, StoreRecord, StoreTimeout
from hub.contract import SCHEMAS_TOPIC
from hub.registry.state import (
    AVRO,
    Record,
    References,
    RegisterResult,
    RegistryHTTPError,
    RegistryState,
    VersionSpec,
    decode_record,
    encode_record,
)
from hub.settings import Settings

log = logging.getLogger("hub.registry")

STORE_UNAVAILABLE = 50301
STORE_TIMEOUT = 50401

T = TypeVar("T")
Operation = Callable[[RegistryState], tuple[T, list[Record]]]


def _registry_error(exc: StoreError) -> RegistryHTTPError:
    if isinstance(exc, StoreTimeout):
        return RegistryHTTPError(504, STORE_TIMEOUT, exc.message)
    return RegistryHTTPError(503, STORE_UNAVAILABLE, exc.message)


class RegistryService:
    """Serves a :class:`RegistryState` backed by one compacted Kafka topic (``_schemas`` by default)."""

    def __init__(
        self, settings: Settings, *, topic: str = SCHEMAS_TOPIC, bootstrap: str | None = None,
        write_timeout: float = 15.0, start_timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self._state = RegistryState()
        self._store = CompactedTopicStore(
            settings, {topic: self._apply}, bootstrap=bootstrap, name="schema registry",
            write_timeout=write_timeout, start_timeout=start_timeout,
        )
        self.bootstrap = self._store.bootstrap
        self.write_timeout = write_timeout
        self.start_timeout = start_timeout

    # ------------------------------------------------------------ lifecycle

    @property
    def state(self) -> RegistryState:
        """The current state; read-only for callers (it changes only through the topic)."""
        return self._state

    @property
    def ready(self) -> bool:
        """True once the topic has been read to its end at start."""
        return self._store.ready

    async def start(self) -> None:
        """Create the topic if missing, load it to the end, then keep tailing it in the background."""
        try:
            await self._store.start()
        except StoreError as exc:
            raise _registry_error(exc) from exc
        log.info("schema registry loaded %s: %d subjects, %d schemas", self.topic,
                 len(self._state.subjects), len(self._state.schemas))

    async def stop(self) -> None:
        """Stop tailing and close the Kafka clients (idempotent)."""
        await self._store.stop()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        record = decode_record(key, value)
        if record is None:
            log.warning("registry: skipping a %s record that is not Confluent JSON", self.topic)
            return
        try:
            self._state.apply(*record)
        except Exception:  # a bug must not stop the tail: log it and carry on
            log.exception("registry: could not apply %r", record[0])

    async def sync(self, timeout: float | None = None) -> None:
        """Wait until every record written to the topic so far has been applied (read-your-writes)."""
        try:
            await self._store.sync(timeout)
        except StoreError as exc:
            raise _registry_error(exc) from exc

    # ------------------------------------------------------------ writing

    def _records(self, records: list[Record]) -> list[StoreRecord]:
        return [StoreRecord(self.topic, *encode_record(key, value)) for key, value in records]

    async def _write(
        self, operation: Operation[T], verify: Callable[[RegistryState, T], list[Record] | None] | None = None
    ) -> T:
        """Run an operation against a caught-up state, append its records, and return once they are applied.

        ``verify`` inspects the state after read-back: None means the write took effect; a list means another
        instance won a race (the list holds records to re-append so compaction keeps the winner) and the
        operation is retried against the new state.
        """
        if not self._store.ready:
            raise RegistryHTTPError(503, STORE_UNAVAILABLE, "The schema registry is starting; retry shortly")

        def run() -> tuple[T, list[StoreRecord]]:
            result, records = operation(self._state)
            return result, self._records(records)

        def check(result: T) -> list[StoreRecord] | None:
            repair = verify(self._state, result) if verify is not None else None
            return None if repair is None else self._records(repair)

        try:
            return await self._store.write(run, check)
        except StoreError as exc:
            raise _registry_error(exc) from exc

    async def register(
        self, subject: str, schema: str, *, schema_type: str = AVRO, normalize: bool = False,
        schema_id: int | None = None, references: References = (),
    ) -> RegisterResult:
        """Register (or find) a schema under a subject; see :meth:`RegistryState.register`."""
        return await self._write(
            lambda s: s.register(
                subject, schema, schema_type=schema_type, normalize=normalize, schema_id=schema_id,
                references=references,
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
