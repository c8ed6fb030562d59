"""Per-event cost of counting, next to the Avro work every event pays.

    python -m bench.count_cost [--events 20000] [--repeats 5] [--keys 20000] [--json]

Measured in one process and run, best of ``--repeats`` passes each:

* ``count``: ``CountTable.add`` (``count_keys`` + Counter increments) over the AuditRecord the pipeline
  writes for one vaccination event (one publish listing a lateral and a locality-return delivery: 3
  counters), per event and per audit record;
* ``snapshot``: ``encode_snapshot`` of a partition's table with ``--keys`` counters (about a year of days x
  resources x actions/directions/reasons), per snapshot, and amortised per event at 1,000 and 10,000
  events/s (the worker writes at most one snapshot per partition per second);
* ``recount``: ``hub audit reconcile``'s ``Recount.add`` per audit record (identity hash + count), besides
  reading and decoding;
* the baseline: one fastavro decode + encode of a vaccination record.
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

from bench.audit_cost import NOW, audit_record, best_ns_per_item, vaccination_codec
from hub.audit.reconcile import Recount
from hub.audit.records import delivery_entry, publish_record
from hub.stats.counts import CountTable, encode_snapshot

AUDITS_PER_EVENT = 1  # the publish, listing civil-affairs (lateral) and the record's district (locality return)


def event_audits(i: int, rng: random.Random) -> list[dict[str, Any]]:
    deliver = audit_record(i, rng)
    publish = publish_record(deliver["ts"], deliver["event_id"], deliver["actor"], deliver["resource"], "municipal",
                             deliver["key_hash"], deliver["source"], [
                                 delivery_entry("municipal.civil-affairs", deliver["scenario"], "sub-civil",
                                                "municipal", "lateral", "allow", "subscription"),
                                 delivery_entry(deliver["counterparty"], deliver["scenario"], deliver["grant"],
                                                "district", "down", "allow", "locality-return",
                                                deliver["masked_fields"]),
                             ])
    return [publish]


def big_table(keys: int, rng: random.Random) -> CountTable:
    resources = [f"municipal.dept{r}.resource{r}" for r in range(40)]
    shapes = [("publish", "municipal", "municipal", "", "allow", "accepted"),
              ("deliver", "municipal", "district", "down", "allow", "locality-return"),
              ("deliver", "municipal", "municipal", "lateral", "allow", "subscription"),
              ("deliver", "municipal", "region", "regional", "allow", "subscription"),
              ("deliver", "municipal", "national", "up", "allow", "report-up"),
              ("quarantine", "municipal", "municipal", "", "deny", "bad_magic")]
    table = CountTable()
    day = 0
    while len(table.counts) < keys:
        for resource in resources:
            for action, f, t, d, decision, reason in shapes:
                key = (f"2026-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}", action, f, t, d, resource, decision, reason)
                table.counts[key] = rng.randint(1, 10_000_000)
        day += 1
    return table


class _Task:
    pass


class _Stream:
    shortlabel = "Stream: Topic: ingress.municipal.health"

    def __init__(self) -> None:
        self.task_owner = _Task()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.count_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per pass (default 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the best is reported (default 5)")
    parser.add_argument("--keys", type=int, default=20_000, help="counters in the snapshotted table (default 20000)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    rng = random.Random(20250101)
    audits = [a for i in range(args.events) for a in event_audits(i, rng)]
    for a in audits:
        a["ts"] = NOW  # one statistics day, like a day's traffic

    def count() -> int:
        table = CountTable()
        for i in range(0, len(audits), 1500):  # the worker adds a batch at a time
            table.add(audits[i : i + 1500])
        return args.events

    def recount() -> int:
        r = Recount()
        for offset, a in enumerate(audits):
            r.add(0, offset, a)
        return len(audits)

    table = big_table(args.keys, rng)
    snapshot_ns = best_ns_per_item(lambda: (encode_snapshot(123_456, table, "ab" * 32), 1)[1], args.repeats)
    snapshot_bytes = len(encode_snapshot(123_456, table, "ab" * 32))

    codec = vaccination_codec(args.events, rng)

    count_ns = best_ns_per_item(count, args.repeats)
    recount_ns = best_ns_per_item(recount, args.repeats)
    codec_ns = best_ns_per_item(codec, args.repeats)
    figures = {
        "events": args.events,
        "repeats": args.repeats,
        "count_us_per_event": round(count_ns / 1000, 3),
        "count_us_per_audit_record": round(count_ns / AUDITS_PER_EVENT / 1000, 3),
        "snapshot_keys": len(table.counts),
        "snapshot_bytes": snapshot_bytes,
        "snapshot_encode_ms": round(snapshot_ns / 1e6, 3),
        "snapshot_us_per_event_at_1k_per_s": round(snapshot_ns / 1000 / 1000, 3),
        "snapshot_us_per_event_at_10k_per_s": round(snapshot_ns / 1000 / 10_000, 3),
        "recount_us_per_audit_record": round(recount_ns / 1000, 3),
        "vaccination_decode_encode_us_per_record": round(codec_ns / 1000, 3),
        "ratio_count_to_vaccination_codec": round(count_ns / codec_ns, 3),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"counting cost: {args.events} events ({AUDITS_PER_EVENT} audit records each), best of {args.repeats}"
              " passes")
        rows = [
            ("count (count_keys + CountTable.add), µs/event", "count_us_per_event"),
            ("count, µs/audit record", "count_us_per_audit_record"),
            (f"snapshot encode, {len(table.counts):,} counters, ms", "snapshot_encode_ms"),
            ("  amortised at 1,000 events/s, µs/event", "snapshot_us_per_event_at_1k_per_s"),
            ("  amortised at 10,000 events/s, µs/event", "snapshot_us_per_event_at_10k_per_s"),
            ("reconcile recount, µs/audit record", "recount_us_per_audit_record"),
            ("fastavro decode+encode vaccination, µs/record", "vaccination_decode_encode_us_per_record"),
            ("count / vaccination decode+encode", "ratio_count_to_vaccination_codec"),
        ]
        for label, key in rows:
            print(f"  {label:<52} {figures[key]:>10,.3f}")
        print(f"  (snapshot size {snapshot_bytes:,} bytes)")
    return figures


if __name__ == "__main__":
    main()
