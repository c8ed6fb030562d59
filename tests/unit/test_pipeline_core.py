"""The batch hot path without Kafka: decode, validate, route, audit, quarantine with reasons."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hub.audit.reconcile import Recount
from hub.catalogue.model import load_exchange_config
from hub.contract import H_EVENT_ID, H_LINEAGE, H_PROVIDER, H_RESOURCE, H_RULE, RECORDS_TOPIC
from hub.pipeline.core import (
    QUARANTINE_KEEP_BYTES,
    EncodedSchema,
    ExchangeContext,
    RawRecord,
    bounded_copy,
    event_id_for,
    process_batch,
    standing_grants,
)
from hub.registry import framing
from hub.settings import REPO_ROOT
from hub.stats.counts import CountTable

VACC_ID, AUDIT_ID, QUAR_ID, OTHER_ID = 11, 12, 13, 14


def schema(rel: str) -> object:
    return framing.parse_schema((REPO_ROOT / rel).read_text())


AUDIT_JSON = (REPO_ROOT / "schemas/hub/audit_record.avsc").read_text()
QUAR_JSON = (REPO_ROOT / "schemas/hub/quarantine_record.avsc").read_text()
VACC = schema("schemas/health/vaccination_record.avsc")
AUDIT = schema("schemas/hub/audit_record.avsc")
QUAR = schema("schemas/hub/quarantine_record.avsc")
OTHER = framing.parse_schema({"type": "record", "name": "Other", "fields": [{"name": "x", "type": "string"}]})
SCHEMAS = {VACC_ID: VACC, AUDIT_ID: AUDIT, QUAR_ID: QUAR, OTHER_ID: OTHER}


SEED = load_exchange_config(REPO_ROOT / "config" / "seed.yaml")


@pytest.fixture
def ctx() -> ExchangeContext:
    return ExchangeContext(
        config=SEED,
        grants=standing_grants(SEED.subscriptions),
        schema_lookup=SCHEMAS.get,
        subject_ids={"municipal.health.vaccination": frozenset({VACC_ID})},
        audit_schema=EncodedSchema(AUDIT_ID, framing.make_encoder(AUDIT_ID, AUDIT_JSON)),
        quarantine_schema=EncodedSchema(QUAR_ID, framing.make_encoder(QUAR_ID, QUAR_JSON)),
        clock_ms=lambda: 1_700_000_000_000,
    )


def vacc_record(district: str = "310115", record_id: str = "r1") -> dict[str, object]:
    return dict(record_id=record_id, resident_id="310115198807061234", name="张三丰", phone="13912345678",
                district=district, vaccine_code="V1", dose_number=1, vaccinated_at=1_700_000_000_000,
                site_uscc="91110000600037341L", site_name="Pudong CDC")


def raw(value: bytes | None, headers: list[tuple[str, bytes]] | None = None, offset: int = 0,
        topic: str = "ingress.municipal.health") -> RawRecord:
    hdrs = [(H_RESOURCE, b"municipal.health.vaccination")] if headers is None else headers
    return RawRecord(topic, 0, offset, None, value, hdrs, 1_699_999_999_000)


def decode_out(value: bytes) -> dict[str, object]:
    sid, body = framing.split(value)
    return framing.decode_body(body, SCHEMAS[sid])


def test_good_record_goes_to_subscriber_and_its_district(ctx: ExchangeContext) -> None:
    value = framing.encode(VACC_ID, VACC, vacc_record())
    result = process_batch([raw(value, offset=5)], ctx)
    feeds = [o for o in result.outputs if o.topic.startswith("feed.")]
    assert sorted(o.topic for o in feeds) == ["feed.district.310115", "feed.municipal.civil-affairs"]
    for out in feeds:
        assert out.value == value  # unchanged bytes, same schema id
        headers = dict(out.headers)
        assert headers[H_RESOURCE] == b"municipal.health.vaccination"
        assert headers[H_PROVIDER] == b"municipal.health"
        assert json.loads(headers[H_LINEAGE])[0] == "municipal.health"
        assert out.key == b"r1"  # keyed by primary key when the publisher sent no key
    [stored] = [o for o in result.outputs if o.topic == RECORDS_TOPIC]  # the row's current version, for calls
    assert (stored.key, stored.value) == (b"municipal.health.vaccination|r1", value)
    [(partition, audit)] = result.audits  # one audit record per event: the publish, listing its deliveries
    assert (partition, audit["action"], audit["decision"], audit["reason"]) == (0, "publish", "allow", "accepted")
    event_id = event_id_for(raw(value, offset=5), {})
    assert (audit["event_id"], audit["audit_id"]) == (event_id, f"{event_id}/publish/-")
    assert (audit["actor"], audit["resource"], audit["counterparty"]) == (
        "municipal.health", "municipal.health.vaccination", None)
    assert audit["source"] == "ingress.municipal.health/0/5"
    assert audit["key_hash"] == hashlib.sha256(b"r1").hexdigest()
    assert sorted(d["counterparty"] for d in audit["deliveries"]) == ["district.310115", "municipal.civil-affairs"]
    by_consumer = {d["counterparty"]: d for d in audit["deliveries"]}
    assert by_consumer["district.310115"] == {
        "counterparty": "district.310115", "scenario": "vaccination-follow-up", "grant": "seed-pudong-vaccination",
        "to_tier": "district", "direction": "down", "decision": "allow", "reason": "locality-return",
        "masked_fields": [],
    }
    assert (by_consumer["municipal.civil-affairs"]["direction"], by_consumer["municipal.civil-affairs"]["reason"]) == (
        "lateral", "subscription")
    decoded = decode_out(ctx.audit_schema.encode(audit))  # encodes with the hub's AuditRecord schema
    assert decoded["audit_id"] == audit["audit_id"] and decoded["deliveries"] == audit["deliveries"]
    assert "张" not in json.dumps(audit, ensure_ascii=False, default=str)  # no record data in audit
    assert result.tally[("records_delivered", ("down",))] == 1
    assert result.tally[("records_delivered", ("lateral",))] == 1
    assert result.tally[("events", ("publish", "municipal", "municipal", "ok"))] == 1


def test_other_district_goes_only_to_its_own_feed(ctx: ExchangeContext) -> None:
    value = framing.encode(VACC_ID, VACC, vacc_record(district="310104"))
    topics = sorted(o.topic for o in process_batch([raw(value)], ctx).outputs if o.topic.startswith("feed."))
    assert topics == ["feed.district.310104", "feed.municipal.civil-affairs"]


GOOD = framing.encode(VACC_ID, VACC, vacc_record())


@pytest.mark.parametrize(
    ("record", "rule"),
    [
        (raw(GOOD, headers=[]), "missing_header"),
        (raw(b"\x01" + GOOD[1:]), "bad_magic"),
        (raw(framing.HEADER.pack(0, 999) + GOOD[5:]), "unknown_schema"),
        (raw(GOOD[:20]), "truncated"),
        (raw(GOOD[:3]), "truncated"),
        (raw(None), "missing_value"),
        (raw(GOOD + b"\x00\x01"), "trailing_bytes"),
        (raw(framing.encode(OTHER_ID, OTHER, {"x": "y"})), "schema_not_bound"),
        (raw(GOOD, headers=[(H_RESOURCE, b"nope")]), "unknown_resource"),
        (raw(GOOD, topic="ingress.municipal.hrss"), "not_provider"),
        # hostile headers (issue 12): repeated, null-valued, not UTF-8
        (raw(GOOD, headers=[(H_RESOURCE, b"municipal.health.vaccination")] * 2), "duplicate_header"),
        (raw(GOOD, headers=[(H_RESOURCE, b"nope"), (H_RESOURCE, b"municipal.health.vaccination")]), "duplicate_header"),
        (raw(GOOD, headers=[(H_RESOURCE, b"municipal.health.vaccination"), (H_EVENT_ID, b"a"), (H_EVENT_ID, b"b")]),
         "duplicate_header"),
        (raw(GOOD, headers=[(H_RESOURCE, None)]), "missing_header"),  # type: ignore[list-item]
        (raw(GOOD, headers=[(H_RESOURCE, b"\xff\xfe municipal")]), "unknown_resource"),
        (raw(GOOD[:-1], headers=[(H_RESOURCE, b"municipal.health.vaccination"), (H_EVENT_ID, None)]),  # type: ignore[list-item]
         "truncated"),
    ],
)
def test_malformed_records_are_quarantined_with_reason(ctx: ExchangeContext, record: RawRecord, rule: str) -> None:
    good_next = raw(GOOD, offset=record.offset + 1)
    result = process_batch([record, good_next], ctx)
    quarantined = [o for o in result.outputs if o.topic.startswith("quarantine.")]
    assert len(quarantined) == 1
    body = decode_out(quarantined[0].value)
    assert body["rule"] == rule and body["reason"]
    assert body["original_value"] == record.value
    assert dict(quarantined[0].headers)[H_RULE] == rule.encode()
    assert result.tally[("quarantined", (rule,))] == 1
    # the worker carries on: the next good record is delivered
    assert sum(o.topic.startswith("feed.") for o in result.outputs) == 2


def test_redelivered_event_is_skipped_but_other_nodes_ids_are_not(ctx: ExchangeContext) -> None:
    first = process_batch([raw(GOOD, headers=[(H_RESOURCE, b"municipal.health.vaccination"),
                                              (H_EVENT_ID, b"e-1")])], ctx)
    again = process_batch([raw(GOOD, offset=9, headers=[(H_RESOURCE, b"municipal.health.vaccination"),
                                                        (H_EVENT_ID, b"e-1")])], ctx)
    assert len(first.audits) == 1 and len(first.audits[0][1]["deliveries"]) == 2 and first.duplicates == 0
    assert (again.outputs, again.audits, again.duplicates) == ([], [], 1)
    # the same id from another node is another event (it is quarantined here: not the provider)
    other = process_batch([raw(GOOD, topic="ingress.municipal.hrss", headers=[
        (H_RESOURCE, b"municipal.health.vaccination"), (H_EVENT_ID, b"e-1")])], ctx)
    assert other.duplicates == 0 and other.audits[0][1]["action"] == "quarantine"


def test_event_ids_are_stable_and_scoped(ctx: ExchangeContext) -> None:
    rec = raw(GOOD, offset=42)
    assert event_id_for(rec, {}) == event_id_for(raw(GOOD, offset=42), {})
    assert event_id_for(rec, {}) != event_id_for(raw(GOOD, offset=43), {})
    assert event_id_for(rec, {"hub-event-id": b"abc"}) == "abc"
    assert event_id_for(rec, {"hub-event-id": b"\xff\xfe"}) == event_id_for(rec, {})  # unusable -> derived
    assert event_id_for(rec, {"hub-event-id": b"x" * 500}) == event_id_for(rec, {})


def test_seed_configuration_is_valid() -> None:
    config = load_exchange_config(Path(REPO_ROOT / "config" / "seed.yaml"))
    assert {n.id for n in config.nodes} >= {f"district.{c}" for c in ("310101", "310115", "310151")}


def test_every_transfer_is_checked_against_its_grant(ctx: ExchangeContext) -> None:
    """A grant revoked after routing was decided (stale subscription) is refused at transfer, listed as denied."""
    revoked = ctx.grants["seed-civil-vaccination"].model_copy(update={"state": "revoked"})
    ctx.grants = {**ctx.grants, revoked.id: revoked}
    result = process_batch([raw(GOOD)], ctx)
    assert [o.topic for o in result.outputs if o.topic.startswith("feed.")] == ["feed.district.310115"]
    [(_, audit)] = result.audits
    [deny] = [d for d in audit["deliveries"] if d["decision"] == "deny"]
    assert (deny["counterparty"], deny["grant"], deny["reason"]) == (
        "municipal.civil-affairs", "seed-civil-vaccination", "grant_revoked"
    )
    assert [d["counterparty"] for d in audit["deliveries"] if d["decision"] == "allow"] == ["district.310115"]
    assert result.tally[("events", ("deliver", "municipal", "municipal", "denied"))] == 1


def test_a_grant_revoked_between_batches_stops_the_next_batch(ctx: ExchangeContext) -> None:
    """Decisions are made once per batch (one instant, one grant set), never carried into the next batch."""
    first = process_batch([raw(GOOD, offset=1)], ctx)
    assert "feed.municipal.civil-affairs" in [o.topic for o in first.outputs]
    revoked = ctx.grants["seed-civil-vaccination"].model_copy(update={"state": "revoked"})
    ctx.grants = {**ctx.grants, revoked.id: revoked}
    second = process_batch([raw(GOOD, headers=[(H_RESOURCE, b"municipal.health.vaccination"), (H_EVENT_ID, b"e-next")],
                                offset=2)], ctx)
    assert [o.topic for o in second.outputs if o.topic.startswith("feed.")] == ["feed.district.310115"]


def test_consumers_receive_masked_records_per_clearance(ctx: ExchangeContext) -> None:
    from hub.pipeline.core import DeliveryPlan
    from hub.policy.masking import derived_schema, plan_for

    resource = ctx.resources["municipal.health.vaccination"]
    district = ctx.nodes["district.310115"]  # cleared to L2
    plan = plan_for(resource, district, ctx.grants["seed-pudong-vaccination"])
    derived = derived_schema(json.loads((REPO_ROOT / "schemas/health/vaccination_record.avsc").read_text()), plan)
    ctx.delivery_plans = {(resource.id, district.id): DeliveryPlan(plan, framing.make_encoder(99, derived),
                                                                   tuple(plan.masked_fields))}
    result = process_batch([raw(GOOD)], ctx)
    [out] = [o for o in result.outputs if o.topic == "feed.district.310115"]
    sid, body = framing.split(out.value)
    delivered = framing.decode_body(body, framing.parse_schema(derived))
    assert sid == 99 and "resident_id" not in delivered
    assert (delivered["name"], delivered["phone"]) == ("张**", "139****5678")
    [(_, audit)] = result.audits
    masked = {d["counterparty"]: d["masked_fields"] for d in audit["deliveries"]}
    assert set(masked["district.310115"]) >= {"resident_id", "name", "phone"}
    assert masked["municipal.civil-affairs"] == []  # no plan: delivered as published


def test_a_resource_that_is_not_shared_never_flows(ctx: ExchangeContext) -> None:
    from hub.catalogue.model import Subscription

    resource = ctx.resources["municipal.health.vaccination"].model_copy(
        update={"sharing": "none", "legal_basis": "PRC Law on Mental Health, art. 4"})
    ctx.resources = {**ctx.resources, resource.id: resource}
    ctx.subscriptions = {resource.id: [Subscription(id="seed-civil-vaccination", consumer="municipal.civil-affairs",
                                                    resource=resource.id, scenario="vaccination-follow-up")]}
    result = process_batch([raw(GOOD)], ctx)
    assert [o for o in result.outputs if o.topic.startswith("feed.")] == []
    [(_, audit)] = result.audits
    assert {(d["decision"], d["reason"]) for d in audit["deliveries"]} == {("deny", "not_shared")}


def test_report_up_flows_without_a_grant(ctx: ExchangeContext) -> None:
    resource = ctx.resources["municipal.health.vaccination"].model_copy(update={"report_up": True})
    ctx.resources = {**ctx.resources, resource.id: resource}
    result = process_batch([raw(GOOD)], ctx)
    assert "feed.national" in {o.topic for o in result.outputs}
    [up] = [d for _, a in result.audits for d in a["deliveries"] if d["counterparty"] == "national"]
    assert (up["decision"], up["direction"], up["reason"], up["to_tier"]) == ("allow", "up", "report-up", "national")


def test_one_audit_record_counts_what_the_publish_delivery_and_denial_records_counted(ctx: ExchangeContext) -> None:
    """Delivered to the district and up to national, refused to civil affairs (revoked): one audit record,
    whose counters are exactly those of the four records (publish, 2 deliver, deny) the hub wrote before."""
    resource = ctx.resources["municipal.health.vaccination"].model_copy(update={"report_up": True})
    ctx.resources = {**ctx.resources, resource.id: resource}
    revoked = ctx.grants["seed-civil-vaccination"].model_copy(update={"state": "revoked"})
    ctx.grants = {**ctx.grants, revoked.id: revoked}
    result = process_batch([raw(GOOD, offset=3)], ctx)
    [(_, audit)] = result.audits
    assert sorted((d["counterparty"], d["decision"]) for d in audit["deliveries"]) == [
        ("district.310115", "allow"), ("municipal.civil-affairs", "deny"), ("national", "allow")]
    event_id, khash, source = audit["event_id"], audit["key_hash"], audit["source"]

    def old(action: str, counterparty: str | None, to_tier: str, direction: str | None, decision: str,
            reason: str) -> dict[str, object]:  # the pre-``deliveries`` pipeline's record (its ``_audit``)
        return {"event_id": event_id, "audit_id": f"{event_id}/{action}/{counterparty or '-'}", "ts": audit["ts"],
                "action": action, "actor": "municipal.health", "counterparty": counterparty,
                "resource": "municipal.health.vaccination", "scenario": None, "grant": None,
                "from_tier": "municipal", "to_tier": to_tier, "direction": direction, "decision": decision,
                "reason": reason, "key_hash": khash, "masked_fields": [], "prev_hash": None, "hash": None,
                "source": source}

    before = [old("publish", None, "municipal", None, "allow", "accepted"),
              old("deny", "municipal.civil-affairs", "municipal", "lateral", "deny", "grant_revoked"),
              old("deliver", "district.310115", "district", "down", "allow", "locality-return"),
              old("deliver", "national", "national", "up", "allow", "report-up")]
    now, then = CountTable(), CountTable()
    now.add([audit])
    then.add(before)
    assert now == then and sum(now.counts.values()) == 4
    decoded = decode_out(ctx.audit_schema.encode(audit))  # as reconcile and a restoring worker read it
    recount = Recount()
    recount.add(0, 0, decoded)
    assert recount.tables[0] == then


def test_derived_event_ids_are_exactly_uuid5_of_the_position() -> None:
    """Ids derived before and after the fast derivation are the same (dedupe across an upgrade)."""
    import uuid

    from hub.pipeline.core import EVENT_ID_NAMESPACE, derived_event_id

    positions = ("ingress.municipal.health/0/0", "ingress.district.310115/11/98765432101", "ingress.x/1/" + "9" * 40)
    for position in positions:
        assert derived_event_id(position) == str(uuid.uuid5(EVENT_ID_NAMESPACE, position))


def test_a_record_too_large_to_copy_is_quarantined_and_its_quarantine_copy_fits(ctx: ExchangeContext) -> None:
    # a good body with a 1 MB key: feeds would copy the key, and the send would fail on every retry
    huge_key = RawRecord("ingress.municipal.health", 0, 7, b"k" * 1_000_000, GOOD,
                         [(H_RESOURCE, b"municipal.health.vaccination")], 1_699_999_999_000)
    oversize = raw(framing.HEADER.pack(0, VACC_ID) + b"\x00" * 1_048_000, offset=8)
    big_headers = raw(b"\x01" * 10, headers=[(H_RESOURCE, b"municipal.health.vaccination"),
                                             *[(f"x-{i}", b"h" * 100_000) for i in range(5)]], offset=9)
    result = process_batch([huge_key, oversize, big_headers, raw(GOOD, offset=10)], ctx)
    quarantined = [o for o in result.outputs if o.topic.startswith("quarantine.")]
    assert [dict(o.headers)[H_RULE] for o in quarantined] == [b"too_large", b"too_large", b"bad_magic"]
    for out in quarantined:
        assert len(out.value) + len(out.key or b"") < 900_000  # the producer's limit is 1 MiB a request
    first = decode_out(quarantined[0].value)
    assert first["original_key"] == b"k" * QUARANTINE_KEEP_BYTES and "key 1000000 bytes" in first["reason"]
    assert first["original_value"] == GOOD
    third = decode_out(quarantined[2].value)
    assert len(third["original_headers"]) == 3 and "headers" in third["reason"]
    assert sum(o.topic.startswith("feed.") for o in result.outputs) == 2  # the good one still flows


def test_records_within_bounds_are_quarantined_whole() -> None:
    rec = raw(b"\x01" * 100, offset=3)
    assert bounded_copy(rec) == (rec, "")


def _headers(event_id: bytes) -> list[tuple[str, bytes]]:
    return [(H_RESOURCE, b"municipal.health.vaccination"), (H_EVENT_ID, event_id)]


def test_a_record_failing_quality_rules_is_quarantined_with_every_failed_rule(ctx: ExchangeContext) -> None:
    bad = vacc_record(record_id="r9") | {"resident_id": "310115198807061235", "district": "310103", "dose_number": 0,
                                         "name": " "}
    result = process_batch([raw(framing.encode(VACC_ID, VACC, bad), headers=_headers(b"q-1")), raw(GOOD, offset=1)],
                           ctx)
    [quarantined] = [o for o in result.outputs if o.topic == "quarantine.municipal.health"]
    body = decode_out(quarantined.value)
    failed = [(v["rule"], v["field"]) for v in body["violations"]]
    assert failed == [("resident_id", "resident_id"), ("required", "name"), ("district_code", "district"),
                      ("range", "dose_number")]
    assert body["rule"] == "resident_id" and body["record_key"] == "r9" and body["event_id"] == "q-1"
    assert "check character" in body["reason"] and "dose_number" in body["reason"]
    for rule in ("resident_id", "required", "district_code", "range"):  # each failed rule counted once
        assert result.tally[("quarantined", (rule,))] == 1
    assert sum(o.topic.startswith("feed.") for o in result.outputs) == 2  # only the good record is delivered
    audits = [a for _, a in result.audits]
    assert [a["action"] for a in audits] == ["quarantine", "publish"]
    assert audits[0]["audit_id"] == "q-1/quarantine/ingress.municipal.health/0/0"
    assert audits[0]["reason"] == "resident_id" and audits[0]["resource"] == "municipal.health.vaccination"


def test_a_fixed_record_resent_with_the_quarantined_event_id_is_delivered(ctx: ExchangeContext) -> None:
    bad = framing.encode(VACC_ID, VACC, vacc_record() | {"dose_number": 99})
    first = process_batch([raw(bad, headers=_headers(b"e-7"))], ctx)
    assert [a["action"] for _, a in first.audits] == ["quarantine"]
    replay = process_batch([raw(bad, headers=_headers(b"e-7"))], ctx)  # a crash redelivers the same record
    assert (replay.outputs, replay.audits, replay.duplicates) == ([], [], 1)
    fixed = process_batch([raw(GOOD, offset=8, headers=_headers(b"e-7"))], ctx)
    assert [a["action"] for _, a in fixed.audits] == ["publish"] and fixed.duplicates == 0
    resent = process_batch([raw(GOOD, offset=9, headers=_headers(b"e-7"))], ctx)  # a delivered event: skipped
    assert (resent.outputs, resent.duplicates) == ([], 1)


def test_a_restored_window_remembers_quarantines_by_position(ctx: ExchangeContext) -> None:
    from hub.audit.chain import ChainWriter, resume_state
    from hub.pipeline.partition_state import PartitionState

    bad = raw(framing.encode(VACC_ID, VACC, vacc_record() | {"dose_number": 99}), headers=_headers(b"e-8"))
    audits = [a for _, a in process_batch([bad], ctx).audits]
    state = PartitionState(0, ChainWriter(resume_state(None)))  # a new owner rebuilds from the audit log
    for audit in audits:
        state.absorb(audit, count=True)
    restored = ctx
    restored.dedupe = lambda p: state.dedupe
    assert process_batch([bad], restored).duplicates == 1
    assert [a["action"] for _, a in process_batch([raw(GOOD, offset=3, headers=_headers(b"e-8"))], restored).audits
            ] == ["publish"]


def test_reference_rules_ask_the_injected_lookup_and_pass_unknown(ctx: ExchangeContext) -> None:
    from hub.catalogue.model import QualityRule

    vacc = SEED.resource("municipal.health.vaccination")
    assert vacc is not None
    rule = QualityRule(field="site_uscc", rule="reference", args={"resource": "municipal.big-data.legal-person"})
    config = SEED.model_copy(update={"resources": [
        r.model_copy(update={"quality_rules": [*r.quality_rules, rule]}) if r.id == vacc.id else r
        for r in SEED.resources]})
    answers: dict[str, bool | None] = {}
    ctx = ExchangeContext(**{k: getattr(ctx, k) for k in ("grants", "schema_lookup", "subject_ids", "audit_schema",
                                                          "quarantine_schema", "clock_ms")},
                          config=config, key_exists=lambda rid, key: answers.get(key))
    assert process_batch([raw(GOOD)], ctx).audits[0][1]["action"] == "publish"  # unknown: not a failure
    answers["91110000600037341L"] = False
    assert process_batch([raw(GOOD, offset=1)], ctx).audits[0][1]["reason"] == "reference"
    answers["91110000600037341L"] = True
    assert process_batch([raw(GOOD, offset=2)], ctx).audits[0][1]["action"] == "publish"


def test_a_restored_window_keeps_call_quarantines_under_the_calls_key() -> None:
    """A quarantined call request is deduplicated by (request topic, its position) by the CallAgent: the restore
    must key it so, or a redelivered bad request would be quarantined (and audited) twice."""
    from hub.audit.chain import ChainWriter, resume_state
    from hub.audit.records import quarantine_audit
    from hub.pipeline.partition_state import PartitionState

    position = "call.municipal.hrss.request/0/9"
    state = PartitionState(0, ChainWriter(resume_state(None)))
    state.absorb(quarantine_audit(1, position, "municipal.hrss", "municipal", "bad_call_request", None, None,
                                  position), count=False)
    assert ("call.municipal.hrss.request", position) in state.dedupe


CREDIT_ID = 15
CREDIT = schema("schemas/national/enterprise_credit_record.avsc")


def test_a_record_from_another_platform_keeps_its_hops_there_ahead_of_this_hubs(ctx: ExchangeContext) -> None:
    credit_ctx = ExchangeContext(
        config=SEED, grants=standing_grants(SEED.subscriptions), schema_lookup={**SCHEMAS, CREDIT_ID: CREDIT}.get,
        subject_ids={"national.enterprise-credit": frozenset({CREDIT_ID})}, audit_schema=ctx.audit_schema,
        quarantine_schema=ctx.quarantine_schema, clock_ms=lambda: 1_700_000_000_000)
    record = dict(record_id="c1", uscc="91110000600037341L", entity_name="e", record_type="commendation",
                  authority="a", authority_uscc="91110000600037341L", document_number="d", content="c",
                  area_code="310000", decided_on=1, publicity_until=2, publicity_status="public", updated_at=3)
    value = framing.encode(CREDIT_ID, CREDIT, record)
    hops = [(H_LINEAGE, json.dumps(["national", "hub", "region.shanghai"]).encode())]
    result = process_batch([raw(value, [(H_RESOURCE, b"national.enterprise-credit"), *hops],
                                topic="ingress.national")], credit_ctx)
    [health] = [o for o in result.outputs if o.topic == "feed.municipal.health"]
    assert json.loads(dict(health.headers)[H_LINEAGE]) == [
        "national", "hub", "region.shanghai", "national", "hub", "municipal.health"]
    # the next event without a prior lineage gets this hub's hops only (the cached route headers are untouched)
    plain = process_batch([raw(value, [(H_RESOURCE, b"national.enterprise-credit")], offset=1,
                               topic="ingress.national")], credit_ctx)
    [health] = [o for o in plain.outputs if o.topic == "feed.municipal.health"]
    assert json.loads(dict(health.headers)[H_LINEAGE]) == ["national", "hub", "municipal.health"]


def test_a_department_cannot_claim_hops_on_another_platform(ctx: ExchangeContext) -> None:
    forged = [(H_LINEAGE, json.dumps(["national", "hub", "region.shanghai"]).encode())]
    value = framing.encode(VACC_ID, VACC, vacc_record())
    result = process_batch([raw(value, [(H_RESOURCE, b"municipal.health.vaccination"), *forged])], ctx)
    [lateral] = [o for o in result.outputs if o.topic == "feed.municipal.civil-affairs"]
    assert json.loads(dict(lateral.headers)[H_LINEAGE]) == ["municipal.health", "hub", "municipal.civil-affairs"]
