"""Objections in the hot path without Kafka: hub-flag on flagged records, corrections to exactly the recipients,
and the bounded first-delivery notes on hub.recipients."""

from __future__ import annotations

import json

from hub.audit.records import correction_reason
from hub.contract import H_EVENT_ID, H_FLAG, H_OBJECTION, H_RESOURCE, H_RULE, RECIPIENTS_TOPIC
from hub.objections.machine import FilingRequest, Limits, file, transition
from hub.objections.model import Objection
from hub.objections.recipients import (
    FirstDeliveries,
    batch_sets,
    partition_for,
    recipients_from,
    record_prefix,
)
from hub.pipeline.core import ExchangeContext, process_batch
from hub.registry import framing

from .test_pipeline_core import VACC, VACC_ID, ctx, raw, vacc_record  # noqa: F401 - ctx is a fixture

RESOURCE = "municipal.health.vaccination"


def flagged(record_key: str = "r1", recipients: tuple[str, ...] = ("district.310115", "municipal.civil-affairs"),
            ) -> Objection:
    obj = file(FilingRequest(resource=RESOURCE, record_key=record_key, reason="wrong dose"), objection_id="obj-1",
               filer="municipal.civil-affairs", provider="municipal.health", recipients=recipients, now=0,
               limits=Limits())
    return transition(transition(obj, "accept", "hub", 1, Limits()), "flag", "hub", 2, Limits())


def with_objection(ctx: ExchangeContext, obj: Objection) -> ExchangeContext:  # noqa: F811
    ctx.flags = {obj.resource: {obj.record_key: obj.objection_id}}
    ctx.corrections = {obj.objection_id: obj}
    return ctx


def feeds(result) -> list:  # noqa: ANN001
    return [o for o in result.outputs if o.topic.startswith("feed.")]


def test_a_flagged_record_is_delivered_with_hub_flag_and_others_without(ctx: ExchangeContext) -> None:  # noqa: F811
    with_objection(ctx, flagged("r1"))
    result = process_batch([raw(framing.encode(VACC_ID, VACC, vacc_record(record_id="r1")), offset=1),
                            raw(framing.encode(VACC_ID, VACC, vacc_record(record_id="r2")), offset=2)], ctx)
    by_key = {}
    for out in feeds(result):
        by_key.setdefault(out.key, []).append(dict(out.headers).get(H_FLAG))
    assert by_key == {b"r1": [b"obj-1", b"obj-1"], b"r2": [None, None]}


def test_a_correction_reaches_exactly_the_recipients_with_its_objection(ctx: ExchangeContext) -> None:  # noqa: F811
    # the wrong record went to civil affairs and Pudong; the correction moves it to Xuhui (the district was wrong)
    with_objection(ctx, flagged("r1"))
    corrected = framing.encode(VACC_ID, VACC, vacc_record(district="310104", record_id="r1"))
    headers = [(H_RESOURCE, RESOURCE.encode()), (H_OBJECTION, b"obj-1"), (H_EVENT_ID, b"fix-1")]
    result = process_batch([raw(corrected, headers, offset=3)], ctx)
    out = feeds(result)
    assert sorted(o.topic for o in out) == ["feed.district.310115", "feed.municipal.civil-affairs"]
    for o in out:
        assert dict(o.headers)[H_OBJECTION] == b"obj-1" and H_FLAG not in dict(o.headers)
    [(_, audit)] = result.audits
    assert audit["reason"] == correction_reason("obj-1") == "correction of objection obj-1"
    assert sorted(d["counterparty"] for d in audit["deliveries"]) == ["district.310115", "municipal.civil-affairs"]
    assert not [o for o in result.outputs if o.topic == RECIPIENTS_TOPIC]  # a correction adds no recipient


def test_a_correction_goes_to_no_one_who_did_not_receive_the_wrong_record(ctx: ExchangeContext) -> None:  # noqa: F811
    with_objection(ctx, flagged("r1", recipients=("municipal.civil-affairs",)))
    headers = [(H_RESOURCE, RESOURCE.encode()), (H_OBJECTION, b"obj-1")]
    result = process_batch([raw(framing.encode(VACC_ID, VACC, vacc_record(record_id="r1")), headers)], ctx)
    assert [o.topic for o in feeds(result)] == ["feed.municipal.civil-affairs"]


def test_a_correction_naming_no_flagged_objection_on_the_record_is_quarantined(
    ctx: ExchangeContext,  # noqa: F811
) -> None:
    with_objection(ctx, flagged("r1"))
    for offset, (objection, key) in enumerate(((b"obj-unknown", "r1"), (b"obj-1", "r9"))):
        headers = [(H_RESOURCE, RESOURCE.encode()), (H_OBJECTION, objection)]
        result = process_batch([raw(framing.encode(VACC_ID, VACC, vacc_record(record_id=key)), headers, offset)],
                               ctx)
        assert not feeds(result)
        [quarantined] = [o for o in result.outputs if o.topic == "quarantine.municipal.health"]
        assert dict(quarantined.headers)[H_RULE] == b"invalid_correction"


