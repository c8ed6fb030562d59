"""How control entities travel on their compacted topics: Confluent-framed Avro values, utf-8 keys.

Pure (no I/O). Each topic's value schema lives in ``schemas/hub/`` and is registered under
``<topic>-value``; :class:`ControlEncoder` frames values with the registered ids, :func:`decode` reads a
record back given a ``schema id -> parsed schema`` lookup (the registry client's cache).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hub.broker.topicstore import StoreRecord
from hub.contract import CATALOG_TOPIC, GRANTS_TOPIC, NODES_TOPIC, OBJECTIONS_TOPIC, SCENARIOS_TOPIC
from hub.control.state import CatalogEntry, NodeEntry, ScenarioEntry
from hub.objections.model import Objection
from hub.policy.model import Grant
from hub.registry import framing
from hub.registry.files import schema_text as file_text

SCHEMA_FILES: Mapping[str, str] = {
    NODES_TOPIC: "schemas/hub/node_event.avsc",
    SCENARIOS_TOPIC: "schemas/hub/scenario_event.avsc",
    CATALOG_TOPIC: "schemas/hub/catalog_event.avsc",
    GRANTS_TOPIC: "schemas/hub/grant_event.avsc",
    OBJECTIONS_TOPIC: "schemas/hub/objection.avsc",
}
Entity = NodeEntry | ScenarioEntry | CatalogEntry | Grant | Objection

_FROM_AVRO: Mapping[str, Callable[[Mapping[str, Any]], Any]] = {
    NODES_TOPIC: NodeEntry.from_avro,
    SCENARIOS_TOPIC: ScenarioEntry.from_avro,
    CATALOG_TOPIC: CatalogEntry.from_avro,
    GRANTS_TOPIC: Grant.from_avro,
    OBJECTIONS_TOPIC: Objection.from_avro,
}


class DecodeError(ValueError):
    """A control record that cannot be read (foreign bytes, unknown schema, invalid content)."""


def subject_of(topic: str) -> str:
    """The registry subject of a control topic's values (Confluent's topic name strategy)."""
    return f"{topic}-value"


def schema_text(topic: str) -> str:
    """The value schema of a control topic, as compact JSON."""
    return file_text(SCHEMA_FILES[topic])


def key_of(topic: str, entity: Entity) -> str:
    """The record key: the entity id (``<id>@<version>`` on ``hub.catalog``, one key per version)."""
    if isinstance(entity, CatalogEntry):
        return entity.key
    return entity.id


class ControlEncoder:
    """Frames control entities with the schema ids registered for their topics."""

    def __init__(self, schema_ids: Mapping[str, int]) -> None:
        self.schema_ids = dict(schema_ids)
        self._encoders = {
            topic: framing.make_encoder(schema_id, schema_text(topic)) for topic, schema_id in schema_ids.items()
        }

    def record(self, topic: str, entity: Entity) -> StoreRecord:
        """The record that writes ``entity`` as the latest version of its key on ``topic``."""
        return StoreRecord(topic, key_of(topic, entity).encode("utf-8"), self._encoders[topic](entity.to_avro()))


def decode(
    topic: str, key: bytes | None, value: bytes | None, parsed_schema: Callable[[int], Any | None]
) -> tuple[str, Entity | None]:
    """(key, entity) of a control record; entity None for a tombstone. DecodeError if it cannot be read."""
    if not key:
        raise DecodeError(f"a {topic} record without a key")
    try:
        text_key = key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"a {topic} key is not utf-8") from exc
    if value is None:
        return text_key, None
    try:
        schema_id, body = framing.split(value)
    except framing.FramingError as exc:
        raise DecodeError(f"{topic} record {text_key!r} is not Confluent-framed Avro: {exc}") from exc
    parsed = parsed_schema(schema_id)
    if parsed is None:
        raise DecodeError(f"{topic} record {text_key!r} has schema id {schema_id}, unknown to the registry")
    try:
        record = framing.decode_body(body, parsed)
        return text_key, _FROM_AVRO[topic](record)
    except (framing.FramingError, ValueError, TypeError, KeyError) as exc:
        raise DecodeError(f"{topic} record {text_key!r} does not read as a {topic} entry: {exc}") from exc
