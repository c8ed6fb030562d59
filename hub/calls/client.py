"""A node's side of calls, publishing and feeds: what ``hub call``/``publish``/``subscribe`` and the bench use.

Plain aiokafka and the Confluent registry protocol, exactly what any node's own client would do: a
``CallRequest`` to ``call.<node>.request``, the ``CallReply`` with the same ``request_id`` read from
``call.<node>.reply``; records Confluent-framed with the resource's registered schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hub.broker.clients import make_consumer, make_producer
from hub.calls.core import CallRequest
from hub.contract import H_REQUEST_ID, REQUEST_SUBJECT, call_reply_topic, call_request_topic
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.registry.files import CALL_REQUEST_SCHEMA_FILE, schema_text
from hub.settings import Settings


@dataclass(frozen=True)
class Endpoints:
    bootstrap: str
    registry: str


def endpoints(settings: Settings) -> Endpoints:
    """Kafka and registry of the running hub: HUB_BOOTSTRAP / HUB_REGISTRY_URL, else ``hub status``'s file,
    else the local broker started by ``hub broker start`` and the API at HUB_API_HOST/HUB_API_PORT."""
    status: dict[str, Any] = {}
    path = settings.state_dir / "hub.json"
    with contextlib.suppress(OSError, ValueError):
        status = json.loads(path.read_text(encoding="utf-8"))
    bootstrap = settings.bootstrap or status.get("bootstrap")
    if not bootstrap:
        from hub.broker.manager import LocalBroker

        running = LocalBroker(settings).status()
        if running is None:
            raise RuntimeError("no Kafka to connect to: set HUB_BOOTSTRAP, or start the hub (`hub up`)")
        bootstrap = running.bootstrap
    registry = settings.registry_url or status.get("registry") or status.get("api") or settings.api_url
    return Endpoints(str(bootstrap), str(registry))


# ------------------------------------------------------------------------------------------------ calls


@dataclass
class CallResult:
    """A decoded CallReply, the record it carries (decoded with its schema id) and the round-trip time."""

    reply: dict[str, Any]
    record: dict[str, Any] | None
    latency_s: float

    @property
    def status(self) -> str:
        return str(self.reply["status"])

    def to_json(self) -> dict[str, Any]:
        reply = {k: v for k, v in self.reply.items() if k != "record"}
        return jsonable({**reply, "record": self.record, "latency_ms": round(self.latency_s * 1000, 3)})


@dataclass
class CallClient:
    """Sends CallRequests as ``node`` and matches replies by request id (many calls may be in flight)."""

    bootstrap: str
    registry: RegistryClient
    node: str
    settings: Settings = field(default_factory=Settings)
    producer: AIOKafkaProducer | None = None
    consumer: AIOKafkaConsumer | None = None
    _pending: dict[str, asyncio.Future[tuple[dict[str, Any], float]]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None
    _encode: Any = None

    async def start(self) -> CallClient:
        request_id = await self.registry.register(REQUEST_SUBJECT, schema_text(CALL_REQUEST_SCHEMA_FILE))
        request = await self.registry.schema_by_id(request_id)
        self._encode = framing.make_encoder(request_id, request.schema_str)
        self.producer = make_producer(self.settings, self.bootstrap)
        await self.producer.start()
        self.consumer = make_consumer(self.settings, self.bootstrap, fetch_max_wait_ms=50)
        await self.consumer.start()
        topic = call_reply_topic(self.node)
        parts = [TopicPartition(topic, p) for p in sorted(await self.producer.partitions_for(topic))]
        self.consumer.assign(parts)
        await self.consumer.seek_to_end(*parts)
        for tp in parts:  # resolve the positions now: replies to the first request must not be skipped
            await self.consumer.position(tp)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self.producer is not None:
            await self.producer.stop()
        if self.consumer is not None:
            await self.consumer.stop()

    async def __aenter__(self) -> CallClient:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _read(self) -> None:
        assert self.consumer is not None
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            received = time.perf_counter()
            for msgs in batch.values():
                for msg in msgs:
                    rid = next((v.decode() for k, v in msg.headers if k == H_REQUEST_ID), None)
                    if rid is None and msg.key is not None:
                        rid = msg.key.decode(errors="replace")
                    fut = self._pending.pop(rid, None) if rid else None
                    if fut is None or fut.done():
                        continue
                    try:
                        fut.set_result((await self._decode(msg.value), received))
                    except Exception as exc:
                        fut.set_exception(exc)

    async def _decode(self, value: bytes) -> dict[str, Any]:
        schema_id, body = framing.split(value)
        schema = await self.registry.schema_by_id(schema_id)
        return framing.decode_body(body, schema.parsed)

    async def send(self, request: CallRequest) -> asyncio.Future[tuple[dict[str, Any], float]]:
        """Send one request; the future resolves to (decoded reply, perf_counter when it arrived)."""
        assert self.producer is not None and self._encode is not None
        fut: asyncio.Future[tuple[dict[str, Any], float]] = asyncio.get_running_loop().create_future()
        self._pending[request.request_id] = fut
        rid = request.request_id.encode()
        await self.producer.send(call_request_topic(self.node), self._encode(request.to_record()), key=rid,
                                 headers=[(H_REQUEST_ID, rid)])
        return fut

    async def call(
        self, resource: str, *, scenario: str | None, key: str | None = None, field_name: str | None = None,
        value: str | None = None, fields: tuple[str, ...] = (), grant: str | None = None,
        timeout: float = 30.0, request_id: str | None = None,
    ) -> CallResult:
        """One call, waiting for its reply (TimeoutError after ``timeout`` seconds)."""
        request = CallRequest(
            request_id=request_id or uuid.uuid4().hex, caller=self.node, resource=resource, scenario=scenario,
            grant=grant, key=key, lookup_field=field_name, lookup_value=value, fields=fields,
            requested_at=int(time.time() * 1000),
        )
        started = time.perf_counter()
        fut = await self.send(request)
        try:
            reply, arrived = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(request.request_id, None)
        return CallResult(reply, await self.record_of(reply), arrived - started)

    async def record_of(self, reply: Mapping[str, Any]) -> dict[str, Any] | None:
        value = reply.get("record")
        return await self._decode(value) if value else None


# ------------------------------------------------------------------------------------------------ records


def to_avro(value: Any, schema: Any) -> Any:
    """JSON values as fastavro expects them for ``schema``: ISO dates and timestamps parsed, unions resolved."""
    if value is None:
        return None
    if isinstance(schema, list):
        for branch in schema:
            if branch == "null":
                continue
            try:
                return to_avro(value, branch)
            except (TypeError, ValueError):
                continue
        return value
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        kind = schema.get("type")
        if logical == "date" and isinstance(value, str):
            return date.fromisoformat(value)
        if logical in ("timestamp-millis", "timestamp-micros") and isinstance(value, str):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError(f"timestamp {value!r} has no time zone")
            return moment
        if kind == "record" and isinstance(value, dict):
            return {f["name"]: to_avro(value.get(f["name"], f.get("default")), f["type"]) for f in schema["fields"]}
        if kind == "array" and isinstance(value, list):
            return [to_avro(v, schema["items"]) for v in value]
        if kind == "map" and isinstance(value, dict):
            return {k: to_avro(v, schema["values"]) for k, v in value.items()}
        if kind == "bytes" and isinstance(value, str):
            return value.encode()
        if isinstance(kind, dict | list):
            return to_avro(value, kind)
    return value


def jsonable(value: Any) -> Any:
    """A decoded Avro value as JSON: dates and timestamps ISO, bytes as text when UTF-8 (else hex)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    return value


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (one object a line; blank lines and # comments skipped)."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            item = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: not JSON: {exc}") from exc
        if not isinstance(item, dict):
            raise ValueError(f"{path}:{n}: a record must be a JSON object")
        out.append(item)
    return out
