"""Federation cost: a report-up through MirrorMaker 2 to the national platform's hub vs the same report-up delivered
on one cluster, same records, same run.

    python -m bench.federation [--burst 5000] [--rate 200] [--seconds 15]

Two local brokers, two ``hub up`` (``shanghai``, ``national``), the ``shanghai->national`` link's gateway and one
MirrorMaker 2 process, as in ``tests/integration/test_federation.py``. Business licences (``report_up``) are
published to ``ingress.municipal.market`` on the municipal cluster; each event is timed where it first appears on

* ``feed.national`` of the municipal cluster: the direct write (today's single-cluster report-up), and
* ``feed.national`` of the national cluster: after MM2, the gateway (schema id translation) and the national hub.

Latency: a paced run (``--rate`` events/s for ``--seconds``), from the producer's record timestamp to arrival,
p50/p95/p99 per path. Throughput: a burst of ``--burst`` events, events divided by the span from the first send to
the last arrival, per path. The ratio is federated / direct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from pathlib import Path
from statistics import quantiles
from typing import Any

import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.throughput import append_result
from hub.broker.manager import LocalBroker, free_port
from hub.contract import H_EVENT_ID, H_RESOURCE, feed_topic
from hub.demo.data import record_generator
from hub.federation.model import Link, load_federation_config
from hub.federation.processes import MM2_VERSION, Gateway, MirrorMaker
from hub.registry import framing
from hub.registry.client import RegistryClient
from hub.settings import REPO_ROOT, Settings
from tests.integration.hubproc import HubProcess, start_hub

LICENCE = "municipal.market.business-licence"
SCHEMA = json.loads((REPO_ROOT / "schemas/market/business_licence.avsc").read_text())
UP = Link(source="shanghai", target="national", export_node="national", peer_node="region.shanghai",
          resources=(LICENCE,))


class Arrivals:
    """First arrival time (epoch s) of each event id on a topic, read from the topic's end at start."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
        await consumer.start()
        await consumer._client.force_metadata_update()  # noqa: SLF001
        tps = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or {0})]
        consumer.assign(tps)
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, end)

        async def loop() -> None:
            try:
                while True:
                    for msgs in (await consumer.getmany(timeout_ms=100)).values():
                        now = time.time()
                        for m in msgs:
                            self.seen.setdefault(dict(m.headers).get(H_EVENT_ID, b"").decode(), now)
            finally:
                await consumer.stop()

        self._task = asyncio.ensure_future(loop())

    async def wait_for(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ids <= self.seen.keys():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids - self.seen.keys())} events never reached {self.bootstrap}/{self.topic}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


async def publish(bootstrap: str, schema_id: int, n: int, rate: float | None, seed: int) -> dict[str, float]:
    """Publish ``n`` licences (paced at ``rate``/s, or as fast as possible); event id -> send time (epoch s)."""
    parsed = framing.parse_schema(SCHEMA)
    make, rng = record_generator(SCHEMA), random.Random(seed)
    values = [framing.encode(schema_id, parsed, make(rng)) for _ in range(n)]
    sent: dict[str, float] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2 if rate else 20)
    await producer.start()
    try:
        start, futures = time.monotonic(), []
        for i, value in enumerate(values):
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            event_id = f"bench-{uuid.uuid4()}"
            sent[event_id] = time.time()
            futures.append(await producer.send("ingress.municipal.market", value, headers=[
                (H_RESOURCE, LICENCE.encode()), (H_EVENT_ID, event_id.encode())]))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


def latency_ms(sent: dict[str, float], seen: dict[str, float]) -> dict[str, float]:
    values = sorted((seen[e] - t) * 1000 for e, t in sent.items() if e in seen)
    q = quantiles(values, n=100)
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1), "n": len(values)}


def throughput(sent: dict[str, float], seen: dict[str, float]) -> float:
    return round(len(sent) / (max(seen[e] for e in sent) - min(sent.values())), 1)


async def measure(shanghai: HubProcess, national: HubProcess, args: argparse.Namespace) -> dict[str, Any]:
    direct = Arrivals(shanghai.bootstrap, feed_topic("national"))
    federated = Arrivals(national.bootstrap, feed_topic("national"))
    async with RegistryClient(shanghai.api) as registry:
        schema_id, _, _ = await registry.latest(f"{LICENCE}-value")
    await direct.start()
    await federated.start()
    try:
        warm = await publish(shanghai.bootstrap, schema_id, 50, None, seed=0)  # every process past its start-up
        await federated.wait_for(set(warm), 240)
        paced = await publish(shanghai.bootstrap, schema_id, int(args.rate * args.seconds), args.rate, seed=1)
        await direct.wait_for(set(paced), 120)
        await federated.wait_for(set(paced), 120)
        burst = await publish(shanghai.bootstrap, schema_id, args.burst, None, seed=2)
        await direct.wait_for(set(burst), 300)
        await federated.wait_for(set(burst), 300)
    finally:
        await direct.stop()
        await federated.stop()
    result: dict[str, Any] = {
        "mm2_version": MM2_VERSION,
        "latency_ms": {"direct": latency_ms(paced, direct.seen), "federated": latency_ms(paced, federated.seen)},
        "throughput_eps": {"direct": throughput(burst, direct.seen), "federated": throughput(burst, federated.seen)},
        "paced_rate": args.rate, "burst": args.burst,
    }
    lat, thr = result["latency_ms"], result["throughput_eps"]
    result["ratio"] = {"latency_p50": round(lat["federated"]["p50"] / lat["direct"]["p50"], 2),
                       "throughput": round(thr["federated"] / thr["direct"], 2)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "federation.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hub-bench-federation-") as tmp:
        base = Path(tmp)
        brokers = [LocalBroker(Settings(state_dir=base / f"broker-{n}", broker_heap="512m"))
                   for n in ("shanghai", "national")]
        hubs: list[HubProcess] = []
        mm2: MirrorMaker | None = None
        gateway: Gateway | None = None
        try:
            infos = [b.start(port=free_port(), controller_port=free_port(), owned=True)[0] for b in brokers]
            for name, info in zip(("shanghai", "national"), infos, strict=True):
                hubs.append(start_hub(info.bootstrap, base / f"hub-{name}", free_port(), f"bench-{name}"))
            config_file = base / "federation.yaml"
            config_file.write_text(yaml.safe_dump({
                "platforms": {n: {"bootstrap": h.bootstrap, "api": h.api, "token_file": str(h.state_dir /
                                                                                          "operator.token")}
                              for n, h in zip(("shanghai", "national"), hubs, strict=True)},
                "links": [json.loads(UP.model_dump_json())]}))
            settings, config = Settings(state_dir=base / "federation"), load_federation_config(config_file)
            gateway = Gateway(settings, config_file, UP)
            gateway.start(owned=True)
            mm2 = MirrorMaker(settings, config)
            mm2.start(owned=True)
            result = asyncio.run(measure(hubs[0], hubs[1], args))
        finally:
            for proc in (mm2, gateway):
                if proc is not None:
                    proc.stop()
            for hub in hubs:
                hub.stop()
            for broker in brokers:
                broker.stop()
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(result, indent=2))
    append_result(Path(args.out), result)  # every run kept, as the other benchmarks do


if __name__ == "__main__":
    main()
