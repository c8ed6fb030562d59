"""Confluent schema references (Avro): storage, resolution, compatibility, referencedby, delete protection.

State-level tests use the pure :class:`RegistryState`; route tests run the real router over a registry
whose writes apply to its state in memory (no Kafka), as ``test_registry_errors`` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.registry.state import (
    Reference,
    RegistryHTTPError,
    RegistryState,
    decode_record,
    encode_record,
    schema_key,
)
from hub.settings import Settings
from tests.unit.test_registry_errors import MemoryRegistry, registry_app

from .test_registry_state import Journal as StateJournal


def rec(name: str, *fields: dict[str, Any]) -> str:
    return json.dumps({"type": "record", "name": name, "namespace": "com.example", "fields": list(fields)})


COUNTRY = rec("Country", {"name": "code", "type": "string"})
ADDRESS = rec("Address", {"name": "city", "type": "string"}, {"name": "country", "type": "com.example.Country"})
USER = rec("User", {"name": "id", "type": "long"}, {"name": "home", "type": "com.example.Address"})
USER_V2 = rec(
    "User", {"name": "id", "type": "long"}, {"name": "home", "type": "com.example.Address"},
    {"name": "work", "type": ["null", "com.example.Address"], "default": None},
)
USER_BAD = rec(
    "User", {"name": "id", "type": "long"}, {"name": "home", "type": "com.example.Address"},
    {"name": "work", "type": "com.example.Address"},
)
COUNTRY_REF = Reference("com.example.Country", "country-value", 1)
ADDRESS_REF = Reference("com.example.Address", "address-value", 1)


class Journal(StateJournal):
    """The registry-state test journal, registering with references."""

    def register(self, subject: str, schema: str, refs: tuple[Reference, ...] = ()) -> int:
        result, records = self.state.register(subject, schema, references=refs)
        self.commit(records)
        return result.id


def nested() -> tuple[Journal, int, int, int]:
    j = Journal()
    country = j.register("country-value", COUNTRY)
    address = j.register("address-value", ADDRESS, (COUNTRY_REF,))
    user = j.register("user-value", USER, (ADDRESS_REF,))
    return j, country, address, user


def expect(status: int, code: int, text: str, call: Any, *args: Any, **kwargs: Any) -> RegistryHTTPError:
    with pytest.raises(RegistryHTTPError) as err:
        call(*args, **kwargs)
    assert (err.value.status, err.value.error_code) == (status, code), repr(err.value)
    assert text in err.value.message, err.value.message
    return err.value


def test_nested_references_resolve_and_are_stored() -> None:
    j, country, address, user = nested()
    assert len({country, address, user}) == 3
    entry = j.state.get_version("user-value", 1)
    assert entry.references == (ADDRESS_REF,)
    assert j.state.schema_by_id(user).references == (ADDRESS_REF,)
    resolved = [json.loads(text)["name"] for text in j.state.resolve((ADDRESS_REF,))]
    assert resolved == ["Country", "Address"]  # dependencies first
    assert entry.response()["references"] == [
        {"name": "com.example.Address", "subject": "address-value", "version": 1}
    ]
    assert "references" not in j.state.get_version("country-value", 1).response()
    # registering again is idempotent; the lookup needs the same references
    assert j.register("user-value", USER, (ADDRESS_REF,)) == user
    assert j.state.lookup("user-value", USER, references=(ADDRESS_REF,)).id == user


def test_same_text_with_other_references_is_another_schema() -> None:
    j, _, _, user = nested()
    j.commit(j.state.set_config(None, "NONE")[1])
    j.register("address-value", ADDRESS.replace('"city"', '"town"'), (COUNTRY_REF,))
    other = j.register("user-value", USER, (Reference("com.example.Address", "address-value", 2),))
    assert other != user
    assert j.state.get_version("user-value", 2).id == other


def test_a_schema_without_its_references_is_invalid() -> None:
    j, _, _, _ = nested()
    expect(422, 42201, "Invalid schema", j.state.register, "x-value", USER)


def test_missing_referenced_subject_or_version_is_42201() -> None:
    j, _, _, _ = nested()
    err = expect(422, 42201, "", j.state.register, "x-value", USER,
                 references=(Reference("com.example.Address", "nowhere-value", 1),))
    # the detail Confluent's schema provider gives
    assert err.message == 'Invalid schema: No schema reference found for subject "nowhere-value" and version 1'
    expect(422, 42201, 'No schema reference found for subject "address-value" and version 7', j.state.register,
           "x-value", USER, references=(Reference("com.example.Address", "address-value", 7),))
    expect(422, 42201, 'subject "nowhere-value" and version -1', j.state.register, "x-value", USER,
           references=(Reference("com.example.Address", "nowhere-value", -1),))


def test_a_reference_to_version_minus_one_is_pinned_to_the_latest() -> None:
    """Confluent resolves version -1 to the subject's latest live version and stores that number."""
    j, _, _, _ = nested()
    j.register("address-value", rec("Address", {"name": "city", "type": "string"},
                                    {"name": "country", "type": "com.example.Country"},
                                    {"name": "zip", "type": ["null", "string"], "default": None}), (COUNTRY_REF,))
    latest = Reference("com.example.Address", "address-value", -1)
    schema_id = j.register("x-value", USER, (latest,))
    entry = j.state.get_version("x-value", 1)
    assert entry.references == (Reference("com.example.Address", "address-value", 2),)
    assert j.state.lookup("x-value", USER, references=(latest,)).id == schema_id
    assert j.state.referenced_by("address-value", 2) == [schema_id]
    assert j.state.check_compatibility("x-value", USER, references=(latest,)).compatible


