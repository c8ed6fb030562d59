"""The hub's Confluent-compatible registry on the real broker, driven by ``confluent_kafka`` and raw HTTP.

Each server here is a FastAPI app holding only the registry router and its error handlers, served by
uvicorn in a thread of its own (the Confluent clients are blocking) over a RegistryService on the session
broker. Tests on the shared ``_schemas`` topic use unique subjects; tests that change global config,
restart or run two instances use a topic of their own.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from fastapi import FastAPI, HTTPException, Request

from hub.broker.manager import free_port
from hub.contract import SCHEMAS_TOPIC
from hub.registry import framing
from hub.registry.client import RegistryClient, SchemaNotFound
from hub.registry.routes import install_registry_error_handlers, registry_router
from hub.registry.service import RegistryService
from hub.settings import Settings

pytestmark = pytest.mark.integration

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


def record(*fields: dict[str, Any], name: str = "Citizen") -> str:
    return json.dumps({"type": "record", "name": name, "namespace": "gov.test", "fields": list(fields)})


ID = {"name": "id", "type": "long"}
NAME = {"name": "name", "type": "string"}
EMAIL_OPTIONAL = {"name": "email", "type": ["null", "string"], "default": None}
EMAIL_REQUIRED = {"name": "email", "type": "string"}
EMAIL_DEFAULTED = {"name": "email", "type": "string", "default": ""}
V1 = record(ID, NAME)
V2 = record(ID, NAME, EMAIL_OPTIONAL)


class HubRegistry:
    """A RegistryService plus the registry router, served by uvicorn in its own thread and event loop."""

    def __init__(
        self, settings: Settings, *, topic: str = SCHEMAS_TOPIC,
        authorize_write: Callable[[Request, str | None], Awaitable[Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.authorize_write = authorize_write
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service: RegistryService | None = None
        self._server: uvicorn.Server | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> HubRegistry:
        self._thread.start()
        if not self._started.wait(90):
            raise TimeoutError("the registry server did not start within 90 s")
        if self._error is not None:
            raise self._error
        return self

    async def _main(self) -> None:
        service = self.service = RegistryService(self.settings, topic=self.topic)
        try:
            await service.start()
            app = FastAPI()
            install_registry_error_handlers(app)
            app.include_router(registry_router(service, authorize_write=self.authorize_write))
            config = uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
            self._server = uvicorn.Server(config)
            serving = asyncio.ensure_future(self._server.serve())
            while not self._server.started:
                if serving.done():
                    serving.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.02)
            self._started.set()
            await serving
        except BaseException as exc:  # handed to the test thread by start()
            self._error = exc
            self._started.set()
        finally:
            await service.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(30)


@pytest.fixture
def registry(hub_settings: Settings) -> Iterator[HubRegistry]:
    """The registry on the session's shared ``_schemas`` topic."""
    server = HubRegistry(hub_settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sr(registry: HubRegistry) -> Iterator[SchemaRegistryClient]:
    client = SchemaRegistryClient({"url": registry.url})
    try:
        yield client
    finally:
        client.close()


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# ---------------------------------------------------------------- the confluent_kafka client

def test_schema_registry_client_round_trip(sr: SchemaRegistryClient, unique_id: str) -> None:
    subject, twin = f"people-{unique_id}-value", f"twin-{unique_id}-value"
    schema_id = sr.register_schema(subject, Schema(V1, "AVRO"))
    assert sr.register_schema(subject, Schema(V1, "AVRO")) == schema_id
    assert sr.register_schema(twin, Schema(json.dumps(json.loads(V1), indent=2), "AVRO")) == schema_id

    found = sr.lookup_schema(subject, Schema(V1, "AVRO"))
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, subject)
    assert json.loads(sr.get_schema(schema_id).schema_str) == json.loads(V1)
    assert sr.get_schema_types() == ["AVRO"]
    assert sorted(sr.get_subjects_by_schema_id(schema_id)) == sorted([subject, twin])
    assert {(v.subject, v.version) for v in sr.get_schema_versions(schema_id)} == {(subject, 1), (twin, 1)}
    assert subject in sr.get_subjects() and subject in sr.get_subjects(subject_prefix=f"people-{unique_id}")

    assert sr.test_compatibility(subject, Schema(V2, "AVRO")) is True
    assert sr.test_compatibility(subject, Schema(record(ID, NAME, EMAIL_REQUIRED), "AVRO")) is False
    v2_id = sr.register_schema(subject, Schema(V2, "AVRO"))
    assert v2_id != schema_id
    latest = sr.get_latest_version(subject)
    assert (latest.schema_id, latest.version) == (v2_id, 2)
    assert sr.get_version(subject, 1).schema_id == schema_id
    assert sr.get_versions(subject) == [1, 2]

    assert sr.get_compatibility() in ("BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
                                      "FULL", "FULL_TRANSITIVE", "NONE")
    sr.set_compatibility(subject, "full_transitive")
    assert sr.get_compatibility(subject) == "FULL_TRANSITIVE"
    assert str(sr.get_config(subject).compatibility_level) == "FULL_TRANSITIVE"
    assert str(sr.delete_config(subject).compatibility_level) == "FULL_TRANSITIVE"
    with pytest.raises(SchemaRegistryError) as err:
        sr.get_compatibility(subject)
    assert err.value.error_code == 40408
    assert sr.get_global_mode() == "READWRITE" and sr.get_mode(subject) == "READWRITE"

    assert sr.delete_version(subject, 2) == 2
    assert sr.get_versions(subject) == [1]
    assert sr.delete_subject(twin) == [1]
    assert twin not in sr.get_subjects() and twin in sr.get_subjects(deleted=True)
    assert sr.delete_subject(twin, permanent=True) == [1]
    assert twin not in sr.get_subjects(deleted=True)
    assert json.loads(sr.get_schema(schema_id).schema_str) == json.loads(V1)  # still served by id
    with pytest.raises(SchemaRegistryError) as err:
        sr.get_latest_version(twin)
    assert (err.value.http_status_code, err.value.error_code) == (404, 40401)


