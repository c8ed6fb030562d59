"""Property-based fuzzing of every route in the OpenAPI document (schemathesis), in memory, as four callers:
the operator, a node, no token, a wrong token (and a malformed header). No answer may be a 5xx, and none may
be a 2xx the caller has no right to (``checks.py`` lists what is open). ``HUB_FUZZ_EXAMPLES`` examples per
operation and caller (default 2: a bounded run in ``make test``; ``make fuzz`` runs many more)."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.fuzz.api_app import NODE, fuzz_app
from tests.fuzz.checks import UNCHANGED_REGISTRATION, violation

EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "2"))
APP, TOKENS = fuzz_app()
SCHEMA = schemathesis.openapi.from_asgi("/v1/openapi.json", APP)
CALLERS = {
    "operator": {"Authorization": f"Bearer {TOKENS['operator']}"},
    "node": {"Authorization": f"Bearer {TOKENS['node']}"},
    "none": {},
    "wrong": {"Authorization": "Bearer hub_not-a-real-token-0123456789abcdef"},
    "malformed": {"Authorization": "Basic !!!not-base64"},
}
TALLY: Counter[str] = Counter()



@SCHEMA.parametrize()
@SCHEMA.given(who=st.sampled_from(sorted(CALLERS)))
@settings(max_examples=EXAMPLES * len(CALLERS), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_route_fails_or_answers_without_the_right_token(case: schemathesis.Case, who: str) -> None:
    method, path = case.method.upper(), case.path
    params = {k: str(v) for k, v in (case.path_parameters or {}).items()}
    headers = {**(case.headers or {}), **CALLERS[who]}
    if who == "none":
        headers.pop("Authorization", None)
    before = None
    if (method, path) == UNCHANGED_REGISTRATION and who != "operator":
        before = _subject_versions(params.get("subject", ""))
    response = case.call(headers=headers)
    TALLY[f"{who} {response.status_code // 100}xx"] += 1
    problem = violation(who, method, path, params, response.status_code, NODE)
    assert problem is None, f"{problem}: {response.text[:500]}\n{case.as_curl_command()}"
    if before is not None and 200 <= response.status_code < 300 and who != "node":
        assert _subject_versions(params.get("subject", "")) == before, "an anonymous registration changed a subject"


def _subject_versions(subject: str) -> tuple[int, ...] | None:
    from urllib.parse import quote

    from fastapi.testclient import TestClient

    with TestClient(APP, raise_server_exceptions=False) as client:
        response = client.get(f"/subjects/{quote(subject, safe='')}/versions")
    return tuple(response.json()) if response.status_code == 200 else None


@pytest.fixture(scope="module", autouse=True)
def report_tally() -> object:
    yield
    print("\nfuzz answers:", dict(sorted(TALLY.items())))
