"""Call latency: round trips through the running hub against a raw aiokafka request/reply echo, same broker, same run.

    python -m bench.call_latency [--calls 1000] [--partitions 4] [--concurrency 1,16] [--json]

The ceiling is the shortest request/reply Kafka allows: a client produces a request (linger 0, acks=all) to a
topic, a plain aiokafka consumer-group loop echoes each one to a reply topic, the client reads it. The hub
path is a real call by a node: a ``CallRequest`` (Confluent-framed Avro) on ``call.municipal.hrss.request``,
admitted (grant, scenario, catalogue) at its partition, forwarded on ``hub.calls`` to the partition owning the
row, answered from the materialised ``hub.records`` table, masked, audited, the ``CallReply`` read from
``call.municipal.hrss.reply``. With one worker every stage is local (one hop, like the echo); with two, a
call whose row lives on the other worker takes the second hop over ``hub.calls``. Both paths run with one
call in flight (latency) and with several (throughput); the hub runs as ``hub up`` in a child process on the
same broker, then ``--workers 2`` adds a ``hub worker`` to its group and measures again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.throughput import add_output_options, create_topics, run_and_record, start_hub, stop_hub
from hub.broker.manager import free_port
from hub.calls.client import CallClient
from hub.contract import H_RESOURCE
from hub.identifiers import resident_id_check_char
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings

PERSON = "municipal.big-data.natural-person"
CALLER = "municipal.hrss"
SCENARIO = "social-insurance-enrolment"


def resident_ids(n: int, rng: random.Random) -> list[str]:
    out = set()
    while len(out) < n:
        birth = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        first17 = f"310115{birth}{rng.randint(0, 999):03d}"
        out.add(first17 + resident_id_check_char(first17))
    return sorted(out)


def person(rid: str) -> dict[str, Any]:
    return dict(
        resident_id=rid, name="张三丰", gender="M" if int(rid[16]) % 2 else "F", birth_date=date(1960, 5, 1),
        ethnicity="01", phone="13912345678", household_type="local", registered_address="浦东新区世纪大道1号",
        residence_address=None, district="310115", subdistrict_code="310115004", marital_status="married",
        status="active", death_date=None, sources=["municipal.public-security"], updated_at=int(time.time() * 1000),
    )


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100) if len(ms) > 1 else ms * 99
    return {"calls": len(ms), "p50_ms": q[49], "p90_ms": q[89], "p99_ms": q[98], "max_ms": ms[-1],
            "mean_ms": statistics.fmean(ms), "calls_per_s": len(ms) / wall if wall else float("nan")}


async def closed_loop(n: int, concurrency: int, one: Any) -> dict[str, float]:
    """``n`` round trips with ``concurrency`` in flight; ``one(i)`` returns one round trip's seconds."""
    latencies: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            latencies.append(await one(i))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summary(latencies, time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------ the ceiling


class Echo:
    """The raw request/reply: a consumer-group loop echoing requests, and a client matching replies by key."""

    def __init__(self, bootstrap: str, partitions: int) -> None:
        tag = uuid.uuid4().hex[:6]
        self.bootstrap, self.partitions = bootstrap, partitions
        self.req, self.rep = f"bench.echo.req.{tag}", f"bench.echo.rep.{tag}"
        self.pending: dict[bytes, asyncio.Future[float]] = {}

    async def start(self) -> None:
        await create_topics(self.bootstrap, [self.req, self.rep], self.partitions)
        self.server_in = AIOKafkaConsumer(self.req, bootstrap_servers=self.bootstrap, group_id=f"echo-{self.req}",
                                          auto_offset_reset="latest", fetch_max_wait_ms=50)
        self.server_out = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0, acks="all")
        self.client_out = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0, acks="all")
        self.client_in = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, fetch_max_wait_ms=50)
        for c in (self.server_in, self.server_out, self.client_out, self.client_in):
            await c.start()
        parts = [TopicPartition(self.rep, p) for p in range(self.partitions)]
        self.client_in.assign(parts)
        await self.client_in.seek_to_end(*parts)
        for tp in parts:
            await self.client_in.position(tp)
        while not self.server_in.assignment():
            await asyncio.sleep(0.1)
        for tp in self.server_in.assignment():
            await self.server_in.position(tp)
        self.tasks = [asyncio.ensure_future(self._serve()), asyncio.ensure_future(self._read())]

    async def _serve(self) -> None:
        while True:
            batch = await self.server_in.getmany(timeout_ms=100)
            futures = [await self.server_out.send(self.rep, m.value, key=m.key) for ms in batch.values() for m in ms]
            if futures:
                await asyncio.gather(*futures)
                await self.server_in.commit()

    async def _read(self) -> None:
        while True:
            batch = await self.client_in.getmany(timeout_ms=100)
            now = time.perf_counter()
            for ms in batch.values():
                for m in ms:
                    fut = self.pending.pop(m.key, None)
                    if fut is not None and not fut.done():
                        fut.set_result(now)

    async def call(self, i: int, value: bytes) -> float:
        key = uuid.uuid4().hex.encode()
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pending[key] = fut
        started = time.perf_counter()
        await self.client_out.send(self.req, value, key=key)
        return await asyncio.wait_for(fut, 30) - started

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for c in (self.server_in, self.server_out, self.client_out, self.client_in):
            await c.stop()


