"""The fault suite's accounting: lost events, duplicated audit records and count errors, from what was read."""

from __future__ import annotations

from bench.fault_accounting import Row, account, table

ENTITLED = {"a": ("feed.x", "feed.d1"), "b": ("feed.x", "feed.d2"), "c": ("feed.x", "feed.d1")}
ALL_DELIVERED = [("feed.x", "a"), ("feed.d1", "a"), ("feed.x", "b"), ("feed.d2", "b"), ("feed.x", "c"),
                 ("feed.d1", "c")]


def test_everything_accounted_for() -> None:
    outcome = account(ENTITLED, ALL_DELIVERED, ["a", "b", "c"], reconcile_errors=0, counted_publishes=3)
    assert (outcome.lost, outcome.duplicated_audits, outcome.count_errors) == (0, 0, 0)


def test_repeated_deliveries_are_fine_repeated_audits_are_not() -> None:
    outcome = account(ENTITLED, [*ALL_DELIVERED, ("feed.x", "a")], ["a", "a", "b", "c", "c", "c", "z", "z"],
                      reconcile_errors=0, counted_publishes=3)
    assert outcome.lost == 0 and outcome.duplicated_audits == 3  # z is not the suite's event


def test_a_missing_delivery_or_audit_is_a_loss() -> None:
    outcome = account(ENTITLED, [d for d in ALL_DELIVERED if d != ("feed.d2", "b")], ["a", "b"],
                      reconcile_errors=0, counted_publishes=3)
    assert outcome.lost == 2 and outcome.lost_examples == ("b", "c")


def test_count_errors_add_reconcile_findings_and_the_publish_count_difference() -> None:
    outcome = account(ENTITLED, ALL_DELIVERED, ["a", "b", "c"], reconcile_errors=2, counted_publishes=5)
    assert outcome.count_errors == 4


def test_table_lists_every_row() -> None:
    text = table([Row("broker pause", 10, 12_345, 0, 0, 0, 7.25, 1, 2)])
    assert text.splitlines()[0].startswith("| fault | injected | events | lost |")
    assert "| broker pause | 10 | 12,345 | 0 | 0 | 0 | 7.2 s | 1 | 2 |" in text
