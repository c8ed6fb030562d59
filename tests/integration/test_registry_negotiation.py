"""Content negotiation on the running hub's registry: Accept (with q-weights) x Content-Type -> status and type."""

from __future__ import annotations

import httpx
import pytest

from .hubproc import HubProcess

pytestmark = pytest.mark.integration

V1 = "application/vnd.schemaregistry.v1+json"
VND = "application/vnd.schemaregistry+json"
JSON = "application/json"


@pytest.mark.parametrize(("accept", "status", "content_type"), [
    (None, 200, V1),
    ("*/*", 200, V1),
    (V1, 200, V1),
    (VND, 200, VND),
    (JSON, 200, JSON),
    (f"{VND}; q=1, {V1}; q=0.5", 200, VND),
    (f"{JSON}; q=0.9, {V1}; q=0.1", 200, JSON),
    ("text/*", 406, V1),
    ("application/octet-stream", 406, V1),
    ("application/vnd.schemaregistry.v2+json", 406, V1),
])
def test_accept(hub: HubProcess, accept: str | None, status: int, content_type: str) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    response = httpx.get(f"{hub.api}/subjects", headers=headers, timeout=10)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == content_type
    if status == 406:
        assert response.json() == {"error_code": 406, "message": "HTTP 406 Not Acceptable"}


@pytest.mark.parametrize(("content_type", "status"), [
    (V1, 200), (VND, 200), (JSON, 200), ("application/octet-stream", 200),
    (f"{JSON}; charset=ISO-8859-1", 200), ("text/plain", 415), ("application/xml", 415),
])
def test_request_content_types(hub: HubProcess, content_type: str, status: int) -> None:
    body = '{"schema": "{\\"type\\": \\"string\\"}"}'
    response = httpx.post(f"{hub.api}/subjects/negotiation.example-value/versions", content=body,
                          headers={"Content-Type": content_type, "Authorization": f"Bearer {hub.token}"}, timeout=10)
    assert response.status_code == status, response.text
    if status == 415:
        assert response.json() == {"error_code": 415, "message": "HTTP 415 Unsupported Media Type"}
