"""The /v1 control plane over HTTP, without a broker: the real routes, auth and error handlers on an in-memory
control service. Every bad input gets the right 4xx with a JSON message, and a battery of junk requests sent to
every route never produces a 500."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from hub.api.app import create_api
from hub.control.codec import key_of
from hub.control.operations import SchemaInfo
from hub.control.service import ControlService
from hub.registry.service import RegistryService
from hub.settings import Settings

OPERATOR_TOKEN = "operator-secret-token"
FIELDS = frozenset({"record_id", "resident_id", "name", "district", "dose_number"})


class FakeSchemas:
    """Subjects whose names end in -value exist with FIELDS, except those containing 'missing'."""

    def parsed(self, schema_id: int) -> None:
        return None

    async def load(self, schema_ids: object) -> None:
        return None

    async def register(self, subject: str, schema: str) -> int:
        return 1

    async def describe(self, subject: str) -> SchemaInfo | None:
        if "missing" in subject or not subject.endswith("-value"):
            return None
        return SchemaInfo(subject, 1, 1, FIELDS)


class MemoryControl(ControlService):
    """The real ControlService operations, applied to its state directly instead of through Kafka."""

    @property
    def ready(self) -> bool:
        return True

    async def run(self, operation):  # noqa: ANN001, ANN201
        result, changes = operation(self.state)
        for topic, entity in changes:
            self.state.apply(topic, key_of(topic, entity), entity)
        return result

    async def create_node_topics(self, node_id: str) -> None:
        return None


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(bootstrap="127.0.0.1:1")
    control = MemoryControl(settings, FakeSchemas())
    app = create_api(RegistryService(settings), CollectorRegistry(), control=control, operator_token=OPERATOR_TOKEN)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
        op = test_client.post
        assert op("/v1/scenarios", json={"id": "follow-up", "legal_basis": "a law"}).status_code == 201
        for node_id in ("municipal.health", "municipal.market", "district.310115"):
            response = op("/v1/nodes", json={"id": node_id, "title": node_id, "clearance": "L3"})
            assert response.status_code == 201, response.text
            test_client.__dict__.setdefault("tokens", {})[node_id] = response.json()["token"]
        yield test_client


def as_node(client: TestClient, node_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.tokens[node_id]}"}  # type: ignore[attr-defined]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def entry(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "municipal.health.vaccination", "title": "Vaccination", "provider": "municipal.health",
        "field_levels": {"record_id": "L1", "resident_id": "L4", "district": "L1"}, "primary_key": ["record_id"],
        "locality_field": "district", "quality_rules": [{"field": "record_id", "rule": "required"}],
    }
    data.update(changes)
    return data


def message_of(response: Any) -> str:
    body = response.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    return body["message"]


def test_catalogue_lifecycle_over_http(client: TestClient) -> None:
    health = as_node(client, "municipal.health")
    created = client.post("/v1/resources", json=entry(), headers=health)
    assert created.status_code == 201 and created.json()["version"] == 1 and created.json()["tier"] == "municipal"
    same = client.put("/v1/resources/municipal.health.vaccination", json=entry(), headers=health)
    assert same.status_code == 200 and same.json()["changed"] is False and same.json()["version"] == 1
    patched = client.patch("/v1/resources/municipal.health.vaccination", json={"sharing": "authorised"},
                           headers=health)
    assert patched.json()["changed"] is True and patched.json()["version"] == 2
    listed = client.get("/v1/resources", params={"sharing": "authorised", "q": "vacc"}, headers=health).json()
    assert [r["id"] for r in listed] == ["municipal.health.vaccination"]
    assert client.get("/v1/resources", params={"tier": "district"}).json() == []
    retired = client.delete("/v1/resources/municipal.health.vaccination", headers=health)
    assert retired.json()["retired"] is True and retired.json()["version"] == 3
    assert client.get("/v1/resources").json() == []
    assert len(client.get("/v1/resources", params={"retired": True}).json()) == 1
    versions = client.get("/v1/resources/municipal.health.vaccination/versions").json()
    assert [(v["version"], v["sharing"], v["retired"]) for v in versions] == [
        (1, "unconditional", False), (2, "authorised", False), (3, "authorised", True)]
    assert client.get("/v1/resources/municipal.health.vaccination/versions/1").json()["version"] == 1
    stats = client.get("/v1/stats", headers=as_node(client, "district.310115")).json()
    assert stats["catalogue"]["resources"] == 0 and stats["catalogue"]["retired"] == 1
    assert "exchange" in stats


def test_import_reports_and_is_idempotent(client: TestClient) -> None:
    body = {"resources": [entry(), entry(id="municipal.health.bad", subject="municipal.health.missing-value"),
                          entry(id="municipal.market.licence", provider="municipal.market")]}
    health = as_node(client, "municipal.health")
    first = client.post("/v1/resources/import", json=body, headers=health).json()
    assert (first["created"], first["rejected"]) == (1, 2)
    reasons = {e["id"]: e["message"] for e in first["entries"] if e["status"] == "rejected"}
    assert "no live version in the registry" in reasons["municipal.health.bad"]
    assert "municipal.health cannot catalogue resources of municipal.market" in reasons["municipal.market.licence"]
    again = client.post("/v1/resources/import", json=body, headers=health).json()
    assert (again["created"], again["updated"], again["unchanged"], again["rejected"]) == (0, 0, 1, 2)


def test_nodes_tokens_and_acting_as_oneself(client: TestClient) -> None:
    health = as_node(client, "municipal.health")
    assert client.get("/v1/nodes", headers=health).status_code == 200
    node = client.get("/v1/nodes/municipal.health", headers=health).json()
    assert node["has_token"] and "token" not in node and "token_hash" not in node
    assert client.post("/v1/nodes", json={"id": "region.js"}, headers=health).status_code == 403
    rotated = client.post("/v1/nodes/municipal.health/token", headers=health)
    assert rotated.status_code == 201
    assert client.get("/v1/nodes", headers=health).status_code == 401  # the old token stopped working
    fresh = {"Authorization": f"Bearer {rotated.json()['token']}"}
    assert client.get("/v1/nodes", headers=fresh).status_code == 200
    assert client.get("/v1/nodes", headers=basic("municipal.health", rotated.json()["token"])).status_code == 200
    assert client.get("/v1/nodes", headers=basic("hub", OPERATOR_TOKEN)).status_code == 200
    assert client.post("/v1/nodes/municipal.market/token", headers=fresh).status_code == 403
    assert client.delete("/v1/nodes/municipal.market").status_code == 200
    market = as_node(client, "municipal.market")
    assert client.get("/v1/nodes", headers=market).status_code == 401  # removed
    assert client.get("/v1/nodes").json()[0]["id"] == "district.310115"
    assert [n["id"] for n in client.get("/v1/nodes", params={"removed": True, "tier": "municipal"}).json()] == [
        "municipal.health", "municipal.market"]


# (method, path, who, body or raw (content, content type), status, code, message fragment)
BAD_INPUTS: list[tuple[str, str, str | None, Any, int, str, str]] = [
    ("GET", "/v1/resources", None, None, 401, "missing_credentials", "needs a token"),
    ("GET", "/v1/resources", "bearer-junk", None, 401, "invalid_credentials", "not valid"),
    ("GET", "/v1/resources", "basic-wrong-user", None, 401, "invalid_credentials", "does not belong to"),
    ("GET", "/v1/resources", "basic-junk", None, 401, "invalid_credentials", "base64"),
    ("GET", "/v1/resources", "digest", None, 401, "invalid_credentials", "Bearer <token>"),
    ("POST", "/v1/resources", "municipal.market", entry(), 403, "not_authorised",
     "municipal.market cannot catalogue resources of municipal.health"),
    ("POST", "/v1/resources", "municipal.health", entry(field_levels={"phone": "L3"}), 422, "invalid_entry",
     "field_levels: phone"),
    ("POST", "/v1/resources", "municipal.health", entry(primary_key=["pk"]), 422, "invalid_entry", "primary_key: pk"),
    ("POST", "/v1/resources", "municipal.health", entry(locality_field="where"), 422, "invalid_entry",
     "locality_field: where"),
    ("POST", "/v1/resources", "municipal.health", entry(quality_rules=[{"field": "x", "rule": "required"}]), 422,
     "invalid_entry", "quality_rules: x"),
    ("POST", "/v1/resources", "municipal.health", entry(sharing="none"), 422, "legal_basis_required",
     "needs a legal_basis"),
    ("POST", "/v1/resources", "municipal.health", entry(subject="municipal.health.missing-value"), 422,
     "unknown_subject", "register the schema first"),
    ("POST", "/v1/resources", "municipal.health", entry(sharing="sometimes"), 422, "invalid_request",
     "body sharing: Input should be 'unconditional', 'authorised' or 'none'"),
    ("POST", "/v1/resources", "municipal.health", entry(colour="blue"), 422, "invalid_request",
     "body colour: unknown field"),
    ("POST", "/v1/resources", "municipal.health", {"title": "no id"}, 422, "invalid_request",
     "body id: required field is missing"),
    ("POST", "/v1/resources", "municipal.health", [entry()], 422, "invalid_request", "must be a JSON object"),
    ("POST", "/v1/resources", "municipal.health", ("{\"id\": ", "application/json"), 400, "invalid_json",
     "not valid JSON"),
    ("POST", "/v1/resources", "municipal.health", (json.dumps(entry()), "text/plain"), 415,
     "unsupported_media_type", "must be JSON"),
    ("POST", "/v1/resources", "municipal.health", (json.dumps(entry()), ""), 415, "unsupported_media_type",
     "without a Content-Type"),
    ("POST", "/v1/resources", "municipal.health", (b"\xff\xfe{}", "application/json"), 400, "invalid_json", ""),
    ("POST", "/v1/resources", "municipal.health", (b'{"id": "\xff"}', "application/json"), 400, "bad_request",
     "UTF-8"),
    ("POST", "/v1/resources", "municipal.health", ("", "application/json"), 422, "invalid_request",
     "request body is missing"),
    ("GET", "/v1/resources/municipal.health.nothing", "municipal.health", None, 404, "unknown_resource",
     "not catalogued"),
    ("GET", "/v1/resources/municipal.health.nothing/versions/x", "municipal.health", None, 422, "invalid_request",
     "path version"),
    ("GET", "/v1/resources", "municipal.health", ("tier", "galaxy"), 422, "invalid_request", "query tier"),
    ("GET", "/v1/resources", "municipal.health", ("limit", "0"), 422, "invalid_request", "query limit"),
    ("PUT", "/v1/resources/municipal.health.nothing", "municipal.health", entry(), 404, "unknown_resource", ""),
    ("PATCH", "/v1/resources/municipal.health.nothing", "municipal.health", {"title": "x"}, 404,
     "unknown_resource", ""),
    ("DELETE", "/v1/resources/municipal.health.nothing", "municipal.health", None, 404, "unknown_resource", ""),
    ("POST", "/v1/resources/import", "municipal.health", {"entries": []}, 422, "invalid_request",
     "body resources: required field is missing"),
    ("POST", "/v1/nodes", "municipal.health", {"id": "region.js"}, 403, "operator_only", "only the hub operator"),
    ("POST", "/v1/nodes", "hub", {"id": "district.310102"}, 422, "invalid_node_id", "16 district codes"),
    ("POST", "/v1/nodes", "hub", {"id": "Region JS"}, 422, "invalid_node_id", "invalid node id"),
    ("POST", "/v1/nodes", "hub", {"id": "municipal.health"}, 409, "node_exists", "already registered"),
    ("POST", "/v1/nodes", "hub", {"id": "region.js", "clearance": "L9"}, 422, "invalid_request", "body clearance"),
    ("GET", "/v1/nodes/region.none", "hub", None, 404, "unknown_node", "no registered node"),
    ("POST", "/v1/nodes/hub/token", "hub", None, 422, "operator_token", "operator_token_file"),
    ("POST", "/v1/scenarios", "municipal.health", {"id": "x", "legal_basis": "y"}, 403, "operator_only", ""),
    ("POST", "/v1/scenarios", "hub", {"id": "follow-up", "legal_basis": "y"}, 409, "scenario_exists", ""),
    ("POST", "/v1/scenarios", "hub", {"id": "No Slug", "legal_basis": "y"}, 422, "invalid_request", "body id"),
    ("POST", "/v1/scenarios", "hub", {"id": "x"}, 422, "invalid_request", "body legal_basis: required"),
    ("GET", "/v1/scenarios/none", "hub", None, 404, "unknown_scenario", ""),
    ("GET", "/v1/nowhere", "hub", None, 404, "not_found", "no such endpoint"),
    ("DELETE", "/v1/stats", "hub", None, 405, "method_not_allowed", "not allowed"),
    ("POST", "/v1/resources/import", "hub", (b"{" + b" " * (33 * 1024 * 1024) + b"}", "application/json"), 413,
     "too_large", "larger than"),
]


def _send(client: TestClient, method: str, path: str, who: str | None, body: Any) -> Any:
    headers: dict[str, str] = {}
    if who is None:
        headers["Authorization"] = ""
    elif who == "bearer-junk":
        headers["Authorization"] = "Bearer abcdefabcdef.not-the-secret"
    elif who == "basic-wrong-user":
        headers.update(basic("municipal.market", client.tokens["municipal.health"]))  # type: ignore[attr-defined]
    elif who == "basic-junk":
        headers["Authorization"] = "Basic %%%"
    elif who == "digest":
        headers["Authorization"] = "Digest username=x"
    elif who == "hub":
        headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
    else:
        headers.update(as_node(client, who))
    kwargs: dict[str, Any] = {"headers": headers}
    if isinstance(body, tuple) and method == "GET":
        kwargs["params"] = {body[0]: body[1]}
    elif isinstance(body, tuple):
        content, content_type = body
        kwargs["content"] = content
        if content_type:
            headers["Content-Type"] = content_type
    elif body is not None:
        kwargs["json"] = body
    request = client.build_request(method, path, **kwargs)
    if who is None:
        request.headers.pop("Authorization", None)
    if isinstance(body, tuple) and method != "GET" and not body[1]:
        request.headers.pop("Content-Type", None)
    return client.send(request)


@pytest.mark.parametrize(("method", "path", "who", "body", "status", "code", "fragment"), BAD_INPUTS,
                         ids=[f"{i}-{c[0]}-{c[5]}" for i, c in enumerate(BAD_INPUTS)])
def test_bad_input_gets_the_right_4xx_and_says_why(
    client: TestClient, method: str, path: str, who: str | None, body: Any, status: int, code: str, fragment: str,
) -> None:
    response = _send(client, method, path, who, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["code"] == code, response.text
    assert fragment in message_of(response)
    if status == 401:
        assert "Bearer" in response.headers["www-authenticate"]


JUNK_BODIES: list[tuple[bytes, str | None]] = [
    (b"", None), (b"null", "application/json"), (b"[]", "application/json"), (b"123", "application/json"),
    (b'"text"', "application/json"), (b"{", "application/json"), (b"\x00\xff", "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"), (b'{"id": {"$gt": ""}}', "application/json"),
    (json.dumps({"id": "x" * 100_000}).encode(), "application/json"),
    (json.dumps({"id": "municipal.health.\ud800"}).encode(), "application/json"),
    (json.dumps({"resources": [None, 1, [], {"id": 5}]}).encode(), "application/json"),
    (json.dumps({"id": "municipal.health.a", "provider": "municipal.health", "field_levels": {"a": "L1"},
                 "quality_rules": [{"field": "a", "rule": "range", "args": {"min": [1]}}]}).encode(),
     "application/json"),
    (b"id=1", "application/x-www-form-urlencoded"), (b"<xml/>", "application/xml"),
]
JUNK_IDS = ["x", "municipal.health.vaccination", "%2e%2e", "a" * 300, "hub", "district.310115", "%00", "@1"]


def test_no_request_produces_a_500(client: TestClient) -> None:
    """Every /v1 route, every method it has, junk ids and junk bodies, as the operator, a node and nobody."""
    health = as_node(client, "municipal.health")
    assert client.post("/v1/resources", json=entry(), headers=health).status_code == 201
    paths = client.get("/v1/openapi.json").json()["paths"]
    routes = [(path, method.upper()) for path, methods in paths.items() if path.startswith("/v1")
              for method in methods]
    assert len(routes) >= 15
    whos = [{"Authorization": f"Bearer {OPERATOR_TOKEN}"}, health, {"Authorization": "Bearer x"}]
    sent = 0
    for template, method in routes:
        concrete = sorted({template.replace("{node_id}", i).replace("{resource_id}", i)
                           .replace("{scenario_id}", i).replace("{version}", v)
                           for i, v in zip(JUNK_IDS, itertools.cycle(("1", "x", "-1", "9" * 30)), strict=False)})
        who = itertools.cycle(whos)
        for path, (content, content_type) in itertools.product(concrete, JUNK_BODIES):
            request_headers = dict(next(who))
            if content_type:
                request_headers["Content-Type"] = content_type
            response = client.request(method, path, content=content, headers=request_headers,
                                      params={"tier": "x", "limit": "-5", "q": "\x00"} if sent % 7 == 0 else None)
            sent += 1
            assert response.status_code < 500, (method, path, content[:80], response.text[:300])
            assert response.headers["content-type"].startswith("application/json"), (method, path)
            if response.status_code >= 400:
                message_of(response)
    assert sent > 1500


def test_registry_writes_need_a_token_and_bound_subjects_their_provider(client: TestClient) -> None:
    assert client.post("/v1/resources", json=entry(), headers=as_node(client, "municipal.health")).status_code == 201
    schema = {"schema": json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]})}
    subject = "/subjects/municipal.health.vaccination-value/versions"
    anonymous = _send(client, "POST", subject, None, schema)
    assert anonymous.status_code == 401 and "need a token" in anonymous.json()["message"]
    assert anonymous.json()["error_code"] == 401  # Confluent's error body on registry paths
    other = client.post(subject, json=schema, headers=as_node(client, "municipal.market"))
    assert other.status_code == 403 and "only its provider and the hub operator" in other.json()["message"]
    market = as_node(client, "municipal.market")
    own_hub = client.post("/subjects/hub.audit-value/versions", json=schema, headers=market)
    assert own_hub.status_code == 403 and "hub's own schemas" in own_hub.json()["message"]
    config = client.put("/config", json={"compatibility": "NONE"}, headers=as_node(client, "municipal.health"))
    assert config.status_code == 403 and "global" in config.json()["message"]
    # authorised writes reach the registry (not started here, hence 503): authorisation let them through
    for headers in (as_node(client, "municipal.health"), {"Authorization": f"Bearer {OPERATOR_TOKEN}"}):
        assert client.post(subject, json=schema, headers=headers).status_code == 503
    assert client.post("/subjects/municipal.market.free-value/versions", json=schema,
                       headers=as_node(client, "municipal.market")).status_code == 503
    # reads stay open
    assert client.get("/subjects", headers={"Authorization": ""}).status_code == 200


async def test_seeding_writes_once_and_survives_a_concurrent_seed() -> None:
    """apply_seed against the in-memory service: a lost race (409) is retried, a second seed writes nothing."""
    from hub.control.operations import schema_fields
    from hub.control.seed import apply_seed, load_seed

    seed = load_seed(Settings().seed_config)
    files = {r.subject: r.schema_path() for r in seed.config.resources}

    class SeedSchemas(FakeSchemas):
        async def describe(self, subject: str) -> SchemaInfo | None:
            path = files.get(subject)
            return SchemaInfo(subject, 1, 1, schema_fields(json.loads(path.read_text()))) if path else None

    class RacingControl(MemoryControl):
        lost = False

        async def run(self, operation):  # noqa: ANN001, ANN201
            if not self.lost:
                self.lost = True
                from hub.control.errors import Conflict

                raise Conflict("concurrent_change", "another writer")
            return await super().run(operation)

    control = RacingControl(Settings(bootstrap="127.0.0.1:1"), SeedSchemas())
    first = await apply_seed(control, seed)
    assert control.lost and first.skipped == []
    assert sum(first.written.values()) == (len(seed.config.nodes) + len(seed.scenarios) + len(seed.config.resources)
                                           + len(seed.config.subscriptions))
    second = await apply_seed(control, seed)
    assert second.written == {} and second.skipped == []
