"""Per-event cost of authorisation and masking against the cost of Avro decoding + encoding the same event.

    python -m bench.policy_cost [--records 20000] [--repeats 5] [--json]

Records are realistic vaccination records (``schemas/health/vaccination_record.avsc``, the
``municipal.health.vaccination`` entry of ``config/seed.yaml``) with the seed's standing grants:
``municipal.civil-affairs`` (L3, all rows) and ``district.310115`` (L2, own district), plus the locality
return of every record to its district (L2). Per event the policy side does what the hot path will:
find the record's district, list the resource's active grants, ``decide`` each one and the locality
return, and ``apply_mask`` with a plan cached per grant. The baseline is one fastavro decode + encode
of the same record, in the same process and run. Each figure is the best of ``--repeats`` passes.

The pipeline already decodes and encodes every event (and much more: audit records, framing, Kafka), so
a policy/codec ratio below 1 means policy evaluation cannot halve pipeline throughput. ``masked encode``
is reported separately: masked deliveries need their own encoding with the derived schema, where an
unmasked delivery forwards the original bytes. For scale, the CPU cost of today's batch hot path
(``hub.pipeline.core.process_batch`` on the same records, no Kafka) is measured too, and the share of
its throughput that would remain with policy and masked encodes added.
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

from hub.catalogue.model import Node, load_exchange_config
from hub.contract import H_RESOURCE
from hub.demo.data import record_generator
from hub.policy.decision import decide
from hub.policy.grants import GrantIndex
from hub.policy.masking import MaskPlan, apply_mask, derived_schema, plan_for
from hub.policy.model import Grant
from hub.registry import framing
from hub.routing.core import record_district
from hub.settings import REPO_ROOT

RESOURCE = "municipal.health.vaccination"
SCENARIO = "vaccination-follow-up"
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def best_ns_per_item(fn: Callable[[], int], repeats: int) -> float:
    """Best-of-``repeats`` nanoseconds per item of ``fn`` (which returns how many items it processed)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        items = fn()
        best = min(best, (time.perf_counter_ns() - start) / max(items, 1))
    return best


