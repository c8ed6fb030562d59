"""``hub audit reconcile``'s decision (pure): recount below each snapshot's offset, each audit id once."""

from __future__ import annotations

from hub.audit.reconcile import (
    EXIT_DIFFERENT,
    EXIT_EQUAL,
    EXIT_UNVERIFIABLE,
    Recount,
    assemble,
    audit_identity,
    compare,
)
from hub.audit.records import delivery_entry, publish_record
from hub.contract import AUDIT_TOPIC, COUNTS_TOPIC
from hub.stats.counts import CountTable, count_key, count_keys
from hub.stats.reader import Snapshot

TS = 1_767_225_600_000


def event(n: int, node: str = "municipal.health", partition: int = 0, denied: bool = False) -> dict:
    """The one audit record of event n: its publish, delivered down to its district (and refused to
    civil affairs when ``denied``)."""
    deliveries = [delivery_entry("district.310115", "vaccination-follow-up", "g-1", "district", "down", "allow",
                                 "locality-return")]
    if denied:
        deliveries.append(delivery_entry("municipal.civil-affairs", "vaccination-follow-up", "g-2", "municipal",
                                         "lateral", "deny", "grant_revoked"))
    return publish_record(TS, f"e{n}", node, "municipal.health.vaccination", "municipal", None,
                          f"ingress.{node}/{partition}/{n}", deliveries)


def legacy(n: int, action: str = "deliver", counterparty: str | None = "district.310115",
           node: str = "municipal.health", partition: int = 0) -> dict:
    """A record of the format before ``deliveries``: one per publish and one per delivery."""
    event_id = f"e{n}"
    return {
        "event_id": event_id, "audit_id": f"{event_id}/{action}/{counterparty or '-'}", "ts": TS, "action": action,
        "actor": node, "counterparty": counterparty, "resource": "municipal.health.vaccination",
        "from_tier": "municipal", "to_tier": "district" if counterparty else "municipal",
        "direction": "down" if action == "deliver" else None, "decision": "allow",
        "reason": "locality-return" if action == "deliver" else "accepted",
        "source": f"ingress.{node}/{partition}/{n}",
    }


CHECKPOINT = {"event_id": "checkpoint-1", "audit_id": "checkpoint-1", "ts": TS, "action": "checkpoint",
              "actor": "hub", "decision": "allow", "reason": "count=2;from_seq=0;head=x"}


def snapshot(partition: int, audit_offset: int, audits: list[dict]) -> Snapshot:
    table = CountTable()
    table.add(audits)
    return Snapshot(partition, audit_offset, table, None, 0, 0)


def feed(recount: Recount, partition: int, audits: list[dict]) -> None:
    for offset, a in enumerate(audits):
        recount.add(partition, offset, a)


def test_equal_counts_reconcile() -> None:
    log0 = [event(1), CHECKPOINT, event(2, denied=True)]
    log1 = [event(3, partition=1)]
    recount = Recount()
    feed(recount, 0, log0)
    feed(recount, 1, log1)
    snaps = {0: snapshot(0, 3, log0), 1: snapshot(1, 1, log1)}
    result = assemble(AUDIT_TOPIC, COUNTS_TOPIC, snaps, recount, {0: (0, 3), 1: (0, 1)})
    assert result.equal and result.exit_code == EXIT_EQUAL and result.status == "equal"
    assert recount.checkpoints == 1 and result.counted_total == result.recounted_total == 7  # 3 publish, 3+1
    assert [p.uncovered for p in result.partitions] == [0, 0]
    assert result.to_json()["differences"] == []


def test_a_log_of_the_old_format_and_a_mixed_log_reconcile() -> None:
    """Partitions written before ``deliveries`` (a record per delivery) count as they always did."""
    old = [legacy(1, "publish", None), legacy(1), CHECKPOINT, legacy(2, "publish", None), legacy(2)]
    mixed = [legacy(5, "publish", None, partition=1), legacy(5, partition=1), event(3, partition=1),
             event(4, partition=1, denied=True)]  # a partition the new format continued
    recount = Recount()
    feed(recount, 0, old)
    feed(recount, 1, mixed)
    snaps = {0: snapshot(0, len(old), old), 1: snapshot(1, len(mixed), mixed)}
    result = assemble("hub.audit", "hub.counts", snaps, recount, {0: (0, len(old)), 1: (0, len(mixed))})
    assert result.equal and result.counted_total == result.recounted_total == 4 + 7
    new = Recount()
    feed(new, 0, [event(1), event(2)])
    assert new.tables[0] == recount.tables[0]  # the same traffic, the same counters in either format