def test_first_deliveries_are_noted_once_per_record_and_consumer(ctx: ExchangeContext) -> None:  # noqa: F811
    ctx.first_deliveries = FirstDeliveries(capacity=100, refresh_ms=1000)
    ctx.recipients_partitions = 4
    value = framing.encode(VACC_ID, VACC, vacc_record(record_id="r1"))
    first = process_batch([raw(value, offset=1)], ctx)
    [note] = [o for o in first.outputs if o.topic == RECIPIENTS_TOPIC]  # one per partition and batch
    prefix = record_prefix(RESOURCE, "r1")
    [consumers] = batch_sets(note.value, prefix)
    assert sorted(consumers.split(",")) == ["district.310115", "municipal.civil-affairs"]
    assert note.partition == partition_for(prefix, 4)  # all of one record's sets share a partition
    assert json.loads(note.value)["at"] == ctx.clock_ms()
    moved = process_batch([raw(framing.encode(VACC_ID, VACC, vacc_record(district="310104", record_id="r1")),
                               headers=[(H_RESOURCE, RESOURCE.encode()), (H_EVENT_ID, b"e3")], offset=3)], ctx)
    [other] = [o for o in moved.outputs if o.topic == RECIPIENTS_TOPIC]  # another set: noted again
    assert other.partition == note.partition and other.key != note.key
    [moved_to] = batch_sets(other.value, prefix)
    assert recipients_from([(note.key, note.value), (other.key, other.value)], prefix) == {
        "district.310115", "municipal.civil-affairs"} | set(moved_to.split(","))
    again = process_batch([raw(value, headers=[(H_RESOURCE, RESOURCE.encode()), (H_EVENT_ID, b"e2")], offset=2)],
                          ctx)
    assert not [o for o in again.outputs if o.topic == RECIPIENTS_TOPIC]  # written lately: suppressed


def test_first_deliveries_stay_bounded_and_refresh() -> None:
    seen = FirstDeliveries(capacity=2, refresh_ms=100)
    assert seen.due(b"a", 0) and not seen.due(b"a", 50)
    assert seen.due(b"b", 0) and seen.due(b"c", 0)
    assert len(seen) == 2 and seen.due(b"a", 60)  # "a" was forgotten first: written again (harmless)
    assert seen.due(b"b", 200)  # older than refresh_ms: written again, moving it forward in the window


def test_recipients_are_read_back_per_record_with_tombstones() -> None:
    prefix = record_prefix(RESOURCE, "r1")
    other = record_prefix(RESOURCE, "r10")
    log = [(prefix + b"district.310115,municipal.market", b"1 e"), (other + b"region.js", b"1 e"),
           (prefix + b"municipal.market", b"2 e"), (prefix + b"district.310115,municipal.market", None), (None, b"x")]
    assert recipients_from(log, prefix) == {"municipal.market"}  # the per-set records of earlier releases


def test_a_batch_note_holds_every_record_of_its_partition_once(ctx: ExchangeContext) -> None:  # noqa: F811
    ctx.first_deliveries = FirstDeliveries(capacity=100, refresh_ms=1000)
    ctx.recipients_partitions = 2
    keys = [f"r{i}" for i in range(20)]
    batch = [raw(framing.encode(VACC_ID, VACC, vacc_record(record_id=k)),
                 headers=[(H_RESOURCE, RESOURCE.encode()), (H_EVENT_ID, f"e{i}".encode())], offset=i)
             for i, k in enumerate(keys)]
    result = process_batch(batch, ctx)
    notes = [o for o in result.outputs if o.topic == RECIPIENTS_TOPIC]
    assert len(notes) == 2 and {n.partition for n in notes} == {0, 1}  # one per partition, not one per event
    assert result.outputs[-len(notes):] == notes  # after the batch's feeds
    for k in keys:
        prefix = record_prefix(RESOURCE, k)
        [note] = [n for n in notes if n.partition == partition_for(prefix, 2)]
        assert recipients_from([(n.key, n.value) for n in notes], prefix) == {
            "district.310115", "municipal.civil-affairs"}
        assert len(batch_sets(note.value, prefix)) == 1
    again = process_batch(batch, ctx)
    assert again.duplicates == 20 and not [o for o in again.outputs if o.topic == RECIPIENTS_TOPIC]
    assert batch_sets(b"not json", record_prefix(RESOURCE, "r1")) == []
