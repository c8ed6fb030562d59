"""What the fault suite (``bench/faults.py``) concludes from what it read back: plain functions on plain data.

After each kind of fault the suite reads every entitled feed, the audit log and the durable counts, and
accounts for every event it published (and the broker acknowledged):

* **lost**: an event missing from one of its entitled feeds, or without an audit record;
* **duplicated audits**: audit records beyond the one each event must have;
* **count errors**: ``hub audit reconcile`` differences and duplicates, plus any difference between the
  durable publish count and the events published.

Deliveries may repeat (at-least-once: a feed record written before a crash is written again); audits and
counts may not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Outcome:
    lost: int
    duplicated_audits: int
    count_errors: int
    lost_examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    """One line of the fault table."""

    kind: str
    injected: int
    events: int
    lost: int
    duplicated_audits: int
    count_errors: int
    recover_s: float
    process_exits: int = 0  # hub processes that ended by themselves during the faults (and were restarted)
    restarts_in_place: int = 0  # workers that could not write a batch and started themselves again

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def account(
    entitled: Mapping[str, Iterable[str]],
    delivered: Iterable[tuple[str, str]],
    audited: Iterable[str],
    *,
    reconcile_errors: int,
    counted_publishes: int,
) -> Outcome:
    """Account for every published event.

    ``entitled``: event id -> the feed topics it must reach; ``delivered``: (topic, event id) of every feed
    record read; ``audited``: the event id of every audit record read (all of them, repeats included);
    ``reconcile_errors``: differences + duplicates ``hub audit reconcile`` reported; ``counted_publishes``:
    the durable count of publishes of the suite's resource.
    """
    seen = set(delivered)
    audits = Counter(audited)
    lost: list[str] = []
    for event_id, topics in entitled.items():
        if audits[event_id] == 0 or any((topic, event_id) not in seen for topic in topics):
            lost.append(event_id)
    duplicated = sum(n - 1 for event_id, n in audits.items() if n > 1 and event_id in entitled)
    count_errors = reconcile_errors + abs(counted_publishes - len(entitled))
    return Outcome(len(lost), duplicated, count_errors, tuple(sorted(lost)[:5]))


def table(rows: Iterable[Row]) -> str:
    """The fault table as Markdown (the README shows the last run's)."""
    lines = [
        "| fault | injected | events | lost | duplicated audits | count errors | time to recover | process exits "
        "| restarts in place |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.kind} | {r.injected} | {r.events:,} | {r.lost} | {r.duplicated_audits} | "
                     f"{r.count_errors} | {r.recover_s:.1f} s | {r.process_exits} | {r.restarts_in_place} |")
    return "\n".join(lines)
