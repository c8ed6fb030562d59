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
from hub.contract import AUDIT_TOPIC, COUNTS_TOPIC
from hub.stats.counts import CountTable, count_key
from hub.stats.reader import Snapshot

TS = 1_767_225_600_000


def event(n: int, action: str = "deliver", counterparty: str | None = "district.310115", node: str = "municipal.health",
          partition: int = 0) -> dict:
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
    log0 = [event(1, "publish", None), event(1), CHECKPOINT, event(2, "publish", None), event(2)]
    log1 = [event(3, "publish", None, partition=1), event(3, partition=1)]
    recount = Recount()
    feed(recount, 0, log0)
    feed(recount, 1, log1)
    snaps = {0: snapshot(0, 5, log0), 1: snapshot(1, 2, log1)}
    result = assemble(AUDIT_TOPIC, COUNTS_TOPIC, snaps, recount, {0: (0, 5), 1: (0, 2)})
    assert result.equal and result.exit_code == EXIT_EQUAL and result.status == "equal"
    assert recount.checkpoints == 1 and result.counted_total == result.recounted_total == 6
    assert [p.uncovered for p in result.partitions] == [0, 0]
    assert result.to_json()["differences"] == []


def test_a_counter_off_by_one_is_a_difference_with_its_key() -> None:
    log = [event(1, "publish", None), event(1), event(2, "publish", None), event(2)]
    recount = Recount()
    feed(recount, 0, log)
    counted = snapshot(0, 4, log + [event(9)])  # the worker counted an event that has no audit record
    result = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {0: counted}, recount, {0: (0, 4)})
    assert result.exit_code == EXIT_DIFFERENT
    (diff,) = result.differences
    assert diff.partition == 0 and diff.counted == 3 and diff.recounted == 2
    assert diff.key == count_key(event(1))
    assert result.to_json()["differences"][0]["difference"] == 1
    assert result.to_json()["differences"][0]["direction"] == "down"


def test_duplicates_are_counted_once_and_reported() -> None:
    log = [event(1, "publish", None), event(1), event(1)]  # the delivery audited twice
    recount = Recount()
    feed(recount, 0, log)
    (dup,) = recount.duplicates
    assert (dup.partition, dup.offset, dup.node) == (0, 2, "municipal.health")
    assert dup.audit_id == "e1/deliver/district.310115"
    worker_counted_twice = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {0: snapshot(0, 3, log)}, recount, {0: (0, 3)})
    assert worker_counted_twice.exit_code == EXIT_DIFFERENT
    assert worker_counted_twice.differences[0].counted == 2 and worker_counted_twice.differences[0].recounted == 1
    counted_once = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {0: snapshot(0, 3, log[:2])}, recount, {0: (0, 3)})
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
    log = [event(1, "publish", None), event(1), event(2, "publish", None), event(2)]
    recount = Recount()
    feed(recount, 0, log[:2])  # the shell reads only below the snapshot's audit_offset
    result = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {0: snapshot(0, 2, log[:2])}, recount, {0: (0, 4)})
    assert result.equal
    assert result.partitions[0].uncovered == 2 and result.partitions[0].compared_to == 2


def test_a_partition_without_snapshot_compares_nothing_and_says_so() -> None:
    recount = Recount()
    result = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {}, recount, {0: (0, 3)})
    assert result.equal and result.partitions[0].snapshot_offset is None and result.partitions[0].uncovered == 3


def test_truncated_log_expired_start_and_undecodable_records() -> None:
    log = [event(1, "publish", None), event(1)]
    recount = Recount()
    feed(recount, 0, log)
    shorter = assemble(AUDIT_TOPIC, COUNTS_TOPIC, {0: snapshot(0, 5, log)}, recount, {0: (0, 2)})
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