def test_a_counter_off_by_one_is_a_difference_with_its_key() -> None:
    log = [event(1), event(2)]
    recount = Recount()
    feed(recount, 0, log)
    counted = snapshot(0, 2, log + [event(9)])  # the worker counted an event that has no audit record
    result = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {0: counted}, recount, {0: (0, 2)})
    assert result.exit_code == EXIT_DIFFERENT
    deliver, publish = result.differences  # the event's delivery and its publish (sorted by key)
    assert [deliver.key, publish.key] == sorted(count_keys(event(1)))
    assert all(d.partition == 0 and d.counted == 3 and d.recounted == 2 for d in result.differences)
    assert publish.key == count_key(event(1)) and deliver.key[1] == "deliver"
    assert result.to_json()["differences"][0]["difference"] == 1
    assert result.to_json()["differences"][0]["direction"] == "down"


def test_duplicates_are_counted_once_and_reported() -> None:
    log = [event(1), event(1, denied=True)]  # the event audited twice
    recount = Recount()
    feed(recount, 0, log)
    (dup,) = recount.duplicates
    assert (dup.partition, dup.offset, dup.node) == (0, 1, "municipal.health")
    assert dup.audit_id == "e1/publish/-"
    worker_counted_twice = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {0: snapshot(0, 2, log)}, recount, {0: (0, 2)})
    assert worker_counted_twice.exit_code == EXIT_DIFFERENT
    assert {(d.key[1], d.counted, d.recounted) for d in worker_counted_twice.differences} == {
        ("publish", 2, 1), ("deliver", 2, 1), ("deny", 1, 0)}
    counted_once = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {0: snapshot(0, 2, log[:1])}, recount, {0: (0, 2)})
    assert not counted_once.differences and counted_once.duplicate_count == 1
    assert counted_once.exit_code == EXIT_DIFFERENT  # a duplicate audit record is itself a failure


def test_event_ids_are_scoped_to_the_publishing_node() -> None:
    a = event(1, node="municipal.health")
    b = event(1, node="municipal.market")
    assert audit_identity(a) != audit_identity(b)
    recount = Recount()
    feed(recount, 0, [a, b])
    assert recount.duplicate_count == 0
    no_source = dict(a, source=None)
    assert audit_identity(no_source) == ("municipal.health", a["audit_id"])  # the actor, then


def test_records_newer_than_the_snapshot_are_uncovered_not_different() -> None:
    log = [event(1), event(2)]
    recount = Recount()
    feed(recount, 0, log[:1])  # the shell reads only below the snapshot's audit_offset
    result = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {0: snapshot(0, 1, log[:1])}, recount, {0: (0, 2)})
    assert result.equal
    assert result.partitions[0].uncovered == 1 and result.partitions[0].compared_to == 1


def test_a_partition_without_snapshot_compares_nothing_and_says_so() -> None:
    recount = Recount()
    result = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {}, recount, {0: (0, 3)})
    assert result.equal and result.partitions[0].snapshot_offset is None and result.partitions[0].uncovered == 3


def test_truncated_log_expired_start_and_undecodable_records() -> None:
    log = [event(1)]
    recount = Recount()
    feed(recount, 0, log)
    shorter = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {0: snapshot(0, 5, log)}, recount, {0: (0, 1)})
    assert shorter.exit_code == EXIT_DIFFERENT and "removed" in shorter.missing[0]
    expired = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {0: snapshot(0, 2, log)}, Recount(), {0: (1, 2)})
    assert expired.exit_code == EXIT_UNVERIFIABLE and "expired" in expired.unverifiable[0]
    bad = Recount()
    bad.add(0, 0, None, "bad_magic: not Confluent framing")
    result = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {}, bad, {0: (0, 1)})
    assert result.exit_code == EXIT_UNVERIFIABLE and result.undecodable[0].offset == 0
    orphan = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {3: snapshot(3, 1, log)}, Recount(), {0: (0, 0)})
    assert orphan.exit_code == EXIT_DIFFERENT and "no partition 3" in orphan.missing[0]


def test_compare_treats_zero_as_absent() -> None:
    a = CountTable({("2026-01-01", "publish", "", "", "", "r", "allow", "accepted"): 0})
    assert compare({0: a}, {}) == []
    assert compare({0: a}, {1: CountTable()}) == []
