"""Per-record cost of sealing the audit hash chain, next to the Avro work the hot path already does.

    python -m bench.audit_cost [--records 20000] [--repeats 5] [--json]

Measured in one process and run, best of ``--repeats`` passes each:

* ``seal``: ``ChainWriter.seal_batch`` on AuditRecords as the pipeline builds them (canonical JSON of the
  record, SHA-256, setting ``seq``/``prev_hash``/``hash``; a checkpoint every 1000 records), and the
  same with an HMAC key;
* ``audit encode``: the Confluent-framed Avro encoding of the sealed record with the compiled writer the
  worker uses (``hub.registry.framing.make_encoder``), which every audit record pays anyway;
* ``verify``: ``hub.audit.chain.verify`` over the sealed records (what ``hub audit verify`` spends per
  record besides reading and decoding);
* the baseline: one fastavro decode + encode of a vaccination record
  (``schemas/health/vaccination_record.avsc``), the cost of handling one ingress event's value.
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

from hub.audit.chain import ChainWriter, verify
from hub.demo.data import record_generator
from hub.registry import framing
from hub.settings import REPO_ROOT

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
KEY = b"bench-operator-key-0123456789abcdef"


def best_ns_per_item(fn: Callable[[], int], repeats: int, setup: Callable[[], None] = lambda: None) -> float:
    """Best-of-``repeats`` nanoseconds per item of ``fn`` (which returns how many items it processed)."""
    best = float("inf")
    for _ in range(repeats):
        setup()
        start = time.perf_counter_ns()
        items = fn()
        best = min(best, (time.perf_counter_ns() - start) / max(items, 1))
    return best


def vaccination_codec(n: int, rng: random.Random) -> Callable[[], int]:
    """The baseline every cost is compared with: fastavro decode + encode of ``n`` vaccination records."""
    vaccination = json.loads((REPO_ROOT / "schemas/health/vaccination_record.avsc").read_text(encoding="utf-8"))
    parsed = fastavro.parse_schema(vaccination)
    make = record_generator(vaccination)
    payloads = []
    for _ in range(n):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, make(rng))
        payloads.append(out.getvalue())

    def codec() -> int:
        reader, writer = fastavro.schemaless_reader, fastavro.schemaless_writer
        for payload in payloads:
            writer(io.BytesIO(), parsed, reader(io.BytesIO(payload), parsed))
        return len(payloads)

    return codec


def audit_record(i: int, rng: random.Random) -> dict[str, Any]:
    """An unsealed AuditRecord shaped like the pipeline's deliver records."""
    event = f"{rng.getrandbits(128):032x}"
    district = rng.choice(["310101", "310104", "310115", "310151"])
    return {
        "event_id": event, "audit_id": f"{event}/deliver/district.{district}", "ts": NOW + i, "action": "deliver",
        "actor": "municipal.health", "counterparty": f"district.{district}",
        "resource": "municipal.health.vaccination", "scenario": "vaccination-follow-up", "grant": "sub-health-district",
        "from_tier": "municipal", "to_tier": "district", "direction": "down", "decision": "allow",
        "reason": "locality-return", "key_hash": f"{rng.getrandbits(256):064x}", "masked_fields": ["name", "phone"],
        "prev_hash": None, "hash": None, "source": f"ingress.municipal.health/0/{i}",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the measurement, print µs/record for each side and the ratios; return the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.audit_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per pass (default 20000)")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the best is reported (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    rng = random.Random(20250101)
    templates = [audit_record(i, rng) for i in range(args.records)]
    batch: list[dict[str, Any]] = []

    def fresh() -> None:
        batch[:] = [dict(t) for t in templates]  # seal works in place: new dicts each pass, outside the timing

    def seal_with(key: bytes | None) -> Callable[[], int]:
        def run() -> int:
            writer = ChainWriter(0, key=key, checkpoint_every=1000)
            for i in range(0, len(batch), 500):  # the worker seals a batch at a time
                writer.seal_batch(batch[i : i + 500], NOW)
            return len(batch)

        return run

    seal_ns = best_ns_per_item(seal_with(None), args.repeats, fresh)
    hmac_ns = best_ns_per_item(seal_with(KEY), args.repeats, fresh)

    fresh()
    sealed = ChainWriter(0, checkpoint_every=1000).seal_batch(batch, NOW)
    audit_schema = (REPO_ROOT / "schemas/hub/audit_record.avsc").read_text(encoding="utf-8")
    encode = framing.make_encoder(1, audit_schema)

    def encode_audit() -> int:
        for record in sealed:
            encode(record)
        return len(sealed)

    def verify_chain() -> int:
        result = verify(enumerate(sealed))
        assert result.ok
        return len(sealed)

    codec = vaccination_codec(args.records, rng)

    encode_ns = best_ns_per_item(encode_audit, args.repeats)
    verify_ns = best_ns_per_item(verify_chain, args.repeats)
    codec_ns = best_ns_per_item(codec, args.repeats)
    figures = {
        "records": args.records,
        "repeats": args.repeats,
        "seal_us_per_record": round(seal_ns / 1000, 3),
        "seal_hmac_us_per_record": round(hmac_ns / 1000, 3),
        "audit_avro_encode_us_per_record": round(encode_ns / 1000, 3),
        "verify_us_per_record": round(verify_ns / 1000, 3),
        "vaccination_decode_encode_us_per_record": round(codec_ns / 1000, 3),
        "ratio_seal_to_audit_encode": round(seal_ns / encode_ns, 3),
        "ratio_seal_to_vaccination_codec": round(seal_ns / codec_ns, 3),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"audit chain cost: {args.records} records, best of {args.repeats} passes (µs/record)")
        print(f"  seal (sha256, checkpoint every 1000)      {figures['seal_us_per_record']:>8.3f}")
        print(f"  seal with an HMAC key                     {figures['seal_hmac_us_per_record']:>8.3f}")
        print(f"  Avro encode of the sealed AuditRecord     {figures['audit_avro_encode_us_per_record']:>8.3f}")
        print(f"  verify (per record, decoded)              {figures['verify_us_per_record']:>8.3f}")
        print(f"  fastavro decode+encode, vaccination rec.  {figures['vaccination_decode_encode_us_per_record']:>8.3f}")
        print(f"  seal / audit encode                       {figures['ratio_seal_to_audit_encode']:>8.3f}")
        print(f"  seal / vaccination decode+encode          {figures['ratio_seal_to_vaccination_codec']:>8.3f}")
    return figures


if __name__ == "__main__":
    main()