def test_a_reference_cycle_is_refused() -> None:
    j = Journal()
    a = {"subject": "a-value", "version": 1, "id": 1, "schema": rec("A", {"name": "b", "type": "com.example.B"}),
         "deleted": False, "references": [{"name": "com.example.B", "subject": "b-value", "version": 1}]}
    b = {"subject": "b-value", "version": 1, "id": 2, "schema": rec("B", {"name": "a", "type": "com.example.A"}),
         "deleted": False, "references": [{"name": "com.example.A", "subject": "a-value", "version": 1}]}
    j.commit([(schema_key("a-value", 1), a), (schema_key("b-value", 1), b)])
    assert j.state.get_version("b-value", 1).references
    expect(422, 42201, "cycle", j.state.register, "c-value", rec("C", {"name": "a", "type": "com.example.A"}),
           references=(Reference("com.example.A", "a-value", 1),))


def test_referenced_by_and_delete_protection() -> None:
    j, country, address, user = nested()
    assert j.state.referenced_by("country-value", 1) == [address]
    assert j.state.referenced_by("address-value", 1) == [user]
    assert j.state.referenced_by("user-value", 1) == []
    err = expect(422, 42206, "One or more references exist", j.state.delete_version, "address-value", 1)
    assert err.message == (
        "One or more references exist to the schema {magic=1,keytype=SCHEMA,subject=address-value,version=1}."
    )
    expect(422, 42206, "subject=country-value", j.state.delete_subject, "country-value")
    # as Confluent: soft-deleting the referrer frees the referenced version, which may then go
    j.commit(j.state.delete_version("user-value", 1)[1])
    assert j.state.referenced_by("address-value", 1) == []
    j.commit(j.state.delete_version("address-value", 1)[1])
    # the soft-deleted referrer still resolves (its referenced version, soft-deleted too, still exists)
    assert j.state.get_version("user-value", 1, deleted=True).references == (ADDRESS_REF,)
    j.commit(j.state.delete_subject("country-value")[1])  # its only referrer, address v1, is soft-deleted


