"""``/v1/grants``, catalogue visibility, API security and the control audit log, without a broker: the real routes,
auth and error handlers on an in-memory control service whose changes reach an in-memory audit sink."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from hub.api.app import create_api
from hub.api.auth import FailureLimiter
from hub.audit.chain import verify
from hub.audit.control_log import MemoryAuditSink, grant_transition
from hub.contract import GRANTS_TOPIC
from hub.control.codec import key_of
from hub.control.operations import SchemaInfo
from hub.control.service import ControlService, _stored
from hub.policy.model import Grant
from hub.registry.service import RegistryService
from hub.settings import Settings

OPERATOR_TOKEN = "operator-secret-token"
FIELDS = frozenset({"record_id", "resident_id", "name", "district", "dose_number"})
LEVELS = {"record_id": "L1", "resident_id": "L4", "name": "L3", "district": "L1"}
BASIS = "《精神卫生法》第四条"


class FakeSchemas:
    def parsed(self, schema_id: int) -> None:
        return None

    async def load(self, schema_ids: object) -> None:
        return None

    async def register(self, subject: str, schema: str) -> int:
        return 1

    async def describe(self, subject: str) -> SchemaInfo | None:
        return SchemaInfo(subject, 1, 1, FIELDS) if subject.endswith("-value") else None


class MemoryControl(ControlService):
    """The real ControlService operations (and change listener), applied to its state instead of Kafka."""

    @property
    def ready(self) -> bool:
        return True

    async def run(self, operation):  # noqa: ANN001, ANN201
        result, changes = operation(self.state)
        before = [_stored(self.state, t, key_of(t, e)) for t, e in changes]
        for topic, entity in changes:
            self.state.apply(topic, key_of(topic, entity), entity)
        await self._tell([(t, old, e) for (t, e), old in zip(changes, before, strict=True)])
        return result

    async def create_node_topics(self, node_id: str) -> None:
        return None


class Hub:
    def __init__(self, client: TestClient, control: MemoryControl, audit: MemoryAuditSink) -> None:
        self.client = client
        self.control = control
        self.audit = audit
        self.tokens: dict[str, str] = {}

    def as_node(self, node_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[node_id]}"}

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [r for r in self.audit.records if r["action"] == action]


def resource(rid: str, sharing: str, **more: Any) -> dict[str, Any]:
    return {"id": rid, "title": rid, "provider": "municipal.health", "sharing": sharing, "field_levels": LEVELS,
            "primary_key": ["record_id"], "locality_field": "district", "description": "secret words inside",
            **more}


@pytest.fixture
def hub() -> Iterator[Hub]:
    settings = Settings(bootstrap="127.0.0.1:1", auth_failure_limit=3, auth_failure_window=60)
    control = MemoryControl(settings, FakeSchemas())
    audit = MemoryAuditSink()
    control.change_listener = lambda changes: audit.write(_records(changes))
    app = create_api(RegistryService(settings), CollectorRegistry(), control=control, operator_token=OPERATOR_TOKEN,
                     control_audit=audit)
    with TestClient(app, raise_server_exceptions=False) as client:
        h = Hub(client, control, audit)
        op = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        scenario = client.post("/v1/scenarios", json={"id": "follow-up", "legal_basis": "a law"}, headers=op)
        assert scenario.status_code == 201
        for node_id, clearance in (("municipal.health", "L3"), ("municipal.market", "L3"),
                                   ("district.310115", "L2"), ("municipal.civil-affairs", "L3")):
            response = client.post("/v1/nodes", json={"id": node_id, "clearance": clearance}, headers=op)
            assert response.status_code == 201, response.text
            h.tokens[node_id] = response.json()["token"]
        health = h.as_node("municipal.health")
        for body in (resource("municipal.health.open", "unconditional"),
                     resource("municipal.health.vaccination", "authorised"),
                     resource("municipal.health.secret", "none", legal_basis=BASIS)):
            assert client.post("/v1/resources", json=body, headers=health).status_code == 201
        yield h


def _records(changes: Any) -> list[dict[str, Any]]:
    from hub.audit.control_log import change_records, now_ms

    return change_records(changes, now_ms())


OP = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def request(h: Hub, node: str, rid: str, **more: Any) -> Any:
    return h.client.post("/v1/grants", json={"resource": rid, "scenario": "follow-up", **more},
                         headers=h.as_node(node))


# ---------------------------------------------------------------- the lifecycle


def test_request_follows_the_sharing_type(hub: Hub) -> None:
    open_ = request(hub, "municipal.market", "municipal.health.open")
    assert open_.status_code == 201, open_.text
    body = open_.json()
    assert (body["state"], body["effective_state"], body["decided_by"]) == ("active", "active", "hub")
    assert body["consumer"] == "municipal.market" and body["provider"] == "municipal.health"
    assert body["reason"].startswith("auto_approved")

    authorised = request(hub, "municipal.market", "municipal.health.vaccination", reason="inspections")
    assert authorised.json()["state"] == "requested" and authorised.json()["decided_by"] is None

    secret = request(hub, "municipal.market", "municipal.health.secret")
    assert secret.status_code == 201 and secret.json()["state"] == "denied"
    assert secret.json()["reason"] == f"not_shared: {BASIS}"

    again = request(hub, "municipal.market", "municipal.health.open")
    assert again.status_code == 409 and again.json()["code"] == "grant_exists"
    other_mode = request(hub, "municipal.market", "municipal.health.open", mode="call", daily_quota=5)
    assert other_mode.status_code == 201 and other_mode.json()["daily_quota"] == 5

    # every request is audited with its outcome
    grants = hub.actions("grant")
    assert [r["reason"].split(":")[0] for r in grants] == ["request"] * 4
    assert [r["decision"] for r in grants] == ["allow", "allow", "deny", "allow"]
    assert BASIS in grants[2]["reason"] and grants[2]["counterparty"] == "municipal.market"
    assert all(r["actor"] == "municipal.market" and r["grant"] for r in grants)


def test_approve_deny_revoke_by_the_right_nodes_only(hub: Hub) -> None:
    gid = request(hub, "municipal.market", "municipal.health.vaccination").json()["id"]
    market, civil, health = (hub.as_node(n) for n in ("municipal.market", "municipal.civil-affairs",
                                                      "municipal.health"))
    refused = hub.client.post(f"/v1/grants/{gid}/approve", headers=market)  # the consumer is not the provider
    assert refused.status_code == 403 and refused.json()["code"] == "not_authorised"
    assert "only municipal.health or the hub operator" in refused.json()["message"]
    unseen = hub.client.post(f"/v1/grants/{gid}/approve", headers=civil)  # a third node cannot even see it
    assert unseen.status_code == 404
    no_reason = hub.client.post(f"/v1/grants/{gid}/deny", headers=health)
    assert no_reason.status_code == 422 and no_reason.json()["code"] == "reason_required"

    approved = hub.client.post(f"/v1/grants/{gid}/approve", json={"reason": "ok for inspections"}, headers=health)
    assert approved.status_code == 200 and approved.json()["state"] == "active"
    assert approved.json()["decided_by"] == "municipal.health"
    twice = hub.client.post(f"/v1/grants/{gid}/approve", headers=health)
    assert twice.status_code == 409 and twice.json()["code"] == "invalid_transition"

    revoked = hub.client.post(f"/v1/grants/{gid}/revoke", json={"reason": "no longer needed"}, headers=market)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    again = hub.client.post(f"/v1/grants/{gid}/revoke", json={"reason": "x"}, headers=OP)
    assert again.status_code == 409

    denied_id = request(hub, "district.310115", "municipal.health.vaccination").json()["id"]
    denied = hub.client.post(f"/v1/grants/{denied_id}/deny", json={"reason": "not this scenario"}, headers=OP)
    assert denied.json()["state"] == "denied" and denied.json()["decided_by"] == "hub"

    reasons = [r["reason"] for r in hub.actions("grant")]
    assert reasons[1] == "approve: requested -> active (ok for inspections)"
    assert reasons[2] == "revoke: active -> revoked (no longer needed)"
    assert reasons[4] == "deny: requested -> denied (not this scenario)"
    forbidden = hub.actions("forbidden")
    assert len(forbidden) == 1 and forbidden[0]["actor"] == "municipal.market" and forbidden[0]["grant"] == gid
    assert forbidden[0]["reason"].startswith("not_authorised:")


def test_a_node_acts_only_as_itself(hub: Hub) -> None:
    as_other = request(hub, "municipal.market", "municipal.health.open", consumer="municipal.civil-affairs")
    assert as_other.status_code == 403
    assert "municipal.market cannot request a grant for municipal.civil-affairs" in as_other.json()["message"]
    on_behalf = hub.client.post("/v1/grants", headers=OP, json={
        "resource": "municipal.health.open", "scenario": "follow-up", "consumer": "municipal.civil-affairs"})
    assert on_behalf.status_code == 201 and on_behalf.json()["requested_by"] == "hub"
    no_consumer = hub.client.post("/v1/grants", headers=OP, json={"resource": "municipal.health.open",
                                                                 "scenario": "follow-up"})
    assert no_consumer.status_code == 422 and no_consumer.json()["code"] == "consumer_required"
    # operator-only endpoints, audited as refusals too
    assert hub.client.post("/v1/nodes", json={"id": "region.x"}, headers=hub.as_node("municipal.market")
                           ).status_code == 403
    assert [r["actor"] for r in hub.actions("forbidden")] == ["municipal.market", "municipal.market"]
    # registry writes on another provider's subject
    write = hub.client.post("/subjects/municipal.health.open-value/versions", headers=hub.as_node("municipal.market"),
                            json={"schema": '{"type": "string"}'})
    assert write.status_code == 403
    assert hub.actions("forbidden")[-1]["reason"].startswith("registry_write_forbidden")


@pytest.mark.parametrize(("body", "code", "fragment"), [
    ({"resource": "municipal.health.nothing", "scenario": "follow-up"}, 404, "not catalogued"),
    ({"resource": "municipal.health.open", "scenario": "no-such"}, 422, "not registered"),
    ({"resource": "municipal.health.open", "scenario": "follow-up", "allowed_fields": ["salary"]}, 422, "salary"),
    ({"resource": "municipal.health.open", "scenario": "follow-up", "row_scope": "own_district"}, 422,
     "needs a district consumer"),
    ({"resource": "municipal.health.open", "scenario": "follow-up", "valid_to": 5}, 422, "valid_to"),
    ({"resource": "municipal.health.open", "scenario": "follow-up", "valid_to": "not a date"}, 422,
     "neither epoch"),
    ({"resource": "municipal.health.open", "scenario": "follow-up", "daily_quota": 3}, 422, "call grants"),
    ({"resource": "municipal.health.open", "scenario": "follow-up", "colour": "red"}, 422, "unknown field"),
    ({"resource": "municipal.health.open"}, 422, "scenario: required"),
])
def test_bad_requests_get_a_4xx_and_a_message(hub: Hub, body: dict[str, Any], code: int, fragment: str) -> None:
    response = hub.client.post("/v1/grants", json=body, headers=hub.as_node("municipal.market"))
    assert response.status_code == code, response.text
    assert fragment in response.json()["message"], response.text


def test_own_resource_and_retired_resource(hub: Hub) -> None:
    own = request(hub, "municipal.health", "municipal.health.open")
    assert own.status_code == 422 and own.json()["code"] == "own_resource"
    hub.client.delete("/v1/resources/municipal.health.open", headers=hub.as_node("municipal.health"))
    retired = request(hub, "municipal.market", "municipal.health.open")
    assert retired.status_code == 409 and retired.json()["code"] == "resource_retired"


def test_who_sees_which_grants(hub: Hub) -> None:
    a = request(hub, "municipal.market", "municipal.health.open").json()["id"]
    b = request(hub, "district.310115", "municipal.health.vaccination", row_scope="own_district").json()["id"]

    def ids(node_headers: dict[str, str], **params: str) -> set[str]:
        response = hub.client.get("/v1/grants", params=params, headers=node_headers)
        assert response.status_code == 200, response.text
        return {g["id"] for g in response.json()}

    assert ids(OP) == {a, b}
    assert ids(hub.as_node("municipal.health")) == {a, b}  # the provider of both resources
    assert ids(hub.as_node("municipal.market")) == {a}
    assert ids(hub.as_node("municipal.civil-affairs")) == set()
    assert ids(OP, state="requested") == {b} and ids(OP, consumer="municipal.market") == {a}
    assert ids(OP, resource="municipal.health.vaccination", provider="municipal.health") == {b}
    assert hub.client.get(f"/v1/grants/{b}", headers=hub.as_node("district.310115")).json()["row_scope"] == \
        "own_district"
    assert hub.client.get(f"/v1/grants/{b}", headers=hub.as_node("municipal.market")).status_code == 404
    assert hub.client.get("/v1/grants", params={"state": "gone"}, headers=OP).status_code == 422


def test_expiry_is_effective_at_once_and_written_down_with_an_audit(hub: Hub) -> None:
    body = request(hub, "municipal.market", "municipal.health.open").json()
    stale = Grant.model_validate({**{k: v for k, v in body.items() if k not in ("provider", "effective_state")},
                                  "valid_from": 1000, "valid_to": 2000, "allowed_fields": None})
    hub.control.state.apply(GRANTS_TOPIC, stale.id, stale)  # an active grant whose validity ended
    shown = hub.client.get(f"/v1/grants/{stale.id}", headers=OP).json()
    assert (shown["state"], shown["effective_state"]) == ("active", "expired")
    assert {g["id"] for g in hub.client.get("/v1/grants", params={"state": "expired"}, headers=OP).json()} == \
        {stale.id}
    import asyncio

    expired = asyncio.run(hub.control.expire_due_grants())
    assert [g.id for g in expired] == [stale.id] and expired[0].state == "expired"
    assert hub.actions("grant")[-1]["reason"] == "expire: active -> expired (valid_to passed)"
    assert asyncio.run(hub.control.expire_due_grants()) == []
    # a new request is possible again
    assert request(hub, "municipal.market", "municipal.health.open").status_code == 201


def test_removing_a_node_ends_its_grants_and_entries_and_keeps_its_history(hub: Hub) -> None:
    """DELETE /v1/nodes/{id}: its grants as consumer and as provider end (reason "node removed"), its
    catalogue entries retire, its token gets 401; everything already audited stays and the removal is audited."""
    market = hub.as_node("municipal.market")
    assert hub.client.post("/v1/resources", headers=market, json={
        **resource("municipal.market.licence", "unconditional"), "provider": "municipal.market"}).status_code == 201
    consumed = request(hub, "municipal.health", "municipal.market.licence").json()["id"]
    provided = request(hub, "municipal.market", "municipal.health.open").json()["id"]
    pending = request(hub, "district.310115", "municipal.health.vaccination").json()["id"]
    unrelated = request(hub, "district.310115", "municipal.market.licence").json()["id"]
    audited_before = list(hub.audit.records)

    removed = hub.client.delete("/v1/nodes/municipal.health", headers=OP)
    assert removed.status_code == 200 and removed.json()["removed"] is True
    assert hub.client.get("/v1/nodes", headers=hub.as_node("municipal.health")).status_code == 401
    grants = {g["id"]: g for g in hub.client.get("/v1/grants", headers=OP).json()}
    assert (grants[consumed]["state"], grants[consumed]["reason"]) == ("revoked", "node removed")
    assert (grants[provided]["state"], grants[provided]["reason"]) == ("revoked", "node removed")
    assert (grants[pending]["state"], grants[pending]["reason"]) == ("denied", "node removed")
    assert grants[unrelated]["state"] == "active"
    listed = {r["id"]: r["retired"] for r in hub.client.get("/v1/resources", params={"retired": True},
                                                             headers=market).json()}
    assert listed == {"municipal.health.open": True, "municipal.health.vaccination": True,
                      "municipal.health.secret": True, "municipal.market.licence": False}
    again = request(hub, "district.310115", "municipal.health.open")
    assert again.status_code == 409 and again.json()["code"] == "resource_retired"

    # the audit trail only grew: the earlier records are intact, the removal and its consequences added
    assert hub.audit.records[:len(audited_before)] == audited_before
    added = [r for r in hub.audit.records[len(audited_before):] if r["action"] != "auth_failure"]  # (the 401)
    assert [r["action"] for r in added] == ["grant"] * 3 + ["catalog"] * 3 + ["node"]
    assert added[-1]["reason"] == "removed (its token no longer authenticates)"
    assert all(r["reason"].endswith("(node removed)") for r in added[:3])
    assert verify(enumerate(hub.audit.records)).ok
    # the node stays listed as removed, with its history
    assert hub.client.get("/v1/nodes/municipal.health", headers=OP).json()["removed"] is True


# ---------------------------------------------------------------- catalogue visibility


def test_a_none_resource_shows_only_that_it_exists_and_why(hub: Hub) -> None:
    market = hub.as_node("municipal.market")
    seen = hub.client.get("/v1/resources/municipal.health.secret", headers=market).json()
    assert seen == {"id": "municipal.health.secret", "title": "municipal.health.secret",
                    "provider": "municipal.health", "tier": "municipal", "sharing": "none", "legal_basis": BASIS,
                    "shared": False, "version": 1, "retired": False, "visibility": "exists_only"}
    full = hub.client.get("/v1/resources/municipal.health.secret", headers=hub.as_node("municipal.health")).json()
    assert full["visibility"] == "full" and full["field_levels"] == LEVELS
    assert hub.client.get("/v1/resources/municipal.health.secret", headers=OP).json()["visibility"] == "full"
    listed = {r["id"]: r for r in hub.client.get("/v1/resources", headers=market).json()}
    assert listed["municipal.health.secret"]["visibility"] == "exists_only"
    assert listed["municipal.health.open"]["visibility"] == "full"
    # a text search matches only what the viewer can see of it
    found = {r["id"] for r in hub.client.get("/v1/resources", params={"q": "secret words"}, headers=market).json()}
    assert found == {"municipal.health.open", "municipal.health.vaccination"}
    history = hub.client.get("/v1/resources/municipal.health.secret/versions", headers=market).json()
    assert [v["visibility"] for v in history] == ["exists_only"]
    # a formerly shared resource made `none` hides its earlier versions as well
    hub.client.patch("/v1/resources/municipal.health.open", json={"sharing": "none", "legal_basis": BASIS},
                     headers=hub.as_node("municipal.health"))
    history = hub.client.get("/v1/resources/municipal.health.open/versions", headers=market).json()
    assert [v["visibility"] for v in history] == ["exists_only", "exists_only"]


# ---------------------------------------------------------------- authentication failures


def test_failed_authentication_is_audited_then_rate_limited(hub: Hub) -> None:
    market_token = hub.tokens["municipal.market"]
    token_id = market_token.split(".")[0]
    wrong = f"{token_id}.not-the-secret"
    for _ in range(3):
        refused = hub.client.get("/v1/grants", headers={"Authorization": f"Bearer {wrong}"})
        assert refused.status_code == 401 and refused.headers["www-authenticate"]
    failures = hub.actions("auth_failure")
    assert len(failures) == 3
    assert all(f["actor"] == "municipal.market" and f["decision"] == "deny" for f in failures)
    assert failures[0]["reason"].startswith("invalid_credentials:")
    assert failures[0]["source"] == "http testclient GET /v1/grants"
    assert all("not-the-secret" not in str(f) and market_token not in str(f) for f in hub.audit.records)

    limited = hub.client.get("/v1/grants", headers={"Authorization": f"Bearer {wrong}"})
    assert limited.status_code == 429 and limited.json()["code"] == "too_many_failures"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # blocked before any credential is checked: from this client, even a valid token waits
    assert hub.client.get("/v1/grants", headers=hub.as_node("municipal.market")).status_code == 429
    # a rate-limited refusal is audited once per window, not once per request
    limited_audits = [f for f in hub.actions("auth_failure") if f["reason"].startswith("rate_limited")]
    assert len(limited_audits) == 1
    # registry writes are rate-limited too (Confluent error body)
    write = hub.client.post("/subjects/x-value/versions", json={"schema": '"string"'},
                            headers={"Authorization": f"Bearer {wrong}"})
    assert write.status_code == 429 and write.json()["error_code"] == 429
    # no credentials at all is not a failed authentication: not counted, not audited
    before = len(hub.audit.records)
    assert hub.client.get("/v1/grants").status_code == 401
    assert len(hub.audit.records) == before


def test_basic_auth_failures_count_per_claimed_node() -> None:
    clock = [0.0]
    limiter = FailureLimiter(limit=2, window=10, clock=lambda: clock[0])
    keys = [("client", "1.2.3.4"), ("node", "municipal.health")]
    assert limiter.retry_after(keys) is None
    limiter.fail(keys)
    clock[0] = 4
    limiter.fail(keys)
    assert limiter.retry_after([("node", "municipal.health")]) == 6  # the first failure leaves the window at 10
    assert limiter.retry_after([("client", "5.6.7.8")]) is None
    clock[0] = 10.5
    assert limiter.retry_after(keys) is None  # one failure left in the window
    limiter.fail(keys)
    assert limiter.retry_after(keys) == 4


def test_wrong_basic_credentials_name_the_claimed_node(hub: Hub) -> None:
    header = "Basic " + base64.b64encode(b"municipal.health:000000000000.nope").decode()
    assert hub.client.get("/v1/nodes", headers={"Authorization": header}).status_code == 401
    assert hub.actions("auth_failure")[-1]["actor"] == "municipal.health"
    assert hub.client.get("/v1/nodes", headers={"Authorization": "Bearer operator-guess"}).status_code == 401
    assert hub.actions("auth_failure")[-1]["actor"] == "hub"


# ---------------------------------------------------------------- the audit records themselves


def test_control_changes_are_audited_in_one_verifiable_chain(hub: Hub) -> None:
    gid = request(hub, "municipal.market", "municipal.health.vaccination").json()["id"]
    hub.client.post(f"/v1/grants/{gid}/approve", headers=hub.as_node("municipal.health"))
    hub.client.post("/v1/nodes/municipal.market/token", headers=hub.as_node("municipal.market"))
    kinds = [r["action"] for r in hub.audit.records]
    assert kinds[:1] == ["scenario"] and kinds.count("node") == 5 and kinds.count("catalog") == 3
    node_audits = hub.actions("node")
    assert node_audits[-1]["reason"].startswith("token issued (id ")
    assert all("sha256$" not in r["reason"] for r in hub.audit.records)  # never a token hash
    secret = next(r for r in hub.actions("catalog") if r["resource"] == "municipal.health.secret")
    assert secret["reason"] == f"catalogued; sharing none; legal basis: {BASIS}"
    result = verify(enumerate(hub.audit.records))
    assert result.ok and result.count == len(hub.audit.records)


def test_grant_transitions_are_named() -> None:
    base = {"id": "g-1", "consumer": "municipal.market", "resource": "municipal.health.open",
            "scenario": "follow-up", "mode": "subscribe", "valid_from": 0, "updated_at": 1}

    def g(state: str) -> Grant:
        return Grant.model_validate({**base, "state": state})

    assert grant_transition(None, g("active")) == "request"
    assert grant_transition(g("requested"), g("active")) == "approve"
    assert grant_transition(g("requested"), g("denied")) == "deny"
    assert grant_transition(g("active"), g("revoked")) == "revoke"
    assert grant_transition(g("active"), g("expired")) == "expire"
    assert grant_transition(g("active"), g("active")) == "update"
