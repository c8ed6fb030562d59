"""Where the control plane finds its schemas: the API's own registry state, or a registry over HTTP.

Decoding a control record needs the parsed schema of its id without I/O (``parsed``), fetched beforehand
for a whole batch (``load``); validating a catalogue entry needs a subject's latest fields (``describe``);
the writer registers the control topics' value schemas (``register``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

from hub.control.operations import SchemaInfo, is_recursive, schema_fields
from hub.registry import framing
from hub.registry.client import RegistryClient, SchemaNotFound
from hub.registry.service import RegistryService
from hub.registry.state import RegistryHTTPError


class SchemaSource(Protocol):
    def parsed(self, schema_id: int) -> Any | None:
        """The fastavro-parsed schema of an id if known here (no I/O), else None."""

    async def load(self, schema_ids: Iterable[int]) -> None:
        """Make ``parsed`` know these ids; ids the registry does not have are skipped, I/O errors raise."""

    async def register(self, subject: str, schema: str) -> int:
        """Register (or find) a schema under a subject; its id."""

    async def describe(self, subject: str) -> SchemaInfo | None:
        """The subject's latest live version and its top-level fields, or None if it has none."""


def _info(subject: str, version: int, schema_id: int, text: str) -> SchemaInfo:
    try:
        document = json.loads(text)
    except ValueError:
        document = {}
    fields = schema_fields(document) if isinstance(document, dict) else frozenset()
    return SchemaInfo(subject, version, schema_id, fields, is_recursive(document))


class LocalSchemas:
    """The registry served by this process (its :class:`RegistryService` state): no HTTP to itself."""

    def __init__(self, service: RegistryService) -> None:
        self.service = service
        self._parsed: dict[int, Any] = {}

    def parsed(self, schema_id: int) -> Any | None:
        known = self._parsed.get(schema_id)
        if known is None:
            stored = self.service.state.schemas.get(schema_id)
            if stored is None:
                return None
            known = self._parsed[schema_id] = framing.parse_schema(stored.schema)
        return known

    async def load(self, schema_ids: Iterable[int]) -> None:
        if any(self.service.state.schemas.get(i) is None for i in schema_ids):
            await self.service.sync()  # written by another instance and not read here yet

    async def register(self, subject: str, schema: str) -> int:
        return (await self.service.register(subject, schema)).id

    async def describe(self, subject: str) -> SchemaInfo | None:
        try:
            entry = self.service.state.get_version(subject, "latest")
        except RegistryHTTPError:
            return None
        return _info(subject, entry.version, entry.id, entry.schema)


class ClientSchemas:
    """A Confluent-compatible registry over HTTP (the hub's own from another process, or an external one)."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def parsed(self, schema_id: int) -> Any | None:
        known = self.client.cached(schema_id)
        return known.parsed if known is not None else None

    async def load(self, schema_ids: Iterable[int]) -> None:
        for schema_id in set(schema_ids):
            if self.client.cached(schema_id) is None:
                try:
                    await self.client.schema_by_id(schema_id)
                except SchemaNotFound:
                    pass  # the record is skipped (and logged) when applied

    async def register(self, subject: str, schema: str) -> int:
        return await self.client.register(subject, schema)

    async def describe(self, subject: str) -> SchemaInfo | None:
        try:
            schema_id, version, text = await self.client.latest(subject)
        except SchemaNotFound:
            return None
        return _info(subject, version, schema_id, text)