def test_references_round_trip_through_schemas_records() -> None:
    j, _, _, user = nested()
    key, value = j.state.get_version("user-value", 1).record()
    assert value is not None
    assert value["references"] == [{"name": "com.example.Address", "subject": "address-value", "version": 1}]
    assert "references" not in (j.state.get_version("country-value", 1).record()[1] or {})
    encoded = [encode_record(k, v) for k, v in j.records]
    decoded = [decode_record(k, v) for k, v in encoded]
    replayed = RegistryState.replay([r for r in decoded if r is not None])
    assert replayed.subjects == j.state.subjects
    assert replayed.schema_by_id(user).references == (ADDRESS_REF,)
    assert replayed.ids_by_canonical == j.state.ids_by_canonical


def test_compatibility_uses_the_resolved_schema() -> None:
    j, _, _, _ = nested()
    assert j.state.check_compatibility("user-value", USER_V2, references=(ADDRESS_REF,)).compatible
    result = j.state.check_compatibility("user-value", USER_BAD, references=(ADDRESS_REF,))
    assert not result.compatible
    assert "work" in " ".join(result.messages)
    expect(409, 409, "incompatible", j.state.register, "user-value", USER_BAD, references=(ADDRESS_REF,))
    j.register("user-value", USER_V2, (ADDRESS_REF,))
    assert j.state.get_version("user-value", "latest").version == 2


# ---------------------------------------------------------------- over HTTP

@pytest.fixture()
def client() -> Iterator[TestClient]:
    with TestClient(registry_app(), raise_server_exceptions=False) as test_client:
        yield test_client


def refs(*items: Reference) -> list[dict[str, Any]]:
    return [r.__dict__ | {} for r in items]


