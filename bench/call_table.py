"""A call table of a million person records: worker memory, and the rebuild after a restart.

    python -m bench.call_table [--people 1000000] [--partitions 4]

Loads ``--people`` natural persons through a running ``hub up`` (they are materialised in ``hub.records`` and
its secondary index, the tables calls are answered from), then reports the resident set size of the ``hub up``
process (worker and API in one process), restarts it and measures how long until calls for people of every
partition are answered again (the call state rebuilt from its changelogs). Targets: RSS under 500 MB, rebuild
under 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.call_latency import CALLER, PERSON, SCENARIO, call_grant, person, resident_ids
from bench.throughput import add_output_options, run_and_record, start_hub, stop_hub
from hub.broker.manager import free_port
from hub.calls.client import CallClient
from hub.contract import H_RESOURCE, RECORDS_TOPIC, ingress_topic
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(bootstrap: str, api: str, token: str, ids: list[str]) -> None:
    schema = json.loads((REPO_ROOT / "schemas/population/natural_person.avsc").read_text())
    async with RegistryClient(api, token=token) as registry:
        sid = await registry.register(f"{PERSON}-value", json.dumps(schema))
    parsed = framing.parse_schema(schema)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1)
    await producer.start()
    headers = [(H_RESOURCE, PERSON.encode())]
    try:
        for start in range(0, len(ids), 20_000):
            futures = [await producer.send(ingress_topic("municipal.big-data"),
                                           framing.encode(sid, parsed, person(rid)), key=rid.encode(),
                                           headers=headers) for rid in ids[start:start + 20_000]]
            await asyncio.gather(*futures)
            print(f"  published {start + len(futures):,}", file=sys.stderr, flush=True)
    finally:
        await producer.stop()


async def records_written(bootstrap: str) -> int:
    probe = AIOKafkaProducer(bootstrap_servers=bootstrap)  # partitions_for waits for the topic's metadata
    await probe.start()
    try:
        parts = await probe.partitions_for(RECORDS_TOPIC)
    finally:
        await probe.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(RECORDS_TOPIC, p) for p in parts])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def answered(client: CallClient, ids: list[str], deadline: float) -> bool:
    while time.monotonic() < deadline:
        results = await asyncio.gather(*(client.call(PERSON, scenario=SCENARIO, key=rid) for rid in ids))
        if all(r.status == "ok" for r in results):
            return True
        await asyncio.sleep(0.25)
    return False


async def run(args: argparse.Namespace, bootstrap: str, state: Path) -> dict[str, Any]:
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    env = dict(os.environ, HUB_BOOTSTRAP=bootstrap, HUB_API_PORT=str(api_port), HUB_STATE_DIR=str(state),
               HUB_TOPIC_PARTITIONS=str(args.partitions), HUB_APP_ID=f"bench-table-{uuid.uuid4().hex[:6]}")
    ids = resident_ids(args.people, random.Random(5))
    probe = random.Random(9).sample(ids, 32)
    hub = start_hub(env, api)
    result: dict[str, Any] = {"people": len(ids), "partitions": args.partitions}
    try:
        token = (state / "operator.token").read_text().strip()
        await call_grant(api, token)
        started = time.monotonic()
        print(f"publishing {len(ids):,} natural persons...", file=sys.stderr, flush=True)
        await load(bootstrap, api, token, ids)
        while await records_written(bootstrap) < len(ids):
            await asyncio.sleep(1)
        result["load_s"] = time.monotonic() - started
        async with RegistryClient(api, token=token) as registry:
            async with CallClient(bootstrap, registry, CALLER, Settings(bootstrap=bootstrap)) as client:
                if not await answered(client, probe, time.monotonic() + 120):
                    raise RuntimeError("calls were not answered after loading")
        result["rss_mb_loaded"] = rss_mb(hub.pid)
        print(f"loaded in {result['load_s']:.0f} s; hub up RSS {result['rss_mb_loaded']:.0f} MB; restarting...",
              file=sys.stderr, flush=True)
    finally:
        stop_hub(hub)
    restarted = time.monotonic()
    hub = start_hub(env, api)
    try:
        result["api_ready_s"] = time.monotonic() - restarted
        token = (state / "operator.token").read_text().strip()
        async with RegistryClient(api, token=token) as registry:
            async with CallClient(bootstrap, registry, CALLER, Settings(bootstrap=bootstrap)) as client:
                if not await answered(client, probe, time.monotonic() + 600):
                    raise RuntimeError("calls were not answered after the restart")
        result["rebuild_s"] = time.monotonic() - restarted
        result["rss_mb_rebuilt"] = rss_mb(hub.pid)
    finally:
        stop_hub(hub)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    add_output_options(parser, "call_table")
    args = parser.parse_args()
    result = run_and_record(lambda bootstrap, state: run(args, bootstrap, state), args.out, "hub-bench-table-")
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['people']:,} people: loaded in {result['load_s']:.0f} s, "
          f"hub up RSS {result['rss_mb_loaded']:.0f} MB; after a restart calls answered in "
          f"{result['rebuild_s']:.1f} s (RSS {result['rss_mb_rebuilt']:.0f} MB)")


if __name__ == "__main__":
    main()
