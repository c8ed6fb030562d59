"""The whole HTTP API (registry + /v1 control plane) in memory, for fuzzing: no broker, real routes and auth."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from hub.api.app import create_api
from hub.settings import Settings
from tests.unit.test_control_api import FakeSchemas, MemoryControl
from tests.unit.test_registry_errors import MemoryRegistry


class ReadyRegistry(MemoryRegistry):
    """Loaded from the start (nothing to read from Kafka), so /healthz answers 200 as a running hub's does."""

    @property
    def ready(self) -> bool:
        return True


OPERATOR_TOKEN = "operator-secret-token-for-fuzzing"
NODE = "municipal.health"


def fuzz_app() -> tuple[FastAPI, dict[str, str]]:
    """The app and a valid token per principal (``operator``, ``node``); the failure limiter is off so wrong
    credentials do not turn every later request into a 429."""
    settings = Settings(bootstrap="127.0.0.1:1", auth_failure_limit=10**9)
    control = MemoryControl(settings, FakeSchemas())
    app = create_api(ReadyRegistry(settings), CollectorRegistry(), control=control, operator_token=OPERATOR_TOKEN)
    tokens = {"operator": OPERATOR_TOKEN}
    with TestClient(app, raise_server_exceptions=False) as client:
        op = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        assert client.post("/v1/scenarios", json={"id": "follow-up", "legal_basis": "a law"}, headers=op).is_success
        response = client.post("/v1/nodes", json={"id": NODE, "title": NODE, "clearance": "L3"}, headers=op)
        assert response.status_code == 201, response.text
        tokens["node"] = response.json()["token"]
        schema = '{"type":"record","name":"V","fields":[{"name":"record_id","type":"string"}]}'
        assert client.post(f"/subjects/{NODE}.vaccination-value/versions", json={"schema": schema},
                           headers=op).is_success
    return app, tokens