def test_routes_serve_references(client: TestClient) -> None:
    def post(path: str, body: dict[str, Any]) -> Any:
        response = client.post(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    post("/subjects/country-value/versions", {"schema": COUNTRY})
    address = post("/subjects/address-value/versions", {"schema": ADDRESS, "references": refs(COUNTRY_REF)})
    user = post("/subjects/user-value/versions", {"schema": USER, "references": refs(ADDRESS_REF)})
    user_refs = refs(ADDRESS_REF)
    assert client.get(f"/schemas/ids/{user['id']}").json()["references"] == user_refs
    assert "references" not in client.get("/schemas/ids/1").json()
    assert client.get("/subjects/user-value/versions/1").json()["references"] == user_refs
    found = post("/subjects/user-value", {"schema": USER, "references": user_refs})
    assert (found["id"], found["references"]) == (user["id"], user_refs)
    assert client.post("/subjects/user-value", json={"schema": USER}).status_code == 422
    assert client.get("/subjects/address-value/versions/1/referencedby").json() == [user["id"]]
    assert client.get("/subjects/country-value/versions/latest/referencedby").json() == [address["id"]]
    assert client.get(f"/schemas/ids/{user['id']}/versions").json() == [{"subject": "user-value", "version": 1}]
    compat = client.post("/compatibility/subjects/user-value/versions/latest",
                         json={"schema": USER_BAD, "references": user_refs})
    assert compat.json() == {"is_compatible": False}
    deleted = client.delete("/subjects/address-value/versions/1")
    assert deleted.status_code == 422
    assert deleted.json()["error_code"] == 42206
    missing = client.post("/subjects/x-value/versions", json={
        "schema": USER, "references": [{"name": "com.example.Address", "subject": "nope", "version": 1}],
    })
    assert (missing.status_code, missing.json()["error_code"]) == (422, 42201)
    assert "No schema reference found" in missing.json()["message"]
    bad = client.post("/subjects/x-value/versions", json={"schema": USER, "references": [{"name": "x"}]})
    assert (bad.status_code, bad.json()["error_code"]) == (422, 42201)


# ---------------------------------------------------------------- the hub's own client and decoding

def test_client_resolves_references_and_decodes_framed_records() -> None:
    import asyncio

    import httpx

    from hub.registry import framing
    from hub.registry.client import RegistryClient

    service = MemoryRegistry(Settings(bootstrap="127.0.0.1:1"))
    app = registry_app(service)
    seen: list[str] = []
    asgi = httpx.ASGITransport(app=app)

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        response = await asgi.handle_async_request(request)
        await response.aread()
        return httpx.Response(response.status_code, headers=response.headers, content=response.content)

    async def scenario() -> None:
        j = Journal()
        j.state = service.state
        j.register("country-value", COUNTRY)
        j.register("address-value", ADDRESS, (COUNTRY_REF,))
        user_id = j.register("user-value", USER, (ADDRESS_REF,))
        async with RegistryClient("http://registry", transport=httpx.MockTransport(handler)) as client:
            assert client.cached(user_id) is None
            schema = await client.schema_by_id(user_id)
            assert schema.references == (("com.example.Address", "address-value", 1),)
            assert client.cached(user_id) is schema
            record = {"id": 7, "home": {"city": "Oslo", "country": {"code": "NO"}}}
            framed = framing.encode(user_id, schema.parsed, record)
            sid, body = framing.split(framed)
            assert sid == user_id
            assert framing.decode_body(body, client.cached(sid).parsed) == record  # type: ignore[union-attr]
            assert "GET /subjects/address-value/versions/1" in seen
            assert "GET /subjects/country-value/versions/1" in seen
            count = len(seen)
            assert (await client.schema_by_id(user_id)) is schema and len(seen) == count  # cached
            document = await client.resolved(user_id)  # self-contained, as masking derives schemas from it
            assert document["fields"][1]["type"]["name"] == "com.example.Address"
            assert framing.parse_schema(document)
            latest = await client.latest("user-value")
            assert latest[0] == user_id

    asyncio.run(scenario())


def test_an_anonymous_registration_is_unchanged_only_with_the_same_references() -> None:
    import asyncio

    from starlette.requests import Request

    from hub.api.auth import _unchanged_registration

    service = MemoryRegistry(Settings(bootstrap="127.0.0.1:1"))
    j = Journal()
    j.state = service.state
    j.register("country-value", COUNTRY)
    j.register("plain-value", COUNTRY)  # no references

    def request(body: dict[str, Any]) -> Request:
        raw = json.dumps(body).encode()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": raw, "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/subjects/plain-value/versions", "headers": [],
                 "query_string": b""}
        return Request(scope, receive)

    async def check(body: dict[str, Any]) -> bool:
        return await _unchanged_registration(request(body), service, "plain-value")

    assert asyncio.run(check({"schema": COUNTRY}))
    with_refs = {"schema": COUNTRY, "references": refs(COUNTRY_REF)}
    assert not asyncio.run(check(with_refs))  # another schema: a real write, which needs a token


def test_inline_references_makes_a_self_contained_schema() -> None:
    import fastavro

    from hub.registry.framing import inline_references

    j, _, _, _ = nested()
    user_v2 = rec(
        "User", {"name": "id", "type": "long"}, {"name": "home", "type": "com.example.Address"},
        {"name": "work", "type": ["null", "Address"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "com.example.Country"}},
    )
    document = inline_references(user_v2, j.state.resolve((ADDRESS_REF,)))
    fastavro.parse_schema(document)  # parses alone: every referenced type written in once
    home = document["fields"][1]["type"]
    assert home["name"] == "com.example.Address" and home["fields"][1]["type"]["name"] == "com.example.Country"
    assert document["fields"][2]["type"] == ["null", "Address"]  # by name after its first use
    assert document["fields"][3]["type"]["items"] == "com.example.Country"
    assert inline_references(COUNTRY, []) == json.loads(COUNTRY)
    resolved = j.state._parse_resolved(user_v2, (ADDRESS_REF,))
    assert compatibility_canonical(document) == resolved.canonical


def compatibility_canonical(document: Any) -> str:
    from hub.registry import compatibility

    return compatibility.parse(json.dumps(document)).canonical
