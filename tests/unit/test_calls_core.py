"""hub.calls.core without Kafka: decoding requests, each stage's decision and status, replies, audit, state tables."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from hub.calls import core
from hub.calls.core import (
    Answer,
    BadRequest,
    CallRequest,
    CallView,
    Envelope,
    Forward,
    IndexTable,
    QuotaTable,
    RecordTable,
    Reply,
    Row,
    Stage,
    Status,
)
from hub.catalogue.model import load_exchange_config
from hub.contract import H_REQUEST_ID, call_reply_topic, call_request_topic, store_key
from hub.policy.masking import apply_mask
from hub.policy.model import Grant
from hub.registry import framing

ROOT = Path(__file__).resolve().parents[2]
SEED = load_exchange_config(ROOT / "config" / "seed.yaml")
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NOW = T0 + 3_600_000
PERSON = "municipal.big-data.natural-person"
VACCINATION = "municipal.health.vaccination"
CREDIT = "national.enterprise-credit"
HRSS = "municipal.hrss"
SOURCE = f"call.{HRSS}.request/0/7"
REQUEST_SCHEMA = json.loads((ROOT / "schemas/hub/call_request.avsc").read_text())
PARSED = framing.parse_schema(REQUEST_SCHEMA)


def grant(**kw: Any) -> Grant:
    data: dict[str, Any] = dict(id="g-call", consumer=HRSS, resource=PERSON, scenario="social-insurance-enrolment",
                                mode="call", valid_from=T0, state="active", updated_at=T0)
    data.update(kw)
    return Grant.model_validate(data)


def view(*grants: Grant) -> CallView:
    return CallView.build(SEED.resources, SEED.nodes, grants or (grant(),))


def request(**kw: Any) -> CallRequest:
    data: dict[str, Any] = dict(request_id="r-1", caller=HRSS, resource=PERSON, scenario="social-insurance-enrolment",
                                key="11010519491231002X", requested_at=NOW)
    data.update(kw)
    return CallRequest(**data)


def person(**kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = dict(
        resident_id="11010519491231002X", name="张三丰", gender="F", birth_date=date(1949, 12, 31), ethnicity="01",
        phone="13912345678", household_type="local", registered_address="浦东新区世纪大道1号",
        residence_address=None, district="310115", subdistrict_code="310115004", marital_status="married",
        status="active", death_date=None, sources=["municipal.public-security"], updated_at=T0,
    )
    rec.update(kw)
    return rec


def admit(req: CallRequest, v: CallView | None = None, node: str = HRSS) -> Reply | Forward:
    return core.admit(req, node, SOURCE.replace(HRSS, node), v or view(), NOW)


# ---------------------------------------------------------------------------------- decoding requests


def test_a_framed_request_decodes_and_round_trips() -> None:
    req = request(fields=("name", "district"), lookup_field=None)
    value = framing.encode(42, PARSED, req.to_record())
    assert core.decode_request(value, lambda sid: PARSED if sid == 42 else None) == req


@pytest.mark.parametrize("value, message", [
    (b"", "not a Confluent-framed"),
    (b"\x07\x00\x00\x00\x2a\x00", "not a Confluent-framed"),
    (framing.HEADER.pack(0, 99) + b"\x02a", "schema id 99 is not in the registry"),
])
def test_undecodable_requests_say_why(value: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        core.decode_request(value, lambda sid: PARSED if sid == 42 else None)


def test_request_fields_are_checked() -> None:
    good = request().to_record()
    for change, message in [({"request_id": ""}, "request_id"), ({"caller": " "}, "caller is empty"),
                            ({"resource": ""}, "resource is empty"), ({"fields": "name"}, "fields must")]:
        with pytest.raises(BadRequest, match=message) as info:
            CallRequest.from_record({**good, **change})
        if "request_id" not in change:
            assert info.value.request_id == "r-1"


def test_request_id_recovered_from_header_body_or_key() -> None:
    framed = framing.encode(42, PARSED, request(request_id="abc-123").to_record())
    truncated = framed[:14]  # header, length, the id, then cut
    assert core.recover_request_id(truncated, None, []) == "abc-123"
    assert core.recover_request_id(b"junk", b"from-key", []) == "from-key"
    assert core.recover_request_id(b"junk", b"from-key", [(H_REQUEST_ID, b"hdr")]) == "hdr"
    assert core.recover_request_id(b"junk", None, []) is None
    assert core.recover_request_id(b"\x00\x00\x00\x00\x01\xff", b"\xff\xfe", []) is None


# ---------------------------------------------------------------------------------- stage 1: admit


def test_admitted_key_lookup_goes_to_the_rows_partition() -> None:
    out = admit(request())
    assert isinstance(out, Forward)
    assert out.envelope.stage is Stage.LOOKUP and out.envelope.pk == "11010519491231002X"
    assert out.route_key == store_key(PERSON, "11010519491231002X")  # the row's key in hub.records
    assert out.envelope.grant == "g-call"
    assert Envelope.decode(out.envelope.encode()) == out.envelope


@pytest.mark.parametrize("req, status, words", [
    (request(resource="municipal.nowhere.thing"), Status.UNKNOWN_RESOURCE, "not in the catalogue"),
    (request(scenario=None), Status.MISSING_SCENARIO, "names no scenario"),
    (request(caller="district.310115"), Status.DENIED, "calls only as itself"),
    (request(resource=VACCINATION, key="v-1"), Status.NO_GRANT, "holds no grant"),
    (request(scenario="market-supervision"), Status.NO_GRANT, "scenario"),
    (request(key=None), Status.ERROR, "give key"),
    (request(key=None, lookup_field="name", lookup_value="张三"), Status.ERROR, "not an indexed field"),
    (request(key=None, lookup_field="nope", lookup_value="x"), Status.ERROR, "has no field"),
    (request(resource="municipal.health.severe-mental-disorder", key="c-1"), Status.DENIED, "legal basis"),
])
def test_refusals_are_answered_at_the_request_partition(req: CallRequest, status: Status, words: str) -> None:
    out = admit(req)
    assert isinstance(out, Reply)
    assert out.status is status and words in out.message, out.message
    assert out.topic == call_reply_topic(HRSS) and out.request_id == "r-1"


def test_grant_states_map_to_statuses() -> None:
    assert admit(request(), view(grant(state="revoked", reason="no longer needed"))).status is Status.DENIED
    assert admit(request(), view(grant(valid_to=T0 + 1000))).status is Status.DENIED  # expired
    assert admit(request(), view(grant(state="requested"))).status is Status.NO_GRANT
    assert admit(request(), view(grant(mode="subscribe"))).status is Status.NO_GRANT  # no call-mode grant
    refused = admit(request(fields=("phone",)), view(grant(allowed_fields=("name",))))
    assert refused.status is Status.DENIED and "phone" in refused.message


def test_quota_grants_go_through_the_quota_stage_first() -> None:
    out = admit(request(), view(grant(daily_quota=2)))
    assert isinstance(out, Forward) and out.envelope.stage is Stage.QUOTA and out.route_key == b"g-call"
    v = view(grant(daily_quota=2))
    nxt = core.quota_stage(out.envelope, v, NOW, calls_today=1)
    assert isinstance(nxt, Forward) and nxt.envelope.stage is Stage.LOOKUP
    refused = core.quota_stage(out.envelope, v, NOW, calls_today=2)
    assert isinstance(refused, Reply) and refused.status is Status.QUOTA_EXCEEDED and "2 calls a day" in refused.message


def test_a_grant_revoked_between_hops_stops_the_call() -> None:
    out = admit(request())
    assert isinstance(out, Forward)
    later = view(grant(state="revoked", updated_at=T0 + 5))
    refused = core.lookup_stage(out.envelope, later, NOW, person())
    assert isinstance(refused, Reply) and refused.status is Status.DENIED


# ---------------------------------------------------------------------------------- lookups and index


def test_lookup_by_an_indexed_field_goes_through_the_index() -> None:
    vac = grant(id="g-vac", consumer="municipal.civil-affairs", resource=VACCINATION, scenario="vaccination-follow-up")
    v = view(vac)
    req = request(caller="municipal.civil-affairs", resource=VACCINATION, scenario="vaccination-follow-up", key=None,
                  lookup_field="resident_id", lookup_value="11010519491231002x")
    out = core.admit(req, "municipal.civil-affairs", "call.municipal.civil-affairs.request/0/1", v, NOW)
    assert isinstance(out, Forward) and out.envelope.stage is Stage.INDEX
    assert out.route_key == core.index_partition_key(VACCINATION, "resident_id", "11010519491231002X")
    missing = core.index_stage(out.envelope, v, {})
    assert isinstance(missing, Reply) and missing.status is Status.NOT_FOUND
    found = core.index_stage(out.envelope, v, {"v-1": 10, "v-2": 30, "v-3": 20})
    assert isinstance(found, Forward) and found.envelope.pk == "v-2" and found.envelope.matches == 3
    assert found.route_key == store_key(VACCINATION, "v-2")


def test_the_primary_key_field_is_a_key_lookup_and_composite_keys_take_json() -> None:
    out = admit(request(key=None, lookup_field="resident_id", lookup_value="11010519491231002X"))
    assert isinstance(out, Forward) and out.envelope.stage is Stage.LOOKUP
    composite = SEED.resource(PERSON).model_copy(update={"primary_key": ["resident_id", "status"]})
    assert core.lookup_target(request(key='["a", 1]'), composite).pk == "a|1"
    with pytest.raises(BadRequest, match="JSON array of 2"):
        core.lookup_target(request(key="a"), composite)


def test_indexed_fields_are_the_identifier_fields() -> None:
    assert core.indexed_fields(SEED.resource(VACCINATION)) == ("resident_id", "site_uscc")
    assert core.indexed_fields(SEED.resource(PERSON)) == ()  # its key is the resident ID
    assert "uscc" in core.indexed_fields(SEED.resource(CREDIT))


def test_lookup_stage_answers_found_not_found_and_stale_index() -> None:
    out = admit(request())
    assert isinstance(out, Forward)
    v = view()
    assert core.lookup_stage(out.envelope, v, NOW, None).status is Status.NOT_FOUND
    answer = core.lookup_stage(out.envelope, v, NOW, person())
    assert isinstance(answer, Answer) and answer.plan.masked_fields == ()  # hrss is cleared L3, fields <= L3
    reply = core.ok_reply(answer, b"\x00\x00\x00\x00\x01rec", 1)
    assert reply.status is Status.OK and reply.record and reply.schema_id == 1
    vac_view = view(grant(id="g-v", resource=VACCINATION, scenario="vaccination-follow-up"))
    stale = Envelope(Stage.LOOKUP, request(resource=VACCINATION, scenario="vaccination-follow-up", key=None,
                                           lookup_field="resident_id", lookup_value="11010519491231002X"),
                     SOURCE, "g-v", "v-1")
    changed = {"record_id": "v-1", "resident_id": "310115198807061234", "district": "310115"}
    assert core.lookup_stage(stale, vac_view, NOW, changed).status is Status.NOT_FOUND


def test_records_are_masked_for_the_callers_clearance_and_row_scope_applies() -> None:
    pudong = grant(id="g-pd", consumer="district.310115", row_scope="own_district")
    v = view(pudong)
    req = request(caller="district.310115")
    out = core.admit(req, "district.310115", "call.district.310115.request/0/1", v, NOW)
    assert isinstance(out, Forward)
    answer = core.lookup_stage(out.envelope, v, NOW, person())
    assert isinstance(answer, Answer)  # districts are cleared L2: L3 fields are partially masked
    masked = apply_mask(person(), answer.plan)
    assert masked["phone"] == "139****5678" and masked["name"] == "张**" and masked["district"] == "310115"
    elsewhere = core.lookup_stage(out.envelope, v, NOW, person(district="310104"))
    assert isinstance(elsewhere, Reply) and elsewhere.status is Status.DENIED and "310104" in elsewhere.message


def test_requested_fields_narrow_the_record() -> None:
    out = admit(request(fields=("name",)))
    assert isinstance(out, Forward)
    answer = core.lookup_stage(out.envelope, view(), NOW, person())
    assert isinstance(answer, Answer)
    assert set(apply_mask(person(), answer.plan)) == {"resident_id", "name"}  # the key always stays


# ---------------------------------------------------------------------------------- replies, audit, metrics


def test_reply_record_and_audit_of_a_call_to_national_data() -> None:
    credit = grant(id="g-credit", consumer="municipal.health", resource=CREDIT,
                   scenario="medical-institution-licensing")
    v = view(credit)
    req = request(caller="municipal.health", resource=CREDIT, scenario="medical-institution-licensing", key="c-9")
    out = core.admit(req, "municipal.health", "call.municipal.health.request/2/5", v, NOW)
    assert isinstance(out, Forward)
    reply = core.lookup_stage(out.envelope, v, NOW, None)
    assert isinstance(reply, Reply)
    record = reply.to_record(NOW)
    assert record["status"] == "not_found" and record["resource"] == CREDIT and record["grant"] == "g-credit"
    assert record["scenario"] == "medical-institution-licensing" and record["record"] is None
    audit = reply.audit(NOW)
    assert audit["action"] == "call" and audit["reason"] == "not_found" and audit["decision"] == "allow"
    assert audit["actor"] == "municipal.health" and audit["counterparty"] == "national"
    assert (audit["from_tier"], audit["to_tier"], audit["direction"]) == ("municipal", "national", "up")
    assert audit["key_hash"] == hashlib.sha256(store_key(CREDIT, "c-9")).hexdigest()
    assert audit["source"] == "call.municipal.health.request/2/5" and audit["event_id"] == "r-1"
    assert (reply.to_tier, reply.outcome) == ("national", "ok")


def test_denials_audit_as_deny_with_the_status_as_reason() -> None:
    reply = admit(request(resource="municipal.nowhere.thing"))
    assert isinstance(reply, Reply)
    audit = reply.audit(NOW)
    assert (audit["decision"], audit["reason"], audit["to_tier"]) == ("deny", "unknown_resource", "hub")
    assert reply.outcome == "denied"
    assert core.error_reply("r-9", HRSS, SOURCE, "bad").outcome == "error"


def test_every_status_has_an_outcome_in_the_metric_label_set() -> None:
    from hub.metrics.bundle import OUTCOMES

    assert set(core.OUTCOME) == set(Status) and set(core.OUTCOME.values()) <= set(OUTCOMES)
    reply_schema = json.loads((ROOT / "schemas/hub/call_reply.avsc").read_text())
    doc = next(f["doc"] for f in reply_schema["fields"] if f["name"] == "status")
    assert all(str(s) in doc for s in Status)


# ---------------------------------------------------------------------------------- state tables


def test_record_table_keeps_the_current_version() -> None:
    table = RecordTable()
    key = store_key(PERSON, "p1")
    assert table.apply(key, Row(b"v1", 0, 1)) is None
    assert table.apply(key, Row(b"v2", 5, 2)).value == b"v1"
    assert table.get(key).value == b"v2" and len(table) == 1
    table.apply(key, None)
    assert table.get(key) is None
    assert core.resource_of_store_key(key) == (PERSON, "p1")


def test_record_table_keeps_indexed_values_untracked_and_exact() -> None:
    import gc

    table = RecordTable()
    indexed = (("resident_id", "310115199001011234"), ("site_uscc", "91310000MA1FL0000X"))
    table.apply(store_key(PERSON, "p1"), Row(b"v1", 0, 1, indexed))
    assert table.get(store_key(PERSON, "p1")).indexed == indexed
    assert not gc.is_tracked(table.indexed[store_key(PERSON, "p1")])  # one string per row, never scanned
    odd = (("name", "a\x1fb"), ("note", "c\x1ed"))  # separators inside values: kept as given, still exact
    table.apply(store_key(PERSON, "p2"), Row(b"v2", 0, 1, odd))
    assert table.get(store_key(PERSON, "p2")).indexed == odd
    assert core.unpack_indexed(core.pack_indexed((("f", ""),))) == (("f", ""),)


def test_index_changes_retract_old_values_and_the_index_follows() -> None:
    old = (("resident_id", "A"), ("site_uscc", "S"))
    new = (("resident_id", "B"), ("site_uscc", "S"))
    changes = core.index_changes(VACCINATION, "v-1", old, new, 99)
    assert [(core.parse_index_entry_key(c.key)[2], c.value) for c in changes] == [("A", None), ("B", b"99")]
    assert core.parse_index_entry_key(changes[0].key) == (VACCINATION, "resident_id", "A", "v-1")
    index = IndexTable()
    for c in core.index_changes(VACCINATION, "v-1", (), old, 50) + changes:
        index.apply(c.key, c.value)
    assert index.matches(VACCINATION, "resident_id", "A") == {}
    assert index.matches(VACCINATION, "resident_id", "B") == {"v-1": 99}
    assert index.matches(VACCINATION, "site_uscc", "S") == {"v-1": 50}  # unchanged value: entry kept
    index.apply(b"no separators", b"1")  # not an entry key: ignored
    assert len(index.entries) == 2
    assert core.index_values({"resident_id": "b", "site_uscc": None}, ("resident_id", "site_uscc")) == (
        ("resident_id", "B"),)


def test_quota_table_counts_each_call_once_per_day() -> None:
    quota = QuotaTable()
    topic = call_request_topic(HRSS)
    assert not quota.counted("g", NOW, topic, "r-1")
    key = quota.count("g", NOW, topic, "r-1")
    assert quota.used("g", NOW) == 1 and quota.counted("g", NOW, topic, "r-1")
    assert json.loads(key) == ["g", "2026-01-01", topic, "r-1"]
    quota.apply(key, b"1")  # our own write read back, or a redelivered call: not counted again
    assert quota.used("g", NOW) == 1
    restored = QuotaTable()  # the next owner, from the changelog
    for k in (key, quota.count("g", NOW, topic, "r-2"), key):
        restored.apply(k, b"1")
    assert restored.used("g", NOW) == 2 and restored.counted("g", NOW, topic, "r-2")
    assert restored.used("g", NOW + 86_400_000) == 0  # the next CST day