# ------------------------------------------------------------------------------------------------ the hub


async def call_grant(api: str, token: str) -> str:
    """An active call grant for hrss on the natural-person database (requested, approved by the operator)."""
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        body = {"consumer": CALLER, "resource": PERSON, "scenario": SCENARIO, "mode": "call"}
        response = await http.post("/v1/grants", json=body)
        if response.status_code == 409:  # a broker used before (HUB_BOOTSTRAP): the grant is there already
            listed = await http.get("/v1/grants", params={**body, "state": "active"})
            listed.raise_for_status()
            if listed.json():
                return str(listed.json()[0]["id"])
        response.raise_for_status()
        grant = response.json()
        if grant["state"] == "requested":
            response = await http.post(f"/v1/grants/{grant['id']}/approve", json={"reason": "bench"})
            response.raise_for_status()
        return str(grant["id"])


async def load_people(bootstrap: str, api: str, token: str, ids: list[str]) -> None:
    schema = json.loads((REPO_ROOT / "schemas/population/natural_person.avsc").read_text())
    async with RegistryClient(api, token=token) as registry:
        sid = await registry.register(f"{PERSON}-value", json.dumps(schema))
    parsed = framing.parse_schema(schema)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = [await producer.send("ingress.municipal.big-data", framing.encode(sid, parsed, person(rid)),
                                       key=rid.encode(), headers=[(H_RESOURCE, PERSON.encode())])
                   for rid in ids]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def run(args: argparse.Namespace, bootstrap: str, state: Path) -> dict[str, Any]:
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    env = dict(os.environ, HUB_BOOTSTRAP=bootstrap, HUB_API_PORT=str(api_port), HUB_STATE_DIR=str(state),
               HUB_TOPIC_PARTITIONS=str(args.partitions), HUB_APP_ID=f"bench-calls-{uuid.uuid4().hex[:6]}")
    levels = [int(c) for c in args.concurrency.split(",")]
    ids = resident_ids(args.people, random.Random(11))
    results: dict[str, Any] = {"partitions": args.partitions, "calls": args.calls, "people": len(ids)}

    echo = Echo(bootstrap, args.partitions)
    await echo.start()
    hub = start_hub(env, api)
    extra: list[subprocess.Popen[bytes]] = []
    try:
        token = (state / "operator.token").read_text().strip()
        results["grant"] = await call_grant(api, token)
        print(f"loading {len(ids)} natural persons through the hub...", file=sys.stderr, flush=True)
        await load_people(bootstrap, api, token, ids)
        async with RegistryClient(api, token=token) as registry:
            async with CallClient(bootstrap, registry, CALLER, Settings(bootstrap=bootstrap)) as client:
                deadline = time.monotonic() + 120
                while (await client.call(PERSON, scenario=SCENARIO, key=ids[-1])).status != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError("the hub never answered ok for the last person loaded")
                    await asyncio.sleep(0.5)
                sample = (await client.call(PERSON, scenario=SCENARIO, key=ids[0])).reply
                request_bytes = len(framing.frame(1, b"x" * 120))  # a CallRequest is ~130 bytes
                reply_bytes = len(sample.get("record") or b"") + 60

                async def hub_call(i: int) -> float:
                    result = await client.call(PERSON, scenario=SCENARIO, key=ids[i % len(ids)])
                    if result.status != "ok":
                        raise RuntimeError(f"call {i}: {result.reply}")
                    return result.latency_s

                echo_value = b"x" * request_bytes
                for workers in range(1, args.workers + 1):
                    if workers > 1:
                        extra.append(start_worker(env, api, token, state / f"worker{workers}"))
                        print("waiting for the new worker to take its partitions...", file=sys.stderr, flush=True)
                        await asyncio.sleep(20)
                    for level in levels:
                        warm = max(20, args.calls // 10)
                        await closed_loop(warm, level, lambda i: echo.call(i, echo_value))
                        await closed_loop(warm, level, hub_call)
                        print(f"measuring {args.calls} round trips, {level} in flight, {workers} worker(s)...",
                              file=sys.stderr, flush=True)
                        raw = await closed_loop(args.calls, level, lambda i: echo.call(i, echo_value))
                        hub_stats = await closed_loop(args.calls, level, hub_call)
                        results[f"w{workers}c{level}"] = {
                            "workers": workers, "in_flight": level, "raw": raw, "hub": hub_stats,
                            "p50_ratio": hub_stats["p50_ms"] / raw["p50_ms"],
                            "p99_ratio": hub_stats["p99_ms"] / raw["p99_ms"]}
                results["reply_bytes"] = reply_bytes
    finally:
        for proc in extra:
            stop_hub(proc)
        stop_hub(hub)
        await echo.stop()
    return results


def start_worker(env: dict[str, str], api: str, token: str, state: Path) -> subprocess.Popen[bytes]:
    """One more ``hub worker`` in the hub's consumer group."""
    state.mkdir(parents=True, exist_ok=True)
    worker_env = dict(env, HUB_REGISTRY_URL=api, HUB_TOKEN=token, HUB_STATE_DIR=str(state))
    return subprocess.Popen([sys.executable, "-m", "hub.cli.main", "worker"], env=worker_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="round trips measured per path and concurrency")
    parser.add_argument("--people", type=int, default=2000, help="natural persons loaded into the hub first")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--concurrency", default="1,16", help="calls in flight, comma-separated levels")
    parser.add_argument("--workers", type=int, default=2, help="measure with 1, then up to this many workers")
    add_output_options(parser, "call_latency")
    args = parser.parse_args()
    result = run_and_record(lambda bootstrap, state: run(args, bootstrap, state), args.out, "hub-bench-calls-")
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['calls']} calls per measurement, {result['partitions']} partitions, "
          f"{result['people']} natural persons in the table")
    print(f"{'workers':>7} {'in flight':>9} {'path':<24} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
    for value in result.values():
        if not isinstance(value, dict) or "raw" not in value:
            continue
        for path, label in (("raw", "raw aiokafka echo"), ("hub", "hub call")):
            s = value[path]
            print(f"{value['workers']:>7} {value['in_flight']:>9} {label:<24} {s['p50_ms']:>8.2f} {s['p90_ms']:>8.2f} "
                  f"{s['p99_ms']:>8.2f} {s['calls_per_s']:>9,.0f}")
        print(f"{'':>17} hub / raw: p50 x{value['p50_ratio']:.1f}, p99 x{value['p99_ratio']:.1f}")


if __name__ == "__main__":
    main()