def test_avro_serializer_and_deserializer_through_the_broker(
    sr: SchemaRegistryClient, kafka_bootstrap: str, unique_id: str,
) -> None:
    topic = f"ingress.registry-{unique_id}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(30)

    serialize_v1 = AvroSerializer(sr, V1)
    serialize_v2 = AvroSerializer(sr, V2)
    deserialize = AvroDeserializer(sr)
    value_ctx = SerializationContext(topic, MessageField.VALUE)
    sent = [{"id": 1, "name": "Ada"}, {"id": 2, "name": "Grace", "email": "g@example.org"}]
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key=b"1", value=serialize_v1(sent[0], value_ctx))
    producer.produce(topic, key=b"2", value=serialize_v2(sent[1], value_ctx))
    assert producer.flush(30) == 0

    # the serializers fell back from associations to {topic}-value and registered v1 then v2 there
    assert sr.get_versions(f"{topic}-value") == [1, 2]
    v1_id = sr.get_version(f"{topic}-value", 1).schema_id

    consumer = Consumer({
        "bootstrap.servers": kafka_bootstrap, "group.id": f"registry-test-{unique_id}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    received: list[tuple[int, dict[str, Any]]] = []
    try:
        deadline = time.monotonic() + 60
        while len(received) < 2 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            value = message.value()
            assert value is not None
            schema_id, _ = framing.split(value)
            received.append((schema_id, deserialize(value, value_ctx)))
    finally:
        consumer.close()
    assert [r[1] for r in received] == [sent[0], sent[1]]
    assert received[0][0] == v1_id and received[1][0] != v1_id


async def test_hub_registry_client(registry: HubRegistry, unique_id: str) -> None:
    subject = f"hub-client-{unique_id}-value"
    async with RegistryClient(registry.url) as client:
        first = await client.register(subject, V1)
        assert await client.register(subject, json.loads(V1)) == first
        assert client.cached(first) is None
        fetched = await client.schema_by_id(first)
        assert fetched.id == first and json.loads(fetched.schema_str) == json.loads(V1)
        assert client.cached(first) is fetched
        assert framing.decode_body(framing.encode(first, fetched.parsed, {"id": 7, "name": "x"})[5:],
                                   fetched.parsed) == {"id": 7, "name": "x"}
        assert await client.subject_ids(subject) == frozenset({first})
        second = await client.register(subject, V2)
        assert await client.subject_ids(subject, refresh=True) == frozenset({first, second})
        assert await client.latest(subject) == (second, 2, (await client.schema_by_id(second)).schema_str)
        with pytest.raises(SchemaNotFound) as err:
            await client.schema_by_id(2**31 - 1)
        assert (err.value.status, err.value.error_code) == (404, 40403)
        with pytest.raises(SchemaNotFound) as err:
            await client.subject_ids(f"nobody-{unique_id}")
        assert err.value.error_code == 40401


# ---------------------------------------------------------------- evolution under each mode

EVOLUTION = [
    # (level, history registered first, candidate, accepted?)
    ("BACKWARD", [V1], V2, True),                                              # added optional field
    ("BACKWARD", [V1], record(ID, NAME, EMAIL_REQUIRED), False),               # added required field
    ("BACKWARD", [V1], record({"name": "id", "type": "string"}, NAME), False),  # type change
    ("BACKWARD", [V1], record(ID), True),                                      # removed field
    ("FORWARD", [V1], record(ID), False),                                      # removed field, no default
    ("FORWARD", [V1], record(ID, NAME, EMAIL_REQUIRED), True),
    ("FULL", [V1], V2, True),
    ("FULL", [V1], record(ID, NAME, EMAIL_REQUIRED), False),
    ("FULL", [V1], record({"name": "id", "type": "string"}, NAME), False),
    ("NONE", [V1], record({"name": "id", "type": "string"}, NAME), True),
    # a removed default: fine against the version that has the field, not against the one without it
    ("BACKWARD", [V1, record(ID, NAME, EMAIL_DEFAULTED)], record(ID, NAME, EMAIL_REQUIRED), True),
    ("BACKWARD_TRANSITIVE", [V1, record(ID, NAME, EMAIL_DEFAULTED)], record(ID, NAME, EMAIL_REQUIRED), False),
    ("FULL", [V1, record(ID, NAME, EMAIL_DEFAULTED)], record(ID, NAME, EMAIL_REQUIRED), True),
    ("FULL_TRANSITIVE", [V1, record(ID, NAME, EMAIL_DEFAULTED)], record(ID, NAME, EMAIL_REQUIRED), False),
    # removing a field: fine for a reader that has a default for it, not for the older one without
    ("FORWARD", [record(ID, NAME, EMAIL_REQUIRED), record(ID, NAME, EMAIL_DEFAULTED)], V1, True),
    ("FORWARD_TRANSITIVE", [record(ID, NAME, EMAIL_REQUIRED), record(ID, NAME, EMAIL_DEFAULTED)], V1, False),
]


@pytest.mark.parametrize(("level", "history", "candidate", "accepted"), EVOLUTION)
def test_evolution(registry: HubRegistry, sr: SchemaRegistryClient, unique_id: str, level: str,
                   history: list[str], candidate: str, accepted: bool) -> None:
    subject = f"evolve-{unique_id}-value"
    sr.set_compatibility(subject, "NONE")
    for text in history:
        sr.register_schema(subject, Schema(text, "AVRO"))
    sr.set_compatibility(subject, level)
    assert sr.test_compatibility(subject, Schema(candidate, "AVRO")) is accepted
    answer = httpx.post(f"{registry.url}/compatibility/subjects/{subject}/versions/latest",
                        params={"verbose": "TRUE"}, json={"schema": candidate})
    assert answer.status_code == 200 and answer.json()["is_compatible"] is accepted
    assert bool(answer.json()["messages"]) is not accepted
    if accepted:
        sr.register_schema(subject, Schema(candidate, "AVRO"))
        assert sr.get_versions(subject) == list(range(1, len(history) + 2))
    else:
        with pytest.raises(SchemaRegistryError) as err:
            sr.register_schema(subject, Schema(candidate, "AVRO"))
        assert (err.value.http_status_code, err.value.error_code) == (409, 409)
        assert "incompatible" in err.value.error_message and level in err.value.error_message
        assert sr.get_versions(subject) == list(range(1, len(history) + 1))


# ---------------------------------------------------------------- persistence and a second instance

def snapshot(url: str, subjects: list[str]) -> dict[str, Any]:
    """Everything a client could observe about some subjects, over HTTP."""
    out: dict[str, Any] = {"config": httpx.get(f"{url}/config").json(), "subjects": {}}
    for subject in subjects:
        versions = httpx.get(f"{url}/subjects/{subject}/versions", params={"deleted": "true"}).json()
        out["subjects"][subject] = {
            "live": httpx.get(f"{url}/subjects/{subject}/versions").json(),
            "versions": [
                httpx.get(f"{url}/subjects/{subject}/versions/{v}", params={"deleted": "true"}).json()
                for v in versions
            ],
            "config": httpx.get(f"{url}/config/{subject}", params={"defaultToGlobal": "true"}).json(),
        }
    return out


def test_state_survives_a_restart(hub_settings: Settings, unique_id: str) -> None:
    topic = f"_schemas-restart-{unique_id}"
    subjects = [f"a-{unique_id}", f"b-{unique_id}", f"c-{unique_id}"]
    first = HubRegistry(hub_settings, topic=topic).start()
    try:
        url = first.url
        assert httpx.get(f"{url}/config").json() == {"compatibilityLevel": "BACKWARD"}
        ids = [httpx.post(f"{url}/subjects/{subjects[0]}/versions", json={"schema": s}).json()["id"]
               for s in (V1, V2)]
        assert ids == [1, 2]
        assert httpx.post(f"{url}/subjects/{subjects[1]}/versions", json={"schema": V2}).json()["id"] == 2
        other = record({"name": "code", "type": "string"}, name="Other")
        assert httpx.post(f"{url}/subjects/{subjects[2]}/versions", json={"schema": other}).json()["id"] == 3
        assert httpx.put(f"{url}/config", json={"compatibility": "FULL"}).json() == {"compatibility": "FULL"}
        assert httpx.put(f"{url}/config/{subjects[1]}", json={"compatibility": "NONE"}).status_code == 200
        assert httpx.delete(f"{url}/subjects/{subjects[2]}").json() == [1]
        assert httpx.delete(f"{url}/subjects/{subjects[0]}/versions/1").json() == 1
        before = snapshot(url, subjects)
    finally:
        first.stop()

    second = HubRegistry(hub_settings, topic=topic).start()
    try:
        assert second.url != first.url
        assert snapshot(second.url, subjects) == before
        assert before["config"] == {"compatibilityLevel": "FULL"}
        assert before["subjects"][subjects[1]]["config"] == {"compatibilityLevel": "NONE"}
        listed = httpx.get(f"{second.url}/subjects").json()
        assert set(subjects[:2]) <= set(listed) and subjects[2] not in listed
        again = httpx.post(f"{second.url}/subjects/{subjects[1]}/versions", json={"schema": V2}).json()
        assert again == {"id": 2, "version": 1}
        fresh = record(ID, NAME, {"name": "age", "type": "int", "default": 0})
        assert httpx.post(f"{second.url}/subjects/{subjects[1]}/versions", json={"schema": fresh}).json() == {
            "id": 4, "version": 2}
        assert httpx.delete(f"{second.url}/config").json() == {"compatibilityLevel": "FULL"}
        assert httpx.get(f"{second.url}/config").json() == {"compatibilityLevel": "BACKWARD"}
    finally:
        second.stop()


def test_a_second_instance_serves_the_same_registry(hub_settings: Settings, unique_id: str) -> None:
    topic = f"_schemas-pair-{unique_id}"
    one = HubRegistry(hub_settings, topic=topic).start()
    two = HubRegistry(hub_settings, topic=topic).start()
    try:
        answer = httpx.post(f"{one.url}/subjects/s1/versions", json={"schema": V1}).json()
        wait_for(lambda: httpx.get(f"{two.url}/subjects/s1/versions/latest").status_code == 200)
        assert httpx.get(f"{two.url}/subjects/s1/versions/latest").json()["id"] == answer["id"]
        assert httpx.post(f"{two.url}/subjects/s2/versions", json={"schema": V1}).json()["id"] == answer["id"]
        assert httpx.get(f"{one.url}/schemas/ids/{answer['id']}/subjects").json() in (["s1"], ["s1", "s2"])

        # both instances register different schemas at once: ids stay unique and both agree on them
        schemas = [record({"name": f"f{i}", "type": "int"}, name=f"R{i}") for i in range(12)]

        def put(i: int) -> int:
            url = (one if i % 2 else two).url
            response = httpx.post(
                f"{url}/subjects/race-{i}/versions", json={"schema": schemas[i]}, timeout=30
            )
            assert response.status_code == 200, response.text
            return int(response.json()["id"])

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(put, range(len(schemas))))
        assert len(set(ids)) == len(schemas)
        for server in (one, two):
            for i, schema_id in enumerate(ids):
                wait_for(
                    lambda s=server, x=schema_id: httpx.get(f"{s.url}/schemas/ids/{x}").status_code == 200
                )
                served = httpx.get(f"{server.url}/schemas/ids/{schema_id}").json()["schema"]
                assert json.loads(served) == json.loads(schemas[i])
                assert httpx.get(f"{server.url}/subjects/race-{i}/versions/1").json()["id"] == schema_id
    finally:
        one.stop()
        two.stop()


# ---------------------------------------------------------------- bad input: always a 4xx that explains

def bad_input_cases(s: str) -> list[tuple[str, str, dict[str, str], bytes | None, int, int, str]]:
    """(method, path, headers, body, status, error_code, message fragment), for an existing subject ``s``."""
    j = {"Content-Type": MEDIA_TYPE}
    body = lambda value: json.dumps(value).encode()  # noqa: E731
    return [
        ("POST", f"/subjects/{s}/versions", j, b"{not json", 422, 42201, "not valid JSON"),
        ("POST", f"/subjects/{s}/versions", j, b"", 422, 42201, "empty"),
        ("POST", f"/subjects/{s}/versions", j, b"[1, 2]", 422, 42201, "JSON object"),
        ("POST", f"/subjects/{s}/versions", j, b"\xff\xfe\x00garbage", 422, 42201, "not valid JSON"),
        ("POST", f"/subjects/{s}/versions", j, b"{}", 422, 42201, "Empty schema"),
        ("POST", f"/subjects/{s}/versions", j, body({"schema": {"type": "string"}}), 422, 42201, "string"),
        ("POST", f"/subjects/{s}/versions", j, body({"schema": "{\"type\": \"record\"}"}), 422, 42201,
         "Invalid schema"),
        ("POST", f"/subjects/{s}/versions", j, body({"schema": "not avro"}), 422, 42201, "Invalid schema"),
        ("POST", f"/subjects/{s}/versions", j,
         body({"schema": record({"name": "n", "type": "int", "default": "x"})}), 422, 42201, "default"),
        ("POST", f"/subjects/{s}/versions", j, body({"schema": "[" * 100_000}), 422, 42201, "deeply"),
        ("POST", f"/subjects/{s}/versions", j, body({"schema": V1, "schemaType": "JSON"}), 422, 42201,
         "not supported"),
        ("POST", f"/subjects/{s}/versions", j, body({"schema": V1, "schemaType": 7}), 422, 42201,
         "schemaType"),
        ("POST", f"/subjects/{s}/versions", j,
         body({"schema": V1, "references": [{"name": "x", "subject": "y", "version": 1}]}), 422, 42201,
         "No schema reference found for subject \"y\" and version 1"),
        ("POST", f"/subjects/{s}/versions", {"Content-Type": "text/plain"}, body({"schema": V1}), 415, 415,
         "HTTP 415 Unsupported Media Type"),
        ("POST", f"/subjects/{s}/versions", {"Content-Type": "application/xml"}, b"<schema/>", 415, 415,
         "HTTP 415 Unsupported Media Type"),
        ("POST", f"/subjects/{s}/versions", j, body({"schema": record(ID, NAME, EMAIL_REQUIRED)}), 409, 409,
         "incompatible"),
        ("POST", f"/subjects/{s}/versions?normalize=sometimes", j, body({"schema": V1}), 422, 422,
         "normalize"),
        ("GET", f"/subjects/{s}-unknown/versions", {}, None, 404, 40401, "not found"),
        ("GET", f"/subjects/{s}/versions/99", {}, None, 404, 40402, "Version 99 not found."),
        ("GET", f"/subjects/{s}/versions/0", {}, None, 422, 42202, "not a valid version"),
        ("GET", f"/subjects/{s}/versions/latest-ish", {}, None, 422, 42202, "not a valid version"),
        ("GET", f"/subjects/{s}/versions/99999999999", {}, None, 422, 42202, "not a valid version"),
        ("GET", f"/subjects/{s}/versions/99/schema", {}, None, 404, 40402, "Version 99"),
        ("GET", "/schemas/ids/2147483000", {}, None, 404, 40403, "not found"),
        ("GET", "/schemas/ids/abc", {}, None, 404, 404, "HTTP 404 Not Found"),
        ("GET", "/schemas/ids/-1", {}, None, 404, 40403, "Schema -1 not found"),
        ("GET", "/schemas/ids/0/versions", {}, None, 404, 40403, "Schema 0 not found"),
        ("GET", "/subjects?deleted=perhaps", {}, None, 422, 422, "deleted"),
        ("GET", "/subjects?limit=many", {}, None, 422, 422, "limit"),
        ("GET", f"/config/{s}", {}, None, 404, 40408, "compatibility"),
        ("PUT", f"/config/{s}", j, body({"compatibility": "SIDEWAYS"}), 422, 42203, "Invalid compatibility"),
        ("PUT", f"/config/{s}", j, body({"compatibility": 5}), 422, 42203, "Invalid compatibility"),
        ("PUT", f"/config/{s}", j, body({"level": "FULL"}), 422, 42203, "Invalid compatibility"),
        ("PUT", f"/config/{s}", j, b"{\"compatibility\": ", 422, 42203, "not valid JSON"),
        ("PUT", f"/config/{s}", {"Content-Type": "text/html"}, body({"compatibility": "FULL"}), 415, 415,
         "HTTP 415 Unsupported Media Type"),
        ("DELETE", f"/config/{s}", {}, None, 404, 40408, "compatibility"),
        ("DELETE", f"/config/{s}-unknown", {}, None, 404, 40401, "not found"),
        ("DELETE", f"/subjects/{s}-unknown", {}, None, 404, 40401, "not found"),
        ("DELETE", f"/subjects/{s}?permanent=true", {}, None, 404, 40405, "not deleted first"),
        ("DELETE", f"/subjects/{s}?permanent=maybe", {}, None, 422, 422, "permanent"),
        ("DELETE", f"/subjects/{s}/versions/1?permanent=TRUE", {}, None, 404, 40407, "not deleted first"),
        ("DELETE", f"/subjects/{s}/versions/7", {}, None, 404, 40402, "Version 7"),
        ("POST", f"/subjects/{s}-unknown", j, body({"schema": V1}), 404, 40401, "not found"),
        ("POST", f"/subjects/{s}", j, body({"schema": record(ID, name="Else")}), 404, 40403, "not found"),
        ("POST", f"/subjects/{s}", j, body({"schema": "{"}), 422, 42201, "Invalid schema"),
        ("POST", f"/compatibility/subjects/{s}/versions/7", j, body({"schema": V2}), 404, 40402,
         "Version 7 not found."),
        ("POST", f"/compatibility/subjects/{s}-unknown/versions/1", j, body({"schema": V2}), 404, 40402,
         "Version 1 not found."),
        ("POST", f"/compatibility/subjects/{s}/versions/one", j, body({"schema": V2}), 422, 42202, "version"),
        ("POST", f"/compatibility/subjects/{s}/versions/latest", j, b"nope", 422, 42201, "not valid JSON"),
        ("PUT", "/mode", j, body({"mode": "IMPORT"}), 422, 42205, "READWRITE"),
        ("PUT", "/mode", j, body({"mode": "SOMETIMES"}), 422, 42204, "Invalid mode"),
        ("GET", "/associations/resources/-/some-topic?resourceType=topic&associationType=value", {}, None,
         404, 40401, "associations"),
        ("PATCH", "/subjects", j, b"{}", 405, 405, "Method Not Allowed"),
        ("GET", "/schemas/guids/0f1e", {}, None, 404, 40403, "Schema 0f1e not found"),
    ]


def test_bad_inputs_get_confluent_4xx_errors(registry: HubRegistry, unique_id: str) -> None:
    subject = f"bad-input-{unique_id}"
    created = httpx.post(f"{registry.url}/subjects/{subject}/versions", json={"schema": V1})
    assert created.status_code == 200
    failures = []
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        for method, path, headers, body, status, code, fragment in bad_input_cases(subject):
            response = client.request(method, path, headers=headers, content=body)
            problem = None
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            if response.status_code != status or answer.get("error_code") != code:
                problem = f"got {response.status_code} {response.text[:200]}"
            elif fragment.lower() not in str(answer.get("message", "")).lower():
                problem = f"message lacks {fragment!r}: {answer.get('message')}"
            elif not response.headers.get("content-type", "").startswith(MEDIA_TYPE):
                problem = f"content type {response.headers.get('content-type')}"
            if problem:
                failures.append(f"{method} {path[:80]} -> {problem}")
            assert response.status_code < 500
    assert not failures, "\n".join(failures)
    # nothing above changed the subject
    assert httpx.get(f"{registry.url}/subjects/{subject}/versions").json() == [1]


@pytest.mark.parametrize("content_type", [
    MEDIA_TYPE, "application/vnd.schemaregistry+json", "application/json", "application/json; charset=utf-8",
    "application/octet-stream", None,
])
def test_accepted_content_types_and_boolean_spellings(registry: HubRegistry, unique_id: str,
                                                      content_type: str | None) -> None:
    subject = f"ctype-{unique_id}"
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(f"{registry.url}/subjects/{subject}/versions?normalize=False", headers=headers,
                          content=json.dumps({"schema": V1}).encode())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(MEDIA_TYPE)
    for flag in ("False", "false", "FALSE", "True", "true"):
        assert httpx.get(f"{registry.url}/subjects", params={"deleted": flag}).status_code == 200
    lookup = httpx.post(f"{registry.url}/subjects/{subject}?normalize=False&deleted=False", headers=headers,
                        content=json.dumps({"schema": V1}).encode())
    assert lookup.status_code == 200 and lookup.json()["version"] == 1


def test_writes_go_through_authorize_write(hub_settings: Settings, unique_id: str) -> None:
    seen: list[tuple[str, str | None]] = []

    async def authorize(request: Request, subject: str | None) -> None:
        seen.append((request.method, subject))
        if request.headers.get("authorization") != "Bearer ok":
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    server = HubRegistry(hub_settings, authorize_write=authorize).start()
    subject = f"guarded-{unique_id}"
    try:
        denied = httpx.post(f"{server.url}/subjects/{subject}/versions", json={"schema": V1})
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert denied.json() == {"error_code": 401, "message": "a bearer token is required"}
        assert httpx.put(f"{server.url}/config", json={"compatibility": "NONE"}).status_code == 401
        ok = httpx.post(f"{server.url}/subjects/{subject}/versions", json={"schema": V1},
                        headers={"Authorization": "Bearer ok"})
        assert ok.status_code == 200
        assert httpx.get(f"{server.url}/subjects/{subject}/versions").json() == [1]   # reads stay open
        assert httpx.post(f"{server.url}/subjects/{subject}", json={"schema": V1}).status_code == 200
        assert httpx.delete(f"{server.url}/subjects/{subject}").status_code == 401
        assert seen == [("POST", subject), ("PUT", None), ("POST", subject), ("DELETE", subject)]
    finally:
        server.stop()
