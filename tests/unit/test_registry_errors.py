"""Every error the registry answers, with Confluent Schema Registry's exact status, error_code and message.

Clients and external test suites match on these texts, so they are asserted whole. The texts come from
Confluent's ``Errors.java`` and ``Rest*Exception`` classes (``core/.../rest/exceptions``) and its REST
resources; the few errors Confluent has no counterpart for (modes, associations) are the hub's own.
The app is the real router over a registry whose writes apply to its state in memory (no Kafka).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hub.registry.routes import MEDIA_TYPE, install_registry_error_handlers, registry_router
from hub.registry.service import RegistryService
from hub.registry.state import RegistryState
from hub.settings import Settings

from .test_registry_state import OTHER, V1, V2, V2_REQUIRED

LEVELS = (
    "Invalid compatibility level. Valid values are none, backward, forward, full, "
    "backward_transitive, forward_transitive, and full_transitive"
)
EMPTY = "Empty schema"
NO_ROUTE = "HTTP 404 Not Found"
BASE = json.dumps({"type": "record", "name": "Base", "namespace": "ex", "fields": [{"name": "id", "type": "long"}]})
USES_BASE = json.dumps(
    {"type": "record", "name": "User", "namespace": "ex", "fields": [{"name": "b", "type": "ex.Base"}]}
)
BASE_REF = {"name": "ex.Base", "subject": "base", "version": 1}


class MemoryRegistry(RegistryService):
    """The real RegistryService operations, applied to its state directly instead of through Kafka."""

    @property
    def state(self) -> RegistryState:
        return self._state

    async def _write(self, operation, verify=None):  # noqa: ANN001, ANN202
        result, records = operation(self._state)
        self._state.commit(records)
        return result


def registry_app(service: RegistryService | None = None) -> FastAPI:
    """The registry's real router and error handlers over an in-memory registry (no Kafka)."""
    app = FastAPI()
    install_registry_error_handlers(app)
    app.include_router(registry_router(service or MemoryRegistry(Settings(bootstrap="127.0.0.1:1"))))
    return app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(registry_app(), raise_server_exceptions=False) as test_client:
        def ok(method: str, path: str, body: Any = None) -> None:
            response = test_client.request(method, path, json=body)
            assert response.status_code == 200, response.text

        ok("POST", "/subjects/s/versions", {"schema": V1})         # s: versions 1, 2
        ok("POST", "/subjects/s/versions", {"schema": V2})
        ok("POST", "/subjects/gone/versions", {"schema": V1})      # gone: soft-deleted subject
        ok("DELETE", "/subjects/gone")
        ok("POST", "/subjects/half/versions", {"schema": V1})      # half: version 1 soft-deleted, 2 live
        ok("POST", "/subjects/half/versions", {"schema": V2})
        ok("DELETE", "/subjects/half/versions/1")
        ok("POST", "/subjects/base/versions", {"schema": BASE})      # base v1, referenced by user v1
        ok("POST", "/subjects/user/versions", {"schema": USES_BASE, "references": [BASE_REF]})
        yield test_client


J = {"Content-Type": MEDIA_TYPE}

