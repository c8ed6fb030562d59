"""Per-record cost of the data quality rules, next to a fastavro decode of the same record.

    python -m bench.quality [--records 20000] [--repeats 5] [--json]

For every resource of ``config/seed.yaml`` with quality rules, ``--records`` realistic records (``hub.demo.data``,
the demo's generator, so most pass and a few fail rules such as regexes the generator does not know) are encoded
once; then, best of ``--repeats`` passes each (the two sides interleaved, so a busy machine slows both alike), in
one process and run:

* decode: ``fastavro.schemaless_reader`` of each record (what the hot path pays for every event anyway);
* rules: the resource's compiled ``Checker`` (``hub.quality.compile_rules``, compiled once, as per catalogue
  version in the worker) on each decoded record.

Printed per resource: µs/record of each and the ratio rules/decode. For scale, ``process_batch`` (the whole
hot path without Kafka) on vaccination records is timed with and without the resource's rules.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import time
from collections.abc import Callable
from typing import Any

import fastavro

from hub.catalogue.model import load_exchange_config
from hub.contract import H_RESOURCE
from hub.demo.data import record_generator
from hub.quality import compile_rules
from hub.registry import framing
from hub.settings import REPO_ROOT

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
PIPELINE_RESOURCE = "municipal.health.vaccination"


def best_ns_per_item(fn: Callable[[], int], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        items = fn()
        best = min(best, (time.perf_counter_ns() - start) / max(items, 1))
    return best


def pipeline_ns(records: list[dict[str, Any]], repeats: int, with_rules: bool) -> float:
    """ns/event of ``process_batch`` in batches of 500, the resource's rules kept or removed."""
    from hub.pipeline.core import EncodedSchema, ExchangeContext, RawRecord, process_batch

    def load(rel: str) -> Any:
        return framing.parse_schema((REPO_ROOT / rel).read_text(encoding="utf-8"))

    config = load_exchange_config(REPO_ROOT / "config" / "seed.yaml")
    if not with_rules:
        config = config.model_copy(update={"resources": [r.model_copy(update={"quality_rules": []})
                                                         for r in config.resources]})
    schemas = {1: load("schemas/health/vaccination_record.avsc"), 2: load("schemas/hub/audit_record.avsc"),
               3: load("schemas/hub/quarantine_record.avsc")}
    audit_json = (REPO_ROOT / "schemas/hub/audit_record.avsc").read_text()
    quarantine_json = (REPO_ROOT / "schemas/hub/quarantine_record.avsc").read_text()
    headers = [(H_RESOURCE, PIPELINE_RESOURCE.encode())]
    raws = [RawRecord("ingress.municipal.health", 0, i, None, framing.encode(1, schemas[1], r), headers, NOW)
            for i, r in enumerate(records)]
    batches = [raws[i : i + 500] for i in range(0, len(raws), 500)]

    def run() -> int:
        ctx = ExchangeContext(  # a fresh dedupe window each pass: every event is new
            config=config, schema_lookup=schemas.get, subject_ids={PIPELINE_RESOURCE: frozenset({1})},
            audit_schema=EncodedSchema(2, framing.make_encoder(2, audit_json)),
            quarantine_schema=EncodedSchema(3, framing.make_encoder(3, quarantine_json)), clock_ms=lambda: NOW)
        for batch in batches:
            process_batch(batch, ctx)
        return len(raws)

    return best_ns_per_item(run, repeats)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per resource and pass (default 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the best is reported (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    config = load_exchange_config(REPO_ROOT / "config" / "seed.yaml")
    rows: list[dict[str, Any]] = []
    vaccination: list[dict[str, Any]] = []
    for resource in config.resources:
        path = resource.schema_path()
        if not resource.quality_rules or path is None:
            continue
        schema = json.loads(path.read_text(encoding="utf-8"))
        parsed = fastavro.parse_schema(schema)
        make = record_generator(schema)
        rng = random.Random(20260101)
        records = [make(rng) for _ in range(args.records)]
        payloads = []
        for r in records:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, parsed, r)
            payloads.append(buf.getvalue())
        decoded = [fastavro.schemaless_reader(io.BytesIO(p), parsed) for p in payloads]
        checker = compile_rules(resource, key_exists=lambda rid, key: True)
        if resource.id == PIPELINE_RESOURCE:
            vaccination = records

        def decode(payloads: list[bytes] = payloads, parsed: Any = parsed) -> int:
            reader = fastavro.schemaless_reader
            for p in payloads:
                reader(io.BytesIO(p), parsed)
            return len(payloads)

        def rules(decoded: list[dict[str, Any]] = decoded, checker: Any = checker) -> int:
            for record in decoded:
                checker(record)
            return len(decoded)

        decode_ns = rules_ns = float("inf")
        for _ in range(args.repeats):  # interleaved, so a busy machine slows both sides alike
            decode_ns = min(decode_ns, best_ns_per_item(decode, 1))
            rules_ns = min(rules_ns, best_ns_per_item(rules, 1))
        passing = sum(not checker(r) for r in decoded) / len(decoded)
        rows.append({"resource": resource.id, "rules": len(resource.quality_rules),
                     "decode_us": round(decode_ns / 1000, 3), "rules_us": round(rules_ns / 1000, 3),
                     "ratio_rules_to_decode": round(rules_ns / decode_ns, 3), "passing": round(passing, 3)})
    figures: dict[str, Any] = {"records": args.records, "repeats": args.repeats, "resources": rows}
    if vaccination:
        with_rules = without = float("inf")
        for _ in range(args.repeats):  # interleaved, as above
            with_rules = min(with_rules, pipeline_ns(vaccination, 1, True))
            without = min(without, pipeline_ns(vaccination, 1, False))
        figures["pipeline_us_per_event"] = {"with_rules": round(with_rules / 1000, 3),
                                            "without_rules": round(without / 1000, 3),
                                            "events_per_s_with_rules": round(1e9 / with_rules)}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{'resource':48} {'rules':>5} {'decode µs':>10} {'rules µs':>9} {'ratio':>6} {'passing':>8}")
        for r in rows:
            print(f"{r['resource']:48} {r['rules']:>5} {r['decode_us']:>10.3f} {r['rules_us']:>9.3f} "
                  f"{r['ratio_rules_to_decode']:>6.2f} {r['passing']:>8.1%}")
        if "pipeline_us_per_event" in figures:
            p = figures["pipeline_us_per_event"]
            print(f"process_batch ({PIPELINE_RESOURCE}): {p['with_rules']:.2f} µs/event with rules, "
                  f"{p['without_rules']:.2f} without ({p['events_per_s_with_rules']:,} events/s on one core)")
    return figures


if __name__ == "__main__":
    main()
