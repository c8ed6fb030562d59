"""The API fuzz against a live ``hub up`` (its own, on the session broker): the same checks as the in-memory
run, through real HTTP, Kafka-backed writes included. On demand only (``make fuzz`` sets HUB_FUZZ_LIVE=1): it
writes junk to the broker's shared control topics."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.broker.manager import free_port
from tests.fuzz.checks import violation
from tests.integration.hubproc import HubProcess, start_hub

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.environ.get("HUB_FUZZ_LIVE") != "1", reason="on demand: make fuzz")]
EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "2"))
NODE = "municipal.fuzz"


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, dict]]:
    hub = start_hub(kafka_bootstrap, tmp_path_factory.mktemp("fuzz-hub"), free_port(),
                    f"hub-fuzz-{uuid.uuid4().hex[:6]}")
    try:
        op = {"Authorization": f"Bearer {hub.token}"}
        response = httpx.post(f"{hub.api}/v1/nodes", json={"id": NODE, "title": NODE, "clearance": "L3"}, headers=op,
                              timeout=30)
        assert response.status_code in (201, 409), response.text
        node = response.json().get("token") if response.status_code == 201 else None
        if node is None:
            node = httpx.post(f"{hub.api}/v1/nodes/{NODE}/token", headers=op, timeout=30).json()["token"]
        callers = {"operator": op, "node": {"Authorization": f"Bearer {node}"}, "none": {},
                   "wrong": {"Authorization": "Bearer hub_not-a-real-token-0123456789abcdef"}}
        yield hub, callers
    finally:
        assert hub.stop() == 0, hub.log_file.read_text()[-3000:]


def test_live_hub_never_fails_nor_answers_without_the_right_token(live: tuple[HubProcess, dict]) -> None:
    """Every operation of the live OpenAPI document, each caller (driven with hypothesis directly: schemathesis'
    pytest fixture loader does not run under this pytest)."""
    hub, callers = live
    schema = schemathesis.openapi.from_url(f"{hub.api}/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50

    for operation in operations:
        @given(case=operation.as_strategy(), who=st.sampled_from(sorted(callers)))
        @settings(max_examples=EXAMPLES * len(callers), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case, who: str) -> None:
            headers = {**(case.headers or {}), **callers[who]}
            if who == "none":
                headers.pop("Authorization", None)
            response = case.call(base_url=hub.api, headers=headers, timeout=30)
            params = {k: str(v) for k, v in (case.path_parameters or {}).items()}
            problem = violation(who, case.method.upper(), case.path, params, response.status_code, NODE)
            assert problem is None, f"{problem}: {response.text[:500]}\n{case.as_curl_command()}"

        check()
        assert hub.proc.poll() is None, f"hub up exited during {operation.label}"