# (method, path, JSON body or raw bytes, status, error_code, exact message)
CASES: list[tuple[str, str, Any, int, int, str]] = [
    # 40401 subject not found
    ("GET", "/subjects/nope/versions", None, 404, 40401, "Subject 'nope' not found."),
    ("GET", "/subjects/nope/versions/1", None, 404, 40401, "Subject 'nope' not found."),
    ("GET", "/subjects/gone/versions/latest", None, 404, 40401, "Subject 'gone' not found."),
    ("DELETE", "/subjects/nope", None, 404, 40401, "Subject 'nope' not found."),
    ("DELETE", "/config/nope", None, 404, 40401, "Subject 'nope' not found."),
    ("POST", "/subjects/nope", {"schema": V1}, 404, 40401, "Subject 'nope' not found."),
    # 40402 version not found
    ("GET", "/subjects/s/versions/99", None, 404, 40402, "Version 99 not found."),
    ("GET", "/subjects/s/versions/99/schema", None, 404, 40402, "Version 99 not found."),
    ("GET", "/subjects/half/versions/1", None, 404, 40402, "Version 1 not found."),
    ("DELETE", "/subjects/s/versions/7", None, 404, 40402, "Version 7 not found."),
    ("POST", "/compatibility/subjects/s/versions/7", {"schema": V2}, 404, 40402, "Version 7 not found."),
    ("POST", "/compatibility/subjects/half/versions/1", {"schema": V2}, 404, 40402, "Version 1 not found."),
    ("POST", "/compatibility/subjects/nope/versions/1", {"schema": V2}, 404, 40402, "Version 1 not found."),
    # 40403 schema not found; a path id that is no Java int is no route at all
    ("GET", "/schemas/ids/2147483000", None, 404, 40403, "Schema 2147483000 not found"),
    ("GET", "/schemas/ids/-1", None, 404, 40403, "Schema -1 not found"),
    ("GET", "/schemas/ids/0/versions", None, 404, 40403, "Schema 0 not found"),
    ("GET", "/schemas/ids/77/subjects", None, 404, 40403, "Schema 77 not found"),
    ("GET", "/schemas/ids/77/schema", None, 404, 40403, "Schema 77 not found"),
    ("GET", "/schemas/guids/0f1e", None, 404, 40403, "Schema 0f1e not found"),
    ("POST", "/subjects/s", {"schema": OTHER}, 404, 40403, "Schema not found"),
    ("GET", "/subjects/s/metadata?key=owner&value=x", None, 404, 40403, "Schema not found"),
    ("GET", "/schemas/ids/abc", None, 404, 404, NO_ROUTE),
    ("GET", "/schemas/ids/1.5/versions", None, 404, 404, NO_ROUTE),
    ("GET", "/schemas/ids/99999999999", None, 404, 404, NO_ROUTE),
    ("GET", "/schemas/ids/1/nowhere", None, 404, 404, NO_ROUTE),
    # 40404..40408 soft deletion and subject config
    ("DELETE", "/subjects/gone", None, 404, 40404,
     "Subject 'gone' was soft deleted.Set permanent=true to delete permanently"),
    ("DELETE", "/subjects/s?permanent=true", None, 404, 40405,
     "Subject 's' was not deleted first before being permanently deleted"),
    ("DELETE", "/subjects/half/versions/1", None, 404, 40406,
     "Subject 'half' Version 1 was soft deleted.Set permanent=true to delete permanently"),
    ("DELETE", "/subjects/s/versions/1?permanent=true", None, 404, 40407,
     "Subject 's' Version 1 was not deleted first before being permanently deleted"),
    ("GET", "/config/s", None, 404, 40408, "Subject 's' does not have subject-level compatibility configured"),
    ("DELETE", "/config/s", None, 404, 40408,
     "Subject 's' does not have subject-level compatibility configured"),
    # 405 from routing
    ("PATCH", "/subjects", b"{}", 405, 405, "HTTP 405 Method Not Allowed"),
    # 42201 invalid or empty schema
    ("POST", "/subjects/s/versions", {}, 422, 42201, EMPTY),
    ("POST", "/subjects/s/versions", {"schema": None}, 422, 42201, EMPTY),
    ("POST", "/subjects/s/versions", {"schema": ""}, 422, 42201, EMPTY),
    ("POST", "/subjects/s/versions", {"schema": "   "}, 422, 42201, EMPTY),
    ("POST", "/subjects/s", {"schema": ""}, 422, 42201, EMPTY),
    ("POST", "/compatibility/subjects/s/versions/latest", {}, 422, 42201, EMPTY),
    ("POST", "/compatibility/subjects/s/versions", {"schema": ""}, 422, 42201, EMPTY),
    # 42201 a reference that does not resolve: Confluent's schema provider's detail
    ("POST", "/subjects/x/versions", {"schema": USES_BASE, "references": [{**BASE_REF, "subject": "nope"}]}, 422,
     42201, 'Invalid schema: No schema reference found for subject "nope" and version 1'),
    ("POST", "/subjects/x/versions", {"schema": USES_BASE, "references": [{**BASE_REF, "version": 9}]}, 422,
     42201, 'Invalid schema: No schema reference found for subject "base" and version 9'),
    # 42202 invalid version
    *[
        ("GET", f"/subjects/s/versions/{bad}", None, 422, 42202,
         f"The specified version '{bad}' is not a valid version id. Allowed values are between "
         "[1, 2^31-1] and the string \"latest\"")
        for bad in ("0", "latest-ish", "99999999999")
    ],
    ("POST", "/compatibility/subjects/s/versions/one", {"schema": V2}, 422, 42202,
     "The specified version 'one' is not a valid version id. Allowed values are between "
     "[1, 2^31-1] and the string \"latest\""),
    # 42203 invalid compatibility level: the value is not repeated
    ("PUT", "/config/s", {"compatibility": "SIDEWAYS"}, 422, 42203, LEVELS),
    ("PUT", "/config/s", {"compatibility": 5}, 422, 42203, LEVELS),
    ("PUT", "/config", {"compatibilityLevel": "sideways"}, 422, 42203, LEVELS),
    ("PUT", "/config", {"level": "FULL"}, 422, 42203, LEVELS),
    # 42204 invalid mode; 42205 a mode this registry does not offer (the hub's own text)
    ("PUT", "/mode", {"mode": "SOMETIMES"}, 422, 42204,
     "Invalid mode. Valid values are READWRITE, READONLY, and IMPORT."),
    ("PUT", "/mode/s", {"mode": 3}, 422, 42204, "Invalid mode. Valid values are READWRITE, READONLY, and IMPORT."),
    ("PUT", "/mode", {"mode": "IMPORT"}, 422, 42205, "Mode IMPORT is not supported: this registry is READWRITE"),
    # 42206 a referenced version or subject: Confluent names the _schemas key of the version
    ("DELETE", "/subjects/base/versions/1", None, 422, 42206,
     "One or more references exist to the schema {magic=1,keytype=SCHEMA,subject=base,version=1}."),
    ("DELETE", "/subjects/base", None, 422, 42206,
     "One or more references exist to the schema {magic=1,keytype=SCHEMA,subject=base,version=1}."),
    # 42208 invalid subject
    ("PUT", "/config/a%01b", {"compatibility": "FULL"}, 422, 42208, "The specified subject 'a\x01b' is not a valid."),
    ("POST", "/subjects/a%7Fb/versions", {"schema": V1}, 422, 42208,
     "The specified subject 'a\x7fb' is not a valid."),
    ("POST", "/compatibility/subjects/a%1Fb/versions", {"schema": V1}, 422, 42208,
     "The specified subject 'a\x1fb' is not a valid."),
    ("POST", "/subjects/s/versions", {"schema": V1, "id": 42}, 422, 42205, "Subject s is not in import mode"),
    ("POST", "/subjects/new/versions", {"schema": OTHER, "id": 42}, 422, 42205,
     "Subject new is not in import mode"),
    # associations: none here (the hub's own text)
    ("GET", "/associations/resources/-/t?resourceType=topic", None, 404, 40401,
     "No associations: this registry does not support associations; use the topic name strategy "
     "({topic}-value)"),
]


