"""Per-record cost of the compiled Avro encoders (``hub.registry.framing.make_encoder``) on hot-path shapes.

    python -m bench.avro_encode [--records 20000] [--repeats 5]

Best of ``--repeats`` passes, µs/record, for:

* a publish AuditRecord with two deliveries (what the worker encodes once per event);
* a masked vaccination record (name, resident_id and phone masked, the site dropped), as delivered to a
  consumer below the fields' levels, with a masked phone that is None about one time in three;
* the unmasked vaccination record.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import Any

from hub.demo.data import record_generator
from hub.policy.masking import Action, FieldRule, Kind, MaskPlan, apply_mask, derived_schema
from hub.registry import framing
from hub.settings import REPO_ROOT

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def schema(path: str) -> dict[str, Any]:
    return json.loads((REPO_ROOT / "schemas" / path).read_text(encoding="utf-8"))


def publish_audit(i: int, rng: random.Random) -> dict[str, Any]:
    """A sealed publish AuditRecord with two deliveries (one masked)."""
    event = f"{rng.getrandbits(128):032x}"
    district = rng.choice(["310101", "310104", "310115", "310151"])
    deliveries = [
        {"counterparty": f"district.{district}", "scenario": None, "grant": None, "to_tier": "district",
         "direction": "down", "decision": "allow", "reason": "locality-return", "masked_fields": []},
        {"counterparty": "municipal.civil", "scenario": "vaccination-follow-up", "grant": "sub-health-civil",
         "to_tier": "municipal", "direction": "lateral", "decision": "allow", "reason": "subscription",
         "masked_fields": ["name", "resident_id", "phone"]},
    ]
    return {
        "event_id": event, "audit_id": f"{event}/publish/-", "ts": NOW + i, "action": "publish",
        "actor": "municipal.health", "counterparty": None, "resource": "municipal.health.vaccination",
        "scenario": None, "grant": None, "from_tier": "municipal", "to_tier": None, "direction": None,
        "decision": "allow", "reason": "published", "key_hash": f"{rng.getrandbits(256):064x}",
        "masked_fields": [], "prev_hash": f"{rng.getrandbits(256):064x}", "hash": f"{rng.getrandbits(256):064x}",
        "source": f"ingress.municipal.health/0/{i}", "seq": 1_000_000 + i, "deliveries": deliveries,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Print and return µs/record for each shape."""
    parser = argparse.ArgumentParser(prog="python -m bench.avro_encode", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per pass (default 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the best is reported (default 5)")
    args = parser.parse_args(argv)
    rng = random.Random(20250101)

    vaccination = schema("health/vaccination_record.avsc")
    make = record_generator(vaccination)
    plan = MaskPlan("municipal.health.vaccination", "L2", (
        FieldRule("record_id", "L1", Action.KEEP), FieldRule("resident_id", "L3", Action.MASK, Kind.RESIDENT_ID),
        FieldRule("name", "L3", Action.MASK, Kind.NAME), FieldRule("phone", "L3", Action.MASK, Kind.PHONE),
        FieldRule("district", "L1", Action.KEEP), FieldRule("vaccine_code", "L2", Action.KEEP),
        FieldRule("dose_number", "L2", Action.KEEP), FieldRule("vaccinated_at", "L2", Action.KEEP),
        FieldRule("site_uscc", "L4", Action.DROP), FieldRule("site_name", "L2", Action.KEEP),
    ))
    plain = [make(rng) for _ in range(args.records)]
    for i, rec in enumerate(plain):
        if i % 3 == 0:
            rec["phone"] = None
    cases: list[tuple[str, Callable[[dict[str, Any]], bytes], list[dict[str, Any]]]] = [
        ("publish AuditRecord, 2 deliveries", framing.make_encoder(1, schema("hub/audit_record.avsc")),
         [publish_audit(i, rng) for i in range(args.records)]),
        ("masked vaccination record", framing.make_encoder(2, derived_schema(vaccination, plan)),
         [apply_mask(r, plan) for r in plain]),
        ("vaccination record", framing.make_encoder(3, vaccination), plain),
    ]
    figures: dict[str, float] = {}
    print(f"compiled Avro encode: {args.records} records, best of {args.repeats} passes (µs/record)")
    for label, encode, records in cases:
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter_ns()
            for record in records:
                encode(record)
            best = min(best, (time.perf_counter_ns() - start) / len(records))
        figures[label] = round(best / 1000, 3)
        print(f"  {label:<40} {figures[label]:>8.3f}")
    return figures


if __name__ == "__main__":
    main()
