"""``/v1/objections`` without a broker: the real routes, auth and audit on the in-memory control service of the
grants API tests, with the recipients of the record given instead of read from ``hub.recipients``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from hub.api.app import create_api
from hub.audit.chain import verify
from hub.audit.control_log import MemoryAuditSink
from hub.contract import OBJECTIONS_TOPIC
from hub.objections.notices import notices
from hub.registry.service import RegistryService
from hub.settings import Settings

from .test_grants_api import OP, OPERATOR_TOKEN, FakeSchemas, Hub, MemoryControl, _records, resource

RESOURCE = "municipal.health.open"
RECIPIENTS = {"municipal.market", "district.310115"}


@pytest.fixture
def hub() -> Iterator[Hub]:
    settings = Settings(bootstrap="127.0.0.1:1", objection_verify_limit=0.001)
    control = MemoryControl(settings, FakeSchemas())
    audit = MemoryAuditSink()
    sent: list[Any] = []

    async def listener(changes: Any) -> None:
        sent.extend(notices(changes))
        await audit.write(_records(changes))

    control.change_listener = listener

    async def recipients_of(resource_id: str, record_key: str) -> set[str]:
        return set(RECIPIENTS) if record_key == "r-1" else set()

    control.recipients_of = recipients_of
    app = create_api(RegistryService(settings), CollectorRegistry(), control=control, operator_token=OPERATOR_TOKEN,
                     control_audit=audit)
    with TestClient(app, raise_server_exceptions=False) as client:
        h = Hub(client, control, audit)
        h.sent = sent  # type: ignore[attr-defined]
        for node_id in ("municipal.health", "municipal.market", "district.310115", "municipal.civil-affairs"):
            response = client.post("/v1/nodes", json={"id": node_id}, headers=OP)
            assert response.status_code == 201, response.text
            h.tokens[node_id] = response.json()["token"]
        body = resource(RESOURCE, "unconditional")
        assert client.post("/v1/resources", json=body, headers=h.as_node("municipal.health")).status_code == 201
        yield h


def file(h: Hub, node: str, key: str = "r-1") -> Any:
    return h.client.post("/v1/objections", json={"resource": RESOURCE, "record_key": key, "reason": "wrong dose",
                                                 "field": "dose_number", "proposed_value": "2"},
                         headers=h.as_node(node))


def step(h: Hub, oid: str, action: str, headers: dict[str, str], **body: Any) -> Any:
    return h.client.post(f"/v1/objections/{oid}/{action}", json=body or None, headers=headers)


def test_the_whole_course_audited_and_notified(hub: Hub) -> None:
    filed = file(hub, "municipal.market")
    assert filed.status_code == 201, filed.text
    obj = filed.json()
    oid = obj["objection_id"]
    assert obj["state"] == "filed" and obj["provider"] == "municipal.health" and obj["next"] == ["accept"]
    assert obj["recipients"] == sorted(RECIPIENTS)
    provider = hub.as_node("municipal.health")
    for action, headers, body, state in (
        ("accept", OP, {}, "accepted"), ("flag", OP, {}, "flagged"),
        ("correct", provider, {"note": "dose fixed", "corrected_event_id": "ev-2"}, "verified"),
        ("unflag", OP, {}, "unflagged"), ("archive", OP, {}, "archived"),
    ):
        response = step(hub, oid, action, headers, **body)
        assert response.status_code == 200, response.text
        assert response.json()["state"] == state
    final = hub.client.get(f"/v1/objections/{oid}", headers=hub.as_node("district.310115")).json()
    assert final["outcome"] == "corrected" and final["corrected_event_id"] == "ev-2" and final["deadline"] is None
    assert [s["state"] for s in final["history"]] == ["filed", "accepted", "flagged", "verified", "unflagged",
                                                      "archived"]
    # every step audited on the control chain, and the chain holds
    audited = hub.actions("objection")
    assert [r["reason"].split(":")[0] for r in audited] == ["file", "accept", "flag", "correct", "unflag", "archive"]
    assert "corrected record ev-2" in audited[3]["reason"]
    assert verify(enumerate(hub.audit.records)).ok
    # each step: a notice to the filer, the provider and every recipient
    topics = [n.topic for n in hub.sent]  # type: ignore[attr-defined]
    for node in ("municipal.market", "municipal.health", "district.310115"):
        assert topics.count(f"objection.{node}") == 6
    assert "objection.municipal.civil-affairs" not in topics


def test_only_a_recipient_files(hub: Hub) -> None:
    refused = file(hub, "municipal.civil-affairs")
    assert refused.status_code == 403 and refused.json()["code"] == "not_a_recipient"
    assert hub.actions("forbidden")  # a refusal is audited
    assert file(hub, "municipal.market", key="never-delivered").status_code == 403
    assert file(hub, "municipal.health").json()["code"] == "own_record"
    unknown = hub.client.post("/v1/objections", json={"resource": "municipal.health.nope", "record_key": "r-1",
                                                      "reason": "x"}, headers=hub.as_node("municipal.market"))
    assert unknown.status_code == 404


def test_a_node_that_is_not_a_party_gets_403(hub: Hub) -> None:
    oid = file(hub, "municipal.market").json()["objection_id"]
    stranger = hub.as_node("municipal.civil-affairs")
    assert hub.client.get(f"/v1/objections/{oid}", headers=stranger).status_code == 403
    assert step(hub, oid, "accept", stranger).status_code == 403
    assert hub.client.get("/v1/objections", headers=stranger).json() == []
    assert hub.client.get("/v1/objections/nope", headers=OP).status_code == 404
    # a party that may not make this move: 403 with why; an illegal move: 409
    market = hub.as_node("municipal.market")
    response = step(hub, oid, "accept", market)
    assert response.status_code == 403 and "only the hub operator" in response.json()["message"]
    response = step(hub, oid, "archive", OP)
    assert response.status_code == 409 and "next step is accept" in response.json()["message"]


def test_reject_needs_a_reason_and_listing_filters(hub: Hub) -> None:
    oid = file(hub, "municipal.market").json()["objection_id"]
    step(hub, oid, "accept", OP)
    step(hub, oid, "flag", OP)
    provider = hub.as_node("municipal.health")
    assert step(hub, oid, "reject", provider).status_code == 422
    rejected = step(hub, oid, "reject", provider, note="checked against the register: the dose is right")
    assert rejected.json()["outcome"] == "rejected"
    listed = hub.client.get("/v1/objections", params={"state": "verified", "node": "district.310115"}, headers=OP)
    assert [o["objection_id"] for o in listed.json()] == [oid]
    assert hub.client.get("/v1/objections", params={"state": "filed"}, headers=OP).json() == []


async def test_an_overdue_step_escalates_once_with_a_notice_to_the_operator(hub: Hub) -> None:
    oid = file(hub, "municipal.market").json()["objection_id"]
    step(hub, oid, "accept", OP)
    step(hub, oid, "flag", OP)  # verify limit: 1 ms
    import asyncio

    await asyncio.sleep(0.01)
    [escalated] = await hub.control.escalate_due_objections()
    assert escalated.escalated and escalated.objection_id == oid
    assert await hub.control.escalate_due_objections() == []
    assert hub.actions("objection")[-1]["reason"].startswith("escalate: flagged -> flagged")
    assert any(n.topic == "objection.hub" for n in hub.sent)  # type: ignore[attr-defined]
    listed = hub.client.get("/v1/objections", params={"overdue": True}, headers=OP).json()
    assert [o["objection_id"] for o in listed] == [oid] and listed[0]["escalated"]
    assert hub.control.state.objections[oid] == escalated
    assert OBJECTIONS_TOPIC == "hub.objections"