def _send(client: TestClient, method: str, path: str, body: Any) -> Any:
    content = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
    return client.request(method, path, content=content, headers=J)


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "message"), CASES)
def test_confluent_error(
    client: TestClient, method: str, path: str, body: Any, status: int, code: int, message: str,
) -> None:
    response = _send(client, method, path, body)
    assert response.status_code == status, response.text
    assert response.json() == {"error_code": code, "message": message}
    assert response.headers["content-type"].startswith(MEDIA_TYPE)


def test_incompatible_schema_is_409(client: TestClient) -> None:
    response = _send(client, "POST", "/subjects/s/versions", {"schema": V2_REQUIRED})
    assert response.status_code == 409
    answer = response.json()
    assert answer["error_code"] == 409
    # Confluent's SubjectVersionsResource: the prefix, then the checker's messages as ``details: [...]``
    message = answer["message"]
    assert message.startswith(
        "Schema being registered is incompatible with an earlier schema for subject \"s\", details: [{"
    ), message
    assert message.endswith("}]") and "compatibility:'BACKWARD'" in message, message


def test_latest_of_a_missing_subject_is_compatible(client: TestClient) -> None:
    """Confluent answers ``latest`` of a subject with no versions as compatible, not with a 404."""
    response = _send(client, "POST", "/compatibility/subjects/nope/versions/latest", {"schema": V1})
    assert response.status_code == 200 and response.json() == {"is_compatible": True}


def test_the_errors_leave_the_state_alone(client: TestClient) -> None:
    assert client.get("/subjects/s/versions").json() == [1, 2]
    assert client.get("/subjects/half/versions").json() == [2]
    assert client.get("/subjects?deleted=true").json() == ["base", "gone", "half", "s", "user"]
    assert client.get("/subjects/base/versions/1/referencedby").json() == [client.get(
        "/subjects/user/versions/1").json()["id"]]