def pipeline_ns_per_event(records: list[dict[str, Any]], repeats: int) -> float | str:
    """Nanoseconds per event of ``process_batch`` (batches of 500), or why it could not be measured."""
    try:
        from hub.pipeline.core import EncodedSchema, ExchangeContext, RawRecord, process_batch

        def load(rel: str) -> Any:
            """A parsed schema of the repository."""
            return framing.parse_schema((REPO_ROOT / rel).read_text(encoding="utf-8"))

        schemas = {
            1: load("schemas/health/vaccination_record.avsc"),
            2: load("schemas/hub/audit_record.avsc"),
            3: load("schemas/hub/quarantine_record.avsc"),
        }
        ctx = ExchangeContext(
            config=load_exchange_config(REPO_ROOT / "config" / "seed.yaml"), schema_lookup=schemas.get,
            subject_ids={RESOURCE: frozenset({1})}, audit_schema=EncodedSchema(2, schemas[2]),
            quarantine_schema=EncodedSchema(3, schemas[3]), clock_ms=lambda: NOW,
        )
        headers = [(H_RESOURCE, RESOURCE.encode())]
        raws = [
            RawRecord("ingress.municipal.health", 0, i, None, framing.encode(1, schemas[1], r), headers, NOW)
            for i, r in enumerate(records)
        ]
        batches = [raws[i : i + 500] for i in range(0, len(raws), 500)]

        def run() -> int:
            """One pass of every batch through the hot path."""
            for batch in batches:
                process_batch(batch, ctx)
            return len(raws)

        return best_ns_per_item(run, repeats)
    except Exception as exc:  # the pipeline core is another team's moving target: report, do not fail
        return f"unavailable ({type(exc).__name__}: {exc})"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the measurement, print µs/event for each side and the ratio; return the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.policy_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per pass (default 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the best is reported (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    config = load_exchange_config(REPO_ROOT / "config" / "seed.yaml")
    resource = config.resource(RESOURCE)
    assert resource is not None and resource.schema_path() is not None
    schema = json.loads(resource.schema_path().read_text(encoding="utf-8"))  # type: ignore[union-attr]
    parsed = fastavro.parse_schema(schema)
    nodes = {n.id: n for n in config.nodes}

    grants = GrantIndex([
        Grant(id=f"g-{s.id}", consumer=s.consumer, resource=s.resource, scenario=SCENARIO,
              mode="subscribe", row_scope=s.row_scope, valid_from=0, state="active",
              decided_by="municipal.health", updated_at=0)
        for s in config.subscriptions if s.resource == RESOURCE
    ])
    plans: dict[str, MaskPlan] = {}
    for g in grants.active_for_resource(RESOURCE):
        plans[g.id] = plan_for(resource, nodes[g.consumer], g)
    district_plan = plan_for(resource, Node(id="district.310101", clearance="L2"), None)
    derived = {
        p.key: fastavro.parse_schema(derived_schema(schema, p)) for p in [*plans.values(), district_plan]
    }

    rng = random.Random(20250101)
    make = record_generator(schema)
    records = [make(rng) for _ in range(args.records)]
    payloads = []
    for r in records:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, r)
        payloads.append(buf.getvalue())

    def codec() -> int:
        """Baseline: decode and re-encode every record."""
        reader, writer = fastavro.schemaless_reader, fastavro.schemaless_writer
        for payload in payloads:
            record = reader(io.BytesIO(payload), parsed)
            writer(io.BytesIO(), parsed, record)
        return len(payloads)

    deliveries = 0
    masked_out: list[tuple[str, dict[str, Any]]] = []

    def policy() -> int:
        """What the hot path adds: district, grant lookup, decide per candidate consumer, apply_mask."""
        nonlocal deliveries
        deliveries = 0
        masked_out.clear()
        for record in records:
            district = record_district(record, resource)
            covered = set()
            for g in grants.active_for_record(RESOURCE, district):
                d = decide(resource, nodes.get(g.consumer), g, scenario=SCENARIO, mode="subscribe", now=NOW,
                           record_district=district)
                covered.add(g.consumer)
                if d.allowed:
                    plan = plans[g.id]
                    masked_out.append((plan.key, apply_mask(record, plan)))
                    deliveries += 1
            local = f"district.{district}" if district else None
            if local and local not in covered:
                d = decide(resource, nodes.get(local), None, scenario="locality-return", mode="subscribe",
                           now=NOW, record_district=district)
                if d.allowed:
                    masked_out.append((district_plan.key, apply_mask(record, district_plan)))
                    deliveries += 1
        return len(records)

    def masked_encode() -> int:
        """Encoding each masked delivery with its derived schema."""
        writer = fastavro.schemaless_writer
        for key, masked in masked_out:
            writer(io.BytesIO(), derived[key], masked)
        return len(masked_out)

    codec_ns = best_ns_per_item(codec, args.repeats)
    policy_ns = best_ns_per_item(policy, args.repeats)
    per_event = deliveries / len(records)
    encode_ns = best_ns_per_item(masked_encode, args.repeats)
    pipeline = pipeline_ns_per_event(records, args.repeats)
    added_ns = policy_ns + encode_ns * per_event
    figures: dict[str, Any] = {
        "records": len(records),
        "repeats": args.repeats,
        "deliveries_per_event": round(per_event, 3),
        "codec_us_per_event": round(codec_ns / 1000, 3),
        "policy_us_per_event": round(policy_ns / 1000, 3),
        "policy_us_per_delivery": round(policy_ns / 1000 / per_event, 3),
        "ratio_policy_to_codec": round(policy_ns / codec_ns, 3),
        "masked_encode_us_per_delivery": round(encode_ns / 1000, 3),
        "ratio_policy_plus_masked_encode_to_codec": round(added_ns / codec_ns, 3),
        "pipeline_us_per_event": round(pipeline / 1000, 3) if isinstance(pipeline, float) else pipeline,
        "pipeline_throughput_retained": (
            round(pipeline / (pipeline + added_ns), 3) if isinstance(pipeline, float) else None
        ),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"policy cost, {RESOURCE}: {len(records)} records, best of {args.repeats} passes")
        print(f"  fastavro decode + encode           {figures['codec_us_per_event']:8.2f} µs/event")
        print(f"  policy (decide + apply_mask)       {figures['policy_us_per_event']:8.2f} µs/event"
              f"  ({per_event:.2f} deliveries/event, {figures['policy_us_per_delivery']:.2f} µs/delivery)")
        print(f"  ratio policy / codec               {figures['ratio_policy_to_codec']:8.2f}")
        encode_us = figures["masked_encode_us_per_delivery"]
        ratio_all = figures["ratio_policy_plus_masked_encode_to_codec"]
        print(f"  masked encode (derived schema)     {encode_us:8.2f} µs/delivery")
        print(f"  ratio (policy + masked encodes) / codec {ratio_all:.2f}")
        if isinstance(pipeline, float):
            retained = figures["pipeline_throughput_retained"]
            print(f"  pipeline process_batch (no Kafka)  {figures['pipeline_us_per_event']:8.2f} µs/event"
                  f"  -> {retained:.0%} of its throughput retained with policy + masked encodes")
        else:
            print(f"  pipeline process_batch: {pipeline}")
    return figures


if __name__ == "__main__":
    main()
